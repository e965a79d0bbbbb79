package rxe

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	v1 "github.com/roce-agent/roce-agent/api/v1"
	"github.com/roce-agent/roce-agent/fabric"
)

// The lab's fabric: two nodes, one rail, one tenant with both. The plan
// derives every rail address (fabric.Derive); the transit links between
// the two leaves are the lab's own.
const (
	nodeA, nodeB, outsider, admin = "rxe-a", "rxe-b", "rxe-x", "admin"
	tenant                        = "t1"

	planYAML = `rails: 1
link: {mtu: 9000}
addressing:
  ipv4_pools: [10.100.0.0/24]
  ipv6_pools: ["fd00:100::/64"]
nodes:
  - {name: rxe-a, index: 0}
  - {name: rxe-b, index: 1}
tenants:
  - {id: t1, vrf: T1, vni: 10001, members: [{node: rxe-a}, {node: rxe-b}]}
`
	// Probe sizes: the bare runs use the agent's, so that the two compare.
	bwIters, bwBytes   = 2000, 65536
	latIters, latBytes = 1000, 2
	pings              = 3
	probeInterval      = 20 * time.Second
)

// guest is one qemu guest: its node, role and host directory.
type guest struct {
	name, role     string
	dir            string // mounted read-write in the guest at the same path
	macLink        string // the fabric link (qemu stream netdev)
	macMgmt        string // slirp: the controller at 10.0.2.2
	transit4       string // the leaf's end of the link between the leaves
	transit6       string
	peer           *guest
	cfg            v1.RailConfig // rail 0 as the controller derives it
	cmd            *exec.Cmd
	done           chan struct{} // closed when qemu exited
	exitErr        error
	consolePath    string
	consoleWriters sync.WaitGroup
	troubleMu      sync.Mutex
	trouble        []string // kernel trouble on the console (noteTrouble)
}

// lab is one run: the run directory, the binaries, the controller.
type lab struct {
	t        *testing.T
	repo     string
	work     string // RXE_WORK: prepare.sh's cache
	run      string // this run's directory, under work
	bin      string
	pki      string
	port     int
	probeCLI bool // roce-agent has the probe command (phase 2)
	// perftest is the agents' probes.tools_dir and the guests' PERFTEST
	// when ROCE_RXE_PERFTEST names another perftest build ("": the system's)
	perftest string
	admin    *http.Client
	a, b     *guest
}

// repoRoot is the module root, two levels up from this package.
func repoRoot(t *testing.T) string {
	t.Helper()
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	root := filepath.Clean(filepath.Join(wd, "..", ".."))
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("module root %s: %v", root, err)
	}
	return root
}

// scripts copies lab/rxe into the run directory, once, and returns the
// copy: the guests run the scripts from there, because they see the host's
// root read-only with tmpfs over /tmp (where a checkout may live) and the
// run directory read-write at its host path.
func (l *lab) scripts() string {
	dst := filepath.Join(l.run, "scripts")
	if _, err := os.Stat(dst); err == nil {
		return dst
	}
	src := filepath.Join(l.repo, "lab", "rxe")
	entries, err := os.ReadDir(src)
	if err != nil {
		l.t.Fatal(err)
	}
	if err := os.MkdirAll(dst, 0o755); err != nil {
		l.t.Fatal(err)
	}
	for _, e := range entries {
		if !e.Type().IsRegular() {
			continue
		}
		data, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			l.t.Fatal(err)
		}
		info, err := e.Info()
		if err != nil {
			l.t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dst, e.Name()), data, info.Mode().Perm()); err != nil {
			l.t.Fatal(err)
		}
	}
	return dst
}

// prepare runs lab/rxe/prepare.sh; its exit status 3 means "this host
// cannot have it": the test skips with its message.
func (l *lab) prepare() {
	t := l.t
	start := time.Now()
	cmd := exec.Command(filepath.Join(l.repo, "lab", "rxe", "prepare.sh"))
	cmd.Env = append(os.Environ(), "RXE_WORK="+l.work)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	var ee *exec.ExitError
	if errors.As(err, &ee) && ee.ExitCode() == 3 {
		t.Skipf("soft-RoCE tier: %s", lastLine(stderr.String()))
	}
	if err != nil {
		t.Fatalf("prepare.sh: %v\n%s%s", err, tail(stderr.String(), 40), out)
	}
	t.Logf("prepare.sh: %.1fs, %s", time.Since(start).Seconds(), strings.Join(strings.Fields(string(out)), " "))
}

