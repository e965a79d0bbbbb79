package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/roce-agent/roce-agent/nic/nettest"
)

// inLab runs the built binary in the lab's host namespace with a deadline,
// so that a hang fails the test instead of stalling it. It returns the exit
// code, the combined output and how long it ran.
func inLab(t *testing.T, lab *nettest.Lab, env []string, args ...string) (int, string, time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", lab.Host.Name, binary(t)}, args...)...)
	cmd.Env = append(cleanEnv(), env...)
	start := time.Now()
	out, err := cmd.CombinedOutput()
	took := time.Since(start)
	if ctx.Err() != nil {
		t.Fatalf("%v: still running after 20s (killed)\n%s", args, out)
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode(), string(out), took
	}
	if err != nil {
		t.Fatal(err)
	}
	return 0, string(out), took
}

// cleanEnv is the test's environment without ROCE_AGENT_* settings.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "ROCE_AGENT_") && !strings.HasPrefix(kv, "NOTIFY_SOCKET=") {
			env = append(env, kv)
		}
	}
	return env
}

// TestBadDesiredStateChangesNothing: on a converged host with foreign
// state, every absent, empty, unreadable, hostile or loosely typed config
// is refused by apply, plan and run with exit 2, a message that names the
// file and the reason (and never echoes a huge value), promptly, and the
// host's addresses, rules and routes are exactly as before.
func TestBadDesiredStateChangesNothing(t *testing.T) {
	nettest.RequireRoot(t)
	lab := nettest.NewLab(t, 8)
	lab.AddForeignState(t)
	state := t.TempDir()
	if code, out := apply(t, lab, labConfig(t, state, "", nil)); code != 0 {
		t.Fatalf("converge: exit %d\n%s", code, out)
	}
	before := lab.Host.Snapshot(t)

	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo.yaml")
	if err := unix.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	unknownKeys := func(size int) string {
		var b strings.Builder
		for i := 0; b.Len() < size-20; i++ {
			fmt.Fprintf(&b, "key%07d: %d\n", i, i)
		}
		return b.String()
	}
	lab8 := func(extra string) string {
		b, err := os.ReadFile(labConfig(t, state, "", nil))
		if err != nil {
			t.Fatal(err)
		}
		return strings.Replace(string(b), "link:\n", "link:\n"+extra, 1)
	}
	vanished := filepath.Join(dir, "vanished.yaml")

	cases := []struct {
		name, path string
		want       []string
	}{
		{"empty file", write("empty.yaml", ""), []string{"has no settings"}},
		{"white space", write("space.yaml", "  \n\t\n\n"), []string{"has no settings"}},
		{"comments only", write("comments.yaml", "# rails:\n#  - {rail: 0}\n"), []string{"has no settings"}},
		{"rails: []", write("rails-empty.yaml", "rails: []\n"), []string{"no desired state", "it has no rails"}},
		{"rails: null", write("rails-null.yaml", "rails: null\n"), []string{"no desired state", "it has no rails"}},
		{"only state_dir", write("state-only.yaml", "state_dir: "+state+"\n"), []string{"no desired state", "it has no rails"}},
		{"pins without addresses", write("pins.yaml", "rails:\n  - {rail: 0, netdev: rail0}\n"), []string{"no desired state", "no rail has an address"}},
		{"a directory", dir, []string{"is a directory, not a regular file"}},
		{"a FIFO", fifo, []string{"is a FIFO, not a regular file"}},
		{"/dev/zero", "/dev/zero", []string{"is a character device, not a regular file"}},
		{"vanished", vanished, []string{"no such file or directory"}},
		{"10 MB of unknown keys", write("huge.yaml", unknownKeys(10<<20)), []string{"is larger than 1024 KiB"}},
		{"1 MB of unknown keys", write("big.yaml", unknownKeys(1<<20-100)), []string{"unknown keys: key0000000, key0000001", "and "}},
		{"an alias bomb", write("bomb.yaml", aliasBomb()), []string{"more than 100000 YAML nodes"}},
		{"5000 rails", write("many-rails.yaml", manyRails(5000)), []string{"rails: 5000 entries; at most 256"}},
		{"nested 100 deep", write("deep.yaml", "node: "+strings.Repeat("[", 100)+strings.Repeat("]", 100)+"\n"), []string{"nested more than 32 levels deep"}},
		{"duplicate keys", write("dup.yaml", lab8("")+"state_dir: /tmp/elsewhere\n"), []string{`key "state_dir" appears twice in one mapping`}},
		{"keys differing in case", write("case.yaml", "rails:\n  - {rail: 0, netdev: rail0, ipv4: 10.0.0.1/31}\nRAILS:\n  - {rail: 1, netdev: rail1, ipv4: 10.0.1.1/31}\n"),
			[]string{`key "RAILS" repeats key "rails" (keys are case-insensitive)`}},
		{"300 KB state_dir", write("statedir-huge.yaml", strings.Replace(lab8(""), "state_dir: "+state, "state_dir: /"+strings.Repeat("S", 300<<10), 1)),
			[]string{"state_dir", "is longer than 1024 bytes", "(307201 bytes)"}},
		{"relative state_dir", write("statedir-rel.yaml", strings.Replace(lab8(""), "state_dir: "+state, "state_dir: state", 1)),
			[]string{"state_dir", `"state" is not an absolute path`}},
		{"500 KB listen address", write("listen-huge.yaml", "listen: {metrics: \""+strings.Repeat("L", 500<<10)+"\"}\n"+lab8("")),
			[]string{"listen.metrics", "is not host:port", "(512000 bytes)"}},
		{"fractional MTU", write("mtu-frac.yaml", lab8("  mtu: 9000.5\n")), []string{"link.mtu", "9000.5 is not an integer"}},
		{"boolean MTU", write("mtu-bool.yaml", lab8("  mtu: true\n")), []string{"link.mtu", "true is not an integer"}},
		{"20-digit MTU", write("mtu-huge.yaml", lab8("  mtu: 99999999999999999999\n")), []string{"link.mtu", "is out of range"}},
		{"string MTU", write("mtu-string.yaml", lab8("  mtu: \"9k\"\n")), []string{"link.mtu", `"9k" is not an integer`}},
		{"500 KB netdev name", write("netdev-huge.yaml", "rails:\n  - {rail: 0, ipv4: 10.0.0.1/31, netdev: "+strings.Repeat("x", 500<<10)+"}\n"),
			[]string{"rails[0].netdev", "must be 1-15 characters", "(512000 bytes)"}},
	}
	for _, tc := range cases {
		for _, command := range []string{"apply", "plan", "run"} {
			code, out, took := inLab(t, lab, nil, "--config", tc.path, command)
			t.Logf("%-24s %-5s refused in %v", tc.name, command, took.Round(time.Millisecond))
			if code != 2 {
				t.Errorf("%s %s: exit %d, want 2\n%s", tc.name, command, code, clipOut(out))
			}
			for _, w := range append([]string{tc.path}, tc.want...) {
				if !strings.Contains(out, w) {
					t.Errorf("%s %s: output does not contain %q:\n%s", tc.name, command, w, clipOut(out))
				}
			}
			if len(out) > 4096 {
				t.Errorf("%s %s: %d bytes of output; a hostile value is echoed", tc.name, command, len(out))
			}
		}
	}

	// A config with a desired state whose rails come out empty (qos only,
	// no rail pinned or addressed, no RDMA NIC here): refused at run time
	// because the agent owns state, exit 1, nothing removed.
	qosOnly := write("qos-only.yaml", "state_dir: "+state+"\nqos: {roce_tos: 106}\n")
	for _, command := range []string{"apply", "plan"} {
		code, out, _ := inLab(t, lab, nil, "--config", qosOnly, command)
		if code != 1 || !strings.Contains(out, "refused: the desired state has no rails while roce-agent owns 64 objects") {
			t.Errorf("%s with no rails: exit %d\n%s", command, code, clipOut(out))
		}
	}

	// No --config and no file at the default path: refused, exit 2.
	if _, err := os.Stat(DefaultConfigPath); err == nil {
		t.Logf("%s exists on this machine; the no-config case is skipped", DefaultConfigPath)
	} else {
		for _, command := range []string{"apply", "plan", "run"} {
			code, out, _ := inLab(t, lab, nil, command)
			if code != 2 || !strings.Contains(out, "no desired state: config "+DefaultConfigPath+" does not exist") {
				t.Errorf("%s without a config: exit %d\n%s", command, code, out)
			}
		}
	}
	if after := lab.Host.Snapshot(t); after != before {
		t.Errorf("the host changed:\nbefore:\n%s\nafter:\n%s", before, after)
	}
}

