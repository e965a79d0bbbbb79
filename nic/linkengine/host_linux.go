package linkengine

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"

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
	// work runs functions on an OS thread that lives in ns, for what
	// follows the thread's namespace (/proc/sys/net); nil in the caller's
	// own namespace.
	work chan func()
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

// SetSysctlRoot makes the host read and write the rails' sysctls below dir
// instead of /proc/sys: a container whose own /proc/sys is read-only
// mounts the host's /proc/sys/net elsewhere (the files follow the netns of
// the thread that opens them, so the mount serves the rails' namespace).
func (h *Host) SetSysctlRoot(dir string) {
	if dir != "" {
		h.procSys = dir
	}
}

// OpenHost opens the namespace ns (netns.None() for the caller's own).
// The caller keeps ownership of ns. In the caller's own namespace nothing
// calls setns(2), so CAP_NET_ADMIN is the only privilege the link engine
// needs; entering another namespace needs CAP_SYS_ADMIN as well.
func OpenHost(ns netns.NsHandle) (*Host, error) {
	host := &Host{ns: ns, procSys: "/proc/sys"}
	var err error
	if ns.IsOpen() {
		host.h, err = netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
	} else {
		host.h, err = netlink.NewHandle(unix.NETLINK_ROUTE)
	}
	if err != nil {
		return nil, fmt.Errorf("open netlink in netns: %w", privilegeHint(err, "CAP_SYS_ADMIN (to enter another network namespace)"))
	}
	// GetNetlinkSocketAt enters newNs only when it is open.
	sock, err := nl.GetNetlinkSocketAt(ns, netns.None(), unix.NETLINK_ROUTE)
	if err != nil {
		host.h.Close()
		return nil, fmt.Errorf("open netlink socket in netns: %w", privilegeHint(err, "CAP_SYS_ADMIN (to enter another network namespace)"))
	}
	host.raw = &nl.SocketHandle{Socket: sock}
	if ns.IsOpen() {
		if err := host.startWorker(); err != nil {
			host.Close()
			return nil, err
		}
	}
	return host, nil
}

// privilegeHint names the capability an EPERM or EACCES from the kernel
// means is missing.
func privilegeHint(err error, capability string) error {
	if errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES) {
		return fmt.Errorf("%w (roce-agent needs %s)", err, capability)
	}
	return err
}

// startWorker starts the goroutine that keeps an OS thread inside the
// namespace. The thread is never handed back to the scheduler: when the
// goroutine ends, the runtime ends the thread with it.
func (h *Host) startWorker() error {
	h.work = make(chan func())
	ready := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := netns.Set(h.ns); err != nil {
			ready <- fmt.Errorf("enter netns: %w", err)
			return
		}
		ready <- nil
		for fn := range h.work {
			fn()
		}
	}()
	return <-ready
}

// Close releases the sockets and the namespace thread.
func (h *Host) Close() {
	if h.work != nil {
		close(h.work)
		h.work = nil
	}
	h.h.Close()
	h.raw.Close()
}

// LinkExists reports whether the namespace has a netdev of that name.
func (h *Host) LinkExists(name string) bool {
	_, err := h.h.LinkByName(name)
	return err == nil
}

// LinkState is a netdev's state as netlink sees it in the namespace:
// operationally up (or up with an unknown operstate, as a veth without
// carrier detection reports), and its MTU. sysfs shows the namespace it
// was mounted in, which may not be the rails'.
func (h *Host) LinkState(name string) (LinkState, error) {
	l, err := h.h.LinkByName(name)
	if err != nil {
		return LinkState{}, fmt.Errorf("find %s: %w", name, err)
	}
	a := l.Attrs()
	return LinkState{
		Up:  a.OperState == netlink.OperUp || (a.OperState == netlink.OperUnknown && a.Flags&net.FlagUp != 0),
		MTU: a.MTU,
	}, nil
}

// Do runs fn on a thread inside the namespace, for what follows the
// thread's namespace (/proc/sys/net). In the caller's own namespace it just
// runs fn.
func (h *Host) Do(fn func() error) error {
	if h.work == nil {
		return fn()
	}
	errc := make(chan error, 1)
	h.work <- func() { errc <- fn() }
	return <-errc
}

