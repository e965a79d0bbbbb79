package linkengine

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/roce-agent/roce-agent/nic/nettest"
)

// evRecorder collects what a rule/netconf subscription reports.
type evRecorder struct {
	events chan evRecorded
	errs   chan error
}

type evRecorded struct {
	kind string
	at   time.Time
}

func newEvRecorder() *evRecorder {
	return &evRecorder{events: make(chan evRecorded, 4096), errs: make(chan error, 64)}
}

func (r *evRecorder) onEvent(kind string) {
	select {
	case r.events <- evRecorded{kind, time.Now()}:
	default:
		panic("event recorder full")
	}
}

func (r *evRecorder) onError(err error) {
	select {
	case r.errs <- err:
	default:
	}
}

// wait returns when the first event of kind arrives, skipping others.
func (r *evRecorder) wait(t *testing.T, kind string, within time.Duration) time.Time {
	t.Helper()
	deadline := time.After(within)
	for {
		select {
		case e := <-r.events:
			if e.kind == kind {
				return e.at
			}
		case err := <-r.errs:
			t.Fatalf("subscription error while waiting for %q: %v", kind, err)
		case <-deadline:
			t.Fatalf("no %q event within %v", kind, within)
		}
	}
}

// quiet drains events until none has arrived for the given time and
// returns what it drained.
func (r *evRecorder) quiet(idle time.Duration) []string {
	var kinds []string
	for {
		select {
		case e := <-r.events:
			kinds = append(kinds, e.kind)
		case <-time.After(idle):
			return kinds
		}
	}
}

func (r *evRecorder) noErrors(t *testing.T) {
	t.Helper()
	select {
	case err := <-r.errs:
		t.Fatalf("subscription error: %v", err)
	default:
	}
}

// evSubscribe subscribes in ns (closed: the caller's thread's own) and
// ends the subscription, waiting for its goroutines, when the test ends.
func evSubscribe(t *testing.T, ns netns.NsHandle, r *evRecorder) *eventSub {
	t.Helper()
	done := make(chan struct{})
	sub, err := subscribeRuleAndNetconf(ns, done, r.onEvent, r.onError)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		close(done)
		select {
		case <-sub.finished:
		case <-time.After(5 * time.Second):
			t.Errorf("subscription still running 5s after done")
		}
	})
	return sub
}