// aliasBomb is the "billion laughs" document: ten levels of ten aliases.
func aliasBomb() string {
	var b strings.Builder
	b.WriteString("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n")
	for i := 1; i < 10; i++ {
		fmt.Fprintf(&b, "a%d: &a%d [%s]\n", i, i, strings.TrimSuffix(strings.Repeat(fmt.Sprintf("*a%d, ", i-1), 10), ", "))
	}
	return b.String()
}

func manyRails(n int) string {
	var b strings.Builder
	b.WriteString("rails:\n")
	for i := 0; i < n; i++ {
		fmt.Fprintf(&b, "  - {rail: %d, ipv4: 10.%d.%d.1/31}\n", i%256, i/256, i%256)
	}
	return b.String()
}

func clipOut(s string) string {
	if len(s) > 2000 {
		return s[:2000] + fmt.Sprintf("... (%d bytes)", len(s))
	}
	return s
}

// TestTeardownRemovesExactlyWhatIsOwned: teardown --dry-run lists every
// object the agent owns and changes nothing; teardown removes exactly
// those (foreign state intact); a second teardown finds nothing; apply
// then converges again from clean.
func TestTeardownRemovesExactlyWhatIsOwned(t *testing.T) {
	nettest.RequireRoot(t)
	lab := nettest.NewLab(t, 4)
	lab.AddForeignState(t)
	foreign := lab.ForeignState(t)
	state := t.TempDir()
	cfg := labConfigN(t, state, 4)
	if code, out := apply(t, lab, cfg); code != 0 {
		t.Fatalf("converge: exit %d\n%s", code, out)
	}
	before := lab.Host.Snapshot(t)
	// 4 rails x (2 addresses + 2 rules + 2 connected routes + 2 routed prefixes)
	const owned = 32
	code, out, _ := inLab(t, lab, nil, "--config", cfg, "teardown", "--dry-run")
	if code != 0 || !strings.Contains(out, fmt.Sprintf("%d objects owned by roce-agent", owned)) || !strings.Contains(out, "dry run: nothing removed") {
		t.Fatalf("dry run: exit %d\n%s", code, out)
	}
	if after := lab.Host.Snapshot(t); after != before {
		t.Fatalf("teardown --dry-run changed the host:\n%s\nvs\n%s", before, after)
	}
	code, out, _ = inLab(t, lab, nil, "--config", cfg, "teardown")
	if code != 0 || strings.Count(out, "removed: ") != owned || !strings.Contains(out, fmt.Sprintf("%d of %d removed", owned, owned)) {
		t.Fatalf("teardown: exit %d\n%s", code, out)
	}
	for _, args := range [][]string{
		{"ip", "-4", "route", "show", "table", "all", "proto", "171"}, {"ip", "-6", "route", "show", "table", "all", "proto", "171"},
		{"ip", "-o", "address", "show", "to", "10.0.0.0/16"}, {"ip", "-o", "address", "show", "to", "fc00::/48"},
	} {
		if got := strings.TrimSpace(lab.Host.MustExec(t, args...)); got != "" {
			t.Errorf("%v after teardown:\n%s", args, got)
		}
	}
	// iproute2 6.1 does not filter rules by protocol: look for it.
	for _, fam := range []string{"-4", "-6"} {
		if got := lab.Host.MustExec(t, "ip", fam, "rule", "show"); strings.Contains(got, "proto 171") {
			t.Errorf("rules after teardown:\n%s", got)
		}
	}
	if got := lab.ForeignState(t); got != foreign {
		t.Errorf("foreign state changed:\n%s\nvs\n%s", foreign, got)
	}
	if code, out, _ = inLab(t, lab, nil, "--config", cfg, "teardown"); code != 0 || !strings.Contains(out, "0 objects owned by roce-agent") {
		t.Errorf("second teardown: exit %d\n%s", code, out)
	}
	if code, out := apply(t, lab, cfg); code != 0 || !strings.Contains(out, "4 of 4 rails converged") {
		t.Errorf("apply after teardown: exit %d\n%s", code, out)
	}
}