// build compiles roce-agent and roce-controller as the Makefile does, into
// the run directory: the guests see it at the same path.
func (l *lab) build() {
	t := l.t
	start := time.Now()
	cmd := exec.Command("go", "build", "-o", l.bin+"/", "./cmd/roce-agent", "./cmd/roce-controller")
	cmd.Dir = l.repo
	cmd.Env = append(os.Environ(), "CGO_ENABLED=1", "CGO_CFLAGS=-Wno-deprecated-declarations")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	// phase 2 needs roce-agent probe; until it exists the tier checks phase 1
	l.probeCLI = exec.Command(filepath.Join(l.bin, "roce-agent"), "probe", "--help").Run() == nil
	t.Logf("built roce-agent and roce-controller in %.1fs; roce-agent probe: %v", time.Since(start).Seconds(), l.probeCLI)
}

// certs writes the lab PKI: the server certificate for the controller as
// the guests (10.0.2.2) and the host (127.0.0.1) reach it, and a client
// certificate per node, the outsider and the admin.
func (l *lab) certs() {
	out, err := exec.Command(filepath.Join(l.bin, "roce-controller"), "certs", "--dir", l.pki,
		"--server-host", "10.0.2.2,127.0.0.1", "--names", strings.Join([]string{nodeA, nodeB, outsider, admin}, ",")).CombinedOutput()
	if err != nil {
		l.t.Fatalf("roce-controller certs: %v\n%s", err, out)
	}
}

func (l *lab) cert(name string) (cert, key string) {
	return filepath.Join(l.pki, name+".pem"), filepath.Join(l.pki, name+"-key.pem")
}

// otherPerftest, with ROCE_RXE_PERFTEST set to a directory holding
// another perftest's ib_write_bw and ib_write_lat (a newer build, say),
// makes the run's tools directory: those two and the system's rping.
func (l *lab) otherPerftest() {
	src := os.Getenv("ROCE_RXE_PERFTEST")
	if src == "" {
		return
	}
	dir := filepath.Join(l.run, "tools")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		l.t.Fatal(err)
	}
	rping, err := exec.LookPath("rping")
	if err != nil {
		l.t.Fatalf("ROCE_RXE_PERFTEST: %v", err)
	}
	links := map[string]string{"rping": rping}
	for _, tool := range []string{"ib_write_bw", "ib_write_lat"} {
		p, err := filepath.Abs(filepath.Join(src, tool))
		if err != nil {
			l.t.Fatal(err)
		}
		if fi, err := os.Stat(p); err != nil || fi.Mode()&0o111 == 0 {
			l.t.Fatalf("ROCE_RXE_PERFTEST=%s: no executable %s (%v)", src, tool, err)
		}
		links[tool] = p
	}
	// copies, not links: the guests mount tmpfs over /tmp and /var/tmp,
	// where a build may well live; the run directory they see
	for name, target := range links {
		data, err := os.ReadFile(target)
		if err != nil {
			l.t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o755); err != nil {
			l.t.Fatal(err)
		}
	}
	l.perftest = dir
	out, _ := exec.Command(links["ib_write_bw"], "--version").CombinedOutput()
	l.t.Logf("perftest from ROCE_RXE_PERFTEST=%s (%s)", src, strings.TrimSpace(string(out)))
}

