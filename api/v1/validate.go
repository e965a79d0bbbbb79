package v1

import (
	"errors"
	"fmt"
	"math/big"
	"net/netip"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// RailTableSpan is how many rails the routing table and rule priority
// ranges reserve: rail n uses base+n, n in 0-255.
const RailTableSpan = 256

// failFunc records one problem of a field.
type failFunc func(field, format string, args ...any)

// Validate reports every problem of the desired state at once, each naming
// its field ("rails[1].netdev: ..."), joined with errors.Join.
func (c NodeConfig) Validate() error {
	return errors.Join(c.Problems()...)
}

// Problems is Validate's list: every problem, in field order (generation,
// node, rails, link and addressing, qos).
func (c NodeConfig) Problems() []error {
	var errs []error
	fail := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", field, fmt.Sprintf(format, args...)))
	}
	if c.Generation < 0 {
		fail("generation", "%d is negative", c.Generation)
	}
	if c.Node.Index != nil && *c.Node.Index < 0 {
		fail("node.index", "%d is negative", *c.Node.Index)
	}
	if n := c.Node.Name; len(n) > 253 || strings.IndexFunc(n, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }) >= 0 {
		fail("node.name", "%s is not a node name (at most 253 bytes, no white space or control characters)", Clip(n))
	}
	c.validateRails(fail)
	c.validateLink(fail)
	_, qerrs := c.QoS.Check("qos")
	return append(errs, qerrs...)
}

// validateRails checks the rail numbers and pins: present, in range and
// unique.
func (c NodeConfig) validateRails(fail failFunc) {
	rails := map[int]int{}
	netdevs := map[string]int{}
	devices := map[string]int{}
	leafPorts := map[[2]string]int{}
	for i, r := range c.Rails {
		field := fmt.Sprintf("rails[%d]", i)
		switch {
		case r.Rail == nil:
			fail(field+".rail", "required")
		case *r.Rail < 0 || *r.Rail > 255:
			fail(field+".rail", "%d is outside 0-255", *r.Rail)
		default:
			if j, dup := rails[*r.Rail]; dup {
				fail(field+".rail", "rail %d is also rails[%d]", *r.Rail, j)
			}
			rails[*r.Rail] = i
		}

		if r.Netdev != "" {
			if err := validNetdevName(r.Netdev); err != nil {
				fail(field+".netdev", "%v", err)
			}
			if j, dup := netdevs[r.Netdev]; dup {
				fail(field+".netdev", "%q is also rails[%d]", r.Netdev, j)
			}
			netdevs[r.Netdev] = i
		}
		if r.RDMADevice != "" {
			if len(r.RDMADevice) > 63 || strings.ContainsAny(r.RDMADevice, "/ \t\n") {
				fail(field+".rdma_device", "%s is not a device name", Clip(r.RDMADevice))
			}
			if j, dup := devices[r.RDMADevice]; dup {
				fail(field+".rdma_device", "%q is also rails[%d]", r.RDMADevice, j)
			}
			devices[r.RDMADevice] = i
		}
		validatePeers(r.Peers, field+".peers", fail)
		checkLLDPName(r.Leaf, field+".leaf", fail)
		checkLLDPName(r.LeafPort, field+".leaf_port", fail)
		if r.LeafPort != "" {
			k := [2]string{r.Leaf, r.LeafPort}
			switch j, dup := leafPorts[k]; {
			case r.Leaf == "":
				fail(field+".leaf_port", "set without %s.leaf (the leaf whose port it is)", field)
			case dup:
				fail(field+".leaf_port", "leaf %s port %s is also rails[%d]'s: two rails cannot reach one leaf port", Clip(r.Leaf), Clip(r.LeafPort), j)
			default:
				leafPorts[k] = i
			}
		}
	}
}

// MaxLLDPNameBytes bounds a leaf name or leaf port in the config (LLDP
// TLVs carry at most 255 bytes).
const MaxLLDPNameBytes = 255

// checkLLDPName checks a leaf system name or port: printable, at most 255
// bytes ("" is not set).
func checkLLDPName(s, field string, fail failFunc) {
	if err := CheckLLDPName(s); err != nil {
		fail(field, "%v", err)
	}
}

