package fabric

import (
	"os"
	"testing"

	v1 "github.com/roce-agent/roce-agent/api/v1"
)

// FuzzParsePlan: any plan document is either refused with an error or
// accepted, and an accepted plan derives a valid config for every node
// whose rails the controller can serve, without a panic.
func FuzzParsePlan(f *testing.F) {
	if data, err := os.ReadFile("testdata/plan.yaml"); err == nil {
		f.Add(data)
	}
	f.Add([]byte(`{"rails": 2, "addressing": {"ipv4_pools": ["10.0.0.0/24", "10.0.1.0/24"]}, "nodes": [{"name": "a", "index": 0}],
		"tenants": [{"id": "t", "vrf": "T", "vni": 1, "members": [{"node": "a", "gpus": [1]}]}]}`))
	f.Add([]byte("rails: 1\naddressing: {ipv6_pools: ['fd00::/64']}\nnodes: [{name: x, index: 3}]\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := ParsePlan(data)
		if err != nil {
			return
		}
		fab, err := NewFabric(p)
		if err != nil {
			t.Fatalf("ParsePlan accepted what NewFabric refuses: %v", err)
		}
		for _, n := range fab.Nodes() {
			c, ok := fab.Config(n)
			if !ok {
				t.Fatalf("no config for %s", n)
			}
			if err := c.Validate(); err != nil {
				t.Fatalf("derived config of %s is invalid: %v", n, err)
			}
		}
		if len(p.Nodes) > 0 && len(p.Tenants) > 0 {
			if _, err := ApplyMove(p, v1.Move{Node: p.Nodes[0].Name, Tenant: p.Tenants[0].ID}); err != nil {
				t.Fatalf("moving a node of the plan into a tenant of the plan: %v", err)
			}
		}
	})
}
