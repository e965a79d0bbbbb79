package agent

import (
	"strings"
	"testing"

	"github.com/roce-agent/roce-agent/gpu/topology"
)

func intp(n int) *int { return &n }

func validConfig() Config {
	c := DefaultConfig()
	c.Rails = []RailConfig{
		{Rail: intp(0), Netdev: "rail0", IPv4: "10.0.0.1/31", IPv6: "fc00:0:0:1::1/127", Routes: []string{"10.0.0.0/8", "fc00::/16"}},
		{Rail: intp(1), Netdev: "rail1", IPv4: "10.0.1.1/31"},
	}
	return c
}

// Every bad input of the link engine is rejected by Validate, before any
// host is read or changed, with the field named.
func TestValidateLinkBadInput(t *testing.T) {
	for _, tc := range []struct {
		name   string
		mutate func(*Config)
		want   string
	}{
		{"a /30 where a /31 is required", func(c *Config) { c.Rails[0].IPv4 = "10.0.0.1/30" }, "rails[0].ipv4: 10.0.0.1/30: want a /31 point-to-point prefix, got /30"},
		{"a /126 where a /127 is required", func(c *Config) { c.Rails[0].IPv6 = "fc00:0:0:1::1/126" }, "rails[0].ipv6: fc00:0:0:1::1/126: want a /127 point-to-point prefix, got /126"},
		{"host address equal to the leaf's", func(c *Config) { c.Rails[0].LeafIPv4 = "10.0.0.1" }, "rails[0].leaf_ipv4: 10.0.0.1 is the host address"},
		{"leaf outside the /31", func(c *Config) { c.Rails[0].LeafIPv4 = "10.0.0.2" }, "rails[0].leaf_ipv4: 10.0.0.2 is outside the rail's 10.0.0.0/31"},
		{"IPv4 prefix in the IPv6 field", func(c *Config) { c.Rails[0].IPv6 = "10.0.0.1/31" }, "rails[0].ipv6: 10.0.0.1/31 is not an IPv6 address"},
		{"IPv6 prefix in the IPv4 field", func(c *Config) { c.Rails[0].IPv4 = "fc00::1/127" }, "rails[0].ipv4: fc00::1/127 is not an IPv4 address"},
		{"not an address", func(c *Config) { c.Rails[1].IPv4 = "ten.0.0.1/31" }, `rails[1].ipv4: "ten.0.0.1/31" is not an address with a prefix length`},
		{"overlapping prefixes across rails", func(c *Config) { c.Rails[1].IPv4 = "10.0.0.0/31" }, "rails[1].ipv4: 10.0.0.0/31 overlaps rails[0].ipv4 (10.0.0.0/31)"},
		{"duplicate rail numbers", func(c *Config) { c.Rails[1].Rail = intp(0) }, "rails[1].rail: rail 0 is also rails[0]"},
		{"duplicate netdevs", func(c *Config) { c.Rails[1].Netdev = "rail0" }, `rails[1].netdev: "rail0" is also rails[0]`},
		{"MTU below 1280 with IPv6", func(c *Config) { c.Link.MTU = 1200 }, "link.mtu: 1200 is below 1280, the minimum with IPv6"},
		{"MTU out of range", func(c *Config) { c.Link.MTU = 70000 }, "link.mtu: 70000 is outside 68-65535"},
		{"route of a family the rail lacks", func(c *Config) { c.Rails[1].Routes = []string{"fc00::/16"} }, "rails[1].routes[0]: fc00::/16 needs an IPv6 address on the rail"},
		{"bad route", func(c *Config) { c.Rails[1].Routes = []string{"everywhere"} }, `rails[1].routes[0]: "everywhere" is not a prefix`},
		{"tables over the kernel's", func(c *Config) { c.Link.Routing.TableBase = 100 }, "link.routing.table_base: 100 makes the rail tables 100-355 include the kernel's default, main and local tables"},
		{"priorities past the main rule", func(c *Config) { c.Link.Routing.RulePriorityBase = 32700 }, "link.routing.rule_priority_base: 32700 is outside 1-32510"},
		{"pools without node.index", func(c *Config) { c.Addressing.IPv4Pools = []string{"10.8.0.0/16"} }, "node.index: required with addressing pools"},
		{"pool too small for the index", func(c *Config) { c.Node.Index = intp(300); c.Addressing.IPv4Pools = []string{"10.8.0.0/24"} }, "addressing.ipv4_pools[0]: 10.8.0.0/24 has room for 128 nodes; node.index is 300"},
		{"pool of the wrong family", func(c *Config) { c.Node.Index = intp(1); c.Addressing.IPv6Pools = []string{"10.8.0.0/16"} }, "addressing.ipv6_pools[0]: 10.8.0.0/16 is not an IPv6 prefix"},
		{"pool with host bits", func(c *Config) { c.Node.Index = intp(1); c.Addressing.IPv4Pools = []string{"10.8.0.1/16"} }, "addressing.ipv4_pools[0]: 10.8.0.1/16 has host bits set"},
		{"overlapping pools", func(c *Config) {
			c.Node.Index = intp(1)
			c.Addressing.IPv4Pools = []string{"10.8.0.0/16", "10.8.128.0/17"}
		}, "addressing.ipv4_pools[1]: 10.8.128.0/17 overlaps addressing.ipv4_pools[0]"},
		{"tenant without id", func(c *Config) { c.Rails[0].Tenant = &TenantConfig{VNI: 10001} }, "rails[0].tenant.id: required"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := validConfig()
			tc.mutate(&c)
			err := c.Validate()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Validate() = %v\nwant an error containing %q", err, tc.want)
			}
		})
	}
	if err := validConfig().Validate(); err != nil {
		t.Errorf("valid config rejected: %v", err)
	}
}

