package nic

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// dumpRetries bounds how often a netlink dump interrupted by concurrent
// changes (NLM_F_DUMP_INTR) is repeated before giving up.
const dumpRetries = 10

// Host is one network namespace as the link engine sees it: one netlink
// handle for rtnetlink, one raw socket for what vishvananda/netlink does
// not decode (IFLA_MAX_MTU), and the namespace's sysctls.
type Host struct {
	ns      netns.NsHandle // closed (-1) means the caller's own namespace
	h       *netlink.Handle
	raw     *nl.SocketHandle
	procSys string
}

var _ linkHandle = (*netlink.Handle)(nil)

// linkHandle is the part of *netlink.Handle the engine uses.
type linkHandle interface {
	LinkByName(name string) (netlink.Link, error)
	LinkSetUp(link netlink.Link) error
	LinkSetMTU(link netlink.Link, mtu int) error
	AddrList(link netlink.Link, family int) ([]netlink.Addr, error)
	AddrAdd(link netlink.Link, addr *netlink.Addr) error
	AddrDel(link netlink.Link, addr *netlink.Addr) error
	RuleList(family int) ([]netlink.Rule, error)
	RuleAdd(rule *netlink.Rule) error
	RuleDel(rule *netlink.Rule) error
	RouteListFilteredIter(family int, filter *netlink.Route, mask uint64, f func(netlink.Route) bool) error
	RouteReplace(route *netlink.Route) error
	RouteDel(route *netlink.Route) error
}

// OpenHost opens the namespace ns (netns.None() for the caller's own).
// The caller keeps ownership of ns.
func OpenHost(ns netns.NsHandle) (*Host, error) {
	host := &Host{ns: ns, procSys: "/proc/sys"}
	var err error
	cur, err := netns.Get()
	if err != nil {
		return nil, fmt.Errorf("open current netns: %w", err)
	}
	defer cur.Close()
	target := ns
	if !ns.IsOpen() {
		target = cur
	}
	host.h, err = netlink.NewHandleAt(target, unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("open netlink in netns: %w", err)
	}
	sock, err := nl.GetNetlinkSocketAt(target, cur, unix.NETLINK_ROUTE)
	if err != nil {
		host.h.Close()
		return nil, fmt.Errorf("open netlink socket in netns: %w", err)
	}
	host.raw = &nl.SocketHandle{Socket: sock}
	return host, nil
}

// Close releases the sockets.
func (h *Host) Close() {
	h.h.Close()
	h.raw.Close()
}

// Handle is the namespace's netlink handle.
func (h *Host) Handle() *netlink.Handle { return h.h }

// Namespace returns the namespace handle (closed for the caller's own).
func (h *Host) Namespace() netns.NsHandle { return h.ns }

// Do runs fn with the calling goroutine's OS thread inside the namespace,
// for what follows the thread's namespace (/proc/sys/net). In the
// caller's own namespace it just runs fn.
func (h *Host) Do(fn func() error) error {
	if !h.ns.IsOpen() {
		return fn()
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("get netns: %w", err)
			return
		}
		defer orig.Close()
		if err := netns.Set(h.ns); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("enter netns: %w", err)
			return
		}
		ferr := fn()
		if err := netns.Set(orig); err != nil {
			// The thread is stuck in the other namespace: let it die with
			// the goroutine instead of returning it to the scheduler.
			errc <- errors.Join(ferr, fmt.Errorf("leave netns: %w", err))
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// ReadLive reads what the kernel has for the given rails: their links,
// addresses and sysctls, the routes in the agent's table range, and every
// policy rule. Links named only in the ownership record are read too.
func (h *Host) ReadLive(desired []RailLink, owned Owned, tr TableRange) (LiveState, error) {
	live := LiveState{Links: map[string]Link{}, Sysctls: map[string]string{}}
	names := map[string]bool{}
	for _, r := range desired {
		names[r.Netdev] = true
	}
	for nd := range owned.Addrs {
		names[nd] = true
	}
	for name := range names {
		l, ok, err := h.readLink(name)
		if err != nil {
			return live, err
		}
		if ok {
			live.Links[name] = l
		}
	}
	if err := h.readRoutes(&live, tr); err != nil {
		return live, err
	}
	if err := h.readRules(&live); err != nil {
		return live, err
	}
	err := h.Do(func() error {
		for _, r := range desired {
			if _, ok := live.Links[r.Netdev]; !ok {
				continue
			}
			for key := range r.Sysctls() {
				b, err := os.ReadFile(filepath.Join(h.procSys, key))
				if err != nil {
					live.Sysctls[key] = ""
					continue
				}
				live.Sysctls[key] = strings.TrimSpace(string(b))
			}
		}
		return nil
	})
	return live, err
}

func (h *Host) readLink(name string) (Link, bool, error) {
	nl, err := h.h.LinkByName(name)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) || errors.Is(err, unix.ENODEV) {
			return Link{}, false, nil
		}
		return Link{}, false, fmt.Errorf("read link %s: %w", name, err)
	}
	a := nl.Attrs()
	l := Link{Name: name, Index: a.Index, Up: a.Flags&net.FlagUp != 0, MTU: a.MTU}
	var addrs []netlink.Addr
	for try := 0; ; try++ {
		addrs, err = h.h.AddrList(nl, netlink.FAMILY_ALL)
		if err == nil || !errors.Is(err, netlink.ErrDumpInterrupted) || try == dumpRetries {
			break
		}
	}
	if err != nil {
		return l, false, fmt.Errorf("list addresses of %s: %w", name, err)
	}
	for _, ad := range addrs {
		if p, ok := prefixOf(ad.IPNet); ok {
			l.Addrs = append(l.Addrs, p)
		}
	}
	l.MaxMTU, err = h.maxMTU(a.Index)
	if err != nil {
		return l, false, fmt.Errorf("read max mtu of %s: %w", name, err)
	}
	return l, true, nil
}