// labConfigN is the lab config for the first n rails.
func labConfigN(t *testing.T, stateDir string, n int) string {
	t.Helper()
	return labConfig(t, stateDir, "", func(rail int) string {
		if rail >= n {
			return "#\n"
		}
		return ""
	})
}

// TestOwnershipLivesInTheKernel wipes state_dir between applies: nothing
// is re-added, flapped or orphaned. Addresses carry IFA_PROTO 171, so a
// rail dropped from the config after a wipe still loses exactly its own
// addresses, rules and routes; a foreign address on it stays.
func TestOwnershipLivesInTheKernel(t *testing.T) {
	nettest.RequireRoot(t)
	nettest.RequireTools(t, "ping")
	lab := nettest.NewLab(t, 8)
	lab.AddForeignState(t)
	foreign := lab.ForeignState(t)
	state := t.TempDir()
	cfg := labConfig(t, state, "", nil)
	if code, out := apply(t, lab, cfg); code != 0 {
		t.Fatalf("converge: exit %d\n%s", code, out)
	}
	lab.Host.MustExec(t, "ip", "address", "add", "192.168.99.1/24", "dev", "rail7")

	wipe := func() {
		t.Helper()
		if err := os.RemoveAll(state); err != nil {
			t.Fatal(err)
		}
	}
	wipe()
	w := nettest.Watch(t, lab.Host)
	code, out := apply(t, lab, cfg)
	w.Stop()
	if code != 0 || !strings.Contains(out, "8 of 8 rails converged, 0 writes") {
		t.Errorf("apply after wiping state_dir: exit %d\n%s", code, out)
	}
	if n, kinds := w.Count(); n != 0 {
		t.Errorf("apply after wiping state_dir caused %d netlink events %v", n, kinds)
	}

	wipe()
	seven := labConfigN(t, state, 7)
	code, out = apply(t, lab, seven)
	if code != 0 || !strings.Contains(out, "7 of 7 rails converged") {
		t.Errorf("dropping rail 7 after a wipe: exit %d\n%s", code, out)
	}
	for _, want := range []string{"removed: ip address del 10.0.7.1/31 dev rail7", "removed: ip -6 address del fc00:0:0:8::1/127 dev rail7",
		"removed: ip rule del from 10.0.7.1 lookup 1007 priority 1007 protocol 171"} {
		if !strings.Contains(out, want) {
			t.Errorf("dropping rail 7: %q missing from\n%s", want, out)
		}
	}
	if got := lab.Host.MustExec(t, "ip", "-o", "address", "show", "dev", "rail7", "scope", "global"); strings.Contains(got, "10.0.7.1") || strings.Contains(got, "fc00:0:0:8::1") || !strings.Contains(got, "192.168.99.1/24") {
		t.Errorf("rail7 after it was dropped:\n%s", got)
	}
	if got := strings.TrimSpace(lab.Host.MustExec(t, "ip", "route", "show", "table", "1007")); got != "" {
		t.Errorf("table 1007 after rail 7 was dropped:\n%s", got)
	}
	for n := 0; n < 7; n++ {
		if err := lab.Host.Ping(strings.TrimSuffix(nettest.HostIPv4(n), "/31"), nettest.RemoteIPv4(n)); err != nil {
			t.Errorf("rail %d after dropping rail 7: %v", n, err)
		}
	}
	if got := lab.ForeignState(t); got != foreign {
		t.Errorf("foreign state changed:\n%s\nvs\n%s", foreign, got)
	}
	if code, out = apply(t, lab, seven); code != 0 || !strings.Contains(out, "0 writes") {
		t.Errorf("apply again: exit %d\n%s", code, out)
	}
}

