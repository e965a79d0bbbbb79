package linkengine_test

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/roce-agent/roce-agent/nic/linkengine"
	"github.com/roce-agent/roce-agent/nic/linkengine/linktest"
)

// The unit tier of the link engine: Reconcile, drift counting, conflicts,
// the empty-desired refusal and teardown on the recording fake namespace,
// no root needed. The privileged tier (engine_linux_test.go) proves the
// same against the kernel.

func fakeRails(n int) []linkengine.RailLink {
	var out []linkengine.RailLink
	for i := 0; i < n; i++ {
		r := linkengine.RailLink{Rail: i, Netdev: fmt.Sprintf("rail%d", i), MTU: 9000, Table: 1000 + i, RulePriority: 1000 + i,
			IPv4:   netip.MustParsePrefix(fmt.Sprintf("10.0.%d.1/31", i)),
			IPv6:   netip.MustParsePrefix(fmt.Sprintf("fc00:0:0:%x::1/127", i+1)),
			Routes: []netip.Prefix{netip.MustParsePrefix("10.200.0.0/16"), netip.MustParsePrefix("fc00:200::/64")}}
		r.IPv4Leaf, r.IPv6Leaf = linkengine.PeerAddr(r.IPv4), linkengine.PeerAddr(r.IPv6)
		out = append(out, r)
	}
	return out
}

func fakeEngine(t *testing.T, rails int) (*linkengine.Engine, *linktest.Host) {
	t.Helper()
	h := linktest.New()
	for i := 0; i < rails; i++ {
		h.AddLink(fmt.Sprintf("rail%d", i), 1500)
	}
	return &linkengine.Engine{Host: h, StateDir: t.TempDir(), Range: linkengine.TableRange{TableBase: 1000, PriorityBase: 1000, Size: 256}}, h
}

func TestFakeReconcileConvergesQuietly(t *testing.T) {
	eng, h := fakeEngine(t, 4)
	res, err := eng.Reconcile(fakeRails(4))
	if err != nil || !res.Converged() || res.Writes != 60 || len(h.Writes()) != 60 {
		t.Fatalf("from clean: %v, converged %v, %d writes", err, res.Converged(), res.Writes)
	}
	if l := h.Link("rail2"); !l.Up || l.MTU != 9000 || len(l.Marked) != 2 {
		t.Errorf("rail2 after apply: %+v", l)
	}
	res, err = eng.Reconcile(fakeRails(4))
	if err != nil || !res.Converged() || res.Writes != 0 || len(h.Writes()) != 0 || len(res.Drift) != 0 {
		t.Errorf("converged: %v, %d writes, drift %v", err, res.Writes, res.Drift)
	}
}

func TestFakeDriftIsCountedByKind(t *testing.T) {
	eng, h := fakeEngine(t, 2)
	rails := fakeRails(2)
	if _, err := eng.Reconcile(rails); err != nil {
		t.Fatal(err)
	}
	h.Writes()
	h.DelAddr("rail1", "10.0.1.1/31")
	h.SetMTU("rail0", 1500)
	h.DelRule(1000)
	h.SetSysctl("net/ipv4/conf/rail1/rp_filter", "0")
	res, err := eng.Reconcile(rails)
	if err != nil || !res.Converged() {
		t.Fatalf("repair: %v %+v", err, res)
	}
	want := map[linkengine.ChangeKind]int{linkengine.LinkMTU: 1, linkengine.AddrAdd: 1, linkengine.RuleAdd: 2, linkengine.RouteSet: 2, linkengine.SysctlSet: 1}
	if fmt.Sprint(res.Drift) != fmt.Sprint(want) {
		t.Errorf("drift = %v, want %v", res.Drift, want)
	}
	if w := h.Writes(); len(w) != 7 {
		t.Errorf("repair wrote %d changes, want 7", len(w))
	}
}

func TestFakeForeignAddressHoldsBackOneFamily(t *testing.T) {
	eng, h := fakeEngine(t, 2)
	h.AddForeignAddr("rail1", "10.0.1.0/31")
	res, err := eng.Reconcile(fakeRails(2))
	if err != nil {
		t.Fatal(err)
	}
	if res.Converged() || !res.Rails[0].Converged || res.Rails[1].Converged || !strings.Contains(res.Rails[1].Conflict, "foreign address 10.0.1.0/31 on rail1") {
		t.Fatalf("results: %+v", res.Rails)
	}
	l := h.Link("rail1")
	has := func(p string) bool {
		for _, a := range l.Addrs {
			if a.String() == p {
				return true
			}
		}
		return false
	}
	if !l.Up || l.MTU != 9000 || !has("fc00:0:0:2::1/127") || has("10.0.1.1/31") || !has("10.0.1.0/31") {
		t.Errorf("rail1: %+v", l)
	}
}

