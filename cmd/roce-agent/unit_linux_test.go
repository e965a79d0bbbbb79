package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/roce-agent/roce-agent/agent"
	"github.com/roce-agent/roce-agent/nic/lldp"
	"github.com/roce-agent/roce-agent/nic/nettest"
)

// unitFile is the shipped systemd unit.
var unitFile = filepath.Join("..", "..", "packaging", "systemd", "roce-agent.service")

// serviceSettings reads the [Service] section of a unit file: each key's
// values in order (a key may repeat). Comments and blank lines are skipped;
// the unit uses no line continuations.
func serviceSettings(t *testing.T, path string) map[string][]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string][]string{}
	section := ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || line[0] == '#' || line[0] == ';':
		case line[0] == '[':
			section = line
		case strings.HasSuffix(line, `\`):
			t.Fatalf("%s: line continuation in %q: the parser here does not read them", path, line)
		case section == "[Service]":
			k, v, ok := strings.Cut(line, "=")
			if !ok {
				t.Fatalf("%s: %q is not key=value", path, line)
			}
			out[k] = append(out[k], v)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// one is the single value of key.
func one(t *testing.T, s map[string][]string, key string) string {
	t.Helper()
	if len(s[key]) != 1 {
		t.Fatalf("unit: %s set %d times, want once: %q", key, len(s[key]), s[key])
	}
	return s[key][0]
}

// TestUnitMatchesTheDaemon: what the unit says agrees with the daemon:
// its state directory is the default state_dir, it runs the packaged
// binary on the packaged config, the daemon's notify protocol is the one
// the unit declares, and the watchdog leaves room for the daemon's own
// 30 s liveness threshold.
func TestUnitMatchesTheDaemon(t *testing.T) {
	s := serviceSettings(t, unitFile)
	if got, want := "/var/lib/"+one(t, s, "StateDirectory"), agent.DefaultConfig().StateDir; got != want {
		t.Errorf("StateDirectory= gives %s, the default state_dir is %s", got, want)
	}
	if got, want := one(t, s, "ExecStart"), "/usr/bin/roce-agent --config /etc/roce-agent/config.yaml run"; got != want {
		t.Errorf("ExecStart=%s, want %s", got, want)
	}
	for key, want := range map[string]string{"Type": "notify", "NotifyAccess": "main", "ExecReload": "/bin/kill -HUP $MAINPID", "Restart": "on-failure"} {
		if got := one(t, s, key); got != want {
			t.Errorf("%s=%s, want %s", key, got, want)
		}
	}
	wd, err := time.ParseDuration(one(t, s, "WatchdogSec"))
	if err != nil {
		t.Fatalf("WatchdogSec: %v", err)
	}
	// The daemon pings every WatchdogSec/2 while its loop showed life in
	// the last 30 s; a reconcile or resync that takes a few seconds must
	// not miss two pings.
	if wd < 30*time.Second {
		t.Errorf("WatchdogSec=%s is below the daemon's 30 s liveness threshold", wd)
	}
}

// capBits are the capabilities the unit may name, as setpriv spells them
// and as their bit in /proc/PID/status.
var capBits = map[string]struct {
	setpriv string
	bit     uint
}{
	"CAP_NET_ADMIN":        {"net_admin", unix.CAP_NET_ADMIN},
	"CAP_NET_RAW":          {"net_raw", unix.CAP_NET_RAW},
	"CAP_NET_BIND_SERVICE": {"net_bind_service", unix.CAP_NET_BIND_SERVICE},
	"CAP_SYS_ADMIN":        {"sys_admin", unix.CAP_SYS_ADMIN},
	"CAP_IPC_LOCK":         {"ipc_lock", unix.CAP_IPC_LOCK},
	"CAP_DAC_OVERRIDE":     {"dac_override", unix.CAP_DAC_OVERRIDE},
}

// sandboxWrap is the command prefix that gives the binary what the unit
// gives it outside the mount namespace and seccomp: uid 0 with the unit's
// capability bounding set and no other capability, no new privileges, its
// memlock limit and its umask. It returns the prefix and the capability
// mask the process must end up with.
func sandboxWrap(t *testing.T, s map[string][]string) ([]string, uint64) {
	t.Helper()
	if amb := one(t, s, "AmbientCapabilities"); amb != "" {
		t.Fatalf("AmbientCapabilities=%s: the test (and the docs) assume uid 0 with none", amb)
	}
	var names []string
	var mask uint64
	for _, c := range strings.Fields(one(t, s, "CapabilityBoundingSet")) {
		b, ok := capBits[c]
		if !ok {
			t.Fatalf("CapabilityBoundingSet names %s, which this test does not know", c)
		}
		names = append(names, "+"+b.setpriv)
		mask |= 1 << b.bit
	}
	if one(t, s, "NoNewPrivileges") != "yes" {
		t.Fatal("NoNewPrivileges= is not yes")
	}
	memlock := one(t, s, "LimitMEMLOCK")
	if memlock == "infinity" {
		memlock = "unlimited"
	}
	umask := one(t, s, "UMask")
	wrap := []string{
		"setpriv", "--no-new-privs", "--inh-caps=-all", "--bounding-set=-all," + strings.Join(names, ","), "--",
		"sh", "-c", "umask " + umask + " && exec \"$0\" \"$@\"",
	}
	// Raising the hard memlock limit needs CAP_SYS_RESOURCE, which a
	// container may not give the test; only the probe tools use it.
	limit := []string{"prlimit", "--memlock=" + memlock + ":" + memlock, "--"}
	if out, err := exec.Command(limit[0], append(limit[1:], "true")...).CombinedOutput(); err != nil {
		t.Logf("LimitMEMLOCK=%s not reproduced: %v %s", one(t, s, "LimitMEMLOCK"), err, out)
		return wrap, mask
	}
	return append(limit, wrap...), mask
}

// procStatus reads one field of /proc/PID/status.
func procStatus(t *testing.T, pid int, field string) string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			return strings.TrimSpace(v)
		}
	}
	t.Fatalf("/proc/%d/status has no %s", pid, field)
	return ""
}

// lldpSender sends an LLDP frame out of each leaf port every 200 ms until
// the test ends: the leaf's side of the cabling check.
func lldpSender(t *testing.T, lab *nettest.Lab) {
	t.Helper()
	type port struct {
		fd, ifindex int
		frame       []byte
	}
	var ports []port
	for n := 0; n < lab.Rails; n++ {
		link, err := lab.Leaf.NL.LinkByName(fmt.Sprintf("leaf%d", n))
		if err != nil {
			t.Fatal(err)
		}
		frame, err := lldp.EncodeFrame(link.Attrs().HardwareAddr, lldp.Neighbor{ChassisID: "02:00:00:00:00:aa", SysName: "leaf-a", PortID: fmt.Sprintf("Ethernet%d", n), TTL: 120 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		var fd int
		inNS(t, lab.Leaf, func() { fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0) })
		if err != nil {
			t.Fatal(err)
		}
		ports = append(ports, port{fd: fd, ifindex: link.Attrs().Index, frame: frame})
	}
	done := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		for {
			for _, p := range ports {
				_ = unix.Sendto(p.fd, p.frame, 0, &unix.SockaddrLinklayer{Ifindex: p.ifindex, Halen: 6, Addr: [8]byte{0x01, 0x80, 0xc2, 0, 0, 0x0e}})
			}
			select {
			case <-done:
				return
			case <-tick.C:
			}
		}
	}()
	t.Cleanup(func() {
		close(done)
		<-stopped
		for _, p := range ports {
			unix.Close(p.fd)
		}
	})
}

// TestUnitSandboxIsEnough runs the built binary as the unit runs it, with
// the unit's own ExecStart arguments (the config path aside), uid 0 with
// only the unit's capability bounding set, NoNewPrivileges, its memlock
// limit and umask, under a fake notify socket: the rails converge, READY=1
// arrives, the LLDP cabling check hears the leaf (CAP_NET_RAW), drift is
// repaired, ExecReload's SIGHUP is answered with RELOADING=1 and
// MONOTONIC_USEC= then READY=1, nccl.env stays readable to jobs under
// UMask=0077, and SIGTERM stops it cleanly. The mount namespace, seccomp
// filter and device policy need systemd as PID 1 and are not exercised
// here (packaging/systemd/check.sh checks the unit statically).
func TestUnitSandboxIsEnough(t *testing.T) {
	nettest.RequireRoot(t)
	nettest.RequireTools(t, "setpriv", "prlimit")
	s := serviceSettings(t, unitFile)
	wrap, capMask := sandboxWrap(t, s)

	args := strings.Fields(one(t, s, "ExecStart"))
	if args[0] != "/usr/bin/roce-agent" {
		t.Fatalf("ExecStart runs %s", args[0])
	}
	lab := nettest.NewLab(t, 2)
	state := t.TempDir()
	b, err := os.ReadFile(labConfigN(t, state, 2))
	if err != nil {
		t.Fatal(err)
	}
	cfg := writeConfig(t, "lldp: {source: listen, interval: 5s}\n"+string(b))
	args = args[1:]
	for i := range args {
		if args[i] == "--config" && i+1 < len(args) {
			args[i+1] = cfg
		}
	}
	lldpSender(t, lab)

	run, sd, logs := startDaemon(t, lab, wrap, args...)
	pid := run.Process.Pid
	if exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid)); err != nil || exe != binary(t) {
		t.Fatalf("pid %d is %s (%v), not the daemon: a wrapper did not exec", pid, exe, err)
	}
	want := fmt.Sprintf("%016x", capMask)
	for _, field := range []string{"CapEff", "CapPrm", "CapBnd"} {
		if got := procStatus(t, pid, field); got != want {
			t.Errorf("%s = %s, want %s (the unit's CapabilityBoundingSet)", field, got, want)
		}
	}
	if got := procStatus(t, pid, "CapAmb"); got != "0000000000000000" {
		t.Errorf("CapAmb = %s, want none", got)
	}
	if got := procStatus(t, pid, "NoNewPrivs"); got != "1" {
		t.Errorf("NoNewPrivs = %s", got)
	}

	// Converged: addresses, MTU, policy routing on both rails.
	for n := 0; n < 2; n++ {
		dev := fmt.Sprintf("rail%d", n)
		if out := lab.Host.MustExec(t, "ip", "-o", "address", "show", "dev", dev); !strings.Contains(out, nettest.HostIPv4(n)) || !strings.Contains(out, nettest.HostIPv6(n)) {
			t.Errorf("%s addresses after READY=1:\n%s", dev, out)
		}
		if out := lab.Host.MustExec(t, "ip", "-o", "link", "show", "dev", dev); !strings.Contains(out, "mtu 9000") || !strings.Contains(out, "state UP") {
			t.Errorf("%s link after READY=1: %s", dev, out)
		}
		table := strconv.Itoa(1000 + n)
		if out := lab.Host.MustExec(t, "ip", "route", "show", "table", table); !strings.Contains(out, "10.200.0.0/16") {
			t.Errorf("%s: table %s has no fabric route:\n%s", dev, table, out)
		}
	}
	if out := lab.Host.MustExec(t, "sysctl", "-n", "net.ipv4.conf.rail0.rp_filter"); strings.TrimSpace(out) != "2" {
		t.Errorf("rail0 rp_filter = %s, want 2", out)
	}

	// CAP_NET_RAW: the AF_PACKET listener hears each rail's leaf port.
	client := nsClient(t, lab.Host)
	metrics := func() string {
		resp, err := client.Get("http://127.0.0.1:9487/metrics")
		if err != nil {
			return ""
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return string(body)
	}
	waitLong(t, "LLDP neighbours of both rails", 20*time.Second, func() bool {
		m := metrics()
		return strings.Contains(m, `port_id="Ethernet0"`) && strings.Contains(m, `port_id="Ethernet1"`)
	})

	// Drift is repaired.
	lab.Host.MustExec(t, "ip", "address", "del", nettest.HostIPv4(1), "dev", "rail1")
	waitFor(t, "drift repaired", func() bool {
		out, _ := lab.Host.Exec("ip", "-o", "address", "show", "dev", "rail1")
		return strings.Contains(out, "10.0.1.1/31")
	})

	// ExecReload: SIGHUP to $MAINPID.
	if err := unix.Kill(pid, unix.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "RELOADING=1", func() bool { return sd.Count("RELOADING=1") == 1 })
	waitFor(t, "READY=1 after the reload", func() bool { return sd.Count("READY=1") == 2 })
	if sd.Count("MONOTONIC_USEC=") != 1 {
		t.Errorf("%d MONOTONIC_USEC= with the RELOADING=1, want 1", sd.Count("MONOTONIC_USEC="))
	}

	// UMask=0077 does not hide nccl.env from the jobs that source it.
	fi, err := os.Stat(filepath.Join(state, agent.NCCLEnvFile))
	if err != nil || fi.Mode().Perm() != 0o644 {
		t.Errorf("nccl.env under UMask=%s: %v %v, want 0644", one(t, s, "UMask"), fi, err)
	}

	if err := unix.Kill(pid, unix.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := run.Wait(); err != nil {
		t.Errorf("exit after SIGTERM: %v", err)
	}
	if sd.Count("STOPPING=1") != 1 {
		t.Error("no STOPPING=1")
	}
	out := logs.String()
	low := strings.ToLower(out)
	if strings.Contains(out, "level=ERROR") || strings.Contains(low, "operation not permitted") || strings.Contains(low, "permission denied") {
		t.Errorf("the daemon under the unit's capabilities logged a failure:\n%s", out)
	}
}

// waitLong is waitFor with its own deadline.
func waitLong(t *testing.T, what string, d time.Duration, ok func() bool) {
	t.Helper()
	for start := time.Now(); !ok(); time.Sleep(50 * time.Millisecond) {
		if time.Since(start) > d {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}
