package loadtest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	v1 "github.com/roce-agent/roce-agent/api/v1"
)

// BenchmarkControllerLoad runs the reference controller (the built binary,
// embedded etcd) against simulated agents and prints latency, CPU, RSS and
// how long a tenant move of 1,000 nodes takes to reach the agents.
// LOAD_AGENTS lists the fleet sizes (default 10000), LOAD_WINDOW the
// steady-state measurement (default 60s). make bench-controller runs it.
//
// Up to httpOneMax agents, each has its own HTTP/1.1 connections; larger
// fleets cannot (the open-file limit here is 20,000 per process, for the
// controller and for this generator) and share connections as HTTP/2
// streams (h2c), as agents behind an L7 load balancer do. LOAD_PROTO=h1
// or h2 forces one. Each size prints which it used.
//
// Each size ends with a "bends" line: what limited it, from what was
// measured (CPU of both processes against the 2 cores, latency against
// the goal, the etcd write rate, memory).
func BenchmarkControllerLoad(b *testing.B) {
	sizes := []int{10000}
	if s := os.Getenv("LOAD_AGENTS"); s != "" {
		sizes = nil
		for _, f := range strings.Fields(strings.ReplaceAll(s, ",", " ")) {
			n, err := strconv.Atoi(f)
			if err != nil || n < 1000 {
				b.Fatalf("LOAD_AGENTS: %q is not a fleet size of at least 1000", f)
			}
			sizes = append(sizes, n)
		}
	}
	window := 60 * time.Second
	if s := os.Getenv("LOAD_WINDOW"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			b.Fatalf("LOAD_WINDOW: %v", err)
		}
		window = d
	}
	raiseFileLimit(b)
	bin := filepath.Join(b.TempDir(), "roce-controller")
	if out, err := exec.Command("go", "build", "-o", bin, "../../cmd/roce-controller").CombinedOutput(); err != nil {
		b.Fatalf("build roce-controller: %v\n%s", err, out)
	}
	inv := loadInventory(b)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for _, n := range sizes {
			runLoad(b, bin, n, window, inv)
		}
	}
}

// httpOneMax is the largest fleet given one HTTP/1.1 connection per agent:
// a long-poll each, plus the heartbeats and statuses in flight, in
// 20,000 open files per process.
const httpOneMax = 15000

func raiseFileLimit(b *testing.B) {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		b.Fatal(err)
	}
	want := uint64(400000)
	if rl.Max < want {
		rl.Max = want // needs CAP_SYS_RESOURCE (root)
	}
	rl.Cur = rl.Max
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		b.Logf("raise the open file limit: %v (large fleets will fail)", err)
	}
}

func loadInventory(b *testing.B) *v1.Inventory {
	data, err := os.ReadFile("../../testdata/golden/inventory/dgx-h100-nvml.json")
	if err != nil {
		b.Fatal(err)
	}
	var inv v1.Inventory
	if err := json.Unmarshal(data, &inv); err != nil {
		b.Fatal(err)
	}
	return &inv
}

func token(node string) string { return "tok-" + node + "-0123456789abcdef" }

func freePort(b *testing.B) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// procCPU is a process's user+system CPU time; procRSS its resident and
// peak resident set.
func procCPU(pid int) time.Duration {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(data)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * time.Second / 100 // USER_HZ
}

func procRSS(pid int) (rss, hwm string) {
	file, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return "?", "?"
	}
	defer file.Close()
	sc := bufio.NewScanner(file)
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), ":")
		switch k {
		case "VmRSS":
			rss = strings.TrimSpace(v)
		case "VmHWM":
			hwm = strings.TrimSpace(v)
		}
	}
	return rss, hwm
}

