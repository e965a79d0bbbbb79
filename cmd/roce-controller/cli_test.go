package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	v1 "github.com/roce-agent/roce-agent/api/v1"
	"github.com/roce-agent/roce-agent/controller"
)

// TestMain lets a test run this binary's main as a child process (the
// etcd-member cluster test): ROCE_CONTROLLER_RUN_MAIN=1 runs main with
// the test binary's arguments.
func TestMain(m *testing.M) {
	if os.Getenv("ROCE_CONTROLLER_RUN_MAIN") == "1" {
		os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

const fabricFile = "../../controller/testdata/fabric.yaml"

const (
	nodeToken  = "token-of-gpu-00-0123456789"
	adminToken = "token-of-ops-0123456789abcd"
)

// writeTokens writes a tokens file: gpu-00 (by hash) and ops (admin).
func writeTokens(t *testing.T, dir string) string {
	t.Helper()
	f := filepath.Join(dir, "tokens.yaml")
	data := fmt.Sprintf("- name: gpu-00\n  token_sha256: %s\n- name: ops\n  token: %s\n  admin: true\n", controller.HashToken(nodeToken), adminToken)
	if err := os.WriteFile(f, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

// shortDir is a temporary directory short enough for etcd's sockets.
func shortDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "rcc")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

func runCLI(args ...string) (code int, stdout, stderr string) {
	var out, errb bytes.Buffer
	code = run(args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestVersion(t *testing.T) {
	code, out, _ := runCLI("version")
	if code != 0 || !strings.HasPrefix(out, "roce-controller dev\n") || !strings.Contains(out, "  go: go") {
		t.Fatalf("%d %q", code, out)
	}
}

func TestUsageErrors(t *testing.T) {
	dir := t.TempDir()
	tokens := writeTokens(t, dir)
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("rails: 2\nnodes: [{name: a, index: 0}, {name: a, index: 0}]\ntenants: [{id: t, vrf: T, vni: 1, members: [{node: zz}]}]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{nil, []string{"no command given"}},
		{[]string{"frobnicate"}, []string{`unknown command "frobnicate"`}},
		{[]string{"serve", "--bogus"}, []string{"unknown flag: --bogus"}},
		{[]string{"serve", "extra"}, []string{`unexpected argument "extra"`}},
		{[]string{"serve", "--tokens", tokens}, []string{"--tls-cert and --tls-key are required", "--insecure-http"}},
		{[]string{"serve", "--insecure-http"}, []string{"no way to authenticate anyone"}},
		{[]string{"serve", "--insecure-http", "--tokens", tokens, "--tls-cert", "x"}, []string{"drop --tls-cert"}},
		{[]string{"serve", "--insecure-http", "--tokens", tokens, "--lease-ttl", "1s"}, []string{"--lease-ttl 1s is below 2s"}},
		{[]string{"serve", "--tls-cert", "/nonexistent.pem", "--tls-key", "/nonexistent.pem", "--tokens", tokens}, []string{"--tls-cert/--tls-key"}},
		{[]string{"serve", "--insecure-http", "--tokens", bad}, []string{"--tokens", "bad.yaml"}},
		{[]string{"serve", "--insecure-http", "--tokens", tokens, "--plan", bad, "--data-dir", dir}, []string{"plan " + bad + " is invalid", "\n  ", "zz"}},
		{[]string{"serve", "--insecure-http", "--tokens", tokens, "--log-level", "loud"}, []string{"--log-level"}},
		{[]string{"etcd-member"}, []string{"--data-dir is required"}},
		{[]string{"etcd-member", "--data-dir", dir, "--name", "m9", "--initial-cluster", "m0=http://127.0.0.1:1"}, []string{"does not name this member"}},
		{[]string{"certs"}, []string{"--dir is required"}},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			code, _, stderr := runCLI(tc.args...)
			if code != exitUsage {
				t.Errorf("exit %d, want %d: %s", code, exitUsage, stderr)
			}
			for _, w := range tc.want {
				if !strings.Contains(stderr, w) {
					t.Errorf("stderr lacks %q:\n%s", w, stderr)
				}
			}
		})
	}
	// Every problem of the plan is listed, one a line.
	_, _, stderr := runCLI("serve", "--insecure-http", "--tokens", tokens, "--plan", bad)
	if n := strings.Count(stderr, "\n  "); n < 3 {
		t.Errorf("%d problems listed:\n%s", n, stderr)
	}
}

func TestCerts(t *testing.T) {
	dir := t.TempDir()
	code, out, stderr := runCLI("certs", "--dir", dir, "--server-host", "ctl.example,10.0.0.1", "--names", "gpu-00,admin")
	if code != 0 || strings.Count(out, "wrote ") != 8 {
		t.Fatalf("%d\n%s%s", code, out, stderr)
	}
	if _, err := controller.LoadCA(filepath.Join(dir, controller.CACertFile), filepath.Join(dir, controller.CAKeyFile)); err != nil {
		t.Fatal(err)
	}
	if code, _, stderr := runCLI("certs", "--dir", dir, "--names", "../evil"); code != exitError || !strings.Contains(stderr, "client name") {
		t.Errorf("bad name: %d %s", code, stderr)
	}
}

// lockedBuffer is a log sink read while a server writes to it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// logValue is the value of key in the first JSON log record with msg.
func (l *lockedBuffer) logValue(msg, key string) (string, bool) {
	sc := bufio.NewScanner(strings.NewReader(l.String()))
	for sc.Scan() {
		var rec map[string]any
		if json.Unmarshal(sc.Bytes(), &rec) == nil && rec["msg"] == msg {
			v, ok := rec[key]
			return fmt.Sprint(v), ok
		}
	}
	return "", false
}

// server is serve running in this process.
type server struct {
	t        *testing.T
	base     string
	logs     *lockedBuffer
	cancel   context.CancelFunc
	done     chan error
	stopOnce sync.Once
}

// startServe runs `serve --insecure-http` with args and waits for it to
// listen.
func startServe(t *testing.T, args ...string) *server {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	s := &server{t: t, logs: &lockedBuffer{}, cancel: cancel, done: make(chan error, 1)}
	all := append([]string{"--log-format", "json", "serve", "--insecure-http", "--listen", "127.0.0.1:0"}, args...)
	go func() { s.done <- execute(ctx, all, io.Discard, s.logs) }()
	deadline := time.Now().Add(20 * time.Second)
	for {
		if addr, ok := s.logs.logValue("serving", "address"); ok {
			s.base = "http://" + addr
			break
		}
		select {
		case err := <-s.done:
			t.Fatalf("serve ended: %v\n%s", err, s.logs)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("serve did not start:\n%s", s.logs)
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Cleanup(func() { s.stop() })
	return s
}

// stop cancels serve (as SIGTERM does) and waits for it to return.
func (s *server) stop() {
	s.stopOnce.Do(func() {
		s.cancel()
		select {
		case err := <-s.done:
			if err != nil {
				s.t.Errorf("serve: %v\n%s", err, s.logs)
			}
		case <-time.After(20 * time.Second):
			s.t.Errorf("serve did not stop:\n%s", s.logs)
		}
	})
}

func (s *server) do(method, path, token string, body any, header ...string) (*http.Response, []byte) {
	s.t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, s.base+path, rd)
	if err != nil {
		s.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

func (s *server) waitReady() {
	s.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, body := s.do("GET", "/readyz", "", nil)
		if resp.StatusCode == 200 {
			return
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("not ready: %s\n%s", body, s.logs)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestServe runs serve with an embedded etcd three times on one data
// directory: with a plan, without (the stored plan), with a changed plan
// (only the nodes it changes get a new generation); shutdown ends a
// waiting long-poll at once.
func TestServe(t *testing.T) {
	dir := shortDir(t)
	tokens := writeTokens(t, dir)
	data := filepath.Join(dir, "data")

	s := startServe(t, "--data-dir", data, "--tokens", tokens, "--plan", fabricFile)
	s.waitReady()
	resp, body := s.do("GET", "/v1/nodes/gpu-00/config", nodeToken, nil)
	if resp.StatusCode != 200 || resp.Header.Get("ETag") != `"g1"` {
		t.Fatalf("config: %d %s %s", resp.StatusCode, resp.Header.Get("ETag"), body)
	}
	if resp, _ := s.do("GET", "/v1/nodes/gpu-01/config", nodeToken, nil); resp.StatusCode != 403 {
		t.Errorf("another node's config: %d", resp.StatusCode)
	}
	if resp, _ := s.do("PUT", "/v1/nodes/gpu-00/lease", nodeToken, v1.Heartbeat{AppliedGeneration: 1}); resp.StatusCode != 204 {
		t.Errorf("heartbeat: %d", resp.StatusCode)
	}
	poll := make(chan int, 1)
	go func() {
		resp, _ := s.do("GET", "/v1/nodes/gpu-00/config?wait=1m", nodeToken, nil, "If-None-Match", `"g1"`)
		poll <- resp.StatusCode
	}()
	waitMetric(t, s, "roce_controller_long_polls 1")
	start := time.Now()
	s.stop()
	if code := <-poll; code != 304 || time.Since(start) > 5*time.Second {
		t.Errorf("long-poll at shutdown: %d after %v", code, time.Since(start))
	}
	if _, ok := s.logs.logValue("stopping the embedded etcd member", "msg"); !ok {
		t.Errorf("no clean etcd stop:\n%s", s.logs)
	}

	// No --plan: the stored one.
	s = startServe(t, "--data-dir", data, "--tokens", tokens)
	s.waitReady()
	if resp, _ := s.do("GET", "/v1/nodes/gpu-03/config", adminToken, nil); resp.Header.Get("ETag") != `"g1"` {
		t.Errorf("stored plan: ETag %s", resp.Header.Get("ETag"))
	}
	s.stop()

	// A changed plan: gpu-04 joins tenant-a.
	orig, err := os.ReadFile(fabricFile)
	if err != nil {
		t.Fatal(err)
	}
	changed := strings.Replace(string(orig), "members: [{node: gpu-00}, {node: gpu-02}]", "members: [{node: gpu-00}, {node: gpu-02}, {node: gpu-04}]", 1)
	plan2 := filepath.Join(dir, "plan2.yaml")
	if err := os.WriteFile(plan2, []byte(changed), 0o644); err != nil {
		t.Fatal(err)
	}
	// --plan alone seeds: the stored plan (and any change made through
	// the API) is kept.
	s = startServe(t, "--data-dir", data, "--tokens", tokens, "--plan", plan2)
	s.waitReady()
	if _, ok := s.logs.logValue("a plan is stored already: serving it, --plan ignored (--replace-plan stores the file over it)", "msg"); !ok {
		t.Errorf("a restart with --plan did not keep the stored plan:\n%s", s.logs)
	}
	if resp, _ := s.do("GET", "/v1/nodes/gpu-04/config", adminToken, nil); resp.Header.Get("ETag") != `"g1"` {
		t.Errorf("seeded over a stored plan: gpu-04 ETag %s", resp.Header.Get("ETag"))
	}
	s.stop()
	// --replace-plan stores the file over it.
	s = startServe(t, "--data-dir", data, "--tokens", tokens, "--plan", plan2, "--replace-plan")
	s.waitReady()
	if v, _ := s.logs.logValue("plan stored", "changed_nodes"); v != "3" {
		t.Errorf("changed nodes %s, want 3 (gpu-00, gpu-02, gpu-04)", v)
	}
	for node, want := range map[string]string{"gpu-00": `"g2"`, "gpu-04": `"g2"`, "gpu-01": `"g1"`} {
		if resp, _ := s.do("GET", "/v1/nodes/"+node+"/config", adminToken, nil); resp.Header.Get("ETag") != want {
			t.Errorf("%s: ETag %s, want %s", node, resp.Header.Get("ETag"), want)
		}
	}
}

// TestServeWithoutPlan: no plan anywhere, serve runs and says why it is
// not ready.
func TestServeWithoutPlan(t *testing.T) {
	dir := shortDir(t)
	s := startServe(t, "--data-dir", filepath.Join(dir, "data"), "--tokens", writeTokens(t, dir))
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, body := s.do("GET", "/readyz", "", nil)
		if resp.StatusCode == 503 && strings.Contains(string(body), "no fabric plan") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("readyz %d %s", resp.StatusCode, body)
		}
		time.Sleep(20 * time.Millisecond)
	}
	resp, body := s.do("GET", "/v1/nodes/gpu-00/config", nodeToken, nil)
	if resp.StatusCode != 503 || !strings.Contains(string(body), "no fabric plan") {
		t.Errorf("config without a plan: %d %s", resp.StatusCode, body)
	}
}

func waitMetric(t *testing.T, s *server, line string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, body := s.do("GET", "/metrics", "", nil)
		if strings.Contains(string(body), line+"\n") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("/metrics never had %q", line)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// TestEtcdMemberCluster runs three `roce-controller etcd-member` processes
// as one etcd cluster and a controller on it; the controller keeps
// serving when one member stops (SIGTERM, exit 0).
func TestEtcdMemberCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three processes")
	}
	dir := shortDir(t)
	var cluster, peers, clients []string
	for i := range 3 {
		peers = append(peers, "http://"+freePort(t))
		clients = append(clients, fmt.Sprintf("unix://%s/c%d.sock", dir, i))
		cluster = append(cluster, fmt.Sprintf("m%d=%s", i, peers[i]))
	}
	cmds := make([]*exec.Cmd, 3)
	logs := make([]*lockedBuffer, 3)
	for i := range 3 {
		logs[i] = &lockedBuffer{}
		cmd := exec.Command(os.Args[0], "--log-format", "json", "etcd-member", "--name", fmt.Sprintf("m%d", i),
			"--data-dir", filepath.Join(dir, fmt.Sprintf("m%d", i)), "--listen-client", clients[i], "--listen-peer", peers[i],
			"--initial-cluster", strings.Join(cluster, ","))
		cmd.Env = append(os.Environ(), "ROCE_CONTROLLER_RUN_MAIN=1")
		cmd.Stderr = logs[i]
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		cmds[i] = cmd
		t.Cleanup(func() {
			if cmd.ProcessState == nil {
				_ = cmd.Process.Kill()
				_ = cmd.Wait()
			}
		})
	}
	for i := range 3 {
		deadline := time.Now().Add(30 * time.Second)
		for {
			if _, ok := logs[i].logValue("etcd member ready", "msg"); ok {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("member %d not ready:\n%s", i, logs[i])
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	s := startServe(t, "--etcd-endpoints", strings.Join(clients, ","), "--tokens", writeTokens(t, dir), "--plan", fabricFile)
	s.waitReady()
	if err := cmds[2].Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := cmds[2].Wait(); err != nil {
		t.Errorf("member 2 after SIGTERM: %v\n%s", err, logs[2])
	}
	resp, body := s.do("POST", "/v1/moves", adminToken, v1.Move{Node: "gpu-04", Tenant: "tenant-a"})
	if resp.StatusCode != 200 {
		t.Fatalf("move with one member down: %d %s", resp.StatusCode, body)
	}
	var res v1.MoveResult
	if err := json.Unmarshal(body, &res); err != nil || len(res.ChangedNodes) != 3 {
		t.Errorf("move result %s", body)
	}
	s.waitReady()
}
