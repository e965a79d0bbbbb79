package main

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/roce-agent/roce-agent/nic/nettest"
)

// labConfig is an 8-rail config for nettest's lab: rails pinned to the
// veths rail0-7, /31 and /127 host addresses, the remote prefixes routed
// via each rail's leaf.
func labConfig(t *testing.T, stateDir string, extra string, mutate func(rail int) string) string {
	return labConfigTB(t, stateDir, extra, mutate)
}

// labConfigB is labConfig with a top-level section added.
func labConfigB(t testing.TB, stateDir, top string) string {
	t.Helper()
	p := labConfigTB(t, stateDir, "", nil)
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return writeConfig(t, top+string(b))
}

func labConfigTB(t testing.TB, stateDir string, extra string, mutate func(rail int) string) string {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "node: {name: lab-host}\nstate_dir: %s\nlink:\n  routes: [10.200.0.0/16, \"fc00:200::/64\"]\n%srails:\n", stateDir, extra)
	for n := 0; n < 8; n++ {
		line := fmt.Sprintf("  - {rail: %d, netdev: rail%d, ipv4: %q, ipv6: %q}\n", n, n, nettest.HostIPv4(n), nettest.HostIPv6(n))
		if mutate != nil {
			if m := mutate(n); m != "" {
				line = m
			}
		}
		b.WriteString(line)
	}
	return writeConfig(t, b.String())
}

func apply(t *testing.T, lab *nettest.Lab, cfg string) (int, string) {
	t.Helper()
	cmd := exec.Command("ip", "netns", "exec", lab.Host.Name, binary(t), "--config", cfg, "apply")
	out, err := cmd.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode(), string(out)
	}
	if err != nil {
		t.Fatal(err)
	}
	return 0, string(out)
}

