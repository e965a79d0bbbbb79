// Package nettest builds throwaway network namespaces for the privileged
// test tier: a host namespace with veth "rails" whose peers sit in a leaf
// namespace, and a watcher that counts rtnetlink change events. Every test
// makes its own namespaces and removes them; nothing touches the caller's
// namespace. Tests using it must call RequireRoot first.
package nettest

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// RequireTools skips the test, with a message naming them, when a
// command it runs is not installed (ping comes with iputils-ping).
func RequireTools(t testing.TB, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s, which is not installed (.ci/run installs it)", tool)
		}
	}
}

// RequireRoot skips the test, with a message, unless it runs as root.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("privileged netns tier: needs root (run as root or with go test -exec sudo)")
	}
}

// NS is a named network namespace that exists for one test.
type NS struct {
	Name   string
	Handle netns.NsHandle
	NL     *netlink.Handle
}

var nsCounter atomic.Int64

// NewNS creates a named namespace ("ra-<pid>-<n>-<tag>"), brings its
// loopback up and removes it when the test ends.
func NewNS(t testing.TB, tag string) *NS {
	t.Helper()
	name := fmt.Sprintf("ra%d-%d-%s", os.Getpid()%100000, nsCounter.Add(1), tag)
	var h netns.NsHandle
	err := func() error {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		orig, err := netns.Get()
		if err != nil {
			return err
		}
		defer orig.Close()
		h, err = netns.NewNamed(name)
		if err != nil {
			return err
		}
		return netns.Set(orig)
	}()
	if err != nil {
		t.Fatalf("create netns %s: %v", name, err)
	}
	handle, err := netlink.NewHandleAt(h)
	if err != nil {
		t.Fatalf("netlink in %s: %v", name, err)
	}
	ns := &NS{Name: name, Handle: h, NL: handle}
	t.Cleanup(func() {
		handle.Close()
		h.Close()
		_ = netns.DeleteNamed(name)
	})
	lo, err := handle.LinkByName("lo")
	if err == nil {
		err = handle.LinkSetUp(lo)
	}
	if err != nil {
		t.Fatalf("lo up in %s: %v", name, err)
	}
	return ns
}

// Exec runs a command inside the namespace (ip netns exec) and returns its
// combined output.
func (ns *NS) Exec(args ...string) (string, error) {
	out, err := exec.Command("ip", append([]string{"netns", "exec", ns.Name}, args...)...).CombinedOutput()
	return string(out), err
}

// MustExec runs a command in the namespace and fails the test on error.
func (ns *NS) MustExec(t testing.TB, args ...string) string {
	t.Helper()
	out, err := ns.Exec(args...)
	if err != nil {
		t.Fatalf("%s: %s: %v\n%s", ns.Name, strings.Join(args, " "), err, out)
	}
	return out
}

// Veth creates a veth pair with hostName in host and leafName in leaf.
func Veth(t testing.TB, host *NS, hostName string, leaf *NS, leafName string) {
	t.Helper()
	v := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: hostName, MTU: 1500}, PeerName: leafName, PeerNamespace: netlink.NsFd(leaf.Handle)}
	if err := host.NL.LinkAdd(v); err != nil {
		t.Fatalf("veth %s/%s: %v", hostName, leafName, err)
	}
}

// Lab is a host namespace with Rails veth rails (rail<n>) whose peers
// (leaf<n>) sit in a leaf namespace. The leaf holds the leaf side of each
// rail's /31 (10.0.<n>.0) and /127 (fc00:0:0:<n+1>::), and a remote address
// per rail on its loopback (10.200.<n>.1, fc00:200::<n+1>) that the host can
// reach only through that rail's leaf.
type Lab struct {
	Host, Leaf *NS
	Rails      int
}

// HostIPv4 is rail n's host address.
func HostIPv4(n int) string { return fmt.Sprintf("10.0.%d.1/31", n) }

// HostIPv6 is rail n's host address.
func HostIPv6(n int) string { return fmt.Sprintf("fc00:0:0:%x::1/127", n+1) }

// RemoteIPv4 is an address behind rail n's leaf.
func RemoteIPv4(n int) string { return fmt.Sprintf("10.200.%d.1", n) }

// RemoteIPv6 is an address behind rail n's leaf.
func RemoteIPv6(n int) string { return fmt.Sprintf("fc00:200::%x", n+1) }