// startController runs roce-controller serve on 127.0.0.1 (slirp makes it
// 10.0.2.2 in the guests) and waits until it is ready.
func (l *lab) startController() {
	t := l.t
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l.port = ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	plan := filepath.Join(l.run, "plan.yaml")
	if err := os.WriteFile(plan, []byte(planYAML), 0o644); err != nil {
		t.Fatal(err)
	}
	cert, key := l.cert(admin)
	logf, err := os.Create(filepath.Join(l.run, "controller.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(filepath.Join(l.bin, "roce-controller"), "serve",
		"--plan", plan, "--listen", "127.0.0.1:"+strconv.Itoa(l.port), "--data-dir", filepath.Join(l.run, "controller"),
		"--tls-cert", filepath.Join(l.pki, "server.pem"), "--tls-key", filepath.Join(l.pki, "server-key.pem"),
		"--client-ca", filepath.Join(l.pki, "ca.pem"), "--admin", admin, "--log-format", "text")
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("roce-controller serve: %v", err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); logf.Close(); close(exited) }()
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(15 * time.Second):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-exited
		}
	})

	ca, err := os.ReadFile(filepath.Join(l.pki, "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	pair, err := tls.LoadX509KeyPair(cert, key)
	if err != nil {
		t.Fatal(err)
	}
	l.admin = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}}}
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := l.admin.Get(l.url("/readyz"))
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		select {
		case <-exited:
			t.Fatalf("roce-controller serve exited:\n%s", tail(readFile(filepath.Join(l.run, "controller.log")), 20))
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("controller not ready after 60s (%v):\n%s", err, tail(readFile(filepath.Join(l.run, "controller.log")), 20))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func (l *lab) url(path string) string { return "https://127.0.0.1:" + strconv.Itoa(l.port) + path }

// adminGet is an admin request to the controller; the body is saved in the
// run directory as file.
func (l *lab) adminGet(path, file string) (int, []byte, error) {
	resp, err := l.admin.Get(l.url(path))
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err == nil {
		err = os.WriteFile(filepath.Join(l.run, file), body, 0o644)
	}
	return resp.StatusCode, body, err
}

// tenantHealth asks the controller for the tenant's health (saved as
// tenant-health.json) until every rail and probe pair is healthy or limit
// passes: the last status of a node reaches the controller a moment after
// its conditions changed.
func (l *lab) tenantHealth(limit time.Duration) (int, []byte, error) {
	deadline := time.Now().Add(limit)
	for {
		code, body, err := l.adminGet("/v1/tenants/"+tenant+"/health", "tenant-health.json")
		var h struct {
			Healthy    int `json:"healthy"`
			Total      int `json:"total"`
			PairsOK    int `json:"pairs_ok"`
			PairsTotal int `json:"pairs_total"`
		}
		if err != nil || code != http.StatusOK || json.Unmarshal(body, &h) != nil ||
			(h.Healthy == h.Total && h.PairsOK == h.PairsTotal) || time.Now().After(deadline) {
			return code, body, err
		}
		time.Sleep(time.Second)
	}
}

// guests derives both guests' rail 0 from the plan and writes their
// directories: guest.env (the fabric as the scripts need it), agent.yaml
// and, in the driver's, outsider.yaml.
func (l *lab) guests(attempt int) {
	t := l.t
	p, err := fabric.ParsePlan([]byte(planYAML))
	if err != nil {
		t.Fatal(err)
	}
	cfgs, err := fabric.Derive(p)
	if err != nil {
		t.Fatal(err)
	}
	l.a = &guest{name: nodeA, role: "driver", macLink: "52:54:00:0a:00:01", macMgmt: "52:54:00:0a:00:02",
		transit4: "10.200.0.0/31", transit6: "fd00:200::/127"}
	l.b = &guest{name: nodeB, role: "peer", macLink: "52:54:00:0b:00:01", macMgmt: "52:54:00:0b:00:02",
		transit4: "10.200.0.1/31", transit6: "fd00:200::1/127"}
	l.a.peer, l.b.peer = l.b, l.a
	for _, g := range []*guest{l.a, l.b} {
		c := cfgs[g.name]
		if len(c.Rails) != 1 {
			t.Fatalf("%s: the plan derives %d rails, want 1", g.name, len(c.Rails))
		}
		g.cfg = c.Rails[0]
		// each run of the scenario on fresh directories (and a fresh link socket)
		dir := filepath.Join(l.run, fmt.Sprintf("run-%d", attempt))
		g.dir = filepath.Join(dir, g.name)
		g.consolePath = filepath.Join(dir, "console-"+g.name+".log")
		if err := os.MkdirAll(g.dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, g := range []*guest{l.a, l.b} {
		l.writeGuest(g)
	}
}

func (l *lab) writeGuest(g *guest) {
	t := l.t
	host4, host6 := mustPrefix(t, g.cfg.IPv4), mustPrefix(t, g.cfg.IPv6)
	peer4, peer6 := mustPrefix(t, g.peer.cfg.IPv4), mustPrefix(t, g.peer.cfg.IPv6)
	probe := "0"
	if l.probeCLI {
		probe = "1"
	}
	env := [][2]string{
		{"NODE", g.name}, {"ROLE", g.role}, {"PEER", g.peer.name}, {"BIN", l.bin},
		{"MAC_LINK", g.macLink}, {"MAC_MGMT", g.macMgmt}, {"MGMT_ADDR", "10.0.2.15/24"},
		{"MTU", "9000"},
		{"HOST4", host4.Addr().String()}, {"HOST6", host6.Addr().String()},
		{"LEAF4", g.cfg.LeafIPv4 + "/31"}, {"LEAF6", g.cfg.LeafIPv6 + "/127"},
		{"PEER4", peer4.Addr().String()}, {"PEER6", peer6.Addr().String()},
		{"PEER_NET4", peer4.Masked().String()}, {"PEER_NET6", peer6.Masked().String()},
		{"TRANSIT4", g.transit4}, {"TRANSIT6", g.transit6},
		{"PEER_TRANSIT4", mustPrefix(t, g.peer.transit4).Addr().String()},
		{"PEER_TRANSIT6", mustPrefix(t, g.peer.transit6).Addr().String()},
		{"BW_ITERS", strconv.Itoa(bwIters)}, {"BW_BYTES", strconv.Itoa(bwBytes)},
		{"LAT_ITERS", strconv.Itoa(latIters)}, {"LAT_BYTES", strconv.Itoa(latBytes)},
		{"ROUTES4", g.cfg.Routes[0]}, {"ROUTES6", g.cfg.Routes[1]}, {"MAIN_ROUTES", strconv.FormatBool(os.Getenv("ROCE_RXE_MAIN_ROUTES") != "0")},
		{"PERFTEST", l.perftest}, {"PINGS", strconv.Itoa(pings)}, {"PROBE", probe}, {"OUTSIDER", "true"},
		{"ROUND_WAIT", strconv.Itoa(int((3*probeInterval + 30*time.Second) / time.Second))},
	}
	var b strings.Builder
	for _, kv := range env {
		fmt.Fprintf(&b, "%s=%s\n", kv[0], strconv.Quote(kv[1]))
	}
	writeFile(t, filepath.Join(g.dir, "guest.env"), b.String())
	// No scheduled probes at first: the bare runs and the probes the driver
	// compares with them have the rail to themselves. The driver restarts
	// its agent on agent-scheduled.yaml for the scheduled round.
	writeFile(t, filepath.Join(g.dir, "agent.yaml"), l.agentConfig(g.name, g.name, 0))
	if g.role == "driver" {
		writeFile(t, filepath.Join(g.dir, "agent-scheduled.yaml"), l.agentConfig(g.name, g.name, probeInterval))
		// the same host and rail, presenting the certificate of a node in no tenant
		writeFile(t, filepath.Join(g.dir, "outsider.yaml"), l.agentConfig(g.name, outsider, 0))
	}
}

// agentConfig is a guest's roce-agent config: controller mode, the node's
// certificate (identity's), state on tmpfs, no NVML (the guest has no
// GPU). The probe keys only when roce-agent knows them (unknown keys are
// an error); interval 0 schedules no probes (the API still serves).
func (l *lab) agentConfig(node, identity string, interval time.Duration) string {
	cert, key := l.cert(identity)
	c := map[string]any{
		"node":       map[string]any{"name": node},
		"sysfs_root": "/sys",
		"state_dir":  "/run/roce-agent",
		"gpu":        map[string]any{"nvml": "off"},
		"log":        map[string]any{"format": "text", "level": "info"},
		"listen":     map[string]any{"metrics": "127.0.0.1:9487"},
		// no GPU places rxe0: pin it (a host fact, so it is the agent's
		// setting, next to the controller's rails)
		"pins": []map[string]any{{"rail": 0, "netdev": "rail0"}},
		"controller": map[string]any{
			"url":     "https://10.0.2.2:" + strconv.Itoa(l.port),
			"ca_file": filepath.Join(l.pki, "ca.pem"), "cert_file": cert, "key_file": key,
		},
	}
	if l.probeCLI {
		c["listen"].(map[string]any)["probe_api"] = ":9488"
		c["probes"] = map[string]any{
			"interval":           interval.String(),
			"peers_per_interval": 1,
			"tools":              []string{v1.ProbeToolReachability, v1.ProbeToolLatency, v1.ProbeToolBandwidth},
			"families":           []string{"ipv4", "ipv6"},
			// TCG soft-RoCE moves well under 1 Gb/s against rxe's nominal 10 Gb/s
			"min_fraction_of_rate": 0.001,
			"bandwidth_iterations": bwIters,
			"latency_iterations":   latIters,
		}
		if l.perftest != "" {
			c["probes"].(map[string]any)["tools_dir"] = l.perftest
		}
	}
	out, err := yaml.Marshal(c)
	if err != nil {
		l.t.Fatal(err)
	}
	return string(out)
}

// boot starts one guest (lab/rxe/boot.sh execs qemu), its console into
// console-NAME.log and its own log lines into the test log.
func (l *lab) boot(g *guest, mode, sock string) {
	t := l.t
	cmd := exec.Command(filepath.Join(l.scripts(), "boot.sh"), g.name, g.dir, mode, sock, g.macLink, g.macMgmt)
	cmd.Env = append(os.Environ(), "RXE_WORK="+l.work)
	if runtime.NumCPU() >= 2 && os.Getenv("RXE_CPU") == "" {
		// one host core each: the guests' vCPUs do not trade cores mid-test
		cpu := "0"
		if g.role != "driver" {
			cpu = "1"
		}
		cmd.Env = append(cmd.Env, "RXE_CPU="+cpu)
	}
	f, err := os.Create(g.consolePath)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	// the process group dies with the test: no qemu outlives it
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("boot %s: %v", g.name, err)
	}
	g.cmd, g.done = cmd, make(chan struct{})
	g.consoleWriters.Add(1)
	go func() {
		defer g.consoleWriters.Done()
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := strings.TrimRight(sc.Text(), "\r")
			fmt.Fprintf(f, "%7.2f %s\n", time.Since(start).Seconds(), line)
			g.noteTrouble(t, time.Since(start).Seconds(), line)
			if strings.HasPrefix(line, "[rxe-") || strings.HasPrefix(line, "rxe-init") {
				t.Logf("%5.1fs %s", time.Since(start).Seconds(), line)
			}
		}
		_, _ = io.Copy(io.Discard, pr)
		f.Close()
	}()
	go func() {
		g.exitErr = cmd.Wait()
		pw.Close()
		close(g.done)
	}()
	t.Cleanup(func() {
		select {
		case <-g.done:
		default:
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-g.done
		}
		g.consoleWriters.Wait()
	})
}

// waitExit waits until the guest powered off, or kills it at the limit,
// or as soon as peer (when not nil) powered off first.
func (g *guest) waitExit(ctx context.Context, peer *guest) error {
	var peerDone <-chan struct{}
	if peer != nil {
		peerDone = peer.done
	}
	select {
	case <-g.done:
		return g.exitErr
	case <-peerDone:
		_ = syscall.Kill(-g.cmd.Process.Pid, syscall.SIGKILL)
		<-g.done
		return fmt.Errorf("%s killed: %s powered off while it was still running (exit %v; %s)",
			g.name, peer.name, peer.exitErr, peer.troubleSummary())
	case <-ctx.Done():
		_ = syscall.Kill(-g.cmd.Process.Pid, syscall.SIGKILL)
		<-g.done
		return fmt.Errorf("%s did not power off in time: killed", g.name)
	}
}

// kernelTrouble matches the console lines of a guest kernel in trouble:
// oopses, panics, lockups, stalls, the OOM killer.
var kernelTrouble = regexp.MustCompile(`Kernel panic|BUG:|Oops|general protection|soft lockup|hard LOCKUP|hung_task|blocked for more than|rcu.*(stall|detected)|Out of memory|Killed process|WARNING: CPU|Call Trace`)

// noteTrouble keeps (and logs, up to a bound) a console line that
// kernelTrouble matches.
func (g *guest) noteTrouble(t *testing.T, at float64, line string) {
	if !kernelTrouble.MatchString(line) {
		return
	}
	g.troubleMu.Lock()
	defer g.troubleMu.Unlock()
	if len(g.trouble) < 40 {
		g.trouble = append(g.trouble, line)
		t.Logf("%5.1fs %s console: %s", at, g.name, line)
	}
}

// troubleSummary is the first kernel trouble line on the guest's console, or a note that there was none.
func (g *guest) troubleSummary() string {
	g.troubleMu.Lock()
	defer g.troubleMu.Unlock()
	if len(g.trouble) == 0 {
		return "no kernel oops, panic, lockup or OOM on its console"
	}
	return fmt.Sprintf("%d kernel trouble lines on its console, the first: %q", len(g.trouble), g.trouble[0])
}

// attemptLimit bounds one run of the scenario (a good one takes about 6
// minutes under TCG).
const attemptLimit = 13 * time.Minute

// crash says why the last run's guests crashed: the peer powered off
// while the driver ran, or the driver did not finish its scenario with a
// kernel in trouble on a console; "" when neither. A driver that
// finished (errA nil, its script's status 0) is no crash, whatever the
// consoles said (they are logged, and the subtests judge the results).
func (l *lab) crash(errA error) string {
	select {
	case <-l.b.done:
		return fmt.Sprintf("%s powered off while the driver ran (%s)", l.b.name, l.b.troubleSummary())
	default:
	}
	if errA == nil && strings.TrimSpace(readFile(filepath.Join(l.a.dir, "results", "role.rc"))) == "0" {
		return ""
	}
	for _, g := range []*guest{l.a, l.b} {
		g.troubleMu.Lock()
		n := len(g.trouble)
		g.troubleMu.Unlock()
		if n > 0 {
			return fmt.Sprintf("%s's kernel was in trouble: %s", g.name, g.troubleSummary())
		}
	}
	return ""
}

// stopGuests kills both guests of the last run and waits until they are gone.
func (l *lab) stopGuests() {
	for _, g := range []*guest{l.a, l.b} {
		select {
		case <-g.done:
		default:
			_ = syscall.Kill(-g.cmd.Process.Pid, syscall.SIGKILL)
			<-g.done
		}
		g.consoleWriters.Wait()
	}
}

// postMortem, when the test failed, ends its output with what each guest
// did last (reportGuests).
func (l *lab) postMortem() {
	if l.t.Failed() {
		l.reportGuests()
	}
}

// reportGuests logs what each guest of the last run did last: its exit,
// the guest script's status, kernel trouble on its console, the
// console's and the agent log's last lines.
func (l *lab) reportGuests() {
	t := l.t
	for _, g := range []*guest{l.a, l.b} {
		if g == nil || g.done == nil {
			continue
		}
		exit := "still running"
		select {
		case <-g.done:
			exit = fmt.Sprintf("exited (%v)", g.exitErr)
		default:
		}
		rc := strings.TrimSpace(readFile(filepath.Join(g.dir, "results", "role.rc")))
		if rc == "" {
			rc = "none (the guest script did not finish)"
		}
		t.Logf("post-mortem %s (guest-%s): qemu %s; guest script status %s; %s\nconsole %s ends:\n%s\nagent log ends:\n%s",
			g.name, g.role, exit, rc, g.troubleSummary(), g.consolePath,
			tail(readFile(g.consolePath), 12), tail(readFile(filepath.Join(g.dir, "results", "agent.log")), 6))
	}
}

// waitSocket waits until the listening guest's qemu created its socket.
func waitSocket(t *testing.T, g *guest, path string) {
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if fi, err := os.Stat(path); err == nil && fi.Mode()&os.ModeSocket != 0 {
			return
		}
		select {
		case <-g.done:
			t.Fatalf("%s exited before it listened: %v\n%s", g.name, g.exitErr, tail(readFile(g.consolePath), 20))
		case <-time.After(50 * time.Millisecond):
		}
	}
	t.Fatalf("%s: no socket %s after 20s", g.name, path)
}

func mustPrefix(t *testing.T, s string) netip.Prefix {
	t.Helper()
	p, err := netip.ParsePrefix(s)
	if err != nil {
		t.Fatalf("derived address %q: %v", s, err)
	}
	return p
}

func writeFile(t *testing.T, path, data string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

func readFile(path string) string {
	b, _ := os.ReadFile(path)
	return string(b)
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// tail is the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