// ReadLive reads what the kernel has for the given rails: their links,
// addresses and sysctls, the routes in the agent's table range, and every
// policy rule. Links named only in the ownership record are read too.
func (h *Host) ReadLive(desired []RailLink, owned Owned, tr TableRange) (LiveState, error) {
	live := LiveState{Links: map[string]Link{}, Sysctls: map[string]string{}, AddrProto: kernelMarksAddresses()}
	names := map[string]bool{}
	for _, r := range desired {
		names[r.Netdev] = true
	}
	for nd := range owned.Addrs {
		names[nd] = true
	}
	if err := h.readLinks(&live, names); err != nil {
		return live, err
	}
	if err := h.readRoutes(&live, tr); err != nil {
		return live, err
	}
	if err := h.readRules(&live); err != nil {
		return live, err
	}
	err := h.Do(func() error {
		buf := make([]byte, 128)
		for _, r := range desired {
			if _, ok := live.Links[r.Netdev]; !ok {
				continue
			}
			for key := range r.Sysctls() {
				v, err := readSysctl(filepath.Join(h.procSys, key), buf)
				if err != nil {
					v = ""
				}
				live.Sysctls[key] = v
			}
		}
		return nil
	})
	return live, err
}

// readSysctl reads a /proc/sys file with bare system calls: os.ReadFile's
// stat and growth logic cost more than the read itself.
func readSysctl(path string, buf []byte) (string, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", &os.PathError{Op: "open", Path: path, Err: err}
	}
	defer unix.Close(fd)
	n, err := unix.Read(fd, buf)
	if err != nil {
		return "", &os.PathError{Op: "read", Path: path, Err: err}
	}
	return strings.TrimSpace(string(buf[:n])), nil
}

// writeSysctl writes a /proc/sys file.
func writeSysctl(path, value string) error {
	fd, err := unix.Open(path, unix.O_WRONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return &os.PathError{Op: "open", Path: path, Err: err}
	}
	defer unix.Close(fd)
	if _, err := unix.Write(fd, []byte(value)); err != nil {
		return &os.PathError{Op: "write", Path: path, Err: err}
	}
	return nil
}

// readLinks reads, with one RTM_GETLINK dump (decoding IFLA_MAX_MTU, which
// vishvananda/netlink does not) and one RTM_GETADDR dump (decoding
// IFA_PROTO, likewise), the named links and every link holding an address
// marked with the agent's protocol. Interrupted dumps are repeated.
func (h *Host) readLinks(live *LiveState, names map[string]bool) error {
	all := map[int]Link{}
	msgs, err := h.dump(unix.RTM_GETLINK, unix.RTM_NEWLINK, nl.NewIfInfomsg(unix.AF_UNSPEC))
	if err != nil {
		return fmt.Errorf("list links: %w", err)
	}
	for _, m := range msgs {
		if l, ok := parseLink(m); ok {
			all[l.Index] = l
		}
	}
	msgs, err = h.dump(unix.RTM_GETADDR, unix.RTM_NEWADDR, nl.NewIfAddrmsg(unix.AF_UNSPEC))
	if err != nil {
		return fmt.Errorf("list addresses: %w", err)
	}
	for _, m := range msgs {
		index, p, proto, ok := parseAddr(m)
		if !ok {
			continue
		}
		l, ok := all[index]
		if !ok {
			continue
		}
		l.Addrs = append(l.Addrs, p)
		if proto == AddrProtocol {
			l.MarkedAddrs = append(l.MarkedAddrs, p)
		}
		all[index] = l
	}
	for _, l := range all {
		if names[l.Name] || len(l.MarkedAddrs) > 0 {
			live.Links[l.Name] = l
		}
	}
	return nil
}

// retryDump runs a netlink dump, repeating it (at most dumpRetries times)
// while the kernel says a concurrent change interrupted it
// (NLM_F_DUMP_INTR). Every dump of the link engine goes through it.
func retryDump(dump func() error) error {
	for try := 0; ; try++ {
		err := dump()
		if err == nil || !errors.Is(err, netlink.ErrDumpInterrupted) || try >= dumpRetries {
			return err
		}
	}
}

// dump runs one rtnetlink dump on the raw socket.
func (h *Host) dump(req, reply int, msg nl.NetlinkRequestData) ([][]byte, error) {
	var msgs [][]byte
	err := retryDump(func() (err error) {
		r := nl.NewNetlinkRequest(req, unix.NLM_F_DUMP)
		r.Sockets = map[int]*nl.SocketHandle{unix.NETLINK_ROUTE: h.raw}
		r.AddData(msg)
		msgs, err = r.Execute(unix.NETLINK_ROUTE, uint16(reply))
		return err
	})
	return msgs, err
}

// kernelMarksAddresses reports a kernel that keeps IFA_PROTO on
// addresses (Linux 5.18 and later).
var kernelMarksAddresses = sync.OnceValue(func() bool {
	var u unix.Utsname
	if unix.Uname(&u) != nil {
		return false
	}
	return kernelAtLeast(unix.ByteSliceToString(u.Release[:]), 5, 18)
})

