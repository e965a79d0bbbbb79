package rxe

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	v1 "github.com/roce-agent/roce-agent/api/v1"
	"github.com/roce-agent/roce-agent/diag"
)

// TestSoftRoCE boots the two guests against a controller on the host and
// checks what the driver guest recorded. Phase 1: both agents converge
// rail 0 from the controller's config, and bare ib_write_bw, ib_write_lat
// and rping pass over IPv4 and IPv6 across the routed leaves at MTU 9000,
// with the packets on both guests' counters. Phase 2 (when roce-agent has
// the probe command): the agent's probes against the bare tool, every tool
// and family, an outsider refused, a scheduled round in /metrics and
// /v1/status, broken leaf link and MTU diagnosed, a final good probe.
func TestSoftRoCE(t *testing.T) {
	if os.Getenv("ROCE_RXE") != "1" {
		t.Skip("soft-RoCE tier: boots two qemu guests for minutes; run it with ROCE_RXE=1 (make test-rxe)")
	}
	if os.Geteuid() != 0 {
		t.Skip("soft-RoCE tier: needs root (apt-get, qemu, the guests' network namespaces)")
	}
	start := time.Now()
	work := os.Getenv("RXE_WORK")
	if work == "" {
		work = "/var/cache/roce-agent-rxe"
	}
	l := &lab{t: t, repo: repoRoot(t), work: work}
	l.prepare()

	// The run directory lives in the cache, not in /tmp: the guests mount
	// tmpfs over /tmp, and must see the binaries at their host path.
	if err := os.MkdirAll(filepath.Join(work, "runs"), 0o755); err != nil {
		t.Fatal(err)
	}
	removeStaleRuns(t, filepath.Join(work, "runs"))
	run, err := os.MkdirTemp(filepath.Join(work, "runs"), "run-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if os.Getenv("ROCE_RXE_KEEP") == "1" {
			t.Logf("kept the run directory %s (ROCE_RXE_KEEP=1)", run)
			return
		}
		os.RemoveAll(run)
	})
	l.run, l.bin, l.pki = run, filepath.Join(run, "bin"), filepath.Join(run, "pki")
	l.build()
	l.otherPerftest()
	l.certs()
	l.startController()

	// When this test fails, its last lines say what the guests did: CI
	// shows the tail of the output.
	defer l.postMortem()
	// A guest that crashes (its kernel oopses or panics, or the peer
	// powers off mid-run: emulated soft-RoCE under load) gets the
	// scenario one more run on fresh guests, once, with the first run's
	// post-mortem in the log; ROCE_RXE_RETRY=0 makes a crash fail at once.
	var errA error
	var booted time.Time
	for attempt := 1; ; attempt++ {
		l.guests(attempt)
		// A listens on the link socket, B connects: qemu 7.2 cannot reconnect.
		sock := filepath.Join(filepath.Dir(l.a.dir), "link.sock")
		booted = time.Now()
		l.boot(l.a, "listen", sock)
		waitSocket(t, l.a, sock)
		l.boot(l.b, "connect", sock)

		limit := attemptLimit
		if d, ok := t.Deadline(); ok && time.Until(d)-3*time.Minute < limit {
			limit = time.Until(d) - 3*time.Minute
		}
		ctx, cancel := context.WithTimeout(context.Background(), limit)
		// B serves until told: its exit before A's is a crash, and A's
		// remaining steps could only time out against it
		errA = l.a.waitExit(ctx, l.b)
		cancel()
		crash := l.crash(errA)
		if crash == "" {
			break
		}
		d, ok := t.Deadline()
		if attempt > 1 || os.Getenv("ROCE_RXE_RETRY") == "0" || (ok && time.Until(d) < attemptLimit+3*time.Minute) {
			t.Errorf("run %d: %s", attempt, crash)
			break
		}
		t.Logf("run %d: %s: its post-mortem follows; the scenario runs once more on fresh guests", attempt, crash)
		l.reportGuests()
		l.stopGuests()
	}
	driverDone := time.Since(booted)
	// while A's lease (30 s) is still alive
	code, health, herr := l.tenantHealth(15 * time.Second)
	// B serves until told: it writes its final dumps and powers off
	writeFile(t, filepath.Join(l.b.dir, "stop"), "driver done\n")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	errB := l.b.waitExit(ctx, nil)
	cancel()
	guestsWall := time.Since(booted)
	for _, g := range []struct {
		g   *guest
		err error
	}{{l.a, errA}, {l.b, errB}} {
		if g.err != nil {
			t.Errorf("%s: %v", g.g.name, g.err)
		}
		if rc := strings.TrimSpace(readFile(filepath.Join(g.g.dir, "results", "role.rc"))); rc != "0" {
			t.Errorf("%s: guest-%s exit status %q (console %s):\n%s\nagent log:\n%s", g.g.name, g.g.role, rc, g.g.consolePath,
				tail(readFile(g.g.consolePath), 30), tail(readFile(filepath.Join(g.g.dir, "results", "agent.log")), 20))
		}
	}

	resA, resB := filepath.Join(l.a.dir, "results"), filepath.Join(l.b.dir, "results")
	t.Run("converged", func(t *testing.T) {
		for _, res := range []string{resA, resB} {
			name := filepath.Base(filepath.Dir(res))
			if _, err := os.Stat(filepath.Join(res, "converged")); err != nil {
				log := readFile(filepath.Join(res, "agent.log"))
				t.Errorf("%s: the agent did not converge rail 0:\n%s%s", name, tail(log, 30), hint(log))
				continue
			}
			conds := railConditions(t, filepath.Join(res, "converged-status.json"))
			for _, ct := range []v1.ConditionType{v1.ConditionLinkUp, v1.ConditionAddressesReady, v1.ConditionRoutingReady} {
				if c := conds[ct]; c.Status != v1.StatusTrue {
					t.Errorf("%s: rail 0 %s is %q (%s: %s)", name, ct, c.Status, c.Reason, c.Message)
				}
			}
			t.Logf("%s: rail 0 converged; GID indexes %s", name, strings.TrimSpace(readFile(filepath.Join(res, "gid-indexes.txt"))))
		}
	})

	t.Run("bare", func(t *testing.T) {
		for _, n := range []string{"ping-v4", "ping-v6"} {
			if s := loadStep(t, resA, n); s != nil && s.RC != 0 {
				t.Errorf("%s: jumbo ping failed (exit %d):\n%s", n, s.RC, tail(s.stdout+s.stderr, 8))
			}
		}
		for _, fam := range []string{"v4", "v6"} {
			if s := loadStep(t, resA, "bare-bw-"+fam); s != nil {
				bareBandwidth(t, s)
			}
			if s := loadStep(t, resA, "bare-lat-"+fam); s != nil {
				bareLatency(t, s)
			}
			if s := loadStep(t, resA, "bare-rping-"+fam); s != nil {
				bareRping(t, s)
			}
		}
	})

	t.Run("diag", func(t *testing.T) {
		s := loadStep(t, resA, "diag")
		if s == nil {
			return
		}
		res := diagResults(t, s)
		for key, want := range map[string]diag.Status{
			"NIC-PORT-001": diag.Pass, "ROCE-ADDR-001": diag.Pass, "ROCE-GID-001": diag.Pass, "ROCE-GID-002": diag.Pass,
			"ROCE-MTU-001": diag.Pass, "ROCE-MTU-002": diag.Pass, "NET-ROUTE-001": diag.Pass, "NET-SYSCTL-001": diag.Pass,
			"CNT-ROCE-001": diag.Pass, "AGENT-DAEMON-001": diag.Pass, "CTRL-CONN-001": diag.Pass,
		} {
			r, ok := res[key]
			switch {
			case !ok:
				t.Errorf("diag: no result of %s on rail 0 (or the node)", key)
			case r.Status != want:
				t.Errorf("diag: %s %s is %s, want %s: observed %q expected %q: %s", key, r.Subject, r.Status, want, r.Observed, r.Expected, r.Reason)
			default:
				t.Logf("diag: %s %s %s %s (%s)", r.Status, key, r.Subject, r.Observed, r.Reason)
			}
		}
		// the active MTU came from ibv_devinfo on the real RDMA device
		if r := res["ROCE-MTU-002"]; !strings.Contains(r.Reason, "ibv_devinfo") || strings.Contains(r.Reason, "derived") {
			t.Errorf("diag: ROCE-MTU-002 did not read ibv_devinfo: %s", r.Reason)
		}
	})

	if l.probeCLI {
		t.Run("probes", func(t *testing.T) { checkPhase2(t, resA, resB) })
	} else {
		t.Log("phase 2 (agent probes) not run: roce-agent has no probe command")
	}

	t.Run("tenant-health", func(t *testing.T) {
		if herr != nil || code != 200 {
			t.Fatalf("GET /v1/tenants/%s/health: %d %v %s", tenant, code, herr, health)
		}
		var h struct {
			Rails []struct {
				Node       string         `json:"node"`
				Alive      bool           `json:"alive"`
				Bound      bool           `json:"bound"`
				Conditions []v1.Condition `json:"conditions"`
			} `json:"rails"`
			Healthy    int `json:"healthy"`
			Total      int `json:"total"`
			PairsOK    int `json:"pairs_ok"`
			PairsTotal int `json:"pairs_total"`
		}
		if err := json.Unmarshal(health, &h); err != nil {
			t.Fatalf("tenant health: %v: %s", err, health)
		}
		// queried right after the driver powered off: its lease is still alive
		if h.Total != 2 || h.Healthy != h.Total {
			t.Errorf("tenant %s: %d of %d member rails healthy (the whole answer is in tenant-health.json)", tenant, h.Healthy, h.Total)
		}
		for _, r := range h.Rails {
			var notTrue []string
			for _, c := range r.Conditions {
				if c.Status != v1.StatusTrue {
					notTrue = append(notTrue, fmt.Sprintf("%s=%s(%s)", c.Type, c.Status, c.Reason))
				}
			}
			if !r.Alive || !r.Bound {
				t.Errorf("tenant %s: %s alive %v bound %v; not True: %s", tenant, r.Node, r.Alive, r.Bound, strings.Join(notTrue, " "))
			} else {
				t.Logf("tenant %s: %s alive, bound; not True: %s", tenant, r.Node, strings.Join(notTrue, " "))
			}
		}
		if l.probeCLI && (h.PairsTotal == 0 || h.PairsOK != h.PairsTotal) {
			t.Errorf("tenant %s: %d of %d probe pairs ok", tenant, h.PairsOK, h.PairsTotal)
		}
		t.Logf("tenant %s: %d of %d rails healthy, %d of %d pairs ok (saved as tenant-health.json)", tenant, h.Healthy, h.Total, h.PairsOK, h.PairsTotal)
	})

	t.Logf("wall time: %.1fs in all; guests %.1fs (driver done after %.1fs); setup before boot %.1fs",
		time.Since(start).Seconds(), guestsWall.Seconds(), driverDone.Seconds(), booted.Sub(start).Seconds())
}

