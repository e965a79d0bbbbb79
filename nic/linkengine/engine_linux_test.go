package linkengine

import (
	"errors"
	"fmt"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/roce-agent/roce-agent/nic/nettest"
)

func labRails(n int) []RailLink {
	var out []RailLink
	for i := 0; i < n; i++ {
		r := RailLink{Rail: i, Netdev: fmt.Sprintf("rail%d", i), MTU: 9000, Table: 1000 + i, RulePriority: 1000 + i,
			IPv4: netip.MustParsePrefix(nettest.HostIPv4(i)), IPv6: netip.MustParsePrefix(nettest.HostIPv6(i)),
			Routes: []netip.Prefix{netip.MustParsePrefix("10.200.0.0/16"), netip.MustParsePrefix("fc00:200::/64")}}
		r.IPv4Leaf = PeerAddr(r.IPv4)
		r.IPv6Leaf = PeerAddr(r.IPv6)
		out = append(out, r)
	}
	return out
}

func newEngine(t *testing.T, lab *nettest.Lab) (*Engine, *Host) {
	t.Helper()
	host, err := OpenHost(lab.Host.Handle)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(host.Close)
	return &Engine{Host: host, StateDir: t.TempDir(), Range: TableRange{TableBase: 1000, PriorityBase: 1000, Size: 256}}, host
}

// TestApplyEightRails is the link engine on a host namespace with 8 veth
// rails: apply from clean converges every rail, each rail address reaches
// an address behind its own leaf, foreign state survives, and a second
// apply sends no write and causes no netlink event.
func TestApplyEightRails(t *testing.T) {
	nettest.RequireRoot(t)
	nettest.RequireTools(t, "ping")
	lab := nettest.NewLab(t, 8)
	lab.AddForeignState(t)
	foreign := lab.ForeignState(t)
	eng, _ := newEngine(t, lab)
	rails := labRails(8)

	res, err := eng.Reconcile(rails)
	if err != nil {
		t.Fatal(err)
	}
	if !res.Converged() {
		t.Fatalf("not converged: %v", res.Err())
	}
	for i := 0; i < 8; i++ {
		src4 := strings.TrimSuffix(nettest.HostIPv4(i), "/31")
		src6 := strings.TrimSuffix(nettest.HostIPv6(i), "/127")
		if err := lab.Host.Ping(src4, nettest.RemoteIPv4(i)); err != nil {
			t.Errorf("rail %d IPv4: %v", i, err)
		}
		if err := lab.Host.Ping(src6, nettest.RemoteIPv6(i)); err != nil {
			t.Errorf("rail %d IPv6: %v", i, err)
		}
	}
	// Traffic from rail 3's address leaves by rail 3, whatever the main
	// table says.
	if out := lab.Host.MustExec(t, "ip", "route", "get", "10.200.5.1", "from", "10.0.3.1"); !strings.Contains(out, "dev rail3") {
		t.Errorf("policy routing: %s", out)
	}
	if got := lab.ForeignState(t); got != foreign {
		t.Errorf("foreign state changed:\nbefore:\n%s\nafter:\n%s", foreign, got)
	}
	if sys := lab.Host.MustExec(t, "sysctl", "-n", "net.ipv4.conf.rail5.arp_ignore", "net.ipv4.conf.rail5.rp_filter", "net.ipv6.conf.rail5.accept_ra"); sys != "1\n2\n0\n" {
		t.Errorf("sysctls = %q", sys)
	}

	w := nettest.Watch(t, lab.Host)
	start := time.Now()
	res, err = eng.Reconcile(rails)
	elapsed := time.Since(start)
	w.Stop()
	if err != nil || !res.Converged() || res.Writes != 0 {
		t.Fatalf("second apply: writes %d, err %v %v", res.Writes, err, res.Err())
	}
	if n, kinds := w.Count(); n != 0 {
		t.Errorf("second apply caused %d netlink events (by type %v)", n, kinds)
	}
	t.Logf("converged apply of 8 rails: %v", elapsed)

	owned, err := LoadOwned(eng.StateDir)
	if err != nil || len(owned.Addrs) != 8 || len(owned.Addrs["rail7"]) != 2 {
		t.Errorf("ownership record: %+v %v", owned, err)
	}
}