func evIP(t *testing.T, ns *nettest.NS, args ...string) {
	t.Helper()
	out, err := exec.Command("ip", append([]string{"-n", ns.Name}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("ip -n %s %s: %v\n%s", ns.Name, strings.Join(args, " "), err, out)
	}
}

// TestRuleEvents adds and deletes an IPv4 and an IPv6 policy rule in a
// fresh namespace with ip(8) and expects a "rule" event for each change,
// then measures the delay from the deletion to the event, with ip(8) and
// with a direct netlink request.
func TestRuleEvents(t *testing.T) {
	nettest.RequireRoot(t)
	ns := nettest.NewNS(t, "rulev")
	r := newEvRecorder()
	done := make(chan struct{})
	defer close(done)
	if err := SubscribeRuleAndNetconfEvents(ns.Handle, done, r.onEvent, r.onError); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		family []string
		from   string
		table  string
		nlRule func() *netlink.Rule
	}{
		{"ipv4", []string{"-4"}, "10.1.2.3", "1005", func() *netlink.Rule {
			rule := netlink.NewRule()
			rule.Src = &net.IPNet{IP: net.ParseIP("10.1.2.4").To4(), Mask: net.CIDRMask(32, 32)}
			rule.Family = unix.AF_INET
			return rule
		}},
		{"ipv6", []string{"-6"}, "fc00::1:2:3", "1006", func() *netlink.Rule {
			rule := netlink.NewRule()
			rule.Src = &net.IPNet{IP: net.ParseIP("fc00::1:2:4"), Mask: net.CIDRMask(128, 128)}
			rule.Family = unix.AF_INET6
			return rule
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r.quiet(50 * time.Millisecond)
			with := func(verb string) []string {
				return append(slices.Clone(tc.family), "rule", verb, "from", tc.from, "lookup", tc.table, "priority", tc.table, "protocol", "171")
			}
			evIP(t, ns, with("add")...)
			r.wait(t, EventRule, 2*time.Second)
			start := time.Now()
			evIP(t, ns, with("del")...)
			returned := time.Now()
			at := r.wait(t, EventRule, 2*time.Second)
			t.Logf("ip rule del -> rule event: %v from the start of ip(8), ip(8) itself took %v", at.Sub(start), returned.Sub(start))

			// Direct netlink requests, no process start: the kernel's own delay.
			table, _ := strconv.Atoi(tc.table)
			var lat []time.Duration
			for i := 0; i < 20; i++ {
				nlr := tc.nlRule()
				nlr.Table, nlr.Priority, nlr.Protocol = table+1, table+1, 171
				if err := ns.NL.RuleAdd(nlr); err != nil {
					t.Fatal(err)
				}
				r.wait(t, EventRule, 2*time.Second)
				start := time.Now()
				if err := ns.NL.RuleDel(nlr); err != nil {
					t.Fatal(err)
				}
				lat = append(lat, r.wait(t, EventRule, 2*time.Second).Sub(start))
			}
			slices.Sort(lat)
			t.Logf("netlink RuleDel -> rule event over %d deletions: min %v, median %v, max %v", len(lat), lat[0], lat[len(lat)/2], lat[len(lat)-1])
			r.noErrors(t)
		})
	}
}

// evVeth makes a veth pair in ns and waits for the netconf events
// that announce its two new interfaces to pass.
func evVeth(t *testing.T, ns *nettest.NS, r *evRecorder, name string) {
	t.Helper()
	evIP(t, ns, "link", "add", name, "type", "veth", "peer", "name", name+"p")
	r.wait(t, EventNetconf, 2*time.Second) // a new device gets its netconf
	r.quiet(200 * time.Millisecond)
}

func evSysctl(t *testing.T, ns *nettest.NS, key string) int {
	t.Helper()
	v, err := strconv.Atoi(strings.TrimSpace(ns.MustExec(t, "sysctl", "-n", key)))
	if err != nil {
		t.Fatalf("%s: %v", key, err)
	}
	return v
}

// TestNetconfEvents changes rp_filter of an interface in a fresh namespace
// and expects a "netconf" event; then, for a list of per-interface
// sysctls, records which ones the kernel announces at all.
func TestNetconfEvents(t *testing.T) {
	nettest.RequireRoot(t)
	ns := nettest.NewNS(t, "netconf")
	r := newEvRecorder()
	evSubscribe(t, ns.Handle, r)
	evVeth(t, ns, r, "nc0")

	key := "net.ipv4.conf.nc0.rp_filter"
	to := 1
	if evSysctl(t, ns, key) == 1 {
		to = 2
	}
	start := time.Now()
	ns.MustExec(t, "sysctl", "-qw", fmt.Sprintf("%s=%d", key, to))
	at := r.wait(t, EventNetconf, 2*time.Second)
	t.Logf("sysctl -w %s=%d -> netconf event: %v from the start of sysctl(8)", key, to, at.Sub(start))
	if got := r.quiet(200 * time.Millisecond); len(got) != 0 {
		t.Errorf("more events after one rp_filter change: %v", got)
	}

	// Writing the value it already has announces nothing.
	ns.MustExec(t, "sysctl", "-qw", fmt.Sprintf("%s=%d", key, to))
	if got := r.quiet(150 * time.Millisecond); len(got) != 0 {
		t.Errorf("events after rewriting rp_filter with its own value: %v", got)
	}

	// Deleting the interface removes its netconf.
	evIP(t, ns, "link", "del", "nc0")
	r.wait(t, EventNetconf, 2*time.Second)
	r.quiet(200 * time.Millisecond)
	r.noErrors(t)
}