// TestApplyEndToEnd runs the built binary in a host namespace with 8 veth
// rails, foreign addresses, routes and rules, and a leaf namespace: apply
// converges every rail, a second run changes nothing and causes no netlink
// event, foreign state is intact, an address deleted by hand is restored
// by the next run, and every bad config is rejected before any change.
func TestApplyEndToEnd(t *testing.T) {
	nettest.RequireRoot(t)
	nettest.RequireTools(t, "ping")
	lab := nettest.NewLab(t, 8)
	lab.AddForeignState(t)
	foreign := lab.ForeignState(t)
	state := t.TempDir()
	cfg := labConfig(t, state, "", nil)

	// plan shows the changes and makes none.
	w := nettest.Watch(t, lab.Host)
	out, err := exec.Command("ip", "netns", "exec", lab.Host.Name, binary(t), "--config", cfg, "plan").CombinedOutput()
	w.Stop()
	if err != nil || !strings.Contains(string(out), "120 changes, 0 conflicts") || !strings.Contains(string(out), "  ip rule add from 10.0.7.1 lookup 1007 priority 1007 protocol 171") {
		t.Fatalf("plan: %v\n%s", err, out)
	}
	if n, kinds := w.Count(); n != 0 {
		t.Errorf("plan caused %d netlink events %v", n, kinds)
	}

	if code, out := apply(t, lab, cfg); code != 0 || !strings.Contains(out, "8 of 8 rails converged") {
		t.Fatalf("first apply: exit %d\n%s", code, out)
	}
	for n := 0; n < 8; n++ {
		if err := lab.Host.Ping(strings.TrimSuffix(nettest.HostIPv4(n), "/31"), nettest.RemoteIPv4(n)); err != nil {
			t.Errorf("rail %d: %v", n, err)
		}
		if err := lab.Host.Ping(strings.TrimSuffix(nettest.HostIPv6(n), "/127"), nettest.RemoteIPv6(n)); err != nil {
			t.Errorf("rail %d: %v", n, err)
		}
	}

	w = nettest.Watch(t, lab.Host)
	code, out2 := apply(t, lab, cfg)
	w.Stop()
	if code != 0 || !strings.Contains(out2, "8 of 8 rails converged, 0 writes") {
		t.Errorf("second apply: exit %d\n%s", code, out2)
	}
	if n, kinds := w.Count(); n != 0 {
		t.Errorf("second apply caused %d netlink events %v", n, kinds)
	}
	if got := lab.ForeignState(t); got != foreign {
		t.Errorf("foreign state changed:\n%s\nvs\n%s", foreign, got)
	}

	lab.Host.MustExec(t, "ip", "address", "del", nettest.HostIPv4(4), "dev", "rail4")
	// The kernel drops the routes that used the address with it: the repair
	// re-adds the address and those routes, and touches no other rail.
	if code, out := apply(t, lab, cfg); code != 0 || !strings.Contains(out, "rail 4 (rail4): converged, 3 changes") || strings.Count(out, "converged, 0 changes") != 7 {
		t.Errorf("repair apply: exit %d\n%s", code, out)
	}
	if err := lab.Host.Ping("10.0.4.1", nettest.RemoteIPv4(4)); err != nil {
		t.Errorf("after repair: %v", err)
	}

	// "MTU above the NIC maximum" is TestCheckLive's: every link type this
	// kernel can create here (veth, vxlan) has a maximum of 65535, the
	// largest MTU a config may ask for.
	lab.Host.MustExec(t, "ip", "route", "add", "10.77.0.0/16", "dev", "mgmt0", "table", "2005", "proto", "boot")
	for _, bad := range []struct {
		name, extra string
		mutate      func(int) string
		want        string
	}{
		{"/30", "", func(n int) string {
			if n == 2 {
				return "  - {rail: 2, netdev: rail2, ipv4: 10.0.2.1/30}\n"
			}
			return ""
		}, "rails[2].ipv4: 10.0.2.1/30: want a /31"},
		{"leaf equals host", "", func(n int) string {
			if n == 3 {
				return "  - {rail: 3, netdev: rail3, ipv4: 10.0.3.1/31, leaf_ipv4: 10.0.3.1}\n"
			}
			return ""
		}, "rails[3].leaf_ipv4: 10.0.3.1 is the host address"},
		{"IPv4 in the IPv6 field", "", func(n int) string {
			if n == 1 {
				return "  - {rail: 1, netdev: rail1, ipv6: 10.0.1.1/31}\n"
			}
			return ""
		}, "rails[1].ipv6: 10.0.1.1/31 is not an IPv6 address"},
		{"overlap", "", func(n int) string {
			if n == 7 {
				return "  - {rail: 7, netdev: rail7, ipv4: 10.0.6.0/31}\n"
			}
			return ""
		}, "rails[7].ipv4: 10.0.6.0/31 overlaps rails[6].ipv4"},
		{"duplicate rail", "", func(n int) string {
			if n == 7 {
				return "  - {rail: 6, netdev: rail7, ipv4: 10.0.7.1/31}\n"
			}
			return ""
		}, "rails[7].rail: rail 6 is also rails[6]"},
		{"duplicate netdev", "", func(n int) string {
			if n == 7 {
				return "  - {rail: 7, netdev: rail6, ipv4: 10.0.7.1/31}\n"
			}
			return ""
		}, `rails[7].netdev: "rail6" is also rails[6]`},
		{"MTU below 1280 with IPv6", "  mtu: 1200\n", nil, "link.mtu: 1200 is below 1280"},
		{"pinned netdev missing", "", func(n int) string {
			if n == 5 {
				return "  - {rail: 5, netdev: rail55, ipv4: 10.0.5.1/31}\n"
			}
			return ""
		}, `netdev rail55 does not exist in the rails' network namespace`},
		// AddForeignState put a rule at priority 500; rail 5 would need it.
		{"priority range taken by a foreign rule", "  routing: {table_base: 1000, rule_priority_base: 495}\n", nil,
			`link.routing.rule_priority_base: priority 500 (rail 5) is used by foreign rule "500: from 172.16.5.5/32 lookup 77 proto 0"`},
		// A foreign route sits in table 2005 (added below); rail 5 would need it.
		{"table holding foreign routes", "  routing: {table_base: 2000, rule_priority_base: 2000}\n", nil,
			"link.routing.table_base: table 2005 (rail 5) already holds foreign route 10.77.0.0/16 (proto 3)"},
		{"tables over the kernel's", "  routing: {table_base: 70, rule_priority_base: 2000}\n", nil, "link.routing.table_base: 70 makes the rail tables 70-325 include"},
	} {
		t.Run(bad.name, func(t *testing.T) {
			c := labConfig(t, t.TempDir(), bad.extra, bad.mutate)
			w := nettest.Watch(t, lab.Host)
			code, out := apply(t, lab, c)
			w.Stop()
			if code == 0 || !strings.Contains(out, bad.want) {
				t.Errorf("exit %d, want non-zero and %q in:\n%s", code, bad.want, out)
			}
			if n, kinds := w.Count(); n != 0 {
				t.Errorf("rejected config caused %d netlink events %v", n, kinds)
			}
		})
	}
}