// TestDriftRepairFromEvents drives Reconcile from real netlink events: an
// owned address deleted, the MTU changed and the link set down by hand are
// each restored and counted as drift.
func TestDriftRepairFromEvents(t *testing.T) {
	nettest.RequireRoot(t)
	nettest.RequireTools(t, "ping")
	lab := nettest.NewLab(t, 2)
	eng, _ := newEngine(t, lab)
	rails := labRails(2)
	if res, err := eng.Reconcile(rails); err != nil || !res.Converged() {
		t.Fatalf("initial apply: %v %v", err, res.Err())
	}

	done := make(chan struct{})
	defer close(done)
	events := make(chan struct{}, 1024)
	opts := netlink.LinkSubscribeOptions{Namespace: &lab.Host.Handle}
	links := make(chan netlink.LinkUpdate, 64)
	addrs := make(chan netlink.AddrUpdate, 64)
	routes := make(chan netlink.RouteUpdate, 64)
	if err := netlink.LinkSubscribeWithOptions(links, done, opts); err != nil {
		t.Fatal(err)
	}
	if err := netlink.AddrSubscribeWithOptions(addrs, done, netlink.AddrSubscribeOptions{Namespace: &lab.Host.Handle}); err != nil {
		t.Fatal(err)
	}
	if err := netlink.RouteSubscribeWithOptions(routes, done, netlink.RouteSubscribeOptions{Namespace: &lab.Host.Handle}); err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			select {
			case <-done:
				return
			case <-links:
			case <-addrs:
			case <-routes:
			}
			events <- struct{}{}
		}
	}()
	drift := map[ChangeKind]int{}
	reconcileUntil := func(what string, ok func() bool) {
		t.Helper()
		deadline := time.After(5 * time.Second)
		for !ok() {
			select {
			case <-events:
				res, err := eng.Reconcile(rails)
				if err != nil {
					t.Fatal(err)
				}
				for k, n := range res.Drift {
					drift[k] += n
				}
			case <-deadline:
				t.Fatalf("%s not repaired", what)
			}
		}
	}
	link := func() netlink.Link {
		l, err := lab.Host.NL.LinkByName("rail1")
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	hasAddr := func() bool {
		list, _ := lab.Host.NL.AddrList(link(), netlink.FAMILY_V4)
		for _, a := range list {
			if a.IPNet.String() == "10.0.1.1/31" {
				return true
			}
		}
		return false
	}

	lab.Host.MustExec(t, "ip", "address", "del", "10.0.1.1/31", "dev", "rail1")
	reconcileUntil("deleted address", hasAddr)
	lab.Host.MustExec(t, "ip", "link", "set", "dev", "rail1", "mtu", "1500")
	reconcileUntil("changed MTU", func() bool { return link().Attrs().MTU == 9000 })
	lab.Host.MustExec(t, "ip", "link", "set", "dev", "rail1", "down")
	reconcileUntil("link down", func() bool { return link().Attrs().Flags&(1<<0) != 0 && hasAddr() })
	// Let the last events settle and the routes come back.
	time.Sleep(50 * time.Millisecond)
	if res, err := eng.Reconcile(rails); err != nil || !res.Converged() {
		t.Fatalf("after drift: %v %v", err, res.Err())
	}
	if drift[AddrAdd] < 1 || drift[LinkMTU] != 1 || drift[LinkUp] != 1 {
		t.Errorf("drift counted %v, want addr-add >= 1, link-mtu 1, link-up 1", drift)
	}
	if err := lab.Host.Ping("10.0.1.1", nettest.RemoteIPv4(1)); err != nil {
		t.Errorf("after repair: %v", err)
	}
}

