package probe

import (
	"context"
	"errors"
	"net/netip"
	"runtime"
	"testing"
	"time"

	"github.com/vishvananda/netns"

	"github.com/roce-agent/roce-agent/nic/nettest"
)

// inNS runs fn on a thread in ns: sockets it opens belong to ns.
func inNS(t *testing.T, ns *nettest.NS, fn func() error) error {
	t.Helper()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer orig.Close()
	if err := netns.Set(ns.Handle); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := netns.Set(orig); err != nil {
			panic(err) // a thread left in the wrong namespace poisons the test binary
		}
	}()
	return fn()
}

// TestCheckPathMTU proves the check on a real path: two namespaces linked
// by a veth pair, the far end's MTU lowered as a misconfigured leaf port
// would be, then the link taken down.
func TestCheckPathMTU(t *testing.T) {
	nettest.RequireRoot(t)
	nettest.RequireTools(t, "ip")
	a, b := nettest.NewNS(t, "pmtua"), nettest.NewNS(t, "pmtub")
	nettest.Veth(t, a, "rail0", b, "leafp")
	a.MustExec(t, "ip", "link", "set", "rail0", "mtu", "9000", "up")
	b.MustExec(t, "ip", "link", "set", "leafp", "mtu", "9000", "up")
	a.MustExec(t, "ip", "addr", "add", "10.9.0.1/31", "dev", "rail0")
	b.MustExec(t, "ip", "addr", "add", "10.9.0.0/31", "dev", "leafp")
	a.MustExec(t, "ip", "addr", "add", "fd09::1/127", "dev", "rail0", "nodad")
	b.MustExec(t, "ip", "addr", "add", "fd09::/127", "dev", "leafp", "nodad")
	pairs := []struct{ local, peer netip.Addr }{
		{netip.MustParseAddr("10.9.0.1"), netip.MustParseAddr("10.9.0.0")},
		{netip.MustParseAddr("fd09::1"), netip.MustParseAddr("fd09::")},
	}
	check := func(local, peer netip.Addr) error {
		return inNS(t, a, func() error {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			return CheckPathMTU(ctx, local, peer, 9000, 300*time.Millisecond)
		})
	}
	for _, p := range pairs {
		if err := check(p.local, p.peer); err != nil {
			t.Fatalf("%s -> %s at MTU 9000 both ends: %v", p.local, p.peer, err)
		}
	}
	// The far end drops what is larger than its MTU: a mismatched port.
	b.MustExec(t, "ip", "link", "set", "leafp", "mtu", "1500")
	for _, p := range pairs {
		err := check(p.local, p.peer)
		if !errors.Is(err, ErrPathMTU) {
			t.Fatalf("%s -> %s with the far end at 1500: %v, want ErrPathMTU", p.local, p.peer, err)
		}
		t.Logf("%v", err)
	}
	b.MustExec(t, "ip", "link", "set", "leafp", "down")
	if err := check(pairs[0].local, pairs[0].peer); !errors.Is(err, ErrNoEcho) {
		t.Fatalf("far end down: %v, want ErrNoEcho", err)
	}
}
