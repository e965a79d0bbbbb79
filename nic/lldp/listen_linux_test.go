package lldp

import (
	"context"
	"errors"
	"net"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/roce-agent/roce-agent/nic/nettest"
)

// inNS runs fn on a thread in ns (sockets it opens stay there).
func inNS(t *testing.T, ns *nettest.NS, fn func()) {
	t.Helper()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		t.Error(err)
		return
	}
	defer orig.Close()
	if err := netns.Set(ns.Handle); err != nil {
		t.Error(err)
		return
	}
	defer func() {
		if err := netns.Set(orig); err != nil {
			panic(err) // never leave a pooled thread in the test namespace
		}
	}()
	fn()
}

// sender sends frames out of a leaf port every 50ms until stopped.
func sender(t *testing.T, ns *nettest.NS, netdev string, frames ...[]byte) (stop func()) {
	t.Helper()
	var fd int
	var ifindex int
	inNS(t, ns, func() {
		ifi, err := net.InterfaceByName(netdev)
		if err != nil {
			t.Fatal(err)
		}
		ifindex = ifi.Index
		fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
	})
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer unix.Close(fd)
		to := &unix.SockaddrLinklayer{Ifindex: ifindex, Protocol: htons(EtherType), Halen: 6}
		copy(to.Addr[:], MulticastAddr)
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			for _, f := range frames {
				if err := unix.Sendto(fd, f, 0, to); err != nil {
					t.Errorf("send: %v", err)
					return
				}
			}
			select {
			case <-done:
				return
			case <-tick.C:
			}
		}
	}()
	return func() { close(done); wg.Wait() }
}

func TestListenNetns(t *testing.T) {
	nettest.RequireRoot(t)
	lab := nettest.NewLab(t, 2)
	for _, name := range []string{"rail0", "rail1"} {
		l, err := lab.Host.NL.LinkByName(name)
		if err != nil {
			t.Fatal(err)
		}
		if err := lab.Host.NL.LinkSetUp(l); err != nil {
			t.Fatal(err)
		}
	}
	src := net.HardwareAddr{2, 0, 0, 0, 0, 0x10}
	good, err := EncodeFrame(src, Neighbor{ChassisID: "0c:42:a1:00:00:10", SysName: "leaf0", PortID: "swp7", PortDescr: "gpu-00 rail0", TTL: 120 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	shutdown, _ := EncodeFrame(src, Neighbor{ChassisID: "0c:42:a1:00:00:99", PortID: "swp9"})
	garbage := append(append([]byte{}, good[:14]...), 0xff, 0xff)
	stop := sender(t, lab.Leaf, "leaf0", garbage, shutdown, good)
	defer stop()

	var n Neighbor
	inNS(t, lab.Host, func() { n, err = Listen(context.Background(), "rail0", 10*time.Second) })
	if err != nil {
		t.Fatal(err)
	}
	if n.SysName != "leaf0" || n.PortID != "swp7" || n.ChassisID != "0c:42:a1:00:00:10" || n.Source != "frame" || time.Since(n.Seen) > time.Minute {
		t.Errorf("Listen = %+v", n)
	}

	// Nothing on rail1: ErrNoNeighbor after the wait.
	start := time.Now()
	inNS(t, lab.Host, func() { _, err = Listen(context.Background(), "rail1", 300*time.Millisecond) })
	if !errors.Is(err, ErrNoNeighbor) || time.Since(start) > 5*time.Second {
		t.Errorf("rail1: %v after %s", err, time.Since(start))
	}
	// The host's own LLDPDUs on rail1 (sent by it, or reflected back by a
	// loop) are not a neighbour.
	var own net.HardwareAddr
	inNS(t, lab.Host, func() {
		ifi, err := net.InterfaceByName("rail1")
		if err != nil {
			t.Fatal(err)
		}
		own = ifi.HardwareAddr
	})
	mine, _ := EncodeFrame(own, Neighbor{ChassisID: "gpu-00", SysName: "gpu-00", PortID: "rail1", TTL: 120 * time.Second})
	stopOwn := sender(t, lab.Host, "rail1", mine)
	inNS(t, lab.Host, func() { _, err = Listen(context.Background(), "rail1", 500*time.Millisecond) })
	stopOwn()
	if !errors.Is(err, ErrNoNeighbor) {
		t.Errorf("rail1 with only its own LLDPDUs: %v", err)
	}
	// A cancelled context ends the wait.
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	inNS(t, lab.Host, func() { _, err = Listen(ctx, "rail1", time.Hour) })
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("cancelled: %v", err)
	}
	inNS(t, lab.Host, func() { _, err = Listen(context.Background(), "nosuch0", time.Second) })
	if err == nil {
		t.Error("no such interface: no error")
	}

	// Watch sees the shutdown and the good frame, and ends with the
	// context.
	var mu sync.Mutex
	seen := map[string]time.Duration{}
	wctx, wcancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go inNS(t, lab.Host, func() {
		errc <- Watch(wctx, "rail0", func(n Neighbor) {
			mu.Lock()
			seen[n.PortID] = n.TTL
			mu.Unlock()
		})
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		mu.Lock()
		got := len(seen)
		mu.Unlock()
		if got == 2 || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	wcancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Errorf("Watch ended with %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if seen["swp7"] != 120*time.Second || seen["swp9"] != 0 || len(seen) != 2 {
		t.Errorf("Watch saw %v", seen)
	}
}

// Without CAP_NET_RAW the error says so (and wraps EPERM). As root, the
// test drops CAP_NET_RAW from its thread's effective set (the thread is
// thrown away after).
func TestListenNeedsCapNetRaw(t *testing.T) {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread exits with the goroutine
		if unix.Geteuid() == 0 {
			hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
			var data [2]unix.CapUserData
			if err := unix.Capget(&hdr, &data[0]); err != nil {
				errc <- err
				return
			}
			data[0].Effective &^= 1 << unix.CAP_NET_RAW
			if err := unix.Capset(&hdr, &data[0]); err != nil {
				errc <- err
				return
			}
		}
		_, err := Listen(context.Background(), "lo", time.Millisecond)
		errc <- err
	}()
	err := <-errc
	if !errors.Is(err, ErrPermission) || !errors.Is(err, unix.EPERM) {
		t.Errorf("err %v, want ErrPermission wrapping EPERM", err)
	}
	t.Log(err)
}