// kernelAtLeast compares a kernel release ("6.18.44-fc-v782") with
// major.minor.
func kernelAtLeast(release string, major, minor int) bool {
	var ma, mi int
	if n, _ := fmt.Sscanf(release, "%d.%d", &ma, &mi); n != 2 {
		return false
	}
	return ma > major || (ma == major && mi >= minor)
}

// ifaProto is IFA_PROTO (Linux 5.18): who added an address.
const ifaProto = 11

// parseAddr decodes one RTM_NEWADDR message: the link index, the local
// address with its prefix length, and IFA_PROTO (0 when absent).
func parseAddr(m []byte) (int, netip.Prefix, uint8, bool) {
	if len(m) < unix.SizeofIfAddrmsg {
		return 0, netip.Prefix{}, 0, false
	}
	msg := nl.DeserializeIfAddrmsg(m)
	attrs, err := nl.ParseRouteAttr(m[unix.SizeofIfAddrmsg:])
	if err != nil {
		return 0, netip.Prefix{}, 0, false
	}
	var local, address netip.Addr
	var proto uint8
	for _, a := range attrs {
		switch a.Attr.Type {
		case unix.IFA_LOCAL:
			local, _ = netip.AddrFromSlice(a.Value)
		case unix.IFA_ADDRESS:
			address, _ = netip.AddrFromSlice(a.Value)
		case ifaProto:
			if len(a.Value) >= 1 {
				proto = a.Value[0]
			}
		}
	}
	// IPv4 sends IFA_LOCAL (and IFA_ADDRESS, the peer on point-to-point
	// links); IPv6 sends IFA_ADDRESS alone.
	addr := local
	if !addr.IsValid() {
		addr = address
	}
	if !addr.IsValid() || int(msg.Prefixlen) > addr.Unmap().BitLen() {
		return 0, netip.Prefix{}, 0, false
	}
	return int(msg.Index), netip.PrefixFrom(addr.Unmap(), int(msg.Prefixlen)), proto, true
}

// parseLink decodes one RTM_NEWLINK message: index, flags, name, MTU and
// maximum MTU.
func parseLink(m []byte) (Link, bool) {
	if len(m) < unix.SizeofIfInfomsg {
		return Link{}, false
	}
	info := nl.DeserializeIfInfomsg(m)
	l := Link{Index: int(info.Index), Up: info.Flags&unix.IFF_UP != 0}
	attrs, err := nl.ParseRouteAttr(m[unix.SizeofIfInfomsg:])
	if err != nil {
		return Link{}, false
	}
	for _, a := range attrs {
		switch a.Attr.Type {
		case unix.IFLA_IFNAME:
			l.Name = strings.TrimRight(string(a.Value), "\x00")
		case unix.IFLA_MTU:
			if len(a.Value) >= 4 {
				l.MTU = int(native.Uint32(a.Value))
			}
		case unix.IFLA_MAX_MTU:
			if len(a.Value) >= 4 {
				l.MaxMTU = int(native.Uint32(a.Value))
			}
		}
	}
	return l, l.Name != ""
}

var native = nl.NativeEndian()