func railsInventory(rails ...topology.Rail) *Inventory { return &Inventory{Rails: rails} }

func TestDesiredLinks(t *testing.T) {
	inv := railsInventory(
		topology.Rail{Rail: 0, Netdev: "enp27s0np0", RDMADevice: "mlx5_0"},
		topology.Rail{Rail: 1, Netdev: "enp61s0np0", RDMADevice: "mlx5_3"},
		topology.Rail{Rail: 2, Netdev: "enp78s0np0", RDMADevice: "mlx5_4"},
	)
	c := DefaultConfig()
	c.Node.Index = intp(17)
	c.Addressing = AddressingConfig{IPv4Pools: []string{"10.0.0.0/16", "10.1.0.0/16"}, IPv6Pools: []string{"fc00:0:0:1::/64", "fc00:0:0:2::/64"}}
	c.Link.Routes = []string{"10.0.0.0/8", "fc00::/16"}
	c.Rails = []RailConfig{{Rail: intp(1), IPv4: "192.168.1.1/31", LeafIPv4: "192.168.1.0", Routes: []string{"192.168.0.0/16"}}}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	got, unmanaged, err := DesiredLinks(c, inv)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || len(unmanaged) != 1 || !strings.Contains(unmanaged[0], "rail 2 (enp78s0np0): no address") {
		t.Fatalf("rails %+v, unmanaged %v", got, unmanaged)
	}
	r0 := got[0]
	// host = pool + 2*17 + 1, leaf = pool + 2*17
	if r0.Netdev != "enp27s0np0" || r0.IPv4.String() != "10.0.0.35/31" || r0.IPv4Leaf.String() != "10.0.0.34" ||
		r0.IPv6.String() != "fc00:0:0:1::23/127" || r0.IPv6Leaf.String() != "fc00:0:0:1::22" ||
		r0.Table != 1000 || r0.RulePriority != 1000 || r0.MTU != 9000 || len(r0.Routes) != 2 {
		t.Errorf("rail 0 = %+v", r0)
	}
	// Explicit addresses and routes win over pools and link.routes.
	r1 := got[1]
	if r1.IPv4.String() != "192.168.1.1/31" || r1.IPv4Leaf.String() != "192.168.1.0" || r1.IPv6.String() != "fc00:0:0:2::23/127" ||
		len(r1.Routes) != 1 || r1.Routes[0].String() != "192.168.0.0/16" || r1.Table != 1001 {
		t.Errorf("rail 1 = %+v", r1)
	}

	c.Rails = append(c.Rails, RailConfig{Rail: intp(5), IPv4: "10.5.0.1/31"})
	if _, _, err := DesiredLinks(c, inv); err == nil || !strings.Contains(err.Error(), "rail 5 has addresses but no NIC") {
		t.Errorf("rail without NIC: %v", err)
	}
	if _, _, err := DesiredLinks(DefaultConfig(), railsInventory(topology.Rail{Rail: 300, Netdev: "x"})); err == nil || !strings.Contains(err.Error(), "rail 300 is above 255") {
		t.Errorf("rail 300: %v", err)
	}
}

