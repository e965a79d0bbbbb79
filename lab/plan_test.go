package lab

import (
	"encoding/json"
	"net/netip"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	v1 "github.com/roce-agent/roce-agent/api/v1"
	"github.com/roce-agent/roce-agent/gpu"
	"github.com/roce-agent/roce-agent/gpu/topology"
	"github.com/roce-agent/roce-agent/nic"
	"github.com/roce-agent/roce-agent/nic/sysfstest"
)

func TestDefaultPlan(t *testing.T) {
	p := DefaultPlan(4)
	if err := checkPlan(p); err != nil {
		t.Fatalf("checkPlan: %v", err)
	}
	if p.Rails != 8 || p.Link.MTU != 9000 || p.Link.Routing.TableBase != 1000 || !p.QoS.Empty() {
		t.Errorf("rails %d mtu %d table base %d qos empty %v, want 8, 9000, 1000, true", p.Rails, p.Link.MTU, p.Link.Routing.TableBase, p.QoS.Empty())
	}
	want := []v1.Tenant{
		{ID: "tenant-a", VRF: "TENANT-A", VNI: 10001, Members: []v1.TenantMember{{Node: "gpu-00"}, {Node: "gpu-02"}}},
		{ID: "tenant-b", VRF: "TENANT-B", VNI: 10002, Members: []v1.TenantMember{{Node: "gpu-01", GPUs: []int{0, 1, 2, 3}}, {Node: "gpu-03", GPUs: []int{0, 1, 2, 3}}}},
		{ID: "tenant-c", VRF: "TENANT-C", VNI: 10003, Members: []v1.TenantMember{{Node: "gpu-01", GPUs: []int{4, 5, 6, 7}}, {Node: "gpu-03", GPUs: []int{4, 5, 6, 7}}}},
	}
	if !reflect.DeepEqual(want, p.Tenants) {
		t.Errorf("tenants:\n got %+v\nwant %+v", p.Tenants, want)
	}
	a, err := planAddrs(p, 1, 3)
	if err != nil {
		t.Fatal(err)
	}
	got := []string{a.hostV4.String(), a.leafV4.String(), a.hostV6.String(), a.leafV6.String()}
	if want := []string{"10.103.0.3/31", "10.103.0.2/31", "fd00:103::3/127", "fd00:103::2/127"}; !reflect.DeepEqual(want, got) {
		t.Errorf("gpu-01 rail 3 addresses %v, want %v", got, want)
	}
	for _, hosts := range []int{1, 2, 3, 7, 64} {
		p := DefaultPlan(hosts)
		if err := checkPlan(p); err != nil {
			t.Errorf("DefaultPlan(%d): %v", hosts, err)
		}
		for _, tn := range p.Tenants {
			if len(tn.Members) == 0 {
				t.Errorf("DefaultPlan(%d): %s has no members", hosts, tn.ID)
			}
		}
	}
}

func TestCheckPlan(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(*v1.FabricPlan)
		want   string
	}{
		{"too many rails", func(p *v1.FabricPlan) { p.Rails = 9 }, "rails: 9"},
		{"missing v6 pool", func(p *v1.FabricPlan) { p.Addressing.IPv6Pools = p.Addressing.IPv6Pools[:7] }, "rail 7 has no valid ipv6 pool"},
		{"node twice", func(p *v1.FabricPlan) { p.Nodes[1].Name = "gpu-00" }, "nodes[1].name: gpu-00 used twice"},
		{"index too large", func(p *v1.FabricPlan) { p.Nodes[0].Index = 1 << 20 }, "no room for node index"},
		{"vni twice", func(p *v1.FabricPlan) { p.Tenants[1].VNI = 10001 }, "tenants[1].vni: 10001 used twice"},
		{"vni range", func(p *v1.FabricPlan) { p.Tenants[0].VNI = 1 << 24 }, "outside 1-16777215"},
		{"unknown node", func(p *v1.FabricPlan) { p.Tenants[0].Members[0].Node = "gpu-99" }, "gpu-99 is not a node"},
		{"gpu out of range", func(p *v1.FabricPlan) { p.Tenants[1].Members[0].GPUs = []int{8} }, "GPU 8 is outside 0-7"},
		{"gpu in two tenants", func(p *v1.FabricPlan) { p.Tenants[2].Members[0].GPUs = []int{3} }, "GPU 3 of gpu-01 is also in tenant-b"},
		{"whole node and gpu", func(p *v1.FabricPlan) {
			p.Tenants[1].Members = append(p.Tenants[1].Members, v1.TenantMember{Node: "gpu-00", GPUs: []int{0}})
		}, "GPU 0 of gpu-00 is also in tenant-a"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := clonePlan(DefaultPlan(4))
			tc.change(&p)
			err := checkPlan(p)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("checkPlan = %v, want an error with %q", err, tc.want)
			}
		})
	}
}

