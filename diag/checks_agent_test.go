package diag

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/roce-agent/roce-agent/agent"
	v1 "github.com/roce-agent/roce-agent/api/v1"
)

// agentEnv is an Env for the controller and daemon checks: node gpu-017,
// its own state_dir, no daemon address and no controller until a test
// sets them.
func agentEnv(t *testing.T) *Env {
	t.Helper()
	cfg := agent.DefaultConfig()
	cfg.SysfsRoot = t.TempDir()
	cfg.StateDir = t.TempDir()
	cfg.Node.Name = "gpu-017"
	cfg.Listen.Metrics = ""
	e := &Env{Config: cfg}
	e.defaults()
	return e
}

// shortRequests makes every request of the test give up after d.
func shortRequests(t *testing.T, d time.Duration) {
	old := requestTimeout
	requestTimeout = d
	t.Cleanup(func() { requestTimeout = old })
}

// nodeConfig is a valid config for gpu-017 with a desired state.
func nodeConfig(gen int64) v1.NodeConfig {
	rail := 0
	return v1.NodeConfig{
		Generation: gen,
		Node:       v1.NodeIdentity{Name: "gpu-017"},
		Link:       v1.LinkConfig{MTU: 9000, Routing: v1.RoutingConfig{TableBase: 1000, RulePriorityBase: 1000}},
		Rails:      []v1.RailConfig{{Rail: &rail, Netdev: "enp27s0np0", IPv4: "10.0.0.1/31"}},
	}
}

// fakeController serves gpu-017's config at generation gen to requests
// with token (any request when token is ""), 404 for other nodes.
func fakeController(t *testing.T, gen int64, token string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if token != "" && r.Header.Get("Authorization") != "Bearer "+token {
			w.WriteHeader(http.StatusUnauthorized)
			_ = json.NewEncoder(w).Encode(v1.Error{Error: "bad token"})
			return
		}
		if r.URL.Path != "/v1/nodes/gpu-017/config" {
			w.WriteHeader(http.StatusNotFound)
			_ = json.NewEncoder(w).Encode(v1.Error{Error: "no such node"})
			return
		}
		w.Header().Set("ETag", `"g7"`)
		_ = json.NewEncoder(w).Encode(nodeConfig(gen))
	})
}

// useController points e at a plain-HTTP controller.
func useController(e *Env, url string) {
	e.Config.Controller.URL = url
	e.Config.Controller.InsecureHTTP = strings.HasPrefix(url, "http://")
}

// deadAddress is a loopback address nothing listens on.
func deadAddress(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// silentServer accepts connections and never answers.
func silentServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var conns []net.Conn
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns = append(conns, c)
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
		for _, c := range conns {
			c.Close()
		}
	})
	return ln.Addr().String()
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// tlsServer is an httptest TLS server that does not log the handshakes
// the tests fail on purpose.
func tlsServer(t *testing.T, h http.Handler) *httptest.Server {
	srv := httptest.NewUnstartedServer(h)
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv
}

func TestCtrlConnLocalMode(t *testing.T) {
	for _, id := range []string{"CTRL-CONN-001", "CTRL-GEN-001"} {
		want(t, check(t, agentEnv(t), id), "controller", Skip, "local mode")
	}
}

func TestCtrlConnReachable(t *testing.T) {
	srv := httptest.NewServer(fakeController(t, 7, "s3cret"))
	defer srv.Close()
	e := agentEnv(t)
	useController(e, srv.URL)
	e.Config.Controller.TokenFile = writeFile(t, "token", "s3cret\n")
	want(t, check(t, e, "CTRL-CONN-001"), srv.URL, Pass, "generation 7", "gpu-017")

	// Wrong credentials.
	e.Config.Controller.TokenFile = writeFile(t, "token", "stale")
	want(t, check(t, e, "CTRL-CONN-001"), srv.URL, Fail, "HTTP 401", "bad token", "credentials")
	e.Config.Controller.TokenFile = ""
	want(t, check(t, e, "CTRL-CONN-001"), srv.URL, Fail, "HTTP 401", "no controller.token_file")

	// The controller does not know the node's name.
	e.Config.Controller.TokenFile = writeFile(t, "token", "s3cret")
	e.Config.Node.Name = "gpu-17"
	want(t, check(t, e, "CTRL-CONN-001"), srv.URL, Fail, "HTTP 404", `no config for node "gpu-17"`)
}

