package agent

import (
	"errors"
	"fmt"
	"math/big"
	"net/netip"
	"sort"

	"github.com/roce-agent/roce-agent/nic"
)

// RailTableSpan is how many rails the routing table and rule priority
// ranges reserve: rail n uses base+n, n in 0-255.
const RailTableSpan = 256

// validateLink checks the link, addressing and per-rail address settings,
// each problem naming its field.
func (c Config) validateLink() []error {
	var errs []error
	fail := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", field, fmt.Sprintf(format, args...)))
	}
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
		for _, p := range []struct {
			field  string
			prefix netip.Prefix
		}{{field + ".ipv4", v4}, {field + ".ipv6", v6}} {
			if !p.prefix.IsValid() {
				continue
			}
			for _, o := range subnets {
				if o.prefix.Overlaps(p.prefix) {
					fail(p.field, "%s overlaps %s (%s)", p.prefix.Masked(), o.field, o.prefix.Masked())
				}
			}
			subnets = append(subnets, owner{p.field, p.prefix})
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
	for i, a := range v4Pools {
		for j := 0; j < i; j++ {
			if a.Overlaps(v4Pools[j]) {
				fail(fmt.Sprintf("addressing.ipv4_pools[%d]", i), "%s overlaps addressing.ipv4_pools[%d] (%s)", a, j, v4Pools[j])
			}
		}
	}
	for i, a := range v6Pools {
		for j := 0; j < i; j++ {
			if a.Overlaps(v6Pools[j]) {
				fail(fmt.Sprintf("addressing.ipv6_pools[%d]", i), "%s overlaps addressing.ipv6_pools[%d] (%s)", a, j, v6Pools[j])
			}
		}
	}
	return errs
}

// parseHost parses a rail host address: a /31 for IPv4, a /127 for IPv6.
func parseHost(s string, v6 bool, field string, fail func(string, string, ...any)) netip.Prefix {
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
func checkLeaf(s string, host netip.Prefix, field string, fail func(string, string, ...any)) {
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

func parsePools(list []string, v6 bool, field string, fail func(string, string, ...any)) []netip.Prefix {
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

func checkPoolRoom(p netip.Prefix, index int, field string, fail func(string, string, ...any)) {
	if !p.IsValid() {
		return
	}
	room := new(big.Int).Lsh(big.NewInt(1), uint(p.Addr().BitLen()-p.Bits()-1))
	if big.NewInt(int64(index)).Cmp(room) >= 0 {
		fail(field, "%s has room for %s nodes; node.index is %d", p, room, index)
	}
}

// poolAddr returns pool + offset.
func poolAddr(pool netip.Prefix, offset int64) netip.Addr {
	b := new(big.Int).SetBytes(pool.Addr().AsSlice())
	b.Add(b, big.NewInt(offset))
	raw := b.FillBytes(make([]byte, pool.Addr().BitLen()/8))
	a, _ := netip.AddrFromSlice(raw)
	return a
}

// DesiredLinks turns the configuration and the inventory's rails into the
// link engine's desired state. Every inventory rail (pinned or not) with a
// host address, explicit in rails[] or derived from the pools, is managed;
// rails with no address are left alone and named in the second result. A
// rail whose netdev is missing (or that has none) stays in the result: the
// link engine reports it as a conflict of that rail alone. The
// configuration must have passed Validate.
func DesiredLinks(cfg Config, inv *Inventory) ([]nic.RailLink, []string, error) {
	byRail := map[int]RailConfig{}
	for _, r := range cfg.Rails {
		if r.Rail != nil {
			byRail[*r.Rail] = r
		}
	}
	invRails := map[int]bool{}
	for _, r := range inv.Rails {
		invRails[r.Rail] = true
	}
	for n, r := range byRail {
		if !invRails[n] && (r.IPv4 != "" || r.IPv6 != "") {
			return nil, nil, fmt.Errorf("rails: rail %d has addresses but no NIC: the inventory has no rail %d; pin netdev or rdma_device", n, n)
		}
	}
	var errs []error
	v4Pools := parsePools(cfg.Addressing.IPv4Pools, false, "", func(string, string, ...any) {})
	v6Pools := parsePools(cfg.Addressing.IPv6Pools, true, "", func(string, string, ...any) {})
	var out []nic.RailLink
	var skipped []string
	for _, ir := range inv.Rails {
		rc := byRail[ir.Rail]
		rl := nic.RailLink{
			Rail:         ir.Rail,
			Netdev:       ir.Netdev,
			MTU:          cfg.Link.MTU,
			Table:        cfg.Link.Routing.TableBase + ir.Rail,
			RulePriority: cfg.Link.Routing.RulePriorityBase + ir.Rail,
			SLAAC:        cfg.Link.IPv6SLAAC,
		}
		if ir.Rail >= RailTableSpan {
			errs = append(errs, fmt.Errorf("rails: rail %d is above %d, the last rail the table range holds", ir.Rail, RailTableSpan-1))
			continue
		}
		rl.IPv4, rl.IPv4Leaf = railAddress(rc.IPv4, rc.LeafIPv4, v4Pools, ir.Rail, cfg.Node.Index)
		rl.IPv6, rl.IPv6Leaf = railAddress(rc.IPv6, rc.LeafIPv6, v6Pools, ir.Rail, cfg.Node.Index)
		if !rl.IPv4.IsValid() && !rl.IPv6.IsValid() {
			skipped = append(skipped, fmt.Sprintf("rail %d (%s): no address configured; link engine leaves it alone", ir.Rail, ir.Netdev))
			continue
		}
		routes := rc.Routes
		if len(routes) == 0 {
			routes = cfg.Link.Routes
		}
		for _, s := range routes {
			p, err := netip.ParsePrefix(s)
			if err != nil {
				continue // rejected by Validate
			}
			if (p.Addr().Is4() && rl.IPv4.IsValid()) || (p.Addr().Is6() && rl.IPv6.IsValid()) {
				rl.Routes = append(rl.Routes, p.Masked())
			}
		}
		out = append(out, rl)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Rail < out[j].Rail })
	if len(errs) > 0 {
		return nil, nil, errors.Join(errs...)
	}
	return out, skipped, nil
}

// railAddress is the rail's host address (explicit, else from its pool) and
// the leaf's (explicit, else the other address of the pair).
func railAddress(explicit, leaf string, pools []netip.Prefix, rail int, index *int) (netip.Prefix, netip.Addr) {
	var host netip.Prefix
	switch {
	case explicit != "":
		host, _ = netip.ParsePrefix(explicit)
	case rail < len(pools) && pools[rail].IsValid() && index != nil:
		bits := 31
		if pools[rail].Addr().Is6() {
			bits = 127
		}
		host = netip.PrefixFrom(poolAddr(pools[rail], 2*int64(*index)+1), bits)
	default:
		return netip.Prefix{}, netip.Addr{}
	}
	if leaf != "" {
		a, _ := netip.ParseAddr(leaf)
		return host, a
	}
	return host, nic.PeerAddr(host)
}
