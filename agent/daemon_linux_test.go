package agent

import (
	"context"
	"fmt"
	"io"

	"log/slog"
	"net"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/roce-agent/roce-agent/nic/nettest"
)

// newFakeSystemd points NOTIFY_SOCKET (and, with a watchdog, WATCHDOG_USEC
// and WATCHDOG_PID) at a fake service manager.
func newFakeSystemd(t *testing.T, watchdog time.Duration) *nettest.Systemd {
	t.Helper()
	sd := nettest.NewSystemd(t)
	t.Setenv("NOTIFY_SOCKET", sd.Socket)
	if watchdog > 0 {
		t.Setenv("WATCHDOG_USEC", fmt.Sprint(watchdog.Microseconds()))
		t.Setenv("WATCHDOG_PID", fmt.Sprint(os.Getpid()))
	}
	return sd
}

// hasAddr reports whether link holds ip (IPv4) in ns.
func hasAddr(ns *nettest.NS, link netlink.Link, ip net.IP) bool {
	list, _ := ns.NL.AddrList(link, netlink.FAMILY_V4)
	for _, a := range list {
		if a.IP.Equal(ip) {
			return true
		}
	}
	return false
}

func labDaemonConfig(t testing.TB, stateDir string, rails int) Config {
	t.Helper()
	c := DefaultConfig()
	c.StateDir = stateDir
	c.Node.Name = "lab-host"
	c.Listen.Metrics = ""
	c.Link.Routes = []string{"10.200.0.0/16", "fc00:200::/64"}
	for n := 0; n < rails; n++ {
		c.Rails = append(c.Rails, RailConfig{Rail: intp(n), Netdev: fmt.Sprintf("rail%d", n), IPv4: nettest.HostIPv4(n), IPv6: nettest.HostIPv6(n)})
	}
	tos := 106
	c.QoS = QoSConfig{RoCETos: &tos}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	return c
}

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func waitFor(t *testing.T, what string, d time.Duration, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// TestDaemonLoop runs the daemon on a 2-rail lab with a fake systemd:
// it becomes ready, pings the watchdog while healthy, repairs an address
// deleted by hand and counts it as drift, coalesces an event storm, and
// stops cleanly.
func TestDaemonLoop(t *testing.T) {
	nettest.RequireRoot(t)
	lab := nettest.NewLab(t, 2)
	sd := newFakeSystemd(t, 200*time.Millisecond)
	state := t.TempDir()
	d, err := NewDaemon(DaemonOptions{Config: labDaemonConfig(t, state, 2), Version: "test", Log: quietLog(), Netns: lab.Host.Handle, Resync: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx, "") }()
	waitFor(t, "READY=1", 5*time.Second, func() bool { return sd.Count("READY=1") == 1 })
	if !d.Ready() || !d.Healthy() {
		t.Fatal("not ready and healthy after READY=1")
	}
	waitFor(t, "watchdog pings", 2*time.Second, func() bool { return sd.Count("WATCHDOG=1") >= 2 })

	srv := httptest.NewServer(d.Handler())
	defer srv.Close()
	for _, path := range []string{"/healthz", "/readyz", "/v1/status", "/metrics"} {
		resp, err := srv.Client().Get(srv.URL + path)
		if err != nil || resp.StatusCode != 200 {
			t.Errorf("GET %s: %v %v", path, resp, err)
		}
		if resp != nil {
			resp.Body.Close()
		}
	}
	st := d.Status()
	if st == nil || len(st.Rails) != 2 || st.LastError != "" {
		t.Fatalf("status: %+v", st)
	}
	for _, c := range st.Rails[1].Conditions {
		if c.Type == "AddressesReady" && c.Status != StatusTrue {
			t.Errorf("rail 1 %s = %s (%s)", c.Type, c.Status, c.Message)
		}
	}
	if b, err := os.ReadFile(filepath.Join(state, NCCLEnvFile)); err != nil || !strings.Contains(string(b), "NCCL_IB_TC=106") {
		t.Errorf("nccl env: %q %v", b, err)
	}

	// Drift: delete an owned address by hand; the daemon restores it.
	lab.Host.Settle(t)
	link, err := lab.Host.NL.LinkByName("rail1")
	if err != nil {
		t.Fatal(err)
	}
	addr := &netlink.Addr{IPNet: nettest.ParseCIDR(nettest.HostIPv4(1))}
	start := time.Now()
	if err := lab.Host.NL.AddrDel(link, addr); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "drift repair", 2*time.Second, func() bool { return hasAddr(lab.Host, link, addr.IP) })
	t.Logf("address restored %v after deletion", time.Since(start))
	waitFor(t, "drift metric", time.Second, func() bool { return counterValue(t, d, "roce_agent_drift_events_total", `kind="addr-add"`) >= 1 })

	// An event storm: 2000 flaps of a foreign address cost a bounded
	// number of reconciles and no goroutines.
	time.Sleep(50 * time.Millisecond)
	before, goroutines := d.Reconciles.Load(), runtime.NumGoroutine()
	foreign := &netlink.Addr{IPNet: nettest.ParseCIDR("192.168.99.1/32")}
	stormStart := time.Now()
	for i := 0; i < 1000; i++ {
		_ = lab.Host.NL.AddrAdd(link, foreign)
		_ = lab.Host.NL.AddrDel(link, foreign)
	}
	storm := time.Since(stormStart)
	time.Sleep(100 * time.Millisecond)
	runs := d.Reconciles.Load() - before
	// One reconcile per debounce window (10 ms) at most, plus the tail.
	if limit := int64(storm/(10*time.Millisecond)) + 3; runs > limit {
		t.Errorf("storm of 2000 events over %v ran %d reconciles, want at most %d", storm, runs, limit)
	}
	if g := runtime.NumGoroutine(); g > goroutines+2 {
		t.Errorf("goroutines grew from %d to %d", goroutines, g)
	}
	t.Logf("storm: 2000 events in %v, %d reconciles", storm, runs)

	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run: %v", err)
	}
	waitFor(t, "STOPPING=1", time.Second, func() bool { return sd.Count("STOPPING=1") == 1 })
	if sd.Count("STATUS=") == 0 {
		t.Error("no STATUS= sent")
	}

	// A restart on the converged host changes nothing.
	w := nettest.Watch(t, lab.Host)
	d2, err := NewDaemon(DaemonOptions{Config: labDaemonConfig(t, state, 2), Version: "test", Log: quietLog(), Netns: lab.Host.Handle})
	if err != nil {
		t.Fatal(err)
	}
	defer d2.Close()
	if err := d2.Reconcile(); err != nil {
		t.Fatal(err)
	}
	w.Stop()
	if n, kinds := w.Count(); n != 0 {
		t.Errorf("restart caused %d netlink events %v", n, kinds)
	}
}

// counterValue scrapes one series' value from the daemon's registry.
func counterValue(t *testing.T, d *Daemon, name, label string) float64 {
	t.Helper()
	mfs, err := d.Metrics().Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
			}
			if strings.Contains(strings.Join(labels, ","), label) {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

// Without systemd every notification is a no-op.
func TestNotifierOutsideSystemd(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	var n Notifier
	if err := n.Ready("x"); err != nil {
		t.Error(err)
	}
	if n.WatchdogInterval() != 0 {
		t.Error("watchdog on without systemd")
	}
}