func TestCtrlConnWrongNodeConfig(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		nc := nodeConfig(3)
		nc.Node.Name = "gpu-018"
		_ = json.NewEncoder(w).Encode(nc)
	}))
	defer srv.Close()
	e := agentEnv(t)
	useController(e, srv.URL)
	want(t, check(t, e, "CTRL-CONN-001"), srv.URL, Fail, `is for node "gpu-018"`, "rejects")
}

func TestCtrlConnUnreachable(t *testing.T) {
	shortRequests(t, 200*time.Millisecond)
	dead := "http://" + deadAddress(t)
	silent := "http://" + silentServer(t)
	good := httptest.NewServer(fakeController(t, 2, ""))
	defer good.Close()
	e := agentEnv(t)
	useController(e, dead+", "+silent+","+good.URL)
	start := time.Now()
	rs := check(t, e, "CTRL-CONN-001")
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("took %s with a silent controller", d)
	}
	want(t, rs, dead, Fail, "connection refused")
	want(t, rs, silent, Fail, "did not answer within 200ms")
	want(t, rs, good.URL, Pass, "generation 2")
}

func TestCtrlConnTLS(t *testing.T) {
	srv := tlsServer(t, fakeController(t, 5, ""))
	e := agentEnv(t)
	useController(e, srv.URL)
	// The system roots do not know httptest's CA.
	want(t, check(t, e, "CTRL-CONN-001"), srv.URL, Fail, "does not verify", "certificate")

	ca := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	e.Config.Controller.CAFile = writeFile(t, "ca.pem", string(ca))
	want(t, check(t, e, "CTRL-CONN-001"), srv.URL, Pass, "generation 5")

	// Unusable settings: the agent would not start either.
	e.Config.Controller.CAFile = writeFile(t, "ca.pem", "not a certificate")
	want(t, check(t, e, "CTRL-CONN-001"), "controller", Fail, "controller.ca_file", "no PEM certificate")
}

// TestCtrlConnClientCert: the node's client certificate is presented
// (mTLS), and a certificate without its key is refused before asking.
func TestCtrlConnClientCert(t *testing.T) {
	srv := httptest.NewUnstartedServer(fakeController(t, 4, ""))
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.TLS = &tls.Config{ClientAuth: tls.RequireAnyClientCert}
	srv.StartTLS()
	defer srv.Close()
	e := agentEnv(t)
	useController(e, srv.URL)
	e.Config.Controller.CAFile = writeFile(t, "ca.pem", string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})))
	want(t, check(t, e, "CTRL-CONN-001"), srv.URL, Fail, "refused the TLS handshake", "none is set")

	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "gpu-017"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	e.Config.Controller.CertFile = writeFile(t, "node.pem", string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})))
	e.Config.Controller.KeyFile = writeFile(t, "node.key", string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb})))
	want(t, check(t, e, "CTRL-CONN-001"), srv.URL, Pass, "generation 4")

	// A certificate without its key is refused by config validation; the
	// client, like the agent's, then sends none.
	e.Config.Controller.KeyFile = ""
	want(t, check(t, e, "CTRL-CONN-001"), srv.URL, Fail, "none is set")
}

// fakeDaemon serves what the daemon serves: healthz and readyz answer
// with ok or 503 and why; status is /v1/status.
type fakeDaemon struct {
	healthy, ready atomic.Bool
	why            string
	status         v1.NodeStatus
}

func (d *fakeDaemon) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	probe := func(ok bool) {
		if !ok {
			http.Error(w, d.why, http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok\n"))
	}
	switch r.URL.Path {
	case "/healthz":
		probe(d.healthy.Load())
	case "/readyz":
		probe(d.ready.Load())
	case "/v1/status":
		if !d.ready.Load() {
			http.Error(w, d.why, http.StatusServiceUnavailable)
			return
		}
		_ = json.NewEncoder(w).Encode(d.status)
	default:
		http.NotFound(w, r)
	}
}

// serveDaemon starts d and points e's listen.metrics at it as ":port".
func serveDaemon(t *testing.T, e *Env, d *fakeDaemon) {
	t.Helper()
	srv := httptest.NewServer(d)
	t.Cleanup(srv.Close)
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(srv.URL, "http://"))
	e.Config.Listen.Metrics = ":" + port
}

func readyDaemon(gen int64) *fakeDaemon {
	d := &fakeDaemon{status: v1.NodeStatus{Node: "gpu-017", Version: "1.4.0", AppliedGeneration: gen, LastReconcile: time.Now().Add(-12 * time.Second)}}
	d.healthy.Store(true)
	d.ready.Store(true)
	return d
}