// maxMTU asks RTM_GETLINK for IFLA_MAX_MTU, which vishvananda/netlink
// does not decode. 0 means the kernel did not say.
func (h *Host) maxMTU(index int) (int, error) {
	req := nl.NewNetlinkRequest(unix.RTM_GETLINK, 0)
	req.Sockets = map[int]*nl.SocketHandle{unix.NETLINK_ROUTE: h.raw}
	msg := nl.NewIfInfomsg(unix.AF_UNSPEC)
	msg.Index = int32(index)
	req.AddData(msg)
	msgs, err := req.Execute(unix.NETLINK_ROUTE, unix.RTM_NEWLINK)
	if err != nil {
		return 0, err
	}
	for _, m := range msgs {
		if len(m) < unix.SizeofIfInfomsg {
			continue
		}
		attrs, err := nl.ParseRouteAttr(m[unix.SizeofIfInfomsg:])
		if err != nil {
			return 0, err
		}
		for _, at := range attrs {
			if at.Attr.Type == unix.IFLA_MAX_MTU && len(at.Value) >= 4 {
				return int(native.Uint32(at.Value)), nil
			}
		}
	}
	return 0, nil
}

var native = nl.NativeEndian()

func (h *Host) readRoutes(live *LiveState, tr TableRange) error {
	filter := &netlink.Route{Table: unix.RT_TABLE_UNSPEC}
	for try := 0; ; try++ {
		var routes []Route
		var indexes []int
		err := h.h.RouteListFilteredIter(netlink.FAMILY_ALL, filter, netlink.RT_FILTER_TABLE, func(r netlink.Route) bool {
			if !tr.HasTable(r.Table) {
				return true
			}
			dst, ok := prefixOf(r.Dst)
			if !ok {
				dst = netip.PrefixFrom(netip.IPv4Unspecified(), 0)
				if r.Family == unix.AF_INET6 {
					dst = netip.PrefixFrom(netip.IPv6Unspecified(), 0)
				}
			}
			routes = append(routes, Route{Table: r.Table, Dst: dst, Protocol: int(r.Protocol), Gw: addrOf(r.Gw), Src: addrOf(r.Src)})
			indexes = append(indexes, r.LinkIndex)
			return true
		})
		if err != nil {
			if !errors.Is(err, netlink.ErrDumpInterrupted) || try == dumpRetries {
				return fmt.Errorf("list routes: %w", err)
			}
			continue
		}
		// Name the devices only after the dump: a request on the handle's
		// socket in the middle of a dump would read the dump's replies.
		names := map[int]string{}
		for _, l := range live.Links {
			names[l.Index] = l.Name
		}
		for i, idx := range indexes {
			name, ok := names[idx]
			if !ok && idx > 0 {
				if l, err := h.h.LinkByIndex(idx); err == nil {
					name = l.Attrs().Name
				}
				names[idx] = name
			}
			routes[i].Dev = name
		}
		live.Routes = routes
		return nil
	}
}