// CheckLLDPName says why a string cannot be an LLDP system name or port ID
// in the config (nil when it can, and for ""): it must be valid UTF-8,
// printable, and at most 255 bytes.
func CheckLLDPName(s string) error {
	switch {
	case len(s) > MaxLLDPNameBytes:
		return fmt.Errorf("%s is longer than %d bytes", Clip(s), MaxLLDPNameBytes)
	case !utf8.ValidString(s) || strings.IndexFunc(s, func(r rune) bool { return !unicode.IsPrint(r) }) >= 0:
		return fmt.Errorf("%s has unprintable characters", Clip(s))
	}
	return nil
}

// CablingProblems checks a plan node's cabling (field is its name,
// "nodes[3].cabling"): each rail in 0-rails-1 and listed once, a leaf
// name, a valid port, and no two rails on one leaf port. Each error is
// "field: reason".
func CablingProblems(cabling []RailCabling, rails int, field string) []error {
	var errs []error
	fail := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", field, fmt.Sprintf(format, args...)))
	}
	seen := map[int]int{}
	ports := map[[2]string]int{}
	for i, c := range cabling {
		f := fmt.Sprintf("%s[%d]", field, i)
		if c.Rail < 0 || c.Rail >= rails {
			fail(f+".rail", "%d is outside 0-%d", c.Rail, rails-1)
		} else if j, dup := seen[c.Rail]; dup {
			fail(f+".rail", "rail %d is also %s[%d]", c.Rail, field, j)
		} else {
			seen[c.Rail] = i
		}
		if c.Leaf == "" {
			fail(f+".leaf", "required (the leaf's LLDP system name)")
		} else {
			checkLLDPName(c.Leaf, f+".leaf", fail)
		}
		checkLLDPName(c.Port, f+".port", fail)
		if c.Port != "" && c.Leaf != "" {
			k := [2]string{c.Leaf, c.Port}
			if j, dup := ports[k]; dup {
				fail(f+".port", "leaf %s port %s is also %s[%d]'s: two rails cannot reach one leaf port", Clip(c.Leaf), Clip(c.Port), field, j)
			} else {
				ports[k] = i
			}
		}
	}
	return errs
}

// validatePeers checks a rail's probe peers: a node name, a rail number
// and addresses that parse, each peer once.
func validatePeers(peers []PeerConfig, field string, fail failFunc) {
	seen := map[PeerConfig]int{}
	for i, p := range peers {
		f := fmt.Sprintf("%s[%d]", field, i)
		if p.Node == "" || len(p.Node) > 253 || strings.IndexFunc(p.Node, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) || r == '/' }) >= 0 {
			fail(f+".node", "%s is not a node name", Clip(p.Node))
		}
		if p.Rail < 0 || p.Rail > 255 {
			fail(f+".rail", "%d is outside 0-255", p.Rail)
		}
		for _, a := range []struct {
			s, name string
			v6      bool
		}{{p.IPv4, "ipv4", false}, {p.IPv6, "ipv6", true}} {
			if a.s == "" {
				continue
			}
			if ip, err := netip.ParseAddr(a.s); err != nil || ip.Is6() != a.v6 || ip.Is4In6() || ip.Zone() != "" {
				fail(f+"."+a.name, "%s is not an %s address", Clip(a.s), map[bool]string{false: "IPv4", true: "IPv6"}[a.v6])
			}
		}
		key := PeerConfig{Node: p.Node, Rail: p.Rail}
		if j, dup := seen[key]; dup {
			fail(f, "peer %s rail %d is also %s[%d]", Clip(p.Node), p.Rail, field, j)
		}
		seen[key] = i
	}
}

// validNetdevName applies the kernel's rules (dev_valid_name): 1-15 bytes,
// not "." or "..", no '/', ':' or white space.
func validNetdevName(name string) error {
	if len(name) == 0 || len(name) > 15 {
		return fmt.Errorf("%s must be 1-15 characters", Clip(name))
	}
	if name == "." || name == ".." || strings.ContainsAny(name, "/: \t\n") {
		return fmt.Errorf("%q is not a valid interface name", name)
	}
	return nil
}

// Clip quotes a configured string for a message, cut to 64 bytes: a
// hostile value is never echoed in full.
func Clip(s string) string {
	const max = 64
	if len(s) <= max {
		return strconv.Quote(s)
	}
	return fmt.Sprintf("%s... (%d bytes)", strconv.Quote(s[:max]), len(s))
}