func runLoad(b *testing.B, bin string, n int, window time.Duration, inv *v1.Inventory) {
	dir := b.TempDir()
	plan := FleetPlan(n)
	planJSON, _ := json.Marshal(plan)
	planFile := filepath.Join(dir, "plan.json")
	var tokens strings.Builder
	tokens.WriteString("- {name: admin, token: admin-0123456789abcdef, admin: true}\n")
	for _, node := range plan.Nodes {
		fmt.Fprintf(&tokens, "- {name: %s, token: %s}\n", node.Name, token(node.Name))
	}
	tokFile := filepath.Join(dir, "tokens.yaml")
	if err := os.WriteFile(planFile, planJSON, 0o600); err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(tokFile, []byte(tokens.String()), 0o600); err != nil {
		b.Fatal(err)
	}
	port := freePort(b)
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	args := []string{"serve", "--listen", fmt.Sprintf("127.0.0.1:%d", port), "--data-dir", filepath.Join(dir, "etcd"),
		"--plan", planFile, "--tokens", tokFile, "--insecure-http", "--log-level", "warn"}
	if pp := os.Getenv("LOAD_PPROF"); pp != "" {
		args = append(args, "--pprof-listen", pp)
	}
	cmd := exec.Command(bin, args...)
	logf, _ := os.Create(filepath.Join(dir, "controller.log"))
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() {
		cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		logf.Close()
		if keep := os.Getenv("LOAD_KEEP_LOG"); keep != "" {
			data, _ := os.ReadFile(filepath.Join(dir, "controller.log"))
			_ = os.WriteFile(fmt.Sprintf("%s.%d", keep, n), data, 0o644)
		}
	}()
	admin := Admin{BaseURL: base, Token: "admin-0123456789abcdef", Client: &http.Client{Timeout: 60 * time.Second}}
	t0 := time.Now()
	for {
		resp, err := http.Get(base + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if time.Since(t0) > 60*time.Second {
			log, _ := os.ReadFile(filepath.Join(dir, "controller.log"))
			b.Fatalf("controller not ready after 60s:\n%s", log)
		}
		time.Sleep(50 * time.Millisecond)
	}
	ready := time.Since(t0)

	var srcs []string
	for i := 0; i < max(1, n/20000+1); i++ {
		srcs = append(srcs, fmt.Sprintf("127.0.%d.%d", 10+i/250, 1+i%250))
	}
	h2 := n > httpOneMax
	switch os.Getenv("LOAD_PROTO") {
	case "h1":
		h2 = false
	case "h2":
		h2 = true
	}
	names := make([]string, n)
	for i, node := range plan.Nodes {
		names[i] = node.Name
	}
	// A status is marshalled once, as a template: a real agent builds it
	// on its own host, so the generator should not spend the cores it
	// shares with the controller on it.
	tmpl := v1.NodeStatus{Node: "@NODE@", Version: "loadtest", AppliedGeneration: 987654321, Inventory: inv, LastReconcile: time.Unix(1700000000, 0).UTC()}
	for r := 0; r < 8; r++ {
		tmpl.Rails = append(tmpl.Rails, v1.RailStatus{Rail: r, Netdev: fmt.Sprintf("rail%d", r), RDMADevice: fmt.Sprintf("mlx5_%d", r),
			GIDIndexIPv4: 3, GIDIndexIPv6: 1, Conditions: []v1.Condition{{Type: v1.ConditionLinkUp, Status: v1.StatusTrue, Reason: "Up"}}})
	}
	tjs, _ := json.Marshal(tmpl)
	stamp, _ := json.Marshal(tmpl.LastReconcile)
	status := func(node string, gen int64) []byte {
		out := bytes.Replace(tjs, []byte(`"@NODE@"`), []byte(strconv.Quote(node)), 1)
		out = bytes.Replace(out, []byte(`987654321`), []byte(strconv.FormatInt(gen, 10)), 1)
		now, _ := json.Marshal(time.Now().UTC())
		return bytes.Replace(out, stamp, now, 1)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ramp := time.Duration(n/1000) * time.Second
	opts := Options{BaseURL: base, Nodes: names, Token: token, Status: status, SourceAddrs: srcs, Start: ramp, HTTP2: h2}
	fleet := Start(ctx, opts)
	select {
	case <-fleet.Ready():
	case <-time.After(ramp + 5*time.Minute):
		b.Fatalf("%d agents: not every agent got its config in %s; errors %v", n, ramp+5*time.Minute, fleet.Errors())
	}
	upIn := time.Since(t0) - ready
	// Let the heartbeat phases spread, then measure.
	time.Sleep(10 * time.Second)
	errsRamp := fleet.Errors()
	fleet.Measure(true)
	pid := cmd.Process.Pid
	hist0 := scrapeHistograms(base)
	cpu0, self0, w0 := procCPU(pid), procCPU(os.Getpid()), time.Now()
	time.Sleep(window)
	cpu1, self1, wall := procCPU(pid), procCPU(os.Getpid()), time.Since(w0)
	hist1 := scrapeHistograms(base)
	fleet.Measure(false)
	lat := fleet.Latencies()
	rss, hwm := procRSS(pid)
	mem := procMem(pid)
	fds := countFDs(pid)
	heap := scrape(base, "go_memstats_heap_inuse_bytes")
	dbBytes := fileSize(filepath.Join(dir, "etcd", "etcd", "member-data", "member", "snap", "db"))
	errsWindow := fleet.Errors()

	// A tenant move of 1,000 nodes: tenant-00's members join tenant-01,
	// in one POST /v1/moves (one change, one new generation each).
	var moved []string
	for _, m := range plan.Tenants[0].Members {
		moved = append(moved, m.Node)
	}
	if len(plan.Tenants) < 2 {
		b.Fatalf("need two tenants")
	}
	t1 := plan.Tenants[1]
	var r1 v1.MoveResult
	m0 := time.Now()
	if err := admin.Do(ctx, http.MethodPost, "/v1/moves", v1.Move{Nodes: moved, Tenant: t1.ID}, &r1); err != nil {
		b.Fatal(err)
	}
	admDone := time.Since(m0)
	mcpu0 := procCPU(pid)
	time.Sleep(10 * time.Second)
	errsAll := fleet.Errors()
	prop, missing := fleet.Propagation(m0, moved, t1.ID, 10*time.Second)
	affected := map[string]bool{}
	for _, l := range [][]string{r1.ChangedNodes} {
		for _, node := range l {
			affected[node] = true
		}
	}
	var affNames []string
	for node := range affected {
		affNames = append(affNames, node)
	}
	propAll, missingAll := fleet.Propagation(m0, affNames, "", 10*time.Second)
	ps, pa := Summarize(prop), Summarize(propAll)

	ms := func(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d.Microseconds())/1000) }
	fmt.Printf("\n== %d agents: heartbeat 10s, status on change and every 5m, config long-polled (wait 30s); embedded etcd; %s window\n", n, window)
	fmt.Printf("  transport: %s\n", opts.Mode())
	fmt.Printf("controller ready in %s (plan of %d nodes stored); every agent had its config %s later (ramp %s)\n", ready.Round(time.Millisecond), n, upIn.Round(time.Millisecond), ramp)
	for _, op := range []Op{OpHeartbeat, OpStatus, OpConfig} {
		s := lat[op]
		fmt.Printf("  %-32s %7d requests (%6.0f/s)  p50 %9s  p99 %9s  max %9s\n", op, s.Count, float64(s.Count)/wall.Seconds(), ms(s.P50), ms(s.P99), ms(s.Max))
	}
	// The controller's own view (its request histogram over the window):
	// without the generator's shared connection pool, whose queue adds to
	// the agents' figures above when a few requests are slow.
	for _, route := range []string{"PUT /v1/nodes/{node}/lease", "PUT /v1/nodes/{node}/status"} {
		count, p50, p99 := hist1.quantiles(hist0, route)
		fmt.Printf("  controller-side %-30s %7.0f answered  p50 <= %s  p99 <= %s (histogram bucket bounds)\n", route, count, p50, p99)
	}
	ctlCPU, genCPU := float64(cpu1-cpu0)/float64(wall), float64(self1-self0)/float64(wall)
	fmt.Printf("  controller CPU %.2f cores (of 2), RSS %s (peak %s); load generator CPU %.2f cores on the same machine\n",
		ctlCPU, rss, hwm, genCPU)
	fmt.Printf("  controller memory: anonymous %s, file-backed %s (etcd's bbolt mmap), Go heap in use %.0f MB, etcd db file %.0f MB; %d open files (connections)\n",
		mem["RssAnon"], mem["RssFile"], heap/1e6, float64(dbBytes)/1e6, fds)
	fmt.Printf("  tenant move of %d nodes (one POST /v1/moves, %s): moved agents got it p50 %s p99 %s max %s (%d missing); all %d affected agents p50 %s p99 %s (%d missing)\n",
		len(moved), ms(admDone), ms(ps.P50), ms(ps.P99), ms(ps.Max), len(missing), len(affNames), ms(pa.P50), ms(pa.P99), len(missingAll))
	worst := max(lat[OpHeartbeat].P99, lat[OpStatus].P99, lat[OpConfig].P99)
	fmt.Printf("  goal p99 <= 50 ms: %s (worst p99 %s); goal move <= 1 s p99: %s\n", verdict(worst <= 50*time.Millisecond), ms(worst), verdict(ps.P99 <= time.Second && len(missing) == 0))
	fmt.Printf("  controller CPU during the move's 10 s: %.2f cores\n", float64(procCPU(pid)-mcpu0)/float64(10*time.Second))
	fmt.Printf("  errors: fleet coming up %v; measured window %v; move %v\n", errsRamp, diffErrs(errsWindow, errsRamp), diffErrs(errsAll, errsWindow))
	if warns := logProblems(filepath.Join(dir, "controller.log"), 5); len(warns) > 0 {
		fmt.Printf("  controller warnings and errors:\n    %s\n", strings.Join(warns, "\n    "))
	}
	writes := float64(lat[OpStatus].Count) / wall.Seconds()
	fmt.Printf("  bends: %s\n", bends(n, ctlCPU, genCPU, worst, writes, lat, mem))
}