// checkPhase2 checks the driver's agent-probe steps.
func checkPhase2(t *testing.T, resA, resB string) {
	t.Run("against-bare", func(t *testing.T) {
		var bare, agent []float64
		for i := 1; i <= cmpPairs; i++ {
			if s := loadStep(t, resA, fmt.Sprintf("cmp-bare-%d", i)); s != nil {
				bare = append(bare, bareBandwidth(t, s))
			}
			if s := loadStep(t, resA, fmt.Sprintf("cmp-agent-%d", i)); s != nil {
				if p := checkProbe(t, s, v1.ProbeToolBandwidth, "ipv4"); p != nil && p.Bandwidth != nil {
					agent = append(agent, p.Bandwidth.AvgGbps)
				}
			}
		}
		if len(bare) != cmpPairs || len(agent) != cmpPairs {
			t.Fatalf("%d bare and %d agent bandwidth results, want %d of each", len(bare), len(agent), cmpPairs)
		}
		v := compareBandwidth(bare, agent)
		t.Logf("ib_write_bw %d x %d B, %d interleaved pairs: %s", bwIters, bwBytes, cmpPairs, v.text)
		if !v.ok {
			t.Errorf("agent/bare bandwidth: %s", v.text)
		}
	})

	t.Run("tools", func(t *testing.T) {
		for _, tool := range []string{v1.ProbeToolReachability, v1.ProbeToolLatency, v1.ProbeToolBandwidth} {
			for _, fam := range []string{"ipv4", "ipv6"} {
				if s := loadStep(t, resA, "probe-"+tool+"-"+fam); s != nil {
					checkProbe(t, s, tool, fam)
				}
			}
		}
	})

	t.Run("outsider", func(t *testing.T) {
		s := loadStep(t, resA, "outsider")
		if s == nil {
			return
		}
		reason := checkFailed(t, s, regexp.MustCompile(`(?i)403|forbidden|refused|denied|not a peer|unknown peer|not allowed`))
		if l, p := s.local(), s.peer(); l == nil || p == nil {
			t.Errorf("outsider: counters missing")
		} else if l.RxeSent > 100 || p.RxeRcvd > 100 {
			t.Errorf("outsider: a tool ran: this guest sent %d RDMA packets, the peer received %d", l.RxeSent, p.RxeRcvd)
		}
		t.Logf("outsider refused: %s", reason)
	})

	t.Run("scheduled-round", func(t *testing.T) {
		metrics := readFile(filepath.Join(resA, "round-metrics.txt"))
		for _, m := range []string{"roce_agent_probe_results_total{", "roce_agent_probe_bandwidth_bytes_per_second{", "roce_agent_probe_latency_seconds{"} {
			if !strings.Contains(metrics, m) {
				t.Errorf("%s: no %s... series after a scheduled round", nodeA, m)
			}
		}
		for _, line := range strings.Split(metrics, "\n") {
			if strings.HasPrefix(line, "roce_agent_probe_") {
				t.Log(line)
			}
		}
		conds := railConditions(t, filepath.Join(resA, "round-status.json"))
		for _, ct := range []v1.ConditionType{v1.ConditionPeerReachable, v1.ConditionBandwidthOK} {
			c, ok := conds[ct]
			if !ok {
				t.Errorf("%s: rail 0 has no %s condition after a scheduled round", nodeA, ct)
				continue
			}
			t.Logf("%s: rail 0 %s=%s (%s: %s)", nodeA, ct, c.Status, c.Reason, c.Message)
		}
		var st v1.NodeStatus
		if err := json.Unmarshal([]byte(readFile(filepath.Join(resA, "round-status.json"))), &st); err != nil || len(st.Probes) == 0 {
			t.Errorf("%s: /v1/status has no probes after a scheduled round (%v)", nodeA, err)
		}
		if readFile(filepath.Join(resA, "peer-round-metrics.txt")) == "" {
			t.Errorf("%s: no /metrics captured", nodeB)
		}
	})

	t.Run("breaks", func(t *testing.T) {
		if s := loadStep(t, resA, "break-link-down"); s != nil {
			t.Logf("leaf link down: %s", checkFailed(t, s,
				regexp.MustCompile(`(?i)down|carrier|unreachable|no route|no answer|timed? ?out`)))
		}
		if s := loadStep(t, resA, "diag-link-down"); s != nil {
			if r := diagResults(t, s)["NIC-PORT-001"]; r.Status != diag.Fail || s.RC != 2 {
				t.Errorf("diag with the leaf link down: exit %d, NIC-PORT-001 %s (%s %s)", s.RC, r.Status, r.Observed, r.Reason)
			} else {
				t.Logf("diag with the leaf link down: exit 2, NIC-PORT-001 FAIL %s", r.Observed)
			}
		}
		if s := loadStep(t, resA, "break-mtu"); s != nil {
			t.Logf("leaf MTU 1500: %s", checkFailed(t, s, regexp.MustCompile(`(?i)mtu`)))
		}
		conds := railConditions(t, filepath.Join(resA, "recovered-status.json"))
		for _, ct := range []v1.ConditionType{v1.ConditionPeerReachable, v1.ConditionBandwidthOK} {
			if c := conds[ct]; c.Status != v1.StatusTrue {
				t.Errorf("%s: rail 0 %s is %q after the repairs and a round (%s: %s)", nodeA, ct, c.Status, c.Reason, c.Message)
			}
		}
		if s := loadStep(t, resA, "final"); s != nil {
			checkProbe(t, s, v1.ProbeToolBandwidth, "ipv4")
			t.Logf("final probe after the repairs took %.0fs, waiting (--wait) while the breaks' probe servers timed out", s.Seconds)
		}
	})
	t.Run("peer-served", func(t *testing.T) {
		// the peer ran no schedule of its own: what it did, it did for the driver
		m := regexp.MustCompile(`(?m)^roce_agent_probe_api_requests_total\{result="started"\} (\d+)`).
			FindStringSubmatch(readFile(filepath.Join(resB, "final-metrics.txt")))
		if m == nil || m[1] == "0" {
			t.Errorf("%s: no probe servers started for the driver in its /metrics (%v)", nodeB, m)
			return
		}
		t.Logf("%s started %s probe servers for %s", nodeB, m[1], nodeA)
	})
}

// removeStaleRuns removes run directories older than a day: those of a
// test binary that was killed (its qemu died with it, its cleanup never
// ran) or kept with ROCE_RXE_KEEP=1 and forgotten.
func removeStaleRuns(t *testing.T, runs string) {
	entries, _ := os.ReadDir(runs)
	for _, e := range entries {
		if fi, err := e.Info(); err == nil && strings.HasPrefix(e.Name(), "run-") && time.Since(fi.ModTime()) > 24*time.Hour {
			t.Logf("removing the stale run directory %s", e.Name())
			os.RemoveAll(filepath.Join(runs, e.Name()))
		}
	}
}

// hint explains known failures of the tier, from what the agent or a tool
// said.
func hint(out string) string {
	switch {
	case strings.Contains(out, "the inventory has no rail"):
		return "\nhint: without a GPU only pins[] makes rxe0 a rail (the agent config pins rail 0 to rail0)"
	case strings.Contains(out, "Couldn't connect to"):
		return "\nhint: perftest 4.5 does not bind its out-of-band connection to --source_ip, so it follows the main table, " +
			"where only the guests' stopgap routes reach the fabric (ROCE_RXE_MAIN_ROUTES=0 leaves them out)"
	}
	return ""
}