// TestNetconfEventsWhichSysctls changes, one at a time, per-interface
// sysctls the agent may care about and reports which ones the kernel
// announces with RTM_NEWNETCONF. Those that must be announced are
// asserted; for the others (whose drift only the periodic resync can
// catch) the test only logs what the kernel did, so that a kernel that
// starts announcing them does not fail it.
func TestNetconfEventsWhichSysctls(t *testing.T) {
	nettest.RequireRoot(t)
	ns := nettest.NewNS(t, "ncwhich")
	r := newEvRecorder()
	evSubscribe(t, ns.Handle, r)
	evVeth(t, ns, r, "nw0")

	for _, tc := range []struct {
		key      string
		announce bool // the kernel must announce a change
	}{
		{"net.ipv4.conf.nw0.rp_filter", true},
		{"net.ipv4.conf.nw0.forwarding", true},
		{"net.ipv4.conf.nw0.proxy_arp", true},
		{"net.ipv4.conf.nw0.ignore_routes_with_linkdown", true},
		{"net.ipv6.conf.nw0.forwarding", true},
		{"net.ipv6.conf.nw0.proxy_ndp", true},
		{"net.ipv4.conf.all.rp_filter", true},
		{"net.ipv4.conf.default.rp_filter", true},
		{"net.ipv4.conf.nw0.arp_ignore", false},
		{"net.ipv4.conf.nw0.arp_announce", false},
		{"net.ipv4.conf.nw0.accept_local", false},
		{"net.ipv6.conf.nw0.accept_ra", false},
		{"net.ipv6.conf.nw0.keep_addr_on_down", false},
	} {
		from := evSysctl(t, ns, tc.key)
		to := 1
		if from == 1 {
			to = 0
			if strings.HasSuffix(tc.key, "rp_filter") {
				to = 2
			}
		}
		ns.MustExec(t, "sysctl", "-qw", fmt.Sprintf("%s=%d", tc.key, to))
		got := r.quiet(150 * time.Millisecond)
		announced := slices.Contains(got, EventNetconf)
		t.Logf("%-45s %d -> %d: netconf event %v", tc.key, from, to, announced)
		if tc.announce && !announced {
			t.Errorf("%s %d -> %d: no netconf event (got %v)", tc.key, from, to, got)
		}
		ns.MustExec(t, "sysctl", "-qw", fmt.Sprintf("%s=%d", tc.key, from))
		r.quiet(150 * time.Millisecond)
	}
	r.noErrors(t)
}

// evSocketInode is the "socket:[N]" target of one of this process's fds.
func evSocketInode(t *testing.T, fd int) string {
	t.Helper()
	target, err := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", fd))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(target, "socket:[") {
		t.Fatalf("fd %d is %q, not a socket", fd, target)
	}
	return target
}

// evFDOpen says whether any fd of this process still refers to target.
func evFDOpen(t *testing.T, target string) bool {
	t.Helper()
	fds, err := filepath.Glob("/proc/self/fd/*")
	if err != nil {
		t.Fatal(err)
	}
	for _, fd := range fds {
		if link, err := os.Readlink(fd); err == nil && link == target {
			return true
		}
	}
	return false
}

// evGoroutines counts goroutines running this file's code.
func evGoroutines() int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	count := 0
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "linkengine.subscribeRuleAndNetconf") || strings.Contains(g, "linkengine.receiveRuleAndNetconf") {
			count++
		}
	}
	return count
}

