package agent

import (
	"errors"
	"fmt"
	"math/big"
	"net/netip"
	"sort"

	v1 "github.com/roce-agent/roce-agent/api/v1"
	"github.com/roce-agent/roce-agent/nic/linkengine"
	"github.com/roce-agent/roce-agent/qos"
)

// Desired state derivation: what the configuration and the inventory ask
// of the link engine (DesiredLinks) and of the QoS engine (QoSTargets).

// LinkRange is the table and priority range the configuration gives the
// link engine.
func (c Config) LinkRange() linkengine.TableRange {
	return linkengine.TableRange{TableBase: c.Link.Routing.TableBase, PriorityBase: c.Link.Routing.RulePriorityBase, Size: RailTableSpan}
}

// QoSTargets are the rail NICs the QoS profile applies to: every
// inventory rail with a netdev.
func QoSTargets(inv *Inventory) []qos.Target {
	var out []qos.Target
	for _, r := range inv.Rails {
		if r.Netdev == "" {
			continue
		}
		t := qos.Target{Rail: r.Rail, Netdev: r.Netdev, RDMADevice: r.RDMADevice, Port: 1, PCI: r.PCI}
		if n := inv.NIC(r.RDMADevice); n != nil {
			t.Port, t.Driver = n.Port.Port, n.Driver
		}
		out = append(out, t)
	}
	return out
}

// RailTableSpan is how many rails the routing table and rule priority
// ranges reserve: rail n uses base+n, n in 0-255.
const RailTableSpan = v1.RailTableSpan

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
func DesiredLinks(cfg Config, inv *Inventory) ([]linkengine.RailLink, []string, error) {
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
	v4Pools := v1.ParsePools(cfg.Addressing.IPv4Pools, false)
	v6Pools := v1.ParsePools(cfg.Addressing.IPv6Pools, true)
	var out []linkengine.RailLink
	var skipped []string
	for _, ir := range inv.Rails {
		rc := byRail[ir.Rail]
		rl := linkengine.RailLink{
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
	return host, linkengine.PeerAddr(host)
}
