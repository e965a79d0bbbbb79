package v1_test

import (
	"net/netip"
	"strings"
	"testing"

	v1 "github.com/roce-agent/roce-agent/api/v1"
)

func intp(n int) *int { return &n }

func validNodeConfig() v1.NodeConfig {
	return v1.NodeConfig{
		Generation: 7,
		Node:       v1.NodeIdentity{Name: "gpu-017", Index: intp(17)},
		Link:       v1.LinkConfig{MTU: 9000, Routing: v1.RoutingConfig{TableBase: 1000, RulePriorityBase: 1000}},
		Addressing: v1.AddressingConfig{IPv4Pools: []string{"10.0.0.0/16", "10.1.0.0/16"}},
		Rails: []v1.RailConfig{
			{Rail: intp(0), Netdev: "rail0", IPv6: "fc00:0:0:1::1/127", Tenant: &v1.TenantConfig{ID: "a", VRF: "A", VNI: 1}},
			{Rail: intp(1), RDMADevice: "mlx5_3", Routes: []string{"10.0.0.0/8"}},
		},
	}
}

// Validate names every invalid field, in field order, with the messages
// the agent has always printed.
func TestValidateNodeConfig(t *testing.T) {
	if err := validNodeConfig().Validate(); err != nil {
		t.Fatalf("valid config rejected: %v", err)
	}
	c := validNodeConfig()
	c.Generation = -3
	c.Node.Index = intp(40000)
	c.Link.MTU = 1000
	c.Rails[0].Netdev = strings.Repeat("n", 100)
	c.Rails[1].RDMADevice = "mlx5 3"
	c.Rails = append(c.Rails, v1.RailConfig{Rail: intp(300), IPv4: "10.0.0.1/31", LeafIPv4: "10.0.0.1"}, v1.RailConfig{Rail: intp(1), Tenant: &v1.TenantConfig{VNI: -1}})
	c.QoS = v1.QoSConfig{Trust: "dscp", ETS: &v1.ETSConfig{PrioTC: []int{1}}, DCQCN: &v1.DCQCNConfig{RP: map[string]int64{"gd": 16}}}
	want := []string{
		"generation: -3 is negative",
		`rails[0].netdev: "nnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnn"... (100 bytes) must be 1-15 characters`,
		`rails[1].rdma_device: "mlx5 3" is not a device name`,
		"rails[2].rail: 300 is outside 0-255",
		"rails[3].rail: rail 1 is also rails[1]",
		"addressing.ipv4_pools[0]: 10.0.0.0/16 has room for 32768 nodes; node.index is 40000",
		"addressing.ipv4_pools[1]: 10.1.0.0/16 has room for 32768 nodes; node.index is 40000",
		"link.mtu: 1000 is below 1280, the minimum with IPv6",
		"rails[2].leaf_ipv4: 10.0.0.1 is the host address; the leaf must be the other address of 10.0.0.0/31",
		"rails[3].tenant.id: required",
		"rails[3].tenant.vni: -1 is outside 0-16777215",
		"qos.ets: prio_tc, tsa and bw need 8 entries each (got 1, 0, 0)",
		"qos.dscp_to_priority: trust dscp needs at least one DSCP mapped",
		"qos.dcqcn.rp.gd: 16 is outside 0-15",
	}
	err := c.Validate()
	if err == nil || err.Error() != strings.Join(want, "\n") {
		t.Errorf("Validate() =\n%v\nwant\n%s", err, strings.Join(want, "\n"))
	}
	if got := len(c.Problems()); got != len(want) {
		t.Errorf("Problems() has %d entries, want %d", got, len(want))
	}
}

func TestValidateNoDesiredState(t *testing.T) {
	for _, tc := range []struct {
		c    v1.NodeConfig
		want string
	}{
		{v1.NodeConfig{}, "it has no rails (rails[] is empty or absent) and no qos section"},
		{v1.NodeConfig{Rails: []v1.RailConfig{{Rail: intp(0)}}}, "no rail has an address (rails[].ipv4, rails[].ipv6 or addressing pools) and there is no qos section"},
		{v1.NodeConfig{Rails: []v1.RailConfig{{Rail: intp(0), IPv6: "fc00::1/127"}}}, ""},
		{v1.NodeConfig{Addressing: v1.AddressingConfig{IPv6Pools: []string{"fc00::/64"}}}, ""},
		{v1.NodeConfig{QoS: v1.QoSConfig{PFCPriorities: []int{}}}, ""},
	} {
		if got := tc.c.NoDesiredState(); got != tc.want {
			t.Errorf("%+v: NoDesiredState() = %q, want %q", tc.c, got, tc.want)
		}
	}
}