func TestAgentDaemonHealthy(t *testing.T) {
	e := agentEnv(t)
	want(t, check(t, e, "AGENT-DAEMON-001"), "daemon", Skip, "listen.metrics is empty")

	e.Config.Listen.Metrics = deadAddress(t)
	want(t, check(t, e, "AGENT-DAEMON-001"), "daemon", Skip, "the daemon is not running (diag works without it)")

	d := readyDaemon(7)
	serveDaemon(t, e, d)
	want(t, check(t, e, "AGENT-DAEMON-001"), "daemon", Pass, "version 1.4.0", "applied generation 7", "last reconcile 12s ago")

	d.status.LastError = "rail 1: netdev enp61s0np0 does not exist"
	want(t, check(t, e, "AGENT-DAEMON-001"), "daemon", Warn, "last reconcile failed", "enp61s0np0")

	d.ready.Store(false)
	d.why = "waiting for a desired state: no rails"
	want(t, check(t, e, "AGENT-DAEMON-001"), "daemon", Fail, "/readyz: HTTP 503", "not ready", "waiting for a desired state")

	d.healthy.Store(false)
	d.why = "loop stuck"
	want(t, check(t, e, "AGENT-DAEMON-001"), "daemon", Fail, "/healthz", "not healthy", "loop stuck")
}

func TestAgentDaemonSilent(t *testing.T) {
	shortRequests(t, 300*time.Millisecond)
	e := agentEnv(t)
	e.Config.Listen.Metrics = silentServer(t)
	start := time.Now()
	want(t, check(t, e, "AGENT-DAEMON-001"), "daemon", Unknown, "did not answer within 300ms")
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("took %s with a silent daemon", d)
	}
}

// TestAgentDaemonSilentPastCheckTimeout: a request never outlives the
// check's own deadline, however long requestTimeout is.
func TestAgentDaemonSilentPastCheckTimeout(t *testing.T) {
	e := agentEnv(t)
	e.Config.Listen.Metrics = silentServer(t)
	cs, err := Select([]string{"AGENT-DAEMON-001"})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	rep := Run(context.Background(), e, cs, Options{CheckTimeout: 400 * time.Millisecond})
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("took %s", d)
	}
	if len(rep.Results) != 1 || rep.Results[0].Status != Unknown {
		t.Fatalf("results %+v", rep.Results)
	}
}

func TestAgentDaemonTLS(t *testing.T) {
	srv := tlsServer(t, readyDaemon(1))
	e := agentEnv(t)
	e.Config.Listen.Metrics = strings.TrimPrefix(srv.URL, "https://")
	e.Config.Listen.WebConfigFile = "/etc/roce-agent/web.yml"
	want(t, check(t, e, "AGENT-DAEMON-001"), "daemon", Skip, "serves HTTPS", "listen.web_config_file")
	want(t, check(t, e, "AGENT-COND-001"), "daemon", Skip, "serves HTTPS")
}

func TestAgentConditions(t *testing.T) {
	e := agentEnv(t)
	e.Config.Listen.Metrics = deadAddress(t)
	want(t, check(t, e, "AGENT-COND-001"), "daemon", Skip, "not running")

	d := readyDaemon(3)
	now := time.Now()
	cond := func(typ v1.ConditionType, st v1.ConditionStatus, reason, msg string) v1.Condition {
		return v1.Condition{Type: typ, Status: st, Reason: reason, Message: msg, Since: now}
	}
	d.status.Rails = []v1.RailStatus{
		{Rail: 0, Netdev: "enp27s0np0", RDMADevice: "mlx5_0", Conditions: []v1.Condition{
			cond(v1.ConditionLinkUp, v1.StatusTrue, "OperUp", ""),
			cond(v1.ConditionDCQCNReady, v1.StatusUnsupported, "NoDebugfs", ""),
		}},
		{Rail: 1, Netdev: "enp61s0np0", RDMADevice: "mlx5_3", Conditions: []v1.Condition{
			cond(v1.ConditionLinkUp, v1.StatusTrue, "OperUp", ""),
			cond(v1.ConditionAddressesReady, v1.StatusFalse, "Conflict", "10.1.0.35/31 is on enp62s0np0"),
		}},
		{Rail: 2, Netdev: "enp78s0np0", Conditions: []v1.Condition{
			cond(v1.ConditionGIDReady, v1.StatusUnknown, "Pending", ""),
		}},
	}
	d.status.Conditions = []v1.Condition{cond(v1.ConditionControllerConnected, v1.StatusFalse, "Unreachable", "get https://fabric-ctl:8443/v1/nodes/gpu-017/config: connection refused")}
	serveDaemon(t, e, d)
	rs := check(t, e, "AGENT-COND-001")
	want(t, rs, "enp27s0np0", Pass, "1 conditions True", "1 Unsupported")
	r := want(t, rs, "enp61s0np0", Fail, "AddressesReady=False (Conflict)", "is on enp62s0np0")
	if r.Rail == nil || *r.Rail != 1 || !strings.Contains(r.Remedy, "address") {
		t.Errorf("rail 1's result: rail %v remedy %q", r.Rail, r.Remedy)
	}
	want(t, rs, "enp78s0np0", Warn, "GIDReady=Unknown (Pending)")
	want(t, rs, "node", Fail, "ControllerConnected=False", "connection refused")

	d.ready.Store(false)
	d.why = "first reconcile not done"
	want(t, check(t, e, "AGENT-COND-001"), "daemon", Skip, "no status yet", "first reconcile not done")
}

