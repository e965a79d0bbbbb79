// Package linktest is a recording, in-memory rails namespace for the unit
// tier: it implements linkengine.RailHost the way the kernel behaves for what the
// link engine does (links, addresses marked with their protocol, policy
// rules, routes in tables, per-interface sysctls), records every write, and
// can fail a chosen write. The link engine, drift counting and the
// daemon's conditions are tested on it without root.
package linktest

import (
	"fmt"
	"net/netip"
	"sort"
	"sync"

	"github.com/roce-agent/roce-agent/nic/linkengine"
	"golang.org/x/sys/unix"
)

// Link is one netdev of the fake namespace.
type Link struct {
	Index  int
	Up     bool
	MTU    int
	MaxMTU int
	Addrs  []netip.Prefix
	// Marked are the addresses carrying the agent's IFA_PROTO.
	Marked []netip.Prefix
}

// Host is the fake namespace. The zero value is not usable: use New.
type Host struct {
	mu      sync.Mutex
	links   map[string]*Link
	next    int
	routes  []linkengine.Route
	rules   []linkengine.Rule
	sysctls map[string]string
	writes  []linkengine.Change
	// Fail, when set, is asked before each write; an error fails it (as
	// the kernel would) and nothing is changed.
	Fail func(linkengine.Change) error
	// NoAddrProto makes the fake a kernel before 5.18: addresses carry
	// no IFA_PROTO and ownership falls back to the record.
	NoAddrProto bool
}

var _ linkengine.RailHost = (*Host)(nil)

// New returns an empty namespace.
func New() *Host {
	return &Host{links: map[string]*Link{}, next: 2, sysctls: map[string]string{}}
}

// AddLink adds a netdev, down, with the kernel's default sysctls
// (rp_filter 0, accept_ra 1, ...) for the ones the agent sets.
func (h *Host) AddLink(name string, mtu int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.links[name] = &Link{Index: h.next, MTU: mtu, MaxMTU: 65535}
	h.next++
	for _, k := range []string{"arp_ignore", "arp_announce", "rp_filter"} {
		h.sysctls["net/ipv4/conf/"+name+"/"+k] = "0"
	}
	h.sysctls["net/ipv6/conf/"+name+"/keep_addr_on_down"] = "0"
	h.sysctls["net/ipv6/conf/"+name+"/accept_ra"] = "1"
}

// DelLink removes a netdev with its addresses and routes.
func (h *Host) DelLink(name string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.links, name)
	h.routes = filter(h.routes, func(r linkengine.Route) bool { return r.Dev != name })
}

// AddForeignAddr adds an address someone else added (no agent protocol).
func (h *Host) AddForeignAddr(netdev, cidr string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	l := h.links[netdev]
	l.Addrs = append(l.Addrs, netip.MustParsePrefix(cidr))
}

// DelAddr deletes an address by hand, with the routes the kernel drops
// with it.
func (h *Host) DelAddr(netdev, cidr string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.delAddr(netdev, netip.MustParsePrefix(cidr))
}

// AddRule adds a policy rule by hand.
func (h *Host) AddRule(r linkengine.Rule) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.rules = append(h.rules, r)
}

// DelRule deletes every rule at a priority, by hand.
func (h *Host) DelRule(priority int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.rules = filter(h.rules, func(r linkengine.Rule) bool { return r.Priority != priority })
}

// SetMTU changes a netdev's MTU by hand.
func (h *Host) SetMTU(netdev string, mtu int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.links[netdev].MTU = mtu
}

// SetSysctl writes a sysctl by hand ("net/ipv4/conf/rail0/rp_filter").
func (h *Host) SetSysctl(key, value string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.sysctls[key] = value
}

// SetUp sets a netdev administratively up or down (ip link set ... up|down
// by hand).
func (h *Host) SetUp(name string, up bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if l, ok := h.links[name]; ok {
		l.Up = up
	}
}

// Sysctl reads a sysctl.
func (h *Host) Sysctl(key string) string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.sysctls[key]
}

// Link returns a copy of a netdev's state (nil when absent).
func (h *Host) Link(name string) *Link {
	h.mu.Lock()
	defer h.mu.Unlock()
	l, ok := h.links[name]
	if !ok {
		return nil
	}
	c := *l
	c.Addrs = append([]netip.Prefix(nil), l.Addrs...)
	c.Marked = append([]netip.Prefix(nil), l.Marked...)
	return &c
}

// Routes and Rules return copies of the namespace's routes and rules.
func (h *Host) Routes() []linkengine.Route {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]linkengine.Route(nil), h.routes...)
}

// Rules returns a copy of the namespace's policy rules.
func (h *Host) Rules() []linkengine.Rule {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]linkengine.Rule(nil), h.rules...)
}

// Writes returns the writes made so far and forgets them.
func (h *Host) Writes() []linkengine.Change {
	h.mu.Lock()
	defer h.mu.Unlock()
	w := h.writes
	h.writes = nil
	return w
}