func (h *Host) readRules(live *LiveState) error {
	for try := 0; ; try++ {
		rules, err := h.h.RuleList(netlink.FAMILY_ALL)
		if err == nil {
			live.Rules = live.Rules[:0]
			for _, r := range rules {
				live.Rules = append(live.Rules, ruleOf(r))
			}
			return nil
		}
		if !errors.Is(err, netlink.ErrDumpInterrupted) || try == dumpRetries {
			return fmt.Errorf("list rules: %w", err)
		}
	}
}

func ruleOf(r netlink.Rule) Rule {
	out := Rule{Priority: r.Priority, Table: r.Table, Protocol: int(r.Protocol)}
	if p, ok := prefixOf(r.Src); ok {
		out.Src = p
	}
	out.Other = r.Dst != nil || r.IifName != "" || r.OifName != "" || r.Mark != 0 || r.Mask != nil ||
		r.Tos != 0 || r.Goto >= 0 || r.Invert || r.Dport != nil || r.Sport != nil || r.IPProto != 0 ||
		r.UIDRange != nil || (r.Type != 0 && r.Type != unix.RTN_UNICAST)
	return out
}

func prefixOf(n *net.IPNet) (netip.Prefix, bool) {
	if n == nil {
		return netip.Prefix{}, false
	}
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(a.Unmap(), ones), true
}

func addrOf(ip net.IP) netip.Addr {
	if ip == nil {
		return netip.Addr{}
	}
	a, ok := netip.AddrFromSlice(ip)
	if !ok {
		return netip.Addr{}
	}
	return a.Unmap()
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: net.IP(p.Addr().AsSlice()), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

func family(a netip.Addr) int {
	if a.Is4() {
		return unix.AF_INET
	}
	return unix.AF_INET6
}

// Apply makes one change. Links are looked up by name each time, so a
// change never acts on a stale index.
func (h *Host) Apply(c Change) error {
	switch c.Kind {
	case SysctlSet:
		return h.Do(func() error {
			return os.WriteFile(filepath.Join(h.procSys, c.Sysctl), []byte(c.Value), 0o644)
		})
	case RuleAdd:
		err := h.h.RuleAdd(nlRule(c.Rule))
		if errors.Is(err, unix.EEXIST) {
			return nil
		}
		return err
	case RuleDel:
		return h.h.RuleDel(nlRule(c.Rule))
	}
	link, err := h.h.LinkByName(c.Netdev)
	if err != nil {
		return fmt.Errorf("find %s: %w", c.Netdev, err)
	}
	switch c.Kind {
	case LinkUp:
		return h.h.LinkSetUp(link)
	case LinkMTU:
		return h.h.LinkSetMTU(link, c.MTU)
	case AddrAdd:
		a := &netlink.Addr{IPNet: ipNet(c.Addr)}
		if c.Addr.Addr().Is6() {
			a.Flags = unix.IFA_F_NODAD
		}
		err := h.h.AddrAdd(link, a)
		if errors.Is(err, unix.EEXIST) {
			return nil
		}
		return err
	case AddrDel:
		return h.h.AddrDel(link, &netlink.Addr{IPNet: ipNet(c.Addr)})
	case RouteSet:
		return h.h.RouteReplace(nlRoute(c.Route, link.Attrs().Index))
	case RouteDel:
		return h.h.RouteDel(nlRoute(c.Route, link.Attrs().Index))
	}
	return fmt.Errorf("unknown change kind %q", c.Kind)
}

func nlRule(r Rule) *netlink.Rule {
	rule := netlink.NewRule()
	rule.Priority = r.Priority
	rule.Table = r.Table
	rule.Src = ipNet(r.Src)
	rule.Family = family(r.Src.Addr())
	rule.Protocol = uint8(r.Protocol)
	return rule
}

func nlRoute(r Route, linkIndex int) *netlink.Route {
	rt := &netlink.Route{
		LinkIndex: linkIndex,
		Dst:       ipNet(r.Dst),
		Table:     r.Table,
		Protocol:  netlink.RouteProtocol(r.Protocol),
		Family:    family(r.Dst.Addr()),
	}
	if r.Gw.IsValid() {
		rt.Gw = net.IP(r.Gw.AsSlice())
	} else {
		rt.Scope = netlink.SCOPE_LINK
	}
	if r.Src.IsValid() {
		rt.Src = net.IP(r.Src.AsSlice())
	}
	return rt
}