// NewLab builds the namespaces and veths; the host side is left clean
// (down, MTU 1500, no addresses).
func NewLab(t testing.TB, rails int) *Lab {
	t.Helper()
	lab := &Lab{Host: NewNS(t, "host"), Leaf: NewNS(t, "leaf"), Rails: rails}
	leafLo, err := lab.Leaf.NL.LinkByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	for n := 0; n < rails; n++ {
		Veth(t, lab.Host, fmt.Sprintf("rail%d", n), lab.Leaf, fmt.Sprintf("leaf%d", n))
		leaf, err := lab.Leaf.NL.LinkByName(fmt.Sprintf("leaf%d", n))
		if err != nil {
			t.Fatal(err)
		}
		mustNL(t, lab.Leaf.NL.LinkSetMTU(leaf, 9000))
		mustNL(t, lab.Leaf.NL.AddrAdd(leaf, addr(t, fmt.Sprintf("10.0.%d.0/31", n), false)))
		mustNL(t, lab.Leaf.NL.AddrAdd(leaf, addr(t, fmt.Sprintf("fc00:0:0:%x::/127", n+1), true)))
		mustNL(t, lab.Leaf.NL.LinkSetUp(leaf))
		mustNL(t, lab.Leaf.NL.AddrAdd(leafLo, addr(t, RemoteIPv4(n)+"/32", false)))
		mustNL(t, lab.Leaf.NL.AddrAdd(leafLo, addr(t, RemoteIPv6(n)+"/128", true)))
	}
	return lab
}