// TestStateDirLock: a running daemon holds state_dir; apply and teardown
// on it say who holds it and exit non-zero before any change. The daemon
// removed a temporary file a killed writer left behind.
func TestStateDirLock(t *testing.T) {
	nettest.RequireRoot(t)
	lab := nettest.NewLab(t, 2)
	state := t.TempDir()
	stale := filepath.Join(state, ".owned.json.12345")
	if err := os.WriteFile(stale, []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := labConfigN(t, state, 2)
	if b, err := os.ReadFile(cfg); err == nil {
		cfg = writeConfig(t, "listen: {metrics: \"127.0.0.1:0\"}\n"+string(b))
	}
	cmd, _, _ := startDaemon(t, lab, nil, "--config", cfg, "run")
	if _, err := os.Stat(stale); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("stale temporary file still there: %v", err)
	}
	before := lab.Host.Snapshot(t)
	w := nettest.Watch(t, lab.Host)
	for _, args := range [][]string{{"apply"}, {"teardown"}, {"run"}} {
		code, out, _ := inLab(t, lab, nil, append([]string{"--config", cfg}, args...)...)
		want := fmt.Sprintf("state_dir %s is locked by pid %d (roce-agent run, since ", state, cmd.Process.Pid)
		if code != 1 || !strings.Contains(out, want) {
			t.Errorf("%v while the daemon runs: exit %d, want 1 and %q in\n%s", args, code, want, out)
		}
	}
	// A dry run changes nothing and takes no lock, like plan.
	if code, out, _ := inLab(t, lab, nil, "--config", cfg, "teardown", "--dry-run"); code != 0 || !strings.Contains(out, "objects owned by roce-agent") {
		t.Errorf("teardown --dry-run while the daemon runs: exit %d\n%s", code, out)
	}
	w.Stop()
	if n, kinds := w.Count(); n != 0 {
		t.Errorf("refused commands caused %d netlink events %v", n, kinds)
	}
	if after := lab.Host.Snapshot(t); after != before {
		t.Errorf("refused commands changed the host:\n%s\nvs\n%s", before, after)
	}
	_ = cmd.Process.Signal(unix.SIGTERM)
	_ = cmd.Wait()
	if code, out := apply(t, lab, cfg); code != 0 {
		t.Errorf("apply after the daemon stopped: exit %d\n%s", code, out)
	}
}