// TestEventSubscriptionCloses closes done on a subscription that never
// received anything and on one that is receiving a stream of events, and
// checks that both goroutines end and the socket is closed promptly.
func TestEventSubscriptionCloses(t *testing.T) {
	nettest.RequireRoot(t)
	ns := nettest.NewNS(t, "evclose")
	base := evGoroutines()
	for _, busy := range []bool{false, true} {
		t.Run(fmt.Sprintf("busy=%v", busy), func(t *testing.T) {
			r := newEvRecorder()
			done := make(chan struct{})
			sub, err := subscribeRuleAndNetconf(ns.Handle, done, r.onEvent, r.onError)
			if err != nil {
				t.Fatal(err)
			}
			inode := evSocketInode(t, sub.sock.GetFd())
			if got := evGoroutines(); got != base+2 {
				t.Errorf("%d subscription goroutines running, want %d", got, base+2)
			}
			stopSpam := make(chan struct{})
			spamDone := make(chan struct{})
			if busy {
				go func() {
					defer close(spamDone)
					rule := netlink.NewRule()
					rule.Src = &net.IPNet{IP: net.ParseIP("10.9.9.9").To4(), Mask: net.CIDRMask(32, 32)}
					rule.Table, rule.Priority = 1100, 1100
					for {
						select {
						case <-stopSpam:
							return
						default:
						}
						_ = ns.NL.RuleAdd(rule)
						_ = ns.NL.RuleDel(rule)
					}
				}()
				r.wait(t, EventRule, 2*time.Second)
			} else {
				close(spamDone)
				time.Sleep(100 * time.Millisecond) // let Receive block
			}
			start := time.Now()
			close(done)
			select {
			case <-sub.finished:
			case <-time.After(2 * time.Second):
				t.Fatal("subscription still running 2s after done")
			}
			elapsed := time.Since(start)
			close(stopSpam)
			<-spamDone
			t.Logf("closing done ended the subscription in %v", elapsed)
			deadline := time.Now().Add(2 * time.Second)
			for evFDOpen(t, inode) || evGoroutines() != base {
				if time.Now().After(deadline) {
					t.Fatalf("after done: socket %s open %v, %d subscription goroutines (want %d)",
						inode, evFDOpen(t, inode), evGoroutines(), base)
				}
				time.Sleep(time.Millisecond)
			}
			r.noErrors(t)
		})
	}
}

// evDropSysAdmin removes CAP_SYS_ADMIN from the effective set of the calling
// thread, which must be locked; the returned function puts it back.
func evDropSysAdmin() (restore func() error, err error) {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return nil, fmt.Errorf("capget: %w", err)
	}
	saved := data
	data[unix.CAP_SYS_ADMIN/32].Effective &^= 1 << (unix.CAP_SYS_ADMIN % 32)
	if err := unix.Capset(&hdr, &data[0]); err != nil {
		return nil, fmt.Errorf("capset: %w", err)
	}
	return func() error { return unix.Capset(&hdr, &saved[0]) }, nil
}