// TestApplyQoSOnVeth: with a qos section on veth rails (no dcbnl, no RDMA
// device), apply reports every QoS group unsupported, still converges the
// links, and a second run writes nothing.
func TestApplyQoSOnVeth(t *testing.T) {
	nettest.RequireRoot(t)
	lab := nettest.NewLab(t, 8)
	qosSection := "qos:\n  trust: dscp\n  pfc_priorities: [3]\n  dscp_to_priority: {26: 3, 48: 6}\n  dcbx: host\n  roce_tos: 106\n  dcqcn: {enabled: true, np: {cnp_dscp: 48, cnp_prio: 6}}\n"
	cfg := labConfig(t, t.TempDir(), "", nil)
	b, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfg, append(b, qosSection...), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out := apply(t, lab, cfg)
	if code != 0 || !strings.Contains(out, "8 of 8 rails converged") ||
		!strings.Contains(out, "rail 3 (rail3): qos dcb unsupported: rail3 has no dcbnl (DCB) support") ||
		!strings.Contains(out, "rail 3 (rail3): qos tos unsupported: the rail has no RDMA device") {
		t.Fatalf("apply: exit %d\n%s", code, out)
	}
	w := nettest.Watch(t, lab.Host)
	code, out = apply(t, lab, cfg)
	w.Stop()
	if code != 0 || !strings.Contains(out, "8 of 8 rails converged, 0 writes") {
		t.Errorf("second apply: exit %d\n%s", code, out)
	}
	if n, kinds := w.Count(); n != 0 {
		t.Errorf("second apply caused %d netlink events %v", n, kinds)
	}
}

// TestRunReloadAndStop runs the built daemon under a fake systemd: it
// becomes ready, a SIGHUP with a broken config file keeps the running
// config (the rails stay as they are), a SIGHUP with a good one applies
// it, and SIGTERM ends it with exit status 0 after STOPPING=1.
func TestRunReloadAndStop(t *testing.T) {
	nettest.RequireRoot(t)
	lab := nettest.NewLab(t, 8)
	state := t.TempDir()
	cfg := labConfigB(t, state, "listen: {metrics: \"127.0.0.1:19487\"}\n")
	sd := nettest.NewSystemd(t)
	seen := func(s string) bool { return sd.Count(s) > 0 }
	wait := func(what string, ok func() bool) {
		t.Helper()
		for start := time.Now(); !ok(); time.Sleep(10 * time.Millisecond) {
			if time.Since(start) > 10*time.Second {
				t.Fatalf("timed out waiting for %s", what)
			}
		}
	}
	var logs bytes.Buffer
	var logMu sync.Mutex
	cmd := exec.Command("ip", "netns", "exec", lab.Host.Name, binary(t), "--config", cfg, "--log-format", "json", "run")
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+sd.Socket, "WATCHDOG_USEC=400000", "WATCHDOG_PID=")
	cmd.Stderr = &lockedWriter{w: &logs, mu: &logMu}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill() }()
	logged := func(s string) func() bool {
		return func() bool { logMu.Lock(); defer logMu.Unlock(); return strings.Contains(logs.String(), s) }
	}
	wait("READY=1", func() bool { return seen("READY=1") })
	wait("WATCHDOG=1", func() bool { return seen("WATCHDOG=1") })
	if !strings.Contains(lab.Host.MustExec(t, "ip", "-o", "address", "show", "dev", "rail1"), "10.0.1.1/31") {
		t.Fatalf("rail1 not configured:\n%s", logs.String())
	}

	// A broken file: the reload is rejected and nothing changes.
	good, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfg, []byte(strings.Replace(string(good), "link:\n", "link:\n  mtu: 1200\n", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Process.Signal(syscall.SIGHUP)
	wait("reload rejected", logged("reload rejected; keeping the running config"))
	if out := lab.Host.MustExec(t, "ip", "-o", "link", "show", "dev", "rail1"); !strings.Contains(out, "mtu 9000") {
		t.Errorf("bad reload changed the rail: %s", out)
	}

	// A good one: applied.
	if err := os.WriteFile(cfg, []byte(strings.Replace(string(good), "link:\n", "link:\n  mtu: 8000\n", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Process.Signal(syscall.SIGHUP)
	wait("config reloaded", logged("config reloaded"))
	wait("mtu 8000", func() bool {
		return strings.Contains(lab.Host.MustExec(t, "ip", "-o", "link", "show", "dev", "rail1"), "mtu 8000")
	})

	_ = cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Errorf("exit after SIGTERM: %v\n%s", err, logs.String())
	}
	if !seen("STOPPING=1") {
		t.Error("no STOPPING=1")
	}
	// Logs are JSON with fixed keys.
	for _, line := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
		if !strings.HasPrefix(line, "{") || !strings.Contains(line, `"msg":`) {
			t.Errorf("not a JSON log line: %s", line)
		}
	}
}

type lockedWriter struct {
	w  io.Writer
	mu *sync.Mutex
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