// TestCapNetAdminIsEnough runs apply with CAP_NET_ADMIN as its only
// capability: it converges (no setns into its own namespace). Without any
// capability, the error names CAP_NET_ADMIN.
func TestCapNetAdminIsEnough(t *testing.T) {
	nettest.RequireRoot(t)
	if _, err := exec.LookPath("setpriv"); err != nil {
		t.Skip("setpriv (util-linux) not installed")
	}
	lab := nettest.NewLab(t, 2)
	state := t.TempDir()
	cfg := labConfigN(t, state, 2)
	netAdmin := []string{"setpriv", "--bounding-set=-all,+net_admin", "--inh-caps=-all,+net_admin", "--"}
	caps := lab.Host.MustExec(t, append(netAdmin, "grep", "CapEff", "/proc/self/status")...)
	if !strings.Contains(caps, "0000000000001000") {
		t.Fatalf("setpriv did not leave CAP_NET_ADMIN alone: %s", caps)
	}
	out, err := exec.Command("ip", append(append([]string{"netns", "exec", lab.Host.Name}, netAdmin...), binary(t), "--config", cfg, "apply")...).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "2 of 2 rails converged") {
		t.Fatalf("apply with CAP_NET_ADMIN only: %v\n%s", err, out)
	}
	out, err = exec.Command("ip", append(append([]string{"netns", "exec", lab.Host.Name}, netAdmin...), binary(t), "--config", cfg, "plan")...).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "0 changes, 0 conflicts") {
		t.Errorf("plan with CAP_NET_ADMIN only: %v\n%s", err, out)
	}
	// The daemon too: it becomes ready and repairs drift.
	run, _, logs := startDaemon(t, lab, netAdmin, "--config", cfg, "--listen", "127.0.0.1:0", "run")
	lab.Host.MustExec(t, "ip", "address", "del", nettest.HostIPv4(1), "dev", "rail1")
	waitFor(t, "drift repaired by a daemon with CAP_NET_ADMIN only", func() bool {
		out, _ := lab.Host.Exec("ip", "-o", "address", "show", "dev", "rail1")
		return strings.Contains(out, "10.0.1.1/31")
	})
	_ = run.Process.Signal(unix.SIGTERM)
	if err := run.Wait(); err != nil || strings.Contains(logs.String(), "level=ERROR") {
		t.Errorf("daemon with CAP_NET_ADMIN only: %v\n%s", err, logs.String())
	}

	// Without privileges: a user that can read the binary and config.
	dir, err := os.MkdirTemp("", "ra-nocap")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	bin := filepath.Join(dir, "roce-agent")
	raw, err := os.ReadFile(binary(t))
	if err != nil {
		t.Fatal(err)
	}
	nobodyState := filepath.Join(dir, "state")
	b, _ := os.ReadFile(labConfigN(t, nobodyState, 2))
	nobodyCfg := filepath.Join(dir, "config.yaml")
	for _, err := range []error{os.WriteFile(bin, raw, 0o755), os.WriteFile(nobodyCfg, b, 0o644), os.Mkdir(nobodyState, 0o777), os.Chmod(dir, 0o755), os.Chmod(nobodyState, 0o777)} {
		if err != nil {
			t.Fatal(err)
		}
	}
	lab2 := nettest.NewLab(t, 2)
	out, err = exec.Command("ip", "netns", "exec", lab2.Host.Name, "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
		"--inh-caps=-all", "--bounding-set=-all", "--", bin, "--config", nobodyCfg, "apply").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "roce-agent needs CAP_NET_ADMIN") {
		t.Errorf("apply without privileges: %v, want the capability named in\n%s", err, out)
	}
}

// TestMissingNetdevFailsOnlyItsRail: with a sysfs tree that has no NICs,
// pinned netdevs are found through netlink, as the daemon does; the one
// that does not exist fails alone.
func TestMissingNetdevFailsOnlyItsRail(t *testing.T) {
	nettest.RequireRoot(t)
	nettest.RequireTools(t, "ping")
	lab := nettest.NewLab(t, 3)
	state := t.TempDir()
	cfg := labConfig(t, state, "", func(n int) string {
		switch {
		case n == 3:
			return fmt.Sprintf("  - {rail: 3, netdev: rail3, ipv4: %q}\n", nettest.HostIPv4(3))
		case n > 3:
			return "#\n"
		}
		return ""
	})
	// A sysfs tree with no NIC at all (the fixture "empty").
	empty := fixture(t, "empty")
	code, out, _ := inLab(t, lab, nil, "--config", cfg, "--sysfs-root", empty, "apply")
	if code != 1 || strings.Count(out, "): converged, ") != 3 || !strings.Contains(out, "rail 3 (rail3): NOT CONVERGED: conflict: netdev rail3 does not exist") {
		t.Errorf("exit %d, want 1 with rails 0-2 converged and rail 3 missing:\n%s", code, out)
	}
	for n := 0; n < 3; n++ {
		if err := lab.Host.Ping(strings.TrimSuffix(nettest.HostIPv4(n), "/31"), nettest.RemoteIPv4(n)); err != nil {
			t.Errorf("rail %d: %v", n, err)
		}
	}
}

var changeLine = regexp.MustCompile(`^  (ip|sysctl) `)