// bends says what limits a run, from what it measured.
func bends(n int, ctlCPU, genCPU float64, worst time.Duration, statusRate float64, lat map[Op]Stats, mem map[string]string) string {
	var why []string
	total := ctlCPU + genCPU
	switch {
	case total >= 1.8:
		why = append(why, fmt.Sprintf("CPU saturated: controller %.2f + generator %.2f of 2 cores; requests queue for a core, p99 %s", ctlCPU, genCPU, worst.Round(100*time.Microsecond)))
	case total >= 1.2:
		why = append(why, fmt.Sprintf("CPU busy: controller %.2f + generator %.2f of 2 cores, queueing begins", ctlCPU, genCPU))
	default:
		why = append(why, fmt.Sprintf("CPU has room: controller %.2f + generator %.2f of 2 cores", ctlCPU, genCPU))
		if worst > 50*time.Millisecond {
			why = append(why, fmt.Sprintf("yet p99 is %s: requests wait on something other than CPU (etcd's request path: see its warnings above; connection queues of the transport)", worst.Round(time.Millisecond)))
		}
	}
	hb := lat[OpHeartbeat]
	why = append(why, fmt.Sprintf("%.0f heartbeats/s (lease renewals, no raft write) and %.0f status writes/s (raft + fsync) into etcd", float64(n)/10, statusRate))
	if lat[OpStatus].P99 > 2*max(hb.P99, time.Millisecond) {
		why = append(why, fmt.Sprintf("status writes (etcd fsync, compressed ~50 KB) are the slow path: p99 %s against heartbeat p99 %s", lat[OpStatus].P99.Round(100*time.Microsecond), hb.P99.Round(100*time.Microsecond)))
	}
	why = append(why, "memory "+mem["VmRSS"]+" (anonymous "+mem["RssAnon"]+")")
	return strings.Join(why, "; ")
}