func TestValidateHelpers(t *testing.T) {
	got := v1.ParsePools([]string{"10.0.0.0/16", "bad", "fc00::/64", "10.2.0.0/16"}, false)
	want := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/16"), {}, {}, netip.MustParsePrefix("10.2.0.0/16")}
	if len(got) != len(want) {
		t.Fatalf("ParsePools = %v", got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("ParsePools[%d] = %v, want %v", i, got[i], want[i])
		}
	}
	if got := v1.Clip("xml"); got != `"xml"` {
		t.Errorf("Clip = %s", got)
	}
	if got := v1.Clip(strings.Repeat("a", 65)); got != `"`+strings.Repeat("a", 64)+`"... (65 bytes)` {
		t.Errorf("Clip = %s", got)
	}
}

// rails[].leaf and leaf_port: printable, at most 255 bytes, leaf_port
// with a leaf, and no two rails on one leaf port.
func TestValidateLeafCabling(t *testing.T) {
	c := validNodeConfig()
	c.Rails[0].Leaf, c.Rails[0].LeafPort = "leaf0", "swp1"
	c.Rails[1].Leaf, c.Rails[1].LeafPort = "leaf0", "swp2"
	if err := c.Validate(); err != nil {
		t.Fatalf("valid cabling rejected: %v", err)
	}
	c.Rails[1].LeafPort = "swp1"
	c.Rails = append(c.Rails,
		v1.RailConfig{Rail: intp(2), Leaf: "leaf\x00", LeafPort: strings.Repeat("p", 256)},
		v1.RailConfig{Rail: intp(3), LeafPort: "swp4"})
	want := []string{
		`rails[1].leaf_port: leaf "leaf0" port "swp1" is also rails[0]'s: two rails cannot reach one leaf port`,
		`rails[2].leaf: "leaf\x00" has unprintable characters`,
		`rails[2].leaf_port: "` + strings.Repeat("p", 64) + `"... (256 bytes) is longer than 255 bytes`,
		"rails[3].leaf_port: set without rails[3].leaf (the leaf whose port it is)",
	}
	if err := c.Validate(); err == nil || err.Error() != strings.Join(want, "\n") {
		t.Errorf("Validate() =\n%v\nwant\n%s", err, strings.Join(want, "\n"))
	}
}

func TestCablingProblems(t *testing.T) {
	ok := []v1.RailCabling{{Rail: 0, Leaf: "leaf0", Port: "swp1"}, {Rail: 1, Leaf: "leaf1", Port: "swp1"}, {Rail: 2, Leaf: "leaf0"}}
	if errs := v1.CablingProblems(ok, 8, "nodes[0].cabling"); len(errs) != 0 {
		t.Fatalf("valid cabling rejected: %v", errs)
	}
	bad := []v1.RailCabling{
		{Rail: 0, Leaf: "leaf0", Port: "swp1"},
		{Rail: 8, Leaf: "leaf1"},
		{Rail: 0, Leaf: "leaf2"},
		{Rail: 3, Leaf: "leaf0", Port: "swp1"},
		{Rail: 4, Port: "swp9\n"},
	}
	want := []string{
		"nodes[0].cabling[1].rail: 8 is outside 0-7",
		"nodes[0].cabling[2].rail: rail 0 is also nodes[0].cabling[0]",
		`nodes[0].cabling[3].port: leaf "leaf0" port "swp1" is also nodes[0].cabling[0]'s: two rails cannot reach one leaf port`,
		"nodes[0].cabling[4].leaf: required (the leaf's LLDP system name)",
		`nodes[0].cabling[4].port: "swp9\n" has unprintable characters`,
	}
	var got []string
	for _, e := range v1.CablingProblems(bad, 8, "nodes[0].cabling") {
		got = append(got, e.Error())
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("CablingProblems =\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