// TestPlanAndApplyAgreeUnderConflict: a foreign address in rail 1's /31.
// plan's counts equal the lines it lists, the conflict names the object
// and its owner, and apply makes every other change (rail 1's link
// settings and IPv6 included) and exits 1.
func TestPlanAndApplyAgreeUnderConflict(t *testing.T) {
	nettest.RequireRoot(t)
	lab := nettest.NewLab(t, 2)
	state := t.TempDir()
	cfg := labConfigN(t, state, 2)
	lab.Host.MustExec(t, "ip", "address", "add", "10.0.1.0/31", "dev", "rail1")
	check := func(wantChanges int) {
		t.Helper()
		code, out, _ := inLab(t, lab, nil, "--config", cfg, "plan")
		var changes, conflicts int
		for _, line := range strings.Split(out, "\n") {
			switch {
			case strings.HasPrefix(line, "  conflict: "):
				conflicts++
			case changeLine.MatchString(line):
				changes++
			}
		}
		head := fmt.Sprintf("%d changes, %d conflicts\n", changes, conflicts)
		if code != 0 || !strings.HasPrefix(out, head) || conflicts != 1 || (wantChanges >= 0 && changes != wantChanges) {
			t.Errorf("plan: exit %d, %d change lines and %d conflict lines (want %d and 1) in\n%s", code, changes, conflicts, wantChanges, out)
		}
		if !strings.Contains(out, "conflict: address 10.0.1.1/31 on rail1 not added: foreign address 10.0.1.0/31 on rail1") {
			t.Errorf("conflict does not name the object and its owner:\n%s", out)
		}
		code, js, _ := inLab(t, lab, nil, "--config", cfg, "-o", "json", "plan")
		var p struct {
			Changes   []json.RawMessage `json:"changes"`
			Conflicts []struct{ Object, Owner string }
		}
		if err := json.Unmarshal([]byte(js), &p); err != nil || code != 0 || len(p.Changes) != changes || len(p.Conflicts) != 1 ||
			p.Conflicts[0].Object != "address 10.0.1.1/31 on rail1" || !strings.Contains(p.Conflicts[0].Owner, "10.0.1.0/31") {
			t.Errorf("plan -o json: %v\n%s", err, js)
		}
	}
	check(-1)
	code, out := apply(t, lab, cfg)
	if code != 1 || !strings.Contains(out, "rail 0 (rail0): converged") || !strings.Contains(out, "rail 1 (rail1): NOT CONVERGED: conflict: address 10.0.1.1/31") {
		t.Errorf("apply: exit %d\n%s", code, out)
	}
	link := lab.Host.MustExec(t, "ip", "-o", "link", "show", "dev", "rail1")
	addrs := lab.Host.MustExec(t, "ip", "-o", "address", "show", "dev", "rail1", "scope", "global")
	if !strings.Contains(link, "mtu 9000") || !strings.Contains(addrs, "fc00:0:0:2::1/127") || strings.Contains(addrs, "10.0.1.1/31") {
		t.Errorf("rail1 after apply:\n%s%s", link, addrs)
	}
	check(0)
}

// startDaemon runs the built binary in the lab's host namespace, behind
// wrap (setpriv, prlimit: commands that exec the binary), under a fake
// systemd, and waits for READY=1. The process is killed when the test ends.
func startDaemon(t *testing.T, lab *nettest.Lab, wrap []string, args ...string) (*exec.Cmd, *nettest.Systemd, *lockedBuffer) {
	t.Helper()
	sd := nettest.NewSystemd(t)
	argv := append(append(append([]string{"netns", "exec", lab.Host.Name}, wrap...), binary(t)), args...)
	cmd := exec.Command("ip", argv...)
	cmd.Env = append(cleanEnv(), "NOTIFY_SOCKET="+sd.Socket)
	logs := &lockedBuffer{}
	cmd.Stderr = logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	waitFor(t, "READY=1", func() bool { return sd.Count("READY=1") > 0 })
	return cmd, sd, logs
}