func TestFakeFailedWriteStopsOnlyItsRail(t *testing.T) {
	eng, h := fakeEngine(t, 3)
	h.Fail = func(c linkengine.Change) error {
		if c.Rail == 1 && c.Kind == linkengine.RuleAdd {
			return unix.EPERM
		}
		return nil
	}
	res, err := eng.Reconcile(fakeRails(3))
	if err != nil {
		t.Fatal(err)
	}
	if !res.Rails[0].Converged || res.Rails[1].Converged || !res.Rails[2].Converged || !errors.Is(res.Rails[1].Err, unix.EPERM) {
		t.Errorf("results: %+v", res.Rails)
	}
}

func TestFakeEmptyDesiredAndTeardown(t *testing.T) {
	eng, h := fakeEngine(t, 2)
	if _, err := eng.Reconcile(fakeRails(2)); err != nil {
		t.Fatal(err)
	}
	h.Writes()
	// Someone else's rule, marked 171 but outside the priority range.
	h.AddRule(linkengine.Rule{Priority: 900, Src: netip.MustParsePrefix("10.9.9.9/32"), Table: 1001, Protocol: linkengine.RouteProtocol})
	fresh := &linkengine.Engine{Host: h, StateDir: t.TempDir(), Range: eng.Range}
	var ed *linkengine.EmptyDesiredError
	if _, err := fresh.Reconcile(nil); !errors.As(err, &ed) || len(ed.Owned) != 16 {
		t.Errorf("empty desired: %v", err)
	}
	if w := h.Writes(); len(w) != 0 {
		t.Errorf("refused reconcile wrote %v", w)
	}
	res, err := fresh.Teardown(false)
	if err != nil || len(res.Removed) != 16 || len(res.Errs) != 0 {
		t.Fatalf("teardown: %v %+v", err, res)
	}
	if rules := h.Rules(); len(rules) != 1 || rules[0].Priority != 900 {
		t.Errorf("rules after teardown: %+v", rules)
	}
	if routes := h.Routes(); len(routes) != 0 {
		t.Errorf("routes after teardown: %+v", routes)
	}
}

func TestFakeMissingNetdevKeepsItsState(t *testing.T) {
	eng, h := fakeEngine(t, 2)
	rails := fakeRails(2)
	if _, err := eng.Reconcile(rails); err != nil {
		t.Fatal(err)
	}
	h.Writes()
	rails[1].Netdev = "rail9" // re-pinned to a netdev that is not there
	res, err := eng.Reconcile(rails)
	if err != nil || res.Rails[1].Converged || !strings.Contains(res.Rails[1].Conflict, "netdev rail9 does not exist") || !res.Rails[0].Converged {
		t.Fatalf("results: %v %+v", err, res.Rails)
	}
	if w := h.Writes(); len(w) != 0 {
		t.Errorf("a missing netdev made its old rail lose %v", w)
	}
}

// TestFakeStaleRecordClaimsNothing: an address the record lists but the
// kernel no longer has is forgotten; an operator who adds that address
// later keeps it. On a kernel without IFA_PROTO the record still decides.
func TestFakeStaleRecordClaimsNothing(t *testing.T) {
	for _, marks := range []bool{true, false} {
		t.Run(fmt.Sprintf("kernel marks addresses %v", marks), func(t *testing.T) {
			eng, h := fakeEngine(t, 2)
			h.NoAddrProto = !marks
			if _, err := eng.Reconcile(fakeRails(2)); err != nil {
				t.Fatal(err)
			}
			h.DelAddr("rail1", "10.0.1.1/31")
			if _, err := eng.Reconcile(fakeRails(1)); err != nil {
				t.Fatal(err)
			}
			h.AddForeignAddr("rail1", "10.0.1.1/31")
			h.Writes()
			if _, err := eng.Reconcile(fakeRails(1)); err != nil {
				t.Fatal(err)
			}
			for _, w := range h.Writes() {
				if w.Kind == linkengine.AddrDel && w.Addr.String() == "10.0.1.1/31" {
					t.Errorf("the operator's address was deleted: %s", w.Command)
				}
			}
			// Rail 1's IPv6 address, the agent's (marked, or recorded on a
			// kernel without marks), went with its rail; the operator's stays.
			if l := h.Link("rail1"); len(l.Addrs) != 1 || l.Addrs[0].String() != "10.0.1.1/31" {
				t.Errorf("rail1 addresses: %v", l.Addrs)
			}
		})
	}
}