// writeLastGood saves gen as the daemon's last good config.
func writeLastGood(t *testing.T, e *Env, gen int64) {
	t.Helper()
	b, err := json.Marshal(agent.LastGood{Node: "gpu-017", Saved: time.Now(), Config: nodeConfig(gen)})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(e.Config.StateDir, agent.ControllerFile), b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestCtrlGeneration(t *testing.T) {
	srv := httptest.NewServer(fakeController(t, 7, ""))
	defer srv.Close()
	e := agentEnv(t)
	useController(e, srv.URL)
	e.Config.Listen.Metrics = deadAddress(t)

	// Nothing saved, no daemon.
	rs := check(t, e, "CTRL-GEN-001")
	want(t, rs, "state_dir", Warn, "no last good config", agent.ControllerFile, "generation 7")
	want(t, rs, "daemon", Skip, "not running")

	// All current.
	writeLastGood(t, e, 7)
	serveDaemon(t, e, readyDaemon(7))
	rs = check(t, e, "CTRL-GEN-001")
	want(t, rs, "state_dir", Pass, "generation 7")
	want(t, rs, "daemon", Pass, "generation 7")

	// Behind: the daemon saved and applied generation 6.
	writeLastGood(t, e, 6)
	d := readyDaemon(6)
	d.status.LastError = "rail 0: address conflict"
	serveDaemon(t, e, d)
	rs = check(t, e, "CTRL-GEN-001")
	want(t, rs, "state_dir", Warn, "generation 6", "generation 7", "older")
	want(t, rs, "daemon", Warn, "generation 6", "generation 7", "older", "address conflict")

	// Ahead of the controller.
	writeLastGood(t, e, 9)
	rs = check(t, e, "CTRL-GEN-001")
	want(t, rs, "state_dir", Warn, "generation 9", "newer")

	// A saved file that is garbage.
	if err := os.WriteFile(filepath.Join(e.Config.StateDir, agent.ControllerFile), []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	want(t, check(t, e, "CTRL-GEN-001"), "state_dir", Warn, "cannot be used")

	// The controller is down: nothing to compare with.
	e.Config.Controller.URL = "http://" + deadAddress(t)
	want(t, check(t, e, "CTRL-GEN-001"), "controller", Skip, "CTRL-CONN-001", "connection refused")
}

// Unknown conditions that only say "does not apply here" or "not looked
// at yet" are listed in the PASS, not warned about.
func TestAgentConditionsNotApplicable(t *testing.T) {
	conds := []v1.Condition{
		{Type: v1.ConditionLinkUp, Status: v1.StatusTrue, Reason: "OperUp"},
		{Type: v1.ConditionQoSReady, Status: v1.StatusUnknown, Reason: "NotConfigured"},
		{Type: v1.ConditionGPUAffinityOK, Status: v1.StatusUnknown, Reason: "NoGPU"},
		{Type: v1.ConditionPeerReachable, Status: v1.StatusUnknown, Reason: "NotProbedYet"},
	}
	rs := judgeConditions("rail0", conds)
	if len(rs) != 1 || rs[0].Status != Pass || rs[0].Observed != "1 conditions True, 3 Unknown" || !strings.Contains(rs[0].Reason, "QoSReady (NotConfigured)") {
		t.Errorf("%+v", rs)
	}
	conds = append(conds, v1.Condition{Type: v1.ConditionGIDReady, Status: v1.StatusUnknown, Reason: "Pending"})
	if rs := judgeConditions("rail0", conds); len(rs) != 1 || rs[0].Status != Warn {
		t.Errorf("a pending GID: %+v", rs)
	}
}