// lockedBuffer is a bytes.Buffer safe for a process's writes and the
// test's reads.
type lockedBuffer struct {
	mu  sync.Mutex
	buf strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func waitFor(t *testing.T, what string, ok func() bool) {
	t.Helper()
	for start := time.Now(); !ok(); time.Sleep(10 * time.Millisecond) {
		if time.Since(start) > 10*time.Second {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// inNS runs fn on an OS thread inside ns: sockets it creates belong to ns.
// The thread is never given back to the scheduler.
func inNS(t *testing.T, ns *nettest.NS, fn func()) {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := netns.Set(ns.Handle); err != nil {
			done <- err
			return
		}
		fn()
		done <- nil
	}()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// nsClient is an HTTP client whose connections are made inside ns.
func nsClient(t *testing.T, ns *nettest.NS) *http.Client {
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			var c net.Conn
			var err error
			inNS(t, ns, func() { c, err = (&net.Dialer{Timeout: 5 * time.Second}).DialContext(ctx, network, addr) })
			return c, err
		},
	}}
}

// TestDaemonHoldsUnderAttack runs the built daemon with a file descriptor
// limit of 256 and the resync an hour away, so every repair below is
// driven by netlink events: a deleted rule, a changed rp_filter, a deleted
// address and a changed MTU are repaired at once. It serves GET and HEAD
// only. Holding 600 idle connections (more than its fd limit) does not
// stop it repairing drift or answering /healthz. A SIGHUP with an emptied
// or vanished config keeps the running config (host unchanged), answers
// systemd with READY=1 after RELOADING=1, and shows in
// roce_agent_config_last_reload_successful.
func TestDaemonHoldsUnderAttack(t *testing.T) {
	nettest.RequireRoot(t)
	if _, err := exec.LookPath("prlimit"); err != nil {
		t.Skip("prlimit (util-linux) not installed")
	}
	lab := nettest.NewLab(t, 4)
	state := t.TempDir()
	const port = "19488"
	b, err := os.ReadFile(labConfigN(t, state, 4))
	if err != nil {
		t.Fatal(err)
	}
	good := "listen: {metrics: \"127.0.0.1:" + port + "\"}\nreconcile: {resync_interval: 1h}\n" + string(b)
	cfg := writeConfig(t, good)
	cmd, sd, logs := startDaemon(t, lab, []string{"prlimit", "--nofile=256:256", "--"}, "--config", cfg, "--log-format", "json", "run")
	lab.Host.Settle(t)

	repair := func(class string, breakIt func(), repaired func() bool) {
		t.Helper()
		start := time.Now()
		breakIt()
		for !repaired() {
			if time.Since(start) > 10*time.Second {
				t.Fatalf("%s drift not repaired in 10s (resync is 1h: no event reached the daemon)\n%s", class, logs.String())
			}
			time.Sleep(2 * time.Millisecond)
		}
		t.Logf("%-9s drift repaired %v after the change (command start to repaired, 2 ms polling)", class, time.Since(start).Round(time.Millisecond))
	}
	contains := func(want string, args ...string) func() bool {
		return func() bool { out, _ := lab.Host.Exec(args...); return strings.Contains(out, want) }
	}
	repair("rule", func() { lab.Host.MustExec(t, "ip", "rule", "del", "priority", "1001") },
		contains("from 10.0.1.1 lookup 1001 proto 171", "ip", "rule", "show", "priority", "1001"))
	repair("rp_filter", func() { lab.Host.MustExec(t, "sysctl", "-qw", "net.ipv4.conf.rail2.rp_filter=0") },
		contains("2", "sysctl", "-n", "net.ipv4.conf.rail2.rp_filter"))
	repair("address", func() { lab.Host.MustExec(t, "ip", "address", "del", nettest.HostIPv4(3), "dev", "rail3") },
		contains("10.200.0.0/16 via 10.0.3.0", "ip", "route", "show", "table", "1003"))
	repair("mtu", func() { lab.Host.MustExec(t, "ip", "link", "set", "dev", "rail0", "mtu", "1500") },
		contains("mtu 9000", "ip", "-o", "link", "show", "dev", "rail0"))

	client := nsClient(t, lab.Host)
	base := "http://127.0.0.1:" + port
	for _, method := range []string{"POST", "PUT", "DELETE"} {
		req, _ := http.NewRequest(method, base+"/metrics", strings.NewReader("x"))
		resp, err := client.Do(req)
		if err != nil || resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") != "GET, HEAD" {
			t.Errorf("%s /metrics: %v %v", method, err, resp)
		}
		if resp != nil {
			resp.Body.Close()
		}
	}

	// 600 idle connections: more than the daemon's 256 file descriptors.
	var idle []net.Conn
	inNS(t, lab.Host, func() {
		for i := 0; i < 600; i++ {
			c, err := net.DialTimeout("tcp", "127.0.0.1:"+port, 2*time.Second)
			if err != nil {
				break
			}
			idle = append(idle, c)
		}
	})
	defer func() {
		for _, c := range idle {
			c.Close()
		}
	}()
	if len(idle) < 300 {
		t.Fatalf("only %d idle connections opened", len(idle))
	}
	fds, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", cmd.Process.Pid))
	t.Logf("%d idle connections open; the daemon holds %d fds (limit 256)", len(idle), len(fds))
	if len(fds) >= 256 {
		t.Errorf("the daemon holds %d fds, at its limit", len(fds))
	}
	repair("address, 600 idle clients", func() { lab.Host.MustExec(t, "ip", "address", "del", nettest.HostIPv4(1), "dev", "rail1") },
		contains("10.200.0.0/16 via 10.0.1.0", "ip", "route", "show", "table", "1001"))
	start := time.Now()
	resp, err := client.Get(base + "/healthz")
	if err != nil || resp.StatusCode != 200 {
		t.Errorf("/healthz with 600 idle clients: %v %v", err, resp)
	} else {
		resp.Body.Close()
		t.Logf("/healthz answered in %v with 600 idle clients", time.Since(start).Round(time.Millisecond))
	}
	if strings.Contains(logs.String(), "too many open files") {
		t.Errorf("the daemon ran out of file descriptors:\n%s", logs.String())
	}

	// Reloads that must keep the running config.
	before := lab.Host.Snapshot(t)
	metric := func(name string) string {
		t.Helper()
		resp, err := client.Get(base + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		for _, line := range strings.Split(string(body), "\n") {
			if strings.HasPrefix(line, name+" ") {
				return strings.TrimPrefix(line, name+" ")
			}
		}
		return ""
	}
	if got := metric("roce_agent_config_last_reload_successful"); got != "1" {
		t.Errorf("last_reload_successful before any reload = %q", got)
	}
	reload := func(n int) {
		t.Helper()
		_ = cmd.Process.Signal(unix.SIGHUP)
		waitFor(t, fmt.Sprintf("RELOADING=1 #%d", n), func() bool { return sd.Count("RELOADING=1") == n })
		waitFor(t, fmt.Sprintf("READY=1 #%d", n+1), func() bool { return sd.Count("READY=1") == n+1 })
	}
	if err := os.WriteFile(cfg, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	reload(1)
	if !strings.Contains(logs.String(), "has no settings") || metric("roce_agent_config_last_reload_successful") != "0" {
		t.Errorf("emptied config: not rejected as it should be\n%s", logs.String())
	}
	if err := os.Remove(cfg); err != nil {
		t.Fatal(err)
	}
	reload(2)
	if !strings.Contains(logs.String(), "no such file or directory") {
		t.Errorf("vanished config: not rejected as it should be\n%s", logs.String())
	}
	if after := lab.Host.Snapshot(t); after != before {
		t.Errorf("rejected reloads changed the host:\n%s\nvs\n%s", before, after)
	}
	if err := os.WriteFile(cfg, []byte(strings.Replace(good, port, "19499", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	reload(3)
	if strings.Count(logs.String(), "listen.metrics differs from the address served; it takes effect at restart") != 1 || metric("roce_agent_config_last_reload_successful") != "1" {
		t.Errorf("good reload with a new listen address:\n%s", logs.String())
	}
	// Every reload says it again while it differs, and nothing once the
	// file matches the address served again.
	reload(4)
	if n := strings.Count(logs.String(), "listen.metrics differs"); n != 2 {
		t.Errorf("second reload with the new listen address: %d warnings", n)
	}
	if err := os.WriteFile(cfg, []byte(good), 0o644); err != nil {
		t.Fatal(err)
	}
	reload(5)
	if n := strings.Count(logs.String(), "listen.metrics differs"); n != 2 {
		t.Errorf("reload back to the served address warned: %d warnings", n)
	}
	_ = cmd.Process.Signal(unix.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Errorf("exit after SIGTERM: %v", err)
	}
}

// TestWebConfigIsASnapshot: the daemon serves HTTPS with basic auth from
// listen.web_config_file as it was at start. Editing the file under it
// (dropping basic auth) changes nothing until a restart, and a SIGHUP says
// so.
func TestWebConfigIsASnapshot(t *testing.T) {
	nettest.RequireRoot(t)
	lab := nettest.NewLab(t, 1)
	web := nettest.WebConfig(t)
	cfg := labConfigN(t, t.TempDir(), 1)
	cmd, sd, logs := startDaemon(t, lab, nil, "--config", cfg, "--listen", "127.0.0.1:19491", "--web-config-file", web, "run")
	client := nsClient(t, lab.Host)
	client.Transport.(*http.Transport).TLSClientConfig = &tls.Config{InsecureSkipVerify: true}
	status := func(auth bool) int {
		t.Helper()
		req, _ := http.NewRequest("GET", "https://127.0.0.1:19491/healthz", nil)
		if auth {
			req.SetBasicAuth(nettest.WebUser, nettest.WebPassword)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if a, b := status(false), status(true); a != http.StatusUnauthorized || b != http.StatusOK {
		t.Fatalf("served: %d without credentials, %d with; want 401, 200", a, b)
	}
	// Drop basic auth from the file under the running daemon.
	raw, err := os.ReadFile(web)
	if err != nil {
		t.Fatal(err)
	}
	tlsOnly := string(raw[:strings.Index(string(raw), "basic_auth_users:")])
	if err := os.WriteFile(web, []byte(tlsOnly), 0o600); err != nil {
		t.Fatal(err)
	}
	if got := status(false); got != http.StatusUnauthorized {
		t.Errorf("after the file lost basic auth, no credentials get %d, want 401 until a restart", got)
	}
	_ = cmd.Process.Signal(unix.SIGHUP)
	waitFor(t, "READY=1 after the reload", func() bool { return sd.Count("READY=1") == 2 })
	if !strings.Contains(logs.String(), "listen.web_config_file (or a file it names) differs from what is served; it takes effect at restart") {
		t.Errorf("the reload did not say the web config changes at restart:\n%s", logs.String())
	}
	if got := status(false); got != http.StatusUnauthorized {
		t.Errorf("after the reload, no credentials get %d, want 401", got)
	}
}
