package lab

import (
	"encoding/json"
	"testing"

	"github.com/roce-agent/roce-agent/fabric"
)

// TestDefaultPlanForController: the controller accepts the lab's plans and
// derives, for every rail, the addresses and the tenant the lab's leaves
// use.
func TestDefaultPlanForController(t *testing.T) {
	for _, hosts := range []int{1, 4, 9} {
		p := DefaultPlan(hosts)
		data, err := json.Marshal(p)
		if err != nil {
			t.Fatal(err)
		}
		parsed, err := fabric.ParsePlan(data)
		if err != nil {
			t.Fatalf("DefaultPlan(%d): the controller refuses it: %v", hosts, err)
		}
		configs, err := fabric.Derive(parsed)
		if err != nil {
			t.Fatalf("DefaultPlan(%d): derive: %v", hosts, err)
		}
		tenants := railTenants(p)
		for _, n := range p.Nodes {
			cfg, ok := configs[n.Name]
			if !ok {
				t.Fatalf("DefaultPlan(%d): no config for %s", hosts, n.Name)
			}
			if len(cfg.Rails) != p.Rails {
				t.Errorf("%s: %d rails in its config, want %d", n.Name, len(cfg.Rails), p.Rails)
			}
			for _, r := range cfg.Rails {
				if r.Rail == nil {
					t.Fatalf("%s: a rail without number", n.Name)
				}
				a, err := planAddrs(p, n.Index, *r.Rail)
				if err != nil {
					t.Fatal(err)
				}
				if r.IPv4 != a.hostV4.String() || r.IPv6 != a.hostV6.String() || r.LeafIPv4 != a.leafV4.Addr().String() || r.LeafIPv6 != a.leafV6.Addr().String() {
					t.Errorf("%s rail %d: controller %s %s leaf %s %s, lab %s %s leaf %s %s", n.Name, *r.Rail,
						r.IPv4, r.IPv6, r.LeafIPv4, r.LeafIPv6, a.hostV4, a.hostV6, a.leafV4.Addr(), a.leafV6.Addr())
				}
				want := ""
				if ti, ok := tenants[n.Name][*r.Rail]; ok {
					want = p.Tenants[ti].ID
				}
				got := ""
				if r.Tenant != nil {
					got = r.Tenant.ID
				}
				if got != want {
					t.Errorf("%s rail %d: controller's tenant %q, lab's %q", n.Name, *r.Rail, got, want)
				}
			}
		}
	}
}