func diffErrs(now, before map[string]int) map[string]int {
	out := map[string]int{}
	for k, v := range now {
		if d := v - before[k]; d > 0 {
			out[k] = d
		}
	}
	return out
}

// procMem is /proc/PID/status's memory lines.
func procMem(pid int) map[string]string {
	out := map[string]string{}
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return out
	}
	for _, line := range strings.Split(string(data), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if ok && (strings.HasPrefix(k, "Rss") || strings.HasPrefix(k, "Vm")) {
			out[k] = strings.TrimSpace(v)
		}
	}
	return out
}

func countFDs(pid int) int {
	ents, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	return len(ents)
}

func fileSize(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// scrape reads one unlabelled metric of the controller's /metrics.
func scrape(base, name string) float64 {
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			f, _ := strconv.ParseFloat(v, 64)
			return f
		}
	}
	return 0
}

// histograms are the controller's request duration buckets: route -> le
// -> cumulative count (every status code summed).
type histograms map[string]map[float64]float64

func scrapeHistograms(base string) histograms {
	out := histograms{}
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		return out
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	const name = "roce_controller_http_request_duration_seconds_bucket{"
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), name)
		if !ok {
			continue
		}
		labels, value, _ := strings.Cut(rest, "} ")
		var route string
		var le float64
		for _, kv := range strings.Split(labels, ",") {
			k, v, _ := strings.Cut(kv, "=")
			v = strings.Trim(v, `"`)
			switch k {
			case "route":
				route = v
			case "le":
				if v == "+Inf" {
					le = math.Inf(1)
				} else {
					le, _ = strconv.ParseFloat(v, 64)
				}
			}
		}
		f, _ := strconv.ParseFloat(strings.TrimSpace(value), 64)
		if out[route] == nil {
			out[route] = map[float64]float64{}
		}
		out[route][le] += f
	}
	return out
}

// quantiles are the count of a route's requests between two scrapes and
// the bucket bounds holding its p50 and p99.
func (h histograms) quantiles(before histograms, route string) (count float64, p50, p99 string) {
	var les []float64
	for le := range h[route] {
		les = append(les, le)
	}
	sort.Float64s(les)
	if len(les) == 0 {
		return 0, "-", "-"
	}
	count = h[route][math.Inf(1)] - before[route][math.Inf(1)]
	bound := func(q float64) string {
		for _, le := range les {
			if h[route][le]-before[route][le] >= q*count {
				if math.IsInf(le, 1) {
					return "more than 5 s"
				}
				return fmt.Sprintf("%g ms", le*1000)
			}
		}
		return "-"
	}
	return count, bound(0.50), bound(0.99)
}

// logProblems are the controller's warning and error lines (the first
// max), with how many there were.
func logProblems(path string, max int) []string {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	var out []string
	count := 0
	for _, line := range strings.Split(string(data), "\n") {
		if strings.Contains(line, "level=WARN") || strings.Contains(line, "level=ERROR") || strings.Contains(line, `"level":"WARN"`) || strings.Contains(line, `"level":"ERROR"`) {
			count++
			if len(out) < max {
				out = append(out, line)
			}
		}
	}
	if count > max {
		out = append(out, fmt.Sprintf("... %d lines in all", count))
	}
	return out
}

func verdict(ok bool) string {
	if ok {
		return "met"
	}
	return "NOT met"
}