// TestConflictsAreReported: a foreign address in a rail's /31 stops that
// rail only; a foreign rule at a rail's priority rejects the whole apply
// before any change.
func TestConflictsAreReported(t *testing.T) {
	nettest.RequireRoot(t)
	lab := nettest.NewLab(t, 2)
	eng, _ := newEngine(t, lab)
	rails := labRails(2)

	lab.Host.MustExec(t, "ip", "address", "add", "10.0.1.0/31", "dev", "rail1")
	res, err := eng.Reconcile(rails)
	if err != nil {
		t.Fatal(err)
	}
	if res.Converged() || res.Rails[0].Err != nil || !res.Rails[0].Converged || !strings.Contains(res.Rails[1].Conflict, "foreign address 10.0.1.0/31") {
		t.Fatalf("results: %+v", res.Rails)
	}
	if out := lab.Host.MustExec(t, "ip", "-o", "address", "show", "dev", "rail1", "scope", "global"); !strings.Contains(out, "10.0.1.0/31") || strings.Contains(out, "10.0.1.1") {
		t.Errorf("rail1 was changed: %s", out)
	}

	lab2 := nettest.NewLab(t, 2)
	eng2, _ := newEngine(t, lab2)
	lab2.Host.MustExec(t, "ip", "rule", "add", "from", "all", "lookup", "55", "priority", "1001")
	w := nettest.Watch(t, lab2.Host)
	_, err = eng2.Reconcile(rails)
	w.Stop()
	var ve *ValidationError
	if err == nil || !strings.Contains(err.Error(), "priority 1001 (rail 1) is used by foreign rule") || !asValidation(err, &ve) {
		t.Fatalf("want a validation error, got %v", err)
	}
	if n, _ := w.Count(); n != 0 {
		t.Errorf("rejected apply caused %d netlink events", n)
	}
}

func asValidation(err error, ve **ValidationError) bool {
	v, ok := err.(*ValidationError)
	*ve = v
	return ok
}

// TestEmptyDesiredRemovesNothing: once the agent owns state, a reconcile
// or plan with no rail is refused and sends nothing to the kernel; only
// Teardown removes, and exactly what is owned (a foreign rule marked 171
// outside the priority range stays). Addresses are marked IFA_PROTO 171,
// so ownership survives losing the state directory.
func TestEmptyDesiredRemovesNothing(t *testing.T) {
	nettest.RequireRoot(t)
	lab := nettest.NewLab(t, 2)
	lab.AddForeignState(t)
	eng, _ := newEngine(t, lab)
	if res, err := eng.Reconcile(labRails(2)); err != nil || !res.Converged() {
		t.Fatalf("converge: %v %+v", err, res)
	}
	lab.Host.MustExec(t, "ip", "rule", "add", "from", "10.9.9.9", "lookup", "1001", "priority", "900", "protocol", "171")
	foreign := lab.ForeignState(t) + lab.Host.MustExec(t, "ip", "rule", "show", "priority", "900")

	// A fresh engine on an empty state directory: ownership comes from
	// the kernel alone.
	eng = &Engine{Host: eng.Host, StateDir: t.TempDir(), Range: eng.Range}
	w := nettest.Watch(t, lab.Host)
	_, err := eng.Reconcile(nil)
	_, perr := eng.Plan(nil)
	w.Stop()
	var ed *EmptyDesiredError
	for _, e := range []error{err, perr} {
		if !errors.As(e, &ed) || len(ed.Owned) != 16 || !strings.Contains(e.Error(), "run 'roce-agent teardown'") {
			t.Errorf("want an EmptyDesiredError over 16 owned objects, got %v", e)
		}
	}
	if n, kinds := w.Count(); n != 0 {
		t.Errorf("a refused empty reconcile caused %d netlink events %v", n, kinds)
	}

	dry, err := eng.Teardown(true)
	if err != nil || len(dry.Planned) != 16 || len(dry.Removed) != 0 {
		t.Fatalf("dry run: %v %+v", err, dry)
	}
	res, err := eng.Teardown(false)
	if err != nil || len(res.Removed) != 16 || len(res.Errs) != 0 {
		t.Fatalf("teardown: %v %+v", err, res)
	}
	for _, want := range dry.Planned {
		removed := ""
		for _, m := range res.Removed {
			removed += m.Object + "\n"
		}
		if !strings.Contains(removed, want) {
			t.Errorf("planned %q not removed", want)
		}
	}
	if got := lab.ForeignState(t) + lab.Host.MustExec(t, "ip", "rule", "show", "priority", "900"); got != foreign {
		t.Errorf("foreign state changed:\n%s\nvs\n%s", foreign, got)
	}
	if again, err := eng.Teardown(false); err != nil || len(again.Planned) != 0 {
		t.Errorf("second teardown: %v %+v", err, again)
	}
}