func (h *Host) readRoutes(live *LiveState, tr TableRange) error {
	filter := &netlink.Route{Table: unix.RT_TABLE_UNSPEC}
	var routes []Route
	var indexes []int
	err := retryDump(func() error {
		routes, indexes = routes[:0], indexes[:0]
		return h.h.RouteListFilteredIter(netlink.FAMILY_ALL, filter, netlink.RT_FILTER_TABLE, func(r netlink.Route) bool {
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
	})
	if err != nil {
		return fmt.Errorf("list routes: %w", err)
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

func (h *Host) readRules(live *LiveState) error {
	var rules []netlink.Rule
	err := retryDump(func() (err error) {
		rules, err = h.h.RuleList(netlink.FAMILY_ALL)
		return err
	})
	if err != nil {
		return fmt.Errorf("list rules: %w", err)
	}
	live.Rules = live.Rules[:0]
	for _, r := range rules {
		live.Rules = append(live.Rules, ruleOf(r))
	}
	return nil
}

func ruleOf(r netlink.Rule) Rule {
	out := Rule{Priority: r.Priority, Table: r.Table, Protocol: int(r.Protocol)}
	if p, ok := prefixOf(r.Src); ok {
		out.Src = p
	}
	var sel []string
	add := func(cond bool, format string, args ...any) {
		if cond {
			sel = append(sel, fmt.Sprintf(format, args...))
		}
	}
	add(r.Invert, "not")
	add(r.Dst != nil, "to %v", r.Dst)
	add(r.IifName != "", "iif %s", r.IifName)
	add(r.OifName != "", "oif %s", r.OifName)
	add(r.Mark != 0 || r.Mask != nil, "fwmark %#x", r.Mark)
	add(r.Tos != 0, "tos %#x", r.Tos)
	add(r.Goto >= 0, "goto %d", r.Goto)
	add(r.Dport != nil, "dport %v", r.Dport)
	add(r.Sport != nil, "sport %v", r.Sport)
	add(r.IPProto != 0, "ipproto %d", r.IPProto)
	add(r.UIDRange != nil, "uidrange %v", r.UIDRange)
	add(r.Type != 0 && r.Type != unix.RTN_UNICAST, "type %d", r.Type)
	out.Other = len(sel) > 0
	out.Selectors = strings.Join(sel, " ")
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

// Apply makes the changes in order and stops at the first that fails,
// returning how many succeeded. Consecutive sysctl writes go to the
// namespace's thread together.
func (h *Host) Apply(cs []Change) (int, error) {
	for i := 0; i < len(cs); {
		if cs[i].Kind != SysctlSet {
			if err := h.apply(cs[i]); err != nil {
				return i, err
			}
			i++
			continue
		}
		j := i
		for j < len(cs) && cs[j].Kind == SysctlSet {
			j++
		}
		done := i
		err := h.Do(func() error {
			for _, c := range cs[i:j] {
				if err := writeSysctl(filepath.Join(h.procSys, c.Sysctl), c.Value); err != nil {
					return err
				}
				done++
			}
			return nil
		})
		if err != nil {
			return done, privilegeHint(err, "CAP_NET_ADMIN")
		}
		i = j
	}
	return len(cs), nil
}

func (h *Host) apply(c Change) error {
	return privilegeHint(h.write(c), "CAP_NET_ADMIN")
}

func (h *Host) write(c Change) error {
	switch c.Kind {
	case RuleAdd:
		err := h.h.RuleAdd(nlRule(c.Rule))
		if errors.Is(err, unix.EEXIST) {
			return nil
		}
		return err
	case RuleDel:
		return h.h.RuleDel(nlRule(c.Rule))
	}
	// The plan carries the index it saw; a link renamed or recreated since
	// makes the write fail instead of landing on another device.
	var link netlink.Link = &netlink.Device{LinkAttrs: netlink.LinkAttrs{Index: c.LinkIndex, Name: c.Netdev}}
	if c.LinkIndex <= 0 {
		l, err := h.h.LinkByName(c.Netdev)
		if err != nil {
			return fmt.Errorf("find %s: %w", c.Netdev, err)
		}
		link = l
	}
	switch c.Kind {
	case LinkUp:
		return h.h.LinkSetUp(link)
	case LinkMTU:
		return h.h.LinkSetMTU(link, c.MTU)
	case AddrAdd:
		err := h.addAddr(link.Attrs().Index, c.Addr)
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

// addAddr adds a host address marked with IFA_PROTO AddrProtocol, so the
// kernel itself records that the agent owns it (kernels before 5.18 ignore
// the attribute; the ownership record covers them). IPv6 addresses skip
// duplicate address detection: the /127 peer is the leaf.
func (h *Host) addAddr(index int, p netip.Prefix) error {
	if index <= 0 {
		return fmt.Errorf("add address %s: no link index", p)
	}
	req := nl.NewNetlinkRequest(unix.RTM_NEWADDR, unix.NLM_F_CREATE|unix.NLM_F_EXCL|unix.NLM_F_ACK)
	req.Sockets = map[int]*nl.SocketHandle{unix.NETLINK_ROUTE: h.raw}
	msg := nl.NewIfAddrmsg(family(p.Addr()))
	msg.Index = uint32(index)
	msg.Prefixlen = uint8(p.Bits())
	var flags uint32
	if p.Addr().Is6() {
		flags = unix.IFA_F_NODAD
		msg.Flags = uint8(flags)
	}
	req.AddData(msg)
	raw := p.Addr().AsSlice()
	req.AddData(nl.NewRtAttr(unix.IFA_LOCAL, raw))
	req.AddData(nl.NewRtAttr(unix.IFA_ADDRESS, raw))
	if flags != 0 {
		b := make([]byte, 4)
		native.PutUint32(b, flags)
		req.AddData(nl.NewRtAttr(unix.IFA_FLAGS, b))
	}
	req.AddData(nl.NewRtAttr(ifaProto, []byte{AddrProtocol}))
	_, err := req.Execute(unix.NETLINK_ROUTE, 0)
	return err
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