func TestParsePlan(t *testing.T) {
	p := DefaultPlan(2)
	js, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	got, err := ParsePlan(js)
	if err != nil {
		t.Fatalf("ParsePlan(json): %v", err)
	}
	if !reflect.DeepEqual(p, got) {
		t.Errorf("json round trip:\n got %+v\nwant %+v", got, p)
	}
	y := `
rails: 2
link: {mtu: 9000}
addressing:
  ipv4_pools: [10.100.0.0/16, 10.101.0.0/16]
  ipv6_pools: ["fd00:100::/64", "fd00:101::/64"]
qos: {dscp_to_priority: {26: 3}}
nodes: [{name: a, index: 0}, {name: b, index: 1}]
tenants:
  - {id: t1, vrf: T1, vni: 7, members: [{node: a}, {node: b, gpus: [1]}]}
`
	got, err = ParsePlan([]byte(y))
	if err != nil {
		t.Fatalf("ParsePlan(yaml): %v", err)
	}
	if got.QoS.DSCPToPriority[26] != 3 || len(got.Tenants) != 1 || got.Tenants[0].Members[1].GPUs[0] != 1 {
		t.Errorf("ParsePlan(yaml) = %+v", got)
	}
	if err := checkPlan(got); err != nil {
		t.Errorf("checkPlan: %v", err)
	}
	if _, err := ParsePlan([]byte("rails: 2\nrail: 3\n")); err == nil || !strings.Contains(err.Error(), `rail: unknown field`) {
		t.Errorf("unknown key: err = %v", err)
	}
}

func TestNames(t *testing.T) {
	if err := checkPrefix("rl-"); err != nil {
		t.Error(err)
	}
	for _, bad := range []string{"", "RL", "-x", "abcdefghijklm", "a b"} {
		if checkPrefix(bad) == nil {
			t.Errorf("checkPrefix(%q) accepted", bad)
		}
	}
	re := labNSRE("rl-")
	for name, want := range map[string]bool{
		"rl-h0": true, "rl-l1": true, "rl-l1p": true, "rl-l0t12": true, "rl-sp": true, "rl-mg": true,
		"rl-x-h0": false, "rl-h": false, "xrl-h0": false, "rl-l0t": false, "rl-mgx": false,
	} {
		if re.MatchString(name) != want {
			t.Errorf("lab namespace %q: %v, want %v", name, !want, want)
		}
	}
	if got := routerMAC(1, 10002).String(); got != "02:ee:01:00:27:12" {
		t.Errorf("routerMAC = %s", got)
	}
	if got := linkLocal(routerMAC(1, 10002)); got != netip.MustParseAddr("fe80::ee:1ff:fe00:2712") {
		t.Errorf("linkLocal = %s", got)
	}
	mg := DefaultMgmtSubnet
	if controllerAddrOf(mg).String() != "192.168.77.1" || mgmtAddrOf(mg, 3).String() != "192.168.77.13" || exposeAddrOf(mg).String() != "192.168.77.254" {
		t.Errorf("mgmt addresses: %s %s %s", controllerAddrOf(mg), mgmtAddrOf(mg, 3), exposeAddrOf(mg))
	}
}

// TestDGXTree: the inventory of a lab host's tree maps GPU n to rail n and
// rail n to the netdev the lab names its veth after, and the GID table
// holds the planned host addresses.
func TestDGXTree(t *testing.T) {
	p := DefaultPlan(2)
	var rails []sysfstest.DGXRail
	for r := 0; r < p.Rails; r++ {
		a, err := planAddrs(p, 1, r)
		if err != nil {
			t.Fatal(err)
		}
		rails = append(rails, sysfstest.DGXRail{MAC: railMAC(1, r).String(), IPs: []string{a.hostV4.Addr().String(), a.hostV6.Addr().String()}})
	}
	dir := t.TempDir()
	if _, err := sysfstest.DGX(dir, sysfstest.DGXHost{Node: "gpu-01", Rails: rails, MgmtNetdev: MgmtNetdev}); err != nil {
		t.Fatal(err)
	}
	fs, err := nic.NewFS(filepath.Join(dir, "sys"))
	if err != nil {
		t.Fatal(err)
	}
	w := &nic.Warnings{}
	nics, err := nic.Discover(fs, nic.NewLister(fs), w)
	if err != nil {
		t.Fatal(err)
	}
	gpus, err := gpu.Discover(fs, nil, w)
	if err != nil {
		t.Fatal(err)
	}
	assigned, _, err := topology.AssignRails(gpus.GPUs, nics, nil, func(string) bool { return false })
	if err != nil {
		t.Fatal(err)
	}
	if len(assigned) != 8 {
		t.Fatalf("%d rails, want 8", len(assigned))
	}
	for _, r := range assigned {
		if r.Netdev != sysfstest.DGXNetdev(r.Rail) || r.RDMADevice != sysfstest.DGXRDMADevice(r.Rail) {
			t.Errorf("rail %d: %s/%s, want %s/%s", r.Rail, r.RDMADevice, r.Netdev, sysfstest.DGXRDMADevice(r.Rail), sysfstest.DGXNetdev(r.Rail))
		}
	}
	for _, n := range nics {
		var ips []string
		for _, g := range n.GIDs {
			if g.IsRoCEv2() {
				ips = append(ips, g.IP)
			}
		}
		rail := -1
		for r := 0; r < 8; r++ {
			if sysfstest.DGXNetdev(r) == n.Netdev {
				rail = r
			}
		}
		a, _ := planAddrs(p, 1, rail)
		if !strings.Contains(strings.Join(ips, " "), a.hostV4.Addr().String()) || !strings.Contains(strings.Join(ips, " "), a.hostV6.Addr().String()) {
			t.Errorf("%s: RoCE v2 GIDs %v lack %s and %s", n.Netdev, ips, a.hostV4.Addr(), a.hostV6.Addr())
		}
		if n.MAC != railMAC(1, rail).String() {
			t.Errorf("%s: MAC %s, want %s", n.Netdev, n.MAC, railMAC(1, rail))
		}
	}
}
