package agent

import (
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/roce-agent/roce-agent/nic/linkengine/linktest"
)

// fakeHost is a recording fake namespace with rails netdevs vethA,
// vethB, ... (MTU 1500), and a daemon config for it on the soft-roce
// fixture tree: rail i on the i-th netdev with 10.0.i.1/31. No root.
func fakeHost(t *testing.T, rails int) (*linktest.Host, Config) {
	t.Helper()
	host := linktest.New()
	c := DefaultConfig()
	c.SysfsRoot = filepath.Join("..", "testdata", "sysfs", "soft-roce", "sys")
	c.StateDir = t.TempDir()
	c.Node.Name = "fake-host"
	c.Listen.Metrics = ""
	for i := 0; i < rails; i++ {
		netdev := "veth" + string(rune('A'+i))
		host.AddLink(netdev, 1500)
		c.Rails = append(c.Rails, RailConfig{Rail: intp(i), Netdev: netdev, IPv4: fmt.Sprintf("10.0.%d.1/31", i)})
	}
	return host, c
}

// fakeHostDaemon validates c and makes the daemon on host; it closes when
// the test ends.
func fakeHostDaemon(t *testing.T, host *linktest.Host, c Config) *Daemon {
	t.Helper()
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	d, err := NewDaemon(DaemonOptions{Config: c, Log: quietLog(), Host: host})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Close)
	return d
}

// TestDaemonConditionsOnFakeHost runs the daemon's reconcile on the
// soft-roce fixture tree with a recording fake namespace instead of the
// kernel: no root. Rails converge and their conditions say so; an address
// deleted by hand is repaired and counted as drift; a rail whose netdev
// disappears is in conflict while the other stays ready.
func TestDaemonConditionsOnFakeHost(t *testing.T) {
	host, c := fakeHost(t, 2)
	c.Link.Routes = []string{"10.200.0.0/16"}
	d := fakeHostDaemon(t, host, c)
	if err := d.Reconcile(); err != nil {
		t.Fatal(err)
	}
	status := func(rail int, typ string) string {
		t.Helper()
		for _, r := range d.Status().Rails {
			if r.Rail != rail {
				continue
			}
			for _, c := range r.Conditions {
				if string(c.Type) == typ {
					return string(c.Status) + "/" + c.Reason
				}
			}
		}
		return "absent"
	}
	for _, rail := range []int{0, 1} {
		for typ, want := range map[string]string{"LinkUp": "True/OperUp", "AddressesReady": "True/Converged", "MTUReady": "True/MTU", "RoutingReady": "True/Converged"} {
			if got := status(rail, typ); got != want {
				t.Errorf("rail %d %s = %s, want %s", rail, typ, got, want)
			}
		}
	}
	if w := host.Writes(); len(w) != 2*9 {
		t.Errorf("first reconcile wrote %d changes, want 18 (up, MTU, 3 sysctls, address, rule, 2 routes per rail)", len(w))
	}

	host.DelAddr("vethB", "10.0.1.1/31")
	if err := d.Reconcile(); err != nil {
		t.Fatal(err)
	}
	if got := testutil.ToFloat64(d.Metrics().Drift.WithLabelValues("addr-add")); got != 1 {
		t.Errorf("addr-add drift = %v, want 1", got)
	}
	if w := host.Writes(); len(w) != 3 {
		t.Errorf("repair wrote %d changes, want 3 (address and the two routes the kernel dropped with it)", len(w))
	}

	host.DelLink("vethB")
	err := d.Reconcile()
	if err == nil || !strings.Contains(err.Error(), "netdev vethB does not exist") {
		t.Errorf("reconcile with vethB gone: %v", err)
	}
	if got := status(1, "AddressesReady"); got != "False/Conflict" {
		t.Errorf("rail 1 AddressesReady with its netdev gone = %s", got)
	}
	if got := status(0, "AddressesReady"); got != "True/Converged" {
		t.Errorf("rail 0 AddressesReady = %s", got)
	}
}

// TestDaemonLogsChangesOnceAndProblemsOnTransitions: every change to the
// host is logged once with rail, kind and object; a scrape that keeps
// failing for a missing netdev warns once, and says when it recovers.
func TestDaemonLogsChangesOnceAndProblemsOnTransitions(t *testing.T) {
	host := linktest.New()
	host.AddLink("vethA", 1500)
	c := DefaultConfig()
	c.SysfsRoot = filepath.Join("..", "testdata", "sysfs", "soft-roce", "sys")
	c.StateDir = t.TempDir()
	c.Listen.Metrics = ""
	c.Rails = []RailConfig{{Rail: intp(0), Netdev: "vethA", IPv4: "10.0.0.1/31"}}
	var logs strings.Builder
	log := slog.New(slog.NewTextHandler(&logs, nil))
	d, err := NewDaemon(DaemonOptions{Config: c, Log: log, Host: host})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if err := d.Reconcile(); err != nil {
		t.Fatal(err)
	}
	host.DelAddr("vethA", "10.0.0.1/31")
	if err := d.Reconcile(); err != nil {
		t.Fatal(err)
	}
	out := logs.String()
	for _, want := range []string{
		`msg=changed rail=0 netdev=vethA kind=link-up object="ip link set dev vethA up" drift=false`,
		`msg=changed rail=0 netdev=vethA kind=addr-add object="ip address add 10.0.0.1/31 dev vethA" drift=false`,
		`msg=changed rail=0 netdev=vethA kind=addr-add object="ip address add 10.0.0.1/31 dev vethA" drift=true`,
	} {
		if strings.Count(out, want) != 1 {
			t.Errorf("log has %q %d times, want once:\n%s", want, strings.Count(out, want), out)
		}
	}

	logs.Reset()
	host.DelLink("vethA")
	for i := 0; i < 3; i++ {
		if _, err := d.Metrics().Registry.Gather(); err != nil {
			t.Fatal(err)
		}
	}
	if n := strings.Count(logs.String(), "metrics: series dropped"); n != 1 {
		t.Errorf("three failing scrapes logged %d warnings, want 1:\n%s", n, logs.String())
	}
	host.AddLink("vethA", 9000)
	if _, err := d.Metrics().Registry.Gather(); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logs.String(), "metrics: collector reads everything again") {
		t.Errorf("no recovery line:\n%s", logs.String())
	}
}

// TestDaemonMount: a route mounted before Run is served by the daemon's
// handler next to the built-in paths, which it cannot replace.
func TestDaemonMount(t *testing.T) {
	host := linktest.New()
	host.AddLink("vethA", 1500)
	c := DefaultConfig()
	c.SysfsRoot = filepath.Join("..", "testdata", "sysfs", "soft-roce", "sys")
	c.StateDir = t.TempDir()
	c.Rails = []RailConfig{{Rail: intp(0), Netdev: "vethA", IPv4: "10.0.0.1/31"}}
	d, err := NewDaemon(DaemonOptions{Config: c, Log: quietLog(), Host: host})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	probe := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("probe\n")) })
	if err := d.Mount("/v1/probe", probe); err != nil {
		t.Fatal(err)
	}
	for _, taken := range []string{"/healthz", "/v1/status", "/v1/probe"} {
		if err := d.Mount(taken, probe); err == nil {
			t.Errorf("Mount(%s) replaced a route", taken)
		}
	}
	srv := httptest.NewServer(d.Handler())
	defer srv.Close()
	for path, want := range map[string]string{"/v1/probe": "probe\n", "/healthz": "ok\n"} {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(body) != want {
			t.Errorf("GET %s: %d %q, want 200 %q", path, resp.StatusCode, body, want)
		}
	}
}