func TestSettingKeys(t *testing.T) {
	keys := SettingKeys()
	for _, k := range []string{"generation", "node.name", "node.index", "sysfs_root", "state_dir", "log.level", "link.mtu", "link.ipv6_slaac", "link.routes", "link.routing.table_base", "link.routing.rule_priority_base", "addressing.ipv4_pools"} {
		if _, ok := keys[k]; !ok {
			t.Errorf("SettingKeys lacks %s", k)
		}
	}
	if _, ok := keys["rails"]; ok {
		t.Error("rails is a list of objects, not a setting")
	}
	if _, ok := keys["NodeConfig"]; ok {
		t.Error("the squashed NodeConfig is not a key")
	}
	if keys["link.mtu"] != 9000 || keys["generation"] != int64(0) || keys["node.index"] != nil {
		t.Errorf("link.mtu default = %v", keys["link.mtu"])
	}
}

// Config squashes v1.NodeConfig: its keys stay at the top level of the
// file, unknown ones are named as before, and generation is a key.
func TestConfigUnknownKeys(t *testing.T) {
	doc := map[string]any{
		"generation": 3,
		"node":       map[string]any{"name": "x", "colour": "red", "index": 1},
		"sysfs_rot":  "/sys",
		"link":       map[string]any{"mtu": 9000, "routing": map[string]any{"table_base": 1000, "tabel": 1}},
		"rails":      []any{map[string]any{"rail": 0, "netdev": "eth0", "ipv5": "10.0.0.1/31", "tenant": map[string]any{"id": "a", "vnii": 1}}},
		"qos":        map[string]any{"trust": "dscp", "ets": map[string]any{"bw": []any{}, "tc": 1}, "dcqcn": map[string]any{"np": map[string]any{"cnp_dscp": 48}}},
		"log":        map[string]any{"level": "info", "colour": "blue"},
		"NodeConfig": map[string]any{},
	}
	got := strings.Join(UnknownKeys(doc), ", ")
	want := "NodeConfig, link.routing.tabel, log.colour, node.colour, qos.ets.tc, rails[0].ipv5, rails[0].tenant.vnii, sysfs_rot"
	if got != want {
		t.Errorf("UnknownKeys = %s\nwant %s", got, want)
	}
}

func TestConfigPromotesNodeConfig(t *testing.T) {
	c := validConfig()
	c.Generation = -1
	c.Log.Level = "loud"
	c.Node.Index = intp(-2)
	c.Rails[0].Rail = nil
	c.QoS.Trust = "cos"
	err := c.Validate()
	if err == nil {
		t.Fatal("accepted")
	}
	// the agent's settings first, then the desired state in field order
	want := `log.level: "loud" is not one of debug, info, warn, error
generation: -1 is negative
node.index: -2 is negative
rails[0].rail: required
qos.trust: "cos" is not one of dscp, pcp`
	if err.Error() != want {
		t.Errorf("Validate() =\n%v\nwant\n%s", err, want)
	}
	if got := (Config{}).NoDesiredState(); got != "it has no rails (rails[] is empty or absent) and no qos section" {
		t.Errorf("NoDesiredState = %q", got)
	}
	c = validConfig()
	tos := 40
	c.QoS = QoSConfig{PFCPriorities: []int{3}, DSCPToPriority: map[int]int{26: 3}, RoCETos: &tos}
	if w := c.QoSWarnings(); len(w) != 1 || w[0] != "qos.roce_tos: ToS 40 is DSCP 10, which dscp_to_priority does not map" {
		t.Errorf("QoSWarnings = %q", w)
	}
	c.QoS.ETS = &ETSConfig{PrioTC: []int{0}, TSA: make([]string, 8), BW: make([]int, 8)}
	p, errs := c.QoSProfile()
	if p.ETS != nil || len(errs) != 1 || errs[0].Error() != "qos.ets: prio_tc, tsa and bw need 8 entries each (got 1, 8, 8)" {
		t.Errorf("QoSProfile = %+v, %v", p, errs)
	}
}