// validateLink checks the link, addressing and per-rail address settings,
// each problem naming its field.
func (c NodeConfig) validateLink(fail failFunc) {
	v4Pools := parsePools(c.Addressing.IPv4Pools, false, "addressing.ipv4_pools", fail)
	v6Pools := parsePools(c.Addressing.IPv6Pools, true, "addressing.ipv6_pools", fail)
	if (len(c.Addressing.IPv4Pools) > 0 || len(c.Addressing.IPv6Pools) > 0) && c.Node.Index == nil {
		fail("node.index", "required with addressing pools")
	}
	if c.Node.Index != nil && *c.Node.Index >= 0 {
		for i, p := range v4Pools {
			checkPoolRoom(p, *c.Node.Index, fmt.Sprintf("addressing.ipv4_pools[%d]", i), fail)
		}
		for i, p := range v6Pools {
			checkPoolRoom(p, *c.Node.Index, fmt.Sprintf("addressing.ipv6_pools[%d]", i), fail)
		}
	}

	anyV6 := len(v6Pools) > 0
	for _, r := range c.Rails {
		if r.IPv6 != "" {
			anyV6 = true
		}
	}
	switch {
	case c.Link.MTU < 68 || c.Link.MTU > 65535:
		fail("link.mtu", "%d is outside 68-65535", c.Link.MTU)
	case anyV6 && c.Link.MTU < 1280:
		fail("link.mtu", "%d is below 1280, the minimum with IPv6", c.Link.MTU)
	}
	tb := c.Link.Routing.TableBase
	if tb < 1 || tb > 1<<31-RailTableSpan {
		fail("link.routing.table_base", "%d is outside 1-%d", tb, 1<<31-RailTableSpan)
	} else if tb <= 255 && tb+RailTableSpan > 253 {
		fail("link.routing.table_base", "%d makes the rail tables %d-%d include the kernel's default, main and local tables (253-255)", tb, tb, tb+RailTableSpan-1)
	}
	pb := c.Link.Routing.RulePriorityBase
	if pb < 1 || pb+RailTableSpan > 32766 {
		fail("link.routing.rule_priority_base", "%d is outside 1-%d (rules must stay between the local rule at 0 and the main rule at 32766)", pb, 32766-RailTableSpan)
	}
	for i, p := range c.Link.Routes {
		if _, err := netip.ParsePrefix(p); err != nil {
			fail(fmt.Sprintf("link.routes[%d]", i), "%q is not a prefix", p)
		}
	}

	type owner struct {
		field  string
		prefix netip.Prefix
	}
	var subnets []owner
	for i, r := range c.Rails {
		field := fmt.Sprintf("rails[%d]", i)
		v4 := parseHost(r.IPv4, false, field+".ipv4", fail)
		v6 := parseHost(r.IPv6, true, field+".ipv6", fail)
		checkLeaf(r.LeafIPv4, v4, field+".leaf_ipv4", fail)
		checkLeaf(r.LeafIPv6, v6, field+".leaf_ipv6", fail)
		for _, p := range []owner{{field + ".ipv4", v4}, {field + ".ipv6", v6}} {
			if !p.prefix.IsValid() {
				continue
			}
			for _, o := range subnets {
				if o.prefix.Overlaps(p.prefix) {
					fail(p.field, "%s overlaps %s (%s)", p.prefix.Masked(), o.field, o.prefix.Masked())
				}
			}
			subnets = append(subnets, p)
		}
		hasV4 := v4.IsValid() || (r.Rail != nil && *r.Rail < len(v4Pools))
		hasV6 := v6.IsValid() || (r.Rail != nil && *r.Rail < len(v6Pools))
		for j, rt := range r.Routes {
			p, err := netip.ParsePrefix(rt)
			switch {
			case err != nil:
				fail(fmt.Sprintf("%s.routes[%d]", field, j), "%q is not a prefix", rt)
			case p.Addr().Is4() && !hasV4:
				fail(fmt.Sprintf("%s.routes[%d]", field, j), "%s needs an IPv4 address on the rail", p)
			case p.Addr().Is6() && !hasV6:
				fail(fmt.Sprintf("%s.routes[%d]", field, j), "%s needs an IPv6 address on the rail", p)
			}
		}
		if t := r.Tenant; t != nil {
			if t.ID == "" {
				fail(field+".tenant.id", "required")
			}
			if t.VNI < 0 || t.VNI > 1<<24-1 {
				fail(field+".tenant.vni", "%d is outside 0-16777215", t.VNI)
			}
		}
	}
	checkPoolOverlaps(v4Pools, "addressing.ipv4_pools", fail)
	checkPoolOverlaps(v6Pools, "addressing.ipv6_pools", fail)
}