// TestEventSubscribeOwnNamespace subscribes with netns.None() from a
// thread that sits in a fresh namespace and has no CAP_SYS_ADMIN, so any
// setns would fail: the subscription must succeed and see that
// namespace's events, while one with an open handle fails there.
func TestEventSubscribeOwnNamespace(t *testing.T) {
	nettest.RequireRoot(t)
	ns := nettest.NewNS(t, "evown")
	r := newEvRecorder()
	done := make(chan struct{})
	type result struct {
		sub            *eventSub
		err, openErr   error
		threadOK       bool
		threadSetupErr error
	}
	resc := make(chan result)
	go func() {
		var res result
		runtime.LockOSThread()
		defer func() {
			if res.threadOK {
				runtime.UnlockOSThread()
			} // else the thread's state is unknown: let it die with the goroutine
			resc <- res
		}()
		orig, err := netns.Get()
		if err != nil {
			res.threadSetupErr = err
			return
		}
		defer orig.Close()
		if err := netns.Set(ns.Handle); err != nil {
			res.threadSetupErr = err
			res.threadOK = netns.Set(orig) == nil
			return
		}
		restore, err := evDropSysAdmin()
		if err == nil {
			res.sub, res.err = subscribeRuleAndNetconf(netns.None(), done, r.onEvent, r.onError)
			var sub *eventSub
			sub, res.openErr = subscribeRuleAndNetconf(ns.Handle, done, r.onEvent, r.onError)
			if res.openErr == nil {
				res.openErr = fmt.Errorf("subscribing with an open handle worked without CAP_SYS_ADMIN (fd %d)", sub.sock.GetFd())
			} else if !strings.Contains(res.openErr.Error(), "operation not permitted") {
				res.openErr = fmt.Errorf("subscribing with an open handle failed, but not with EPERM: %w", res.openErr)
			} else {
				res.openErr = nil
			}
			err = restore()
		}
		res.threadSetupErr = err
		res.threadOK = err == nil && netns.Set(orig) == nil
	}()
	res := <-resc
	if res.sub != nil {
		t.Cleanup(func() {
			close(done)
			<-res.sub.finished
		})
	} else {
		close(done)
	}
	if res.threadSetupErr != nil {
		t.Fatalf("thread setup: %v", res.threadSetupErr)
	}
	if res.err != nil {
		t.Fatalf("subscribe with netns.None() and no CAP_SYS_ADMIN: %v", res.err)
	}
	if res.openErr != nil {
		t.Error(res.openErr)
	}
	if !res.threadOK {
		t.Error("could not restore the test thread")
	}

	// The socket belongs to the namespace the thread was in.
	evIP(t, ns, "rule", "add", "from", "10.1.2.3", "lookup", "1005", "priority", "1005", "protocol", "171")
	r.wait(t, EventRule, 2*time.Second)
	evIP(t, ns, "rule", "del", "from", "10.1.2.3", "lookup", "1005", "priority", "1005", "protocol", "171")
	r.wait(t, EventRule, 2*time.Second)
	r.noErrors(t)
}

// TestEventOverrun overflows the socket's receive buffer while onEvent is
// stuck and expects an "overrun" event, after which the subscription
// still delivers rule events.
func TestEventOverrun(t *testing.T) {
	nettest.RequireRoot(t)
	ns := nettest.NewNS(t, "evovr")
	gate := make(chan struct{})
	r := newEvRecorder()
	stuck := func(kind string) {
		<-gate
		r.onEvent(kind)
	}
	done := make(chan struct{})
	sub, err := subscribeRuleAndNetconf(ns.Handle, done, stuck, r.onError)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		close(done)
		<-sub.finished
	})
	// The kernel rounds this up to its minimum, a few KiB.
	if err := unix.SetsockoptInt(sub.sock.GetFd(), unix.SOL_SOCKET, unix.SO_RCVBUF, 1); err != nil {
		t.Fatal(err)
	}
	const n = 200
	for i := 0; i < n; i++ {
		rule := netlink.NewRule()
		rule.Src = &net.IPNet{IP: net.IPv4(10, 8, byte(i>>8), byte(i)).To4(), Mask: net.CIDRMask(32, 32)}
		rule.Table, rule.Priority = 1200+i, 1200+i
		if err := ns.NL.RuleAdd(rule); err != nil {
			t.Fatal(err)
		}
	}
	close(gate)
	got := r.quiet(150 * time.Millisecond)
	overruns, rules := 0, 0
	for _, kind := range got {
		switch kind {
		case EventOverrun:
			overruns++
		case EventRule:
			rules++
		}
	}
	t.Logf("%d rule adds while onEvent was stuck: %d rule events kept, %d overrun events", n, rules, overruns)
	if overruns == 0 || rules >= n {
		t.Fatalf("no overrun reported: %d rule events, %d overruns", rules, overruns)
	}

	evIP(t, ns, "rule", "add", "from", "10.1.2.3", "lookup", "1005", "priority", "1005", "protocol", "171")
	r.wait(t, EventRule, 2*time.Second)
	r.noErrors(t)
}