// TestTeardownLeavesAShadowedRule: a foreign rule that differs from the
// agent's only by more selectors (iif lo) and comes first would be what the
// kernel deletes for the agent's "ip rule del": teardown removes neither
// and says why.
func TestTeardownLeavesAShadowedRule(t *testing.T) {
	nettest.RequireRoot(t)
	lab := nettest.NewLab(t, 1)
	eng, _ := newEngine(t, lab)
	if _, err := eng.Reconcile(labRails(1)); err != nil {
		t.Fatal(err)
	}
	lab.Host.MustExec(t, "ip", "rule", "del", "from", "10.0.0.1", "lookup", "1000", "priority", "1000")
	lab.Host.MustExec(t, "ip", "rule", "add", "from", "10.0.0.1", "iif", "lo", "lookup", "1000", "priority", "1000", "protocol", "171")
	lab.Host.MustExec(t, "ip", "rule", "add", "from", "10.0.0.1", "lookup", "1000", "priority", "1000", "protocol", "171")
	// A reconcile refuses to run next to it (a foreign rule at a rail's
	// priority).
	if _, err := eng.Reconcile(labRails(1)); err == nil || !strings.Contains(err.Error(), "iif lo") {
		t.Errorf("reconcile next to the foreign rule: %v", err)
	}
	res, err := eng.Teardown(false)
	if err != nil || len(res.Errs) != 1 || !strings.Contains(res.Errs[0].Error(), `foreign rule "1000: from 10.0.0.1/32 iif lo lookup 1000 proto 171"`) {
		t.Fatalf("teardown: %v %+v", err, res)
	}
	rules := lab.Host.MustExec(t, "ip", "rule", "show", "priority", "1000")
	if !strings.Contains(rules, "from 10.0.0.1 iif lo lookup 1000 proto 171") || !strings.Contains(rules, "from 10.0.0.1 lookup 1000 proto 171") {
		t.Errorf("rules at 1000 after teardown:\n%s", rules)
	}
}

// TestSysctlRoot writes the rails' sysctls through another mount of
// /proc/sys, as the DaemonSet does (its own /proc/sys is read-only; the
// host's is mounted elsewhere): the files follow the namespace of the
// thread that opens them, so the rails' namespace gets the values.
func TestSysctlRoot(t *testing.T) {
	nettest.RequireRoot(t)
	lab := nettest.NewLab(t, 2)
	eng, host := newEngine(t, lab)
	rails := labRails(2)

	// A root without the files: the sysctls cannot be written, the rest
	// converges.
	empty := t.TempDir()
	host.SetSysctlRoot(empty)
	res, err := eng.Reconcile(rails)
	if err != nil {
		t.Fatal(err)
	}
	if res.Converged() || !strings.Contains(fmt.Sprint(res.Err()), empty) {
		t.Errorf("sysctls under an empty root: converged %v, %v", res.Converged(), res.Err())
	}

	mnt := t.TempDir()
	if out, err := exec.Command("mount", "--bind", "/proc/sys", mnt).CombinedOutput(); err != nil {
		t.Skipf("cannot bind-mount /proc/sys here: %v %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("umount", "-l", mnt).Run() })
	host.SetSysctlRoot(mnt)
	res, err = eng.Reconcile(rails)
	if err != nil || !res.Converged() {
		t.Fatalf("through the mount: %v %v", err, res.Err())
	}
	if sys := lab.Host.MustExec(t, "sysctl", "-n", "net.ipv4.conf.rail1.arp_ignore", "net.ipv4.conf.rail1.rp_filter"); sys != "1\n2\n" {
		t.Errorf("rail1 sysctls in its namespace = %q", sys)
	}
}