// checkPoolOverlaps reports each pool that overlaps an earlier one.
func checkPoolOverlaps(pools []netip.Prefix, field string, fail failFunc) {
	for i, a := range pools {
		for j := 0; j < i; j++ {
			if a.Overlaps(pools[j]) {
				fail(fmt.Sprintf("%s[%d]", field, i), "%s overlaps %s[%d] (%s)", a, field, j, pools[j])
			}
		}
	}
}

// parseHost parses a rail host address: a /31 for IPv4, a /127 for IPv6.
func parseHost(s string, v6 bool, field string, fail failFunc) netip.Prefix {
	if s == "" {
		return netip.Prefix{}
	}
	p, err := netip.ParsePrefix(s)
	want, fam := 31, "IPv4"
	if v6 {
		want, fam = 127, "IPv6"
	}
	switch {
	case err != nil:
		fail(field, "%q is not an address with a prefix length (want a /%d)", s, want)
	case p.Addr().Is6() != v6 || p.Addr().Is4In6():
		fail(field, "%s is not an %s address", s, fam)
	case p.Bits() != want:
		fail(field, "%s: want a /%d point-to-point prefix, got /%d", s, want, p.Bits())
	default:
		return p
	}
	return netip.Prefix{}
}

// checkLeaf validates an explicit leaf address: in the host's /31 or /127
// and not the host address itself.
func checkLeaf(s string, host netip.Prefix, field string, fail failFunc) {
	if s == "" {
		return
	}
	a, err := netip.ParseAddr(s)
	switch {
	case err != nil:
		fail(field, "%q is not an address", s)
	case !host.IsValid():
		fail(field, "set without the rail's host address")
	case a == host.Addr():
		fail(field, "%s is the host address; the leaf must be the other address of %s", a, host.Masked())
	case !host.Masked().Contains(a):
		fail(field, "%s is outside the rail's %s", a, host.Masked())
	}
}

// ParsePools parses addressing pools (addressing.ipv4_pools with v6 false,
// ipv6_pools with v6 true), one entry per pool in order: an invalid pool
// (Validate names it) is the zero Prefix, so that rail n still takes
// entry n.
func ParsePools(list []string, v6 bool) []netip.Prefix {
	return parsePools(list, v6, "", func(string, string, ...any) {})
}

func parsePools(list []string, v6 bool, field string, fail failFunc) []netip.Prefix {
	var out []netip.Prefix
	for i, s := range list {
		f := fmt.Sprintf("%s[%d]", field, i)
		p, err := netip.ParsePrefix(s)
		switch {
		case err != nil:
			fail(f, "%q is not a prefix", s)
		case p.Addr().Is6() != v6:
			fam := "IPv4"
			if v6 {
				fam = "IPv6"
			}
			fail(f, "%s is not an %s prefix", s, fam)
		case p != p.Masked():
			fail(f, "%s has host bits set (the pool is %s)", s, p.Masked())
		case p.Bits() > p.Addr().BitLen()-1:
			fail(f, "%s is too small for a point-to-point pair", s)
		default:
			out = append(out, p)
			continue
		}
		out = append(out, netip.Prefix{})
	}
	return out
}

func checkPoolRoom(p netip.Prefix, index int, field string, fail failFunc) {
	if !p.IsValid() {
		return
	}
	room := new(big.Int).Lsh(big.NewInt(1), uint(p.Addr().BitLen()-p.Bits()-1))
	if big.NewInt(int64(index)).Cmp(room) >= 0 {
		fail(field, "%s has room for %s nodes; node.index is %d", p, room, index)
	}
}

// CheckNetdevName says why a string is not a Linux interface name (nil
// when it is one).
func CheckNetdevName(name string) error { return validNetdevName(name) }