func mustNL(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func addr(t testing.TB, cidr string, nodad bool) *netlink.Addr {
	t.Helper()
	a, err := netlink.ParseAddr(cidr)
	if err != nil {
		t.Fatal(err)
	}
	if nodad {
		a.Flags = unix.IFA_F_NODAD
	}
	return a
}

// AddForeignState puts state the agent must never touch in the host
// namespace: an address on rail0 outside its /31, a veth interface with
// an address, a route in the main table, and a rule with a table of its own.
func (lab *Lab) AddForeignState(t testing.TB) {
	t.Helper()
	h := lab.Host
	h.MustExec(t, "ip", "address", "add", "192.168.77.1/24", "dev", "rail0")
	h.MustExec(t, "ip", "link", "add", "mgmt0", "type", "veth", "peer", "name", "mgmt0p")
	h.MustExec(t, "ip", "link", "set", "mgmt0", "up")
	h.MustExec(t, "ip", "link", "set", "mgmt0p", "up")
	h.MustExec(t, "ip", "address", "add", "172.16.5.5/24", "dev", "mgmt0")
	h.MustExec(t, "ip", "route", "add", "10.99.0.0/16", "via", "172.16.5.1", "dev", "mgmt0")
	h.MustExec(t, "ip", "rule", "add", "from", "172.16.5.5", "lookup", "77", "priority", "500")
	h.MustExec(t, "ip", "route", "add", "default", "via", "172.16.5.1", "dev", "mgmt0", "table", "77")
}

// ForeignState dumps the foreign objects AddForeignState made, to compare
// before and after.
func (lab *Lab) ForeignState(t testing.TB) string {
	t.Helper()
	h := lab.Host
	return h.MustExec(t, "ip", "-o", "address", "show", "to", "192.168.77.0/24") +
		h.MustExec(t, "ip", "-o", "address", "show", "dev", "mgmt0", "scope", "global") +
		h.MustExec(t, "ip", "route", "show", "10.99.0.0/16") +
		h.MustExec(t, "ip", "rule", "show", "priority", "500") +
		h.MustExec(t, "ip", "route", "show", "table", "77")
}

// Settle waits until no IPv6 address in the namespace is tentative: the
// kernel finishes duplicate address detection of link-local addresses a
// second or two after a link comes up, and announces it with address and
// route events that are not the agent's.
//
// It also waits (up to 3 s) for links that are up but have no carrier yet:
// the kernel's linkwatch reports a veth's carrier up to a second after the
// link is set up, and the link-local address and route follow it.
func (ns *NS) Settle(t testing.TB) {
	t.Helper()
	start := time.Now()
	deadline := start.Add(10 * time.Second)
	for time.Now().Before(deadline) {
		out, err := ns.Exec("ip", "-6", "-o", "address", "show", "tentative")
		settled := err == nil && strings.TrimSpace(out) == ""
		if links, err := ns.Exec("ip", "-o", "link", "show", "up"); settled && err == nil && time.Since(start) < 3*time.Second {
			settled = !strings.Contains(links, "NO-CARRIER")
		}
		if settled {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s: IPv6 addresses still tentative after 10s", ns.Name)
}

// Watcher counts rtnetlink change notifications in a namespace: links,
// addresses, routes, rules and netconf (sysctl) changes of both families.
type Watcher struct {
	sock     *nl.NetlinkSocket
	mu       sync.Mutex
	count    int
	kinds    map[uint16]int
	stop     chan struct{}
	done     chan struct{}
	stopOnce sync.Once
}

// Watch starts counting; Stop ends it. It first lets duplicate address
// detection settle (see Settle), so what it counts is what the code under
// test did.
func Watch(t testing.TB, ns *NS) *Watcher {
	t.Helper()
	ns.Settle(t)
	sock, err := nl.SubscribeAt(ns.Handle, netns.None(), unix.NETLINK_ROUTE,
		unix.RTNLGRP_LINK, unix.RTNLGRP_IPV4_IFADDR, unix.RTNLGRP_IPV6_IFADDR,
		unix.RTNLGRP_IPV4_ROUTE, unix.RTNLGRP_IPV6_ROUTE, unix.RTNLGRP_IPV4_RULE, unix.RTNLGRP_IPV6_RULE,
		unix.RTNLGRP_IPV4_NETCONF, unix.RTNLGRP_IPV6_NETCONF)
	if err != nil {
		t.Fatalf("subscribe in %s: %v", ns.Name, err)
	}
	w := &Watcher{sock: sock, kinds: map[uint16]int{}, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		for {
			// Receive blocks in Go's poller; Stop closes the socket to end it.
			msgs, _, err := sock.Receive()
			if err != nil {
				select {
				case <-w.stop:
					return
				default:
				}
				if err == unix.EAGAIN || err == unix.EINTR {
					continue
				}
				return
			}
			w.mu.Lock()
			for _, m := range msgs {
				w.count++
				w.kinds[m.Header.Type]++
			}
			w.mu.Unlock()
		}
	}()
	t.Cleanup(w.Stop)
	return w
}

// Stop ends counting, after waiting briefly for notifications still in
// flight.
func (w *Watcher) Stop() {
	w.stopOnce.Do(func() {
		time.Sleep(100 * time.Millisecond)
		close(w.stop)
		w.sock.Close()
		<-w.done
	})
}

// Count is the number of events seen so far.
func (w *Watcher) Count() (int, map[uint16]int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	k := map[uint16]int{}
	for t, n := range w.kinds {
		k[t] = n
	}
	return w.count, k
}

// Ping checks reachability from src to dst inside ns (one echo, 1 s).
func (ns *NS) Ping(src, dst string) error {
	args := []string{"ping", "-c", "1", "-W", "1", "-I", src, dst}
	if strings.Contains(dst, ":") {
		args = append([]string{"ping", "-6"}, args[1:]...)
	}
	out, err := ns.Exec(args...)
	if err != nil {
		return fmt.Errorf("%s: %w\n%s", strings.Join(args, " "), err, out)
	}
	return nil
}

// ParseCIDR is net.ParseCIDR keeping the host address.
func ParseCIDR(s string) *net.IPNet {
	ip, n, err := net.ParseCIDR(s)
	if err != nil {
		panic(err)
	}
	n.IP = ip
	return n
}

// Snapshot dumps every address, policy rule and route (all tables, both
// families) and each link's MTU and state in the namespace, to prove a
// command changed nothing.
func (ns *NS) Snapshot(t testing.TB) string {
	t.Helper()
	ns.Settle(t)
	var b strings.Builder
	for _, args := range [][]string{
		{"ip", "-o", "link", "show"},
		{"ip", "-o", "address", "show"},
		{"ip", "-4", "rule", "show"},
		{"ip", "-6", "rule", "show"},
		{"ip", "-4", "route", "show", "table", "all"},
		{"ip", "-6", "route", "show", "table", "all"},
	} {
		b.WriteString(ns.MustExec(t, args...))
	}
	// Address lifetimes count down; they are not state.
	var out []string
	for _, line := range strings.Split(b.String(), "\n") {
		if i := strings.Index(line, "valid_lft"); i >= 0 {
			line = line[:i]
		}
		out = append(out, line)
	}
	return strings.Join(out, "\n")
}