// ReadLive is linkengine.Host.ReadLive on the fake: the named links and those
// holding a marked address, routes of the range's tables, every rule, and
// the desired rails' sysctls.
func (h *Host) ReadLive(desired []linkengine.RailLink, owned linkengine.Owned, tr linkengine.TableRange) (linkengine.LiveState, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	live := linkengine.LiveState{Links: map[string]linkengine.Link{}, Sysctls: map[string]string{}, AddrProto: !h.NoAddrProto}
	names := map[string]bool{}
	for _, r := range desired {
		names[r.Netdev] = true
	}
	for nd := range owned.Addrs {
		names[nd] = true
	}
	for name, l := range h.links {
		if names[name] || len(l.Marked) > 0 {
			live.Links[name] = linkengine.Link{Name: name, Index: l.Index, Up: l.Up, MTU: l.MTU, MaxMTU: l.MaxMTU,
				Addrs: append([]netip.Prefix(nil), l.Addrs...), MarkedAddrs: append([]netip.Prefix(nil), l.Marked...)}
		}
	}
	for _, r := range h.routes {
		if tr.HasTable(r.Table) {
			live.Routes = append(live.Routes, r)
		}
	}
	live.Rules = append(live.Rules, h.rules...)
	for _, r := range desired {
		if _, ok := h.links[r.Netdev]; !ok {
			continue
		}
		for k := range r.Sysctls() {
			live.Sysctls[k] = h.sysctls[k]
		}
	}
	return live, nil
}

// Apply makes the changes in order, as the kernel would, stopping at the
// first that fails.
func (h *Host) Apply(cs []linkengine.Change) (int, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for i, c := range cs {
		if h.Fail != nil {
			if err := h.Fail(c); err != nil {
				return i, err
			}
		}
		if err := h.apply(c); err != nil {
			return i, err
		}
		h.writes = append(h.writes, c)
	}
	return len(cs), nil
}

func (h *Host) apply(c linkengine.Change) error {
	switch c.Kind {
	case linkengine.RuleAdd:
		for _, r := range h.rules {
			if r == c.Rule {
				return nil
			}
		}
		h.rules = append(h.rules, c.Rule)
		return nil
	case linkengine.RuleDel:
		n := len(h.rules)
		h.rules = filter(h.rules, func(r linkengine.Rule) bool { return r != c.Rule })
		if len(h.rules) == n {
			return unix.ENOENT
		}
		return nil
	}
	l, ok := h.links[c.Netdev]
	if !ok || (c.LinkIndex > 0 && l.Index != c.LinkIndex) {
		return fmt.Errorf("link %s (index %d): %w", c.Netdev, c.LinkIndex, unix.ENODEV)
	}
	switch c.Kind {
	case linkengine.LinkUp:
		l.Up = true
	case linkengine.LinkMTU:
		if c.MTU > l.MaxMTU {
			return unix.EINVAL
		}
		l.MTU = c.MTU
	case linkengine.SysctlSet:
		h.sysctls[c.Sysctl] = c.Value
	case linkengine.AddrAdd:
		for _, a := range l.Addrs {
			if a == c.Addr {
				return nil
			}
		}
		l.Addrs = append(l.Addrs, c.Addr)
		if !h.NoAddrProto {
			l.Marked = append(l.Marked, c.Addr)
		}
	case linkengine.AddrDel:
		if !h.delAddr(c.Netdev, c.Addr) {
			return unix.EADDRNOTAVAIL
		}
	case linkengine.RouteSet:
		rt := c.Route
		rt.Dev = c.Netdev
		h.routes = filter(h.routes, func(r linkengine.Route) bool { return r.Table != rt.Table || r.Dst != rt.Dst })
		h.routes = append(h.routes, rt)
		sort.SliceStable(h.routes, func(i, j int) bool { return h.routes[i].Table < h.routes[j].Table })
	case linkengine.RouteDel:
		n := len(h.routes)
		h.routes = filter(h.routes, func(r linkengine.Route) bool { return r.Table != c.Route.Table || r.Dst != c.Route.Dst })
		if len(h.routes) == n {
			return unix.ESRCH
		}
	default:
		return fmt.Errorf("unknown change kind %q", c.Kind)
	}
	return nil
}

// delAddr removes an address and, as the kernel does, the routes that
// used it as their source or reached their gateway through its subnet.
func (h *Host) delAddr(netdev string, p netip.Prefix) bool {
	l := h.links[netdev]
	if l == nil {
		return false
	}
	n := len(l.Addrs)
	l.Addrs = filter(l.Addrs, func(a netip.Prefix) bool { return a != p })
	l.Marked = filter(l.Marked, func(a netip.Prefix) bool { return a != p })
	h.routes = filter(h.routes, func(r linkengine.Route) bool {
		return r.Dev != netdev || (r.Src != p.Addr() && !(r.Gw.IsValid() && p.Masked().Contains(r.Gw)))
	})
	return len(l.Addrs) < n
}

// LinkExists reports whether the fake has the netdev.
func (h *Host) LinkExists(name string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	_, ok := h.links[name]
	return ok
}

// LinkState is the netdev's state: up when set up (a fake has carrier).
func (h *Host) LinkState(name string) (linkengine.LinkState, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	l, ok := h.links[name]
	if !ok {
		return linkengine.LinkState{}, fmt.Errorf("find %s: %w", name, unix.ENODEV)
	}
	return linkengine.LinkState{Up: l.Up, MTU: l.MTU}, nil
}

// Do runs fn: the fake has no namespace to enter.
func (h *Host) Do(fn func() error) error { return fn() }

// Close does nothing.
func (h *Host) Close() {}

func filter[T any](s []T, keep func(T) bool) []T {
	out := s[:0]
	for _, v := range s {
		if keep(v) {
			out = append(out, v)
		}
	}
	return out
}
