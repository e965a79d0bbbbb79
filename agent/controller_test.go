package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/legacy"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/vishvananda/netns"

	v1 "github.com/roce-agent/roce-agent/api/v1"
	"github.com/roce-agent/roce-agent/nic/linkengine/linktest"
)

const testNode = "gpu-017"

// testNodeConfig is a valid config for testNode: rail 0 pinned to vethA
// with the address addr.
func testNodeConfig(gen int64, addr string) v1.NodeConfig {
	return v1.NodeConfig{
		Generation: gen,
		Node:       v1.NodeIdentity{Name: testNode},
		Link:       v1.LinkConfig{MTU: 9000, Routing: v1.RoutingConfig{TableBase: 1000, RulePriorityBase: 1000}},
		Rails:      []v1.RailConfig{{Rail: intp(0), Netdev: "vethA", IPv4: addr}},
	}
}

var (
	openAPIOnce   sync.Once
	openAPIRouter routers.Router
	openAPIErr    error
)

// apiRouter routes requests to the operations of api/v1/openapi.yaml.
func apiRouter(t *testing.T) routers.Router {
	t.Helper()
	openAPIOnce.Do(func() {
		doc, err := openapi3.NewLoader().LoadFromData(v1.OpenAPI())
		if err != nil {
			openAPIErr = err
			return
		}
		openAPIRouter, openAPIErr = legacy.NewRouter(doc)
	})
	if openAPIErr != nil {
		t.Fatalf("openapi.yaml: %v", openAPIErr)
	}
	return openAPIRouter
}

// recorded is one request the fake controller got.
type recorded struct {
	method, path, wait, ifNoneMatch, auth, agent string
}

// fakeController serves testNode's config (long-polling on If-None-Match
// with wait, as the OpenAPI document says), records statuses and
// heartbeats, and fails the test for any request the document does not
// allow.
type fakeController struct {
	t      *testing.T
	srv    *httptest.Server
	router routers.Router

	mu       sync.Mutex
	body     []byte // the config served; nil: 404
	etag     string
	n        int
	changed  chan struct{} // closed when the config changes
	answer   func(w http.ResponseWriter, r *http.Request) bool
	reqs     []recorded
	statuses []v1.NodeStatus
	leases   []v1.Heartbeat
}

func newFakeController(t *testing.T) *fakeController {
	f := &fakeController{t: t, router: apiRouter(t), changed: make(chan struct{})}
	f.srv = httptest.NewServer(f)
	t.Cleanup(f.srv.Close)
	return f
}

// set serves a config (as JSON) with a new ETag, waking long-polls.
func (f *fakeController) set(nc v1.NodeConfig) string {
	b, err := json.Marshal(nc)
	if err != nil {
		f.t.Fatal(err)
	}
	return f.setRaw(b)
}

func (f *fakeController) setRaw(body []byte) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.n++
	f.body, f.etag = body, fmt.Sprintf(`"c%d"`, f.n)
	close(f.changed)
	f.changed = make(chan struct{})
	return f.etag
}

// override answers every request with fn while it returns true (nil:
// back to normal).
func (f *fakeController) override(fn func(w http.ResponseWriter, r *http.Request) bool) {
	f.mu.Lock()
	f.answer = fn
	f.mu.Unlock()
}

// down makes the controller drop every connection unanswered.
func (f *fakeController) down() {
	f.override(func(http.ResponseWriter, *http.Request) bool { panic(http.ErrAbortHandler) })
}

func (f *fakeController) requests() []recorded {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.reqs)
}

func (f *fakeController) gotStatuses() []v1.NodeStatus {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.statuses)
}

func (f *fakeController) gotLeases() []v1.Heartbeat {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.leases)
}

func (f *fakeController) validate(r *http.Request) error {
	route, params, err := f.router.FindRoute(r)
	if err != nil {
		return err
	}
	return openapi3filter.ValidateRequest(r.Context(), &openapi3filter.RequestValidationInput{
		Request: r, PathParams: params, Route: route,
		Options: &openapi3filter.Options{AuthenticationFunc: openapi3filter.NoopAuthenticationFunc, MultiError: true},
	})
}

func apiError(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v1.Error{Error: msg})
}

func (f *fakeController) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if err := f.validate(r); err != nil {
		f.t.Errorf("%s %s does not match the OpenAPI document: %v", r.Method, r.URL, err)
		apiError(w, http.StatusBadRequest, err.Error())
		return
	}
	f.mu.Lock()
	f.reqs = append(f.reqs, recorded{method: r.Method, path: r.URL.Path, wait: r.URL.Query().Get("wait"),
		ifNoneMatch: r.Header.Get("If-None-Match"), auth: r.Header.Get("Authorization"), agent: r.Header.Get("User-Agent")})
	answer := f.answer
	f.mu.Unlock()
	if answer != nil && answer(w, r) {
		return
	}
	prefix := "/v1/nodes/" + testNode + "/"
	if !strings.HasPrefix(r.URL.Path, prefix) {
		apiError(w, http.StatusNotFound, "node not found")
		return
	}
	switch resource := strings.TrimPrefix(r.URL.Path, prefix); {
	case r.Method == http.MethodGet && resource == "config":
		f.serveConfig(w, r)
	case r.Method == http.MethodPut && resource == "status":
		var st v1.NodeStatus
		if err := strictDecode(r.Body, &st); err != nil {
			f.t.Errorf("status body: %v", err)
			apiError(w, http.StatusBadRequest, err.Error())
			return
		}
		f.mu.Lock()
		f.statuses = append(f.statuses, st)
		f.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	case r.Method == http.MethodPut && resource == "lease":
		var hb v1.Heartbeat
		if err := strictDecode(r.Body, &hb); err != nil {
			f.t.Errorf("lease body: %v", err)
			apiError(w, http.StatusBadRequest, err.Error())
			return
		}
		f.mu.Lock()
		f.leases = append(f.leases, hb)
		f.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	default:
		apiError(w, http.StatusNotFound, "no such resource")
	}
}

func strictDecode(r io.Reader, v any) error {
	dec := json.NewDecoder(r)
	dec.DisallowUnknownFields()
	return dec.Decode(v)
}

func (f *fakeController) serveConfig(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	body, etag, changed := f.body, f.etag, f.changed
	f.mu.Unlock()
	if body == nil {
		apiError(w, http.StatusNotFound, "node not found")
		return
	}
	if inm := r.Header.Get("If-None-Match"); inm == etag {
		wait, _ := time.ParseDuration(r.URL.Query().Get("wait"))
		t := time.NewTimer(wait)
		defer t.Stop()
		select {
		case <-changed:
			f.mu.Lock()
			body, etag = f.body, f.etag
			f.mu.Unlock()
		case <-t.C:
			w.Header().Set("ETag", etag)
			w.WriteHeader(http.StatusNotModified)
			return
		case <-r.Context().Done():
			return
		}
	}
	w.Header().Set("ETag", etag)
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(body)
}

// syncBuffer is a log sink for concurrent writers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// controllerSettings are agent settings for testNode pointing at url,
// with short intervals.
func controllerSettings(t *testing.T, url string) Config {
	c := DefaultConfig()
	c.StateDir = t.TempDir()
	c.SysfsRoot = filepath.Join("..", "testdata", "sysfs", "soft-roce", "sys")
	c.Listen.Metrics = ""
	c.Node.Name = testNode
	c.Controller.URL = url
	c.Controller.InsecureHTTP = strings.HasPrefix(url, "http:")
	c.Controller.Wait = 2 * time.Second
	c.Controller.Timeout = 2 * time.Second
	return c
}

// newTestSource starts a source for settings; it stops with the test.
func newTestSource(t *testing.T, c Config) (*ControllerSource, *syncBuffer, context.Context) {
	t.Helper()
	logs := &syncBuffer{}
	s, err := NewControllerSource(ControllerOptions{Config: c, Version: "v9.9.9-test", Log: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Rand: func() float64 { return 0.5 }})
	if err != nil {
		t.Fatal(err)
	}
	s.pace, s.retryBase, s.retryMax = time.Millisecond, time.Millisecond, 20*time.Millisecond
	s.wait = 300 * time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	return s, logs, ctx
}

// eventually polls cond for up to 10 s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func connCondition(s *ControllerSource) string {
	c := s.Conditions()[0]
	return string(c.Status) + "/" + c.Reason
}

func loadGeneration(t *testing.T, s *ControllerSource) int64 {
	t.Helper()
	cfg, err := s.Load()
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	return cfg.Generation
}

func persistedGeneration(t *testing.T, stateDir string) (int64, string) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(stateDir, ControllerFile))
	if err != nil {
		t.Fatal(err)
	}
	var lg LastGood
	if err := json.Unmarshal(b, &lg); err != nil {
		t.Fatal(err)
	}
	return lg.Config.Generation, lg.ETag
}

// The first request asks without waiting; then the agent long-polls with
// the config's ETag; a new generation wakes it at once, reaches Changed,
// is persisted with its ETag, and Load merges it with the settings.
func TestControllerLongPoll(t *testing.T) {
	f := newFakeController(t)
	etag1 := f.set(testNodeConfig(1, "10.0.0.1/31"))
	c := controllerSettings(t, f.srv.URL)
	s, _, ctx := newTestSource(t, c)
	s.Start(ctx)
	s.WaitFirst(ctx)
	cfg, err := s.Load()
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Generation != 1 || len(cfg.Rails) != 1 || cfg.Rails[0].IPv4 != "10.0.0.1/31" || cfg.Node.Name != testNode || cfg.StateDir != c.StateDir || cfg.SysfsRoot != c.SysfsRoot {
		t.Errorf("Load merged %+v", cfg)
	}
	if got := connCondition(s); got != "True/Connected" {
		t.Errorf("ControllerConnected = %s", got)
	}
	if gen, etag := persistedGeneration(t, c.StateDir); gen != 1 || etag != etag1 {
		t.Errorf("persisted generation %d etag %s, want 1 %s", gen, etag, etag1)
	}
	select {
	case <-s.Changed():
	default:
		t.Error("the first config did not signal Changed")
	}
	// The next request long-polls with the ETag.
	eventually(t, "a long-poll", func() bool { return len(f.requests()) >= 2 })
	first, second := f.requests()[0], f.requests()[1]
	if first.wait != "" || first.ifNoneMatch != "" {
		t.Errorf("first request %+v: want no wait and no If-None-Match", first)
	}
	if second.wait != "300ms" || second.ifNoneMatch != etag1 {
		t.Errorf("second request %+v: want wait=300ms and If-None-Match %s", second, etag1)
	}
	if first.agent != "roce-agent/v9.9.9-test" {
		t.Errorf("User-Agent %q", first.agent)
	}
	before := len(f.requests())
	etag2 := f.set(testNodeConfig(2, "10.0.0.3/31"))
	select {
	case <-s.Changed():
	case <-time.After(5 * time.Second):
		t.Fatal("a new generation did not reach Changed")
	}
	if got := loadGeneration(t, s); got != 2 {
		t.Errorf("generation after the change %d", got)
	}
	if gen, etag := persistedGeneration(t, c.StateDir); gen != 2 || etag != etag2 {
		t.Errorf("persisted generation %d etag %s", gen, etag)
	}
	if got := testutil.ToFloat64(s.metrics.generation); got != 2 {
		t.Errorf("config_generation %v", got)
	}
	if n := len(f.requests()) - before; n > 2 {
		t.Errorf("%d requests for one change: the agent is not long-polling", n)
	}
	// While nothing changes, the agent waits in the long-poll: a request
	// per wait (300ms).
	time.Sleep(time.Second)
	if n := len(f.requests()) - before; n > 2+4 {
		t.Errorf("%d requests in 1s without a change", n)
	}
}

// Every bad answer is rejected: the last good config is kept (in memory
// and on disk), the rejection counted by reason, logged once however often
// it comes, and ControllerConnected says so.
func TestControllerRejectsBadConfigs(t *testing.T) {
	big := append(append([]byte(`{"generation": 5, "pad": "`), bytes.Repeat([]byte("a"), maxControllerBody)...), `"}`...)
	emptyDesired := testNodeConfig(5, "")
	emptyDesired.Rails = nil
	invalid := testNodeConfig(5, "10.0.0.1/30")
	invalid.Link.MTU = 1
	for _, tc := range []struct {
		name   string
		answer func(w http.ResponseWriter)
		reason string // the rejection reason; "" for an HTTP error
		cond   string
	}{
		{"garbage", func(w http.ResponseWriter) { _, _ = w.Write([]byte("<html>hello</html>")) }, rejectDecode, "False/Rejected"},
		{"JSON null", func(w http.ResponseWriter) { _, _ = w.Write([]byte("null")) }, rejectDecode, "False/Rejected"},
		{"JSON array", func(w http.ResponseWriter) { _, _ = w.Write([]byte(`[{"generation": 5}]`)) }, rejectDecode, "False/Rejected"},
		{"truncated", func(w http.ResponseWriter) { _, _ = w.Write([]byte(`{"generation": 5, "node": {"name": "gpu-0`)) }, rejectDecode, "False/Rejected"},
		{"wrong type", func(w http.ResponseWriter) { _, _ = w.Write([]byte(`{"generation": "five"}`)) }, rejectDecode, "False/Rejected"},
		{"huge body", func(w http.ResponseWriter) { _, _ = w.Write(big) }, rejectTooLarge, "False/Rejected"},
		{"huge Content-Length", func(w http.ResponseWriter) {
			w.Header().Set("Content-Length", fmt.Sprint(len(big)))
			_, _ = w.Write(big)
		}, rejectTooLarge, "False/Rejected"},
		{"another node", func(w http.ResponseWriter) {
			nc := testNodeConfig(5, "10.0.0.1/31")
			nc.Node.Name = "gpu-018"
			_ = json.NewEncoder(w).Encode(nc)
		}, rejectWrongNode, "False/Rejected"},
		{"invalid", func(w http.ResponseWriter) { _ = json.NewEncoder(w).Encode(invalid) }, rejectInvalid, "False/Rejected"},
		{"empty desired state", func(w http.ResponseWriter) { _ = json.NewEncoder(w).Encode(emptyDesired) }, rejectEmpty, "False/Rejected"},
		{"HTTP 500", func(w http.ResponseWriter) { apiError(w, http.StatusInternalServerError, "etcd: no leader") }, "", "False/Unreachable"},
		{"HTTP 404", func(w http.ResponseWriter) { apiError(w, http.StatusNotFound, "node not found") }, "", "False/Refused"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeController(t)
			f.set(testNodeConfig(1, "10.0.0.1/31"))
			c := controllerSettings(t, f.srv.URL)
			s, logs, ctx := newTestSource(t, c)
			s.Start(ctx)
			s.WaitFirst(ctx)
			if got := connCondition(s); got != "True/Connected" {
				t.Fatalf("ControllerConnected = %s", got)
			}
			// The bad answer comes again and again (a new ETag each
			// time), whatever the agent asks.
			n := 0
			var mu sync.Mutex
			f.override(func(w http.ResponseWriter, r *http.Request) bool {
				if r.Method != http.MethodGet {
					return false
				}
				mu.Lock()
				n++
				w.Header().Set("ETag", fmt.Sprintf(`"bad%d"`, n))
				mu.Unlock()
				if tc.reason != "" {
					w.Header().Set("Content-Type", "application/json")
				}
				tc.answer(w)
				return true
			})
			counted := func() float64 {
				if tc.reason == "" {
					return testutil.ToFloat64(s.metrics.requests.WithLabelValues("config", resultHTTPError))
				}
				return testutil.ToFloat64(s.metrics.rejected.WithLabelValues(tc.reason))
			}
			eventually(t, "three bad answers", func() bool { return counted() >= 3 })
			if got := connCondition(s); got != tc.cond {
				t.Errorf("ControllerConnected = %s, want %s", got, tc.cond)
			}
			if got := loadGeneration(t, s); got != 1 {
				t.Errorf("Load gives generation %d, want the last good 1", got)
			}
			if gen, _ := persistedGeneration(t, c.StateDir); gen != 1 {
				t.Errorf("persisted generation %d, want the last good 1", gen)
			}
			if got := testutil.ToFloat64(s.metrics.connected); got != 0 {
				t.Errorf("controller_connected %v", got)
			}
			logged := "controller config rejected"
			if tc.reason == "" {
				logged = "controller not connected"
			}
			if k := strings.Count(logs.String(), logged); k != 1 {
				t.Errorf("%q logged %d times for repeated failures, want once:\n%s", logged, k, logs.String())
			}
			if tc.reason != "" {
				if got := testutil.ToFloat64(s.metrics.requests.WithLabelValues("config", resultRejected)); got < 3 {
					t.Errorf("requests_total{op=config,result=rejected} = %v", got)
				}
			}
			// A good config again is taken at once and clears it.
			f.override(nil)
			f.set(testNodeConfig(7, "10.0.0.5/31"))
			eventually(t, "generation 7", func() bool { g, err := s.Load(); return err == nil && g.Generation == 7 })
			eventually(t, "connected again", func() bool { return connCondition(s) == "True/Connected" })
		})
	}
}

// A rejected config's ETag is what the next long-poll waits past: the
// agent does not fetch the same bad config again, and the fixed one
// arrives at once.
func TestControllerRejectedETagLongPolls(t *testing.T) {
	f := newFakeController(t)
	f.set(testNodeConfig(1, "10.0.0.1/31"))
	c := controllerSettings(t, f.srv.URL)
	s, _, ctx := newTestSource(t, c)
	s.Start(ctx)
	s.WaitFirst(ctx)
	<-s.Changed()
	bad := testNodeConfig(2, "10.0.0.1/31")
	bad.Node.Name = "gpu-099"
	badTag := f.set(bad)
	eventually(t, "the rejection", func() bool { return testutil.ToFloat64(s.metrics.rejected.WithLabelValues(rejectWrongNode)) == 1 })
	eventually(t, "a long-poll past the bad config", func() bool {
		r := f.requests()
		return r[len(r)-1].ifNoneMatch == badTag && r[len(r)-1].wait != ""
	})
	time.Sleep(100 * time.Millisecond)
	if got := testutil.ToFloat64(s.metrics.rejected.WithLabelValues(rejectWrongNode)); got != 1 {
		t.Errorf("the same bad config was fetched and rejected %v times", got)
	}
	if got := connCondition(s); got != "False/Rejected" {
		t.Errorf("ControllerConnected = %s", got)
	}
	if msg := s.Conditions()[0].Message; !strings.Contains(msg, "config for another node") || !strings.Contains(msg, "running on generation 1") {
		t.Errorf("condition message %q", msg)
	}
	select {
	case <-s.Changed():
		t.Error("a rejected config signalled Changed")
	default:
	}
	f.set(testNodeConfig(3, "10.0.0.1/31"))
	select {
	case <-s.Changed():
	case <-time.After(5 * time.Second):
		t.Fatal("the fixed config did not arrive")
	}
	if got := loadGeneration(t, s); got != 3 {
		t.Errorf("generation %d", got)
	}
}

// writeLastGood saves a last good config as the daemon would.
func writeLastGood(t *testing.T, stateDir string, nc v1.NodeConfig, etag string) {
	t.Helper()
	b, err := json.Marshal(LastGood{Node: nc.Node.Name, ETag: etag, Saved: time.Now(), Config: nc})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(stateDir, ControllerFile), b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// Controller down at start: the last good config on disk is used
// (ControllerConnected False/UsingLastGood), and when the controller comes
// back the agent says so, asking with the persisted ETag.
func TestControllerDownAtStartUsesLastGood(t *testing.T) {
	f := newFakeController(t)
	f.set(testNodeConfig(4, "10.0.0.1/31"))
	f.down()
	c := controllerSettings(t, f.srv.URL)
	writeLastGood(t, c.StateDir, testNodeConfig(3, "10.0.0.1/31"), `"c-old"`)
	s, logs, ctx := newTestSource(t, c)
	s.Start(ctx)
	s.WaitFirst(ctx)
	if got := loadGeneration(t, s); got != 3 {
		t.Errorf("generation %d, want the persisted 3", got)
	}
	if got := connCondition(s); got != "False/UsingLastGood" {
		t.Errorf("ControllerConnected = %s", got)
	}
	if got := testutil.ToFloat64(s.metrics.connected); got != 0 {
		t.Errorf("controller_connected %v", got)
	}
	eventually(t, "retries", func() bool {
		return testutil.ToFloat64(s.metrics.requests.WithLabelValues("config", resultTransport)) >= 3
	})
	if n := strings.Count(logs.String(), "controller not connected"); n != 1 {
		t.Errorf("the outage was logged %d times, want once:\n%s", n, logs.String())
	}
	if reqs := f.requests(); reqs[0].ifNoneMatch != `"c-old"` {
		t.Errorf("first request If-None-Match %q, want the persisted ETag", reqs[0].ifNoneMatch)
	}
	f.override(nil)
	select {
	case <-s.Changed():
	case <-time.After(5 * time.Second):
		t.Fatal("the controller's config did not arrive after the outage")
	}
	eventually(t, "connected", func() bool { return connCondition(s) == "True/Connected" })
	if got := loadGeneration(t, s); got != 4 {
		t.Errorf("generation %d, want 4", got)
	}
	if got := testutil.ToFloat64(s.metrics.connected); got != 1 {
		t.Errorf("controller_connected %v", got)
	}
	if got := testutil.ToFloat64(s.metrics.lastContact); got < float64(time.Now().Add(-time.Minute).Unix()) {
		t.Errorf("last_contact_timestamp_seconds %v", got)
	}
	// connected -> unreachable -> connected: each transition once.
	f.down()
	eventually(t, "unreachable", func() bool { return connCondition(s) == "False/Unreachable" })
	f.override(nil)
	eventually(t, "connected again", func() bool { return connCondition(s) == "True/Connected" })
	out := logs.String()
	if a, b := strings.Count(out, "controller not connected"), strings.Count(out, "controller connected"); a != 2 || b != 2 {
		t.Errorf("logged %d outages and %d reconnections, want 2 and 2:\n%s", a, b, out)
	}
}

// A persisted config that is not this node's, or broken, is not used;
// without any config Load says why, and ControllerConnected is False.
func TestControllerNoConfigAtStart(t *testing.T) {
	f := newFakeController(t)
	f.down()
	for name, setup := range map[string]func(dir string){
		"none": func(string) {},
		"another node": func(dir string) {
			nc := testNodeConfig(3, "10.0.0.1/31")
			nc.Node.Name = "gpu-018"
			writeLastGood(t, dir, nc, "")
		},
		"empty": func(dir string) { nc := testNodeConfig(3, ""); writeLastGood(t, dir, nc, "") },
		"garbage": func(dir string) {
			_ = os.WriteFile(filepath.Join(dir, ControllerFile), []byte("{"), 0o600)
		},
		"a symlink": func(dir string) {
			other := filepath.Join(t.TempDir(), "x.json")
			writeLastGood(t, filepath.Dir(other), testNodeConfig(3, "10.0.0.1/31"), "")
			_ = os.Symlink(filepath.Join(filepath.Dir(other), ControllerFile), filepath.Join(dir, ControllerFile))
		},
	} {
		t.Run(name, func(t *testing.T) {
			c := controllerSettings(t, f.srv.URL)
			setup(c.StateDir)
			s, _, ctx := newTestSource(t, c)
			s.Start(ctx)
			s.WaitFirst(ctx)
			_, err := s.Load()
			if err == nil || !strings.Contains(err.Error(), "no desired state") {
				t.Errorf("Load: %v, want no desired state", err)
			}
			if got := connCondition(s); got != "False/Unreachable" {
				t.Errorf("ControllerConnected = %s", got)
			}
		})
	}
}

// A controller on a closed port: the same as one that drops connections.
func TestControllerClosedPort(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL
	srv.Close()
	c := controllerSettings(t, url)
	s, _, ctx := newTestSource(t, c)
	s.Start(ctx)
	s.WaitFirst(ctx)
	if got := connCondition(s); got != "False/Unreachable" {
		t.Errorf("ControllerConnected = %s", got)
	}
	if _, err := s.Load(); err == nil || !strings.Contains(err.Error(), "connection refused") {
		t.Errorf("Load: %v", err)
	}
}

// A controller that holds a request beyond the timeout is unreachable.
func TestControllerTimeout(t *testing.T) {
	f := newFakeController(t)
	f.set(testNodeConfig(1, "10.0.0.1/31"))
	f.override(func(w http.ResponseWriter, r *http.Request) bool {
		<-r.Context().Done()
		return true
	})
	s, _, ctx := newTestSource(t, controllerSettings(t, f.srv.URL))
	s.timeout = 100 * time.Millisecond
	s.Start(ctx)
	s.WaitFirst(ctx)
	if c := s.Conditions()[0]; c.Status != StatusFalse || c.Reason != "Unreachable" || !strings.Contains(c.Message, "deadline exceeded") {
		t.Errorf("ControllerConnected = %+v", c)
	}
	if got := testutil.ToFloat64(s.metrics.requests.WithLabelValues("config", resultTransport)); got != 1 {
		t.Errorf("requests_total{op=config,result=transport_error} = %v", got)
	}
}

// The backoff ceiling doubles from 1 s to 60 s and every delay is drawn
// below it (full jitter).
func TestBackoffDelay(t *testing.T) {
	almost := 0.999999
	var ceilings []time.Duration
	for attempt := 0; attempt < 9; attempt++ {
		ceilings = append(ceilings, backoffDelay(attempt, time.Second, time.Minute, almost).Round(time.Second))
	}
	want := []time.Duration{1, 2, 4, 8, 16, 32, 60, 60, 60}
	for i := range want {
		want[i] *= time.Second
	}
	if !slices.Equal(ceilings, want) {
		t.Errorf("ceilings %v, want %v", ceilings, want)
	}
	for _, attempt := range []int{-1, 0, 5, 62, 63, 64, 1000} {
		for _, r := range []float64{0, 0.25, 0.5, 0.75, almost} {
			d := backoffDelay(attempt, time.Second, time.Minute, r)
			if d < 0 || d >= time.Minute {
				t.Errorf("attempt %d r %v: %s outside [0, 60s)", attempt, r, d)
			}
		}
	}
	if a, b := backoffDelay(3, time.Second, time.Minute, 0.1), backoffDelay(3, time.Second, time.Minute, 0.9); a != 800*time.Millisecond || b != 7200*time.Millisecond {
		t.Errorf("attempt 3 (ceiling 8s): %s and %s, want 0.8s and 7.2s: the draw scales the ceiling", a, b)
	}
	if d := backoffDelay(3, time.Second, time.Minute, 1.5); d != 0 {
		t.Errorf("an out-of-range draw gave %s", d)
	}
}

// testStatus is a status that validates against the document.
func testStatus(gen int64, lastErr string) *v1.NodeStatus {
	return &v1.NodeStatus{
		Node: testNode, Version: "v9.9.9-test", AppliedGeneration: gen,
		Rails: []v1.RailStatus{{Rail: 0, Netdev: "vethA", GIDIndexIPv4: -1, GIDIndexIPv6: -1,
			Conditions: []v1.Condition{{Type: v1.ConditionLinkUp, Status: v1.StatusTrue, Reason: "OperUp", Since: time.Unix(1700000000, 0).UTC()}}}},
		Conditions:    []v1.Condition{{Type: v1.ConditionNVMLReady, Status: v1.StatusUnknown, Reason: "NotQueried"}},
		LastReconcile: time.Now().UTC(),
		LastError:     lastErr,
	}
}

// The reporter renews the lease every heartbeat with the applied
// generation, and sends the status when its content changes (not when
// only last_reconcile does) and at least every status_interval.
func TestControllerReport(t *testing.T) {
	type statusBox struct {
		mu sync.Mutex
		st *v1.NodeStatus
	}
	start := func(t *testing.T, every time.Duration) (*fakeController, *ControllerSource, *statusBox) {
		f := newFakeController(t)
		s, _, ctx := newTestSource(t, controllerSettings(t, f.srv.URL))
		s.heartbeat, s.statusEvery = 20*time.Millisecond, every
		box := &statusBox{}
		go s.Report(ctx, func() *v1.NodeStatus {
			box.mu.Lock()
			defer box.mu.Unlock()
			if box.st == nil {
				return nil
			}
			c := *box.st
			return &c
		})
		return f, s, box
	}
	set := func(box *statusBox, st *v1.NodeStatus) {
		box.mu.Lock()
		box.st = st
		box.mu.Unlock()
	}

	t.Run("on change", func(t *testing.T) {
		f, s, box := start(t, time.Hour)
		eventually(t, "heartbeats", func() bool { return len(f.gotLeases()) >= 2 })
		if n := len(f.gotStatuses()); n != 0 {
			t.Errorf("%d statuses sent before there was one", n)
		}
		if hb := f.gotLeases()[0]; hb.AppliedGeneration != 0 {
			t.Errorf("heartbeat before a status: %+v", hb)
		}
		st := testStatus(3, "")
		set(box, st)
		s.StatusChanged()
		eventually(t, "the status", func() bool { return len(f.gotStatuses()) == 1 })
		sameJSON(t, "status sent", st, &f.gotStatuses()[0])
		eventually(t, "a heartbeat with generation 3", func() bool { l := f.gotLeases(); return l[len(l)-1].AppliedGeneration == 3 })

		// A resync that changed nothing but the time: nothing is sent.
		again := testStatus(3, "")
		again.LastReconcile = again.LastReconcile.Add(time.Minute)
		set(box, again)
		s.StatusChanged()
		n := len(f.gotLeases())
		eventually(t, "more heartbeats", func() bool { return len(f.gotLeases()) >= n+5 })
		if got := len(f.gotStatuses()); got != 1 {
			t.Errorf("%d statuses after a change of last_reconcile only, want 1", got)
		}
		changed := testStatus(4, "link: rail 0: boom")
		set(box, changed)
		s.StatusChanged()
		eventually(t, "the changed status", func() bool { return len(f.gotStatuses()) == 2 })
		sameJSON(t, "changed status sent", changed, &f.gotStatuses()[1])
		for _, r := range f.requests() {
			if r.method == http.MethodPut && r.agent != "roce-agent/v9.9.9-test" {
				t.Errorf("PUT %s with User-Agent %q", r.path, r.agent)
			}
		}
		if got := testutil.ToFloat64(s.metrics.requests.WithLabelValues("status", resultOK)); got != 2 {
			t.Errorf("requests_total{op=status,result=ok} = %v", got)
		}
	})

	t.Run("at least every status_interval", func(t *testing.T) {
		f, _, box := start(t, 200*time.Millisecond)
		set(box, testStatus(1, ""))
		eventually(t, "three statuses", func() bool { return len(f.gotStatuses()) >= 3 })
		l, st := len(f.gotLeases()), len(f.gotStatuses())
		if st*3 > l {
			t.Errorf("%d statuses and %d heartbeats: the unchanged status is sent at every heartbeat", st, l)
		}
	})

	t.Run("a status the controller refuses is sent again", func(t *testing.T) {
		f, s, box := start(t, time.Hour)
		var refused int
		var mu sync.Mutex
		f.override(func(w http.ResponseWriter, r *http.Request) bool {
			mu.Lock()
			defer mu.Unlock()
			if r.Method != http.MethodPut || !strings.HasSuffix(r.URL.Path, "/status") || refused >= 2 {
				return false
			}
			refused++
			apiError(w, http.StatusServiceUnavailable, "etcd: no leader")
			return true
		})
		set(box, testStatus(1, ""))
		s.StatusChanged()
		eventually(t, "the status delivered", func() bool { return len(f.gotStatuses()) == 1 })
		if got := testutil.ToFloat64(s.metrics.requests.WithLabelValues("status", resultHTTPError)); got != 2 {
			t.Errorf("requests_total{op=status,result=http_error} = %v", got)
		}
	})
}

// testPKI is a CA with a server certificate for 127.0.0.1 and a client
// certificate for testNode.
type testPKI struct {
	dir                       string
	ca                        *testCA
	caFile, certFile, keyFile string
	server                    tlsPair
}

func newTestPKI(t *testing.T, clientName string) testPKI {
	t.Helper()
	ca := newTestCA(t)
	p := testPKI{dir: t.TempDir(), ca: ca}
	p.caFile = filepath.Join(p.dir, "ca.pem")
	writeFile(t, p.caFile, ca.certPEM)
	p.server = ca.issue(t, "controller", true, []netip.Addr{netip.MustParseAddr("127.0.0.1")})
	client := ca.issue(t, clientName, false, nil)
	p.certFile, p.keyFile = filepath.Join(p.dir, "node.pem"), filepath.Join(p.dir, "node-key.pem")
	writeFile(t, p.certFile, client.certPEM)
	writeFile(t, p.keyFile, client.keyPEM)
	return p
}

func writeFile(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// mTLS: the agent verifies the controller with ca_file, presents its
// client certificate (the controller reads the node's name from it) and
// the bearer token; without the certificate, with another CA, with a wrong
// token or below TLS 1.2 it does not get a config.
func TestControllerMTLS(t *testing.T) {
	pki := newTestPKI(t, testNode)
	other := newTestPKI(t, testNode)
	tokenFile := filepath.Join(pki.dir, "token")
	writeFile(t, tokenFile, []byte("tok-123\n"))
	wrongToken := filepath.Join(pki.dir, "wrong-token")
	writeFile(t, wrongToken, []byte("tok-456"))

	f := &fakeController{t: t, router: apiRouter(t), changed: make(chan struct{})}
	f.set(testNodeConfig(1, "10.0.0.1/31"))
	identity := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 || r.TLS.PeerCertificates[0].Subject.CommonName != testNode {
			apiError(w, http.StatusForbidden, "no node identity")
			return
		}
		if r.Header.Get("Authorization") != "Bearer tok-123" {
			apiError(w, http.StatusForbidden, "bad token")
			return
		}
		f.ServeHTTP(w, r)
	})
	quiet := log.New(io.Discard, "", 0)
	srv := httptest.NewUnstartedServer(identity)
	srv.Config.ErrorLog = quiet
	srv.TLS = pki.serverTLS(t)
	srv.StartTLS()
	t.Cleanup(srv.Close)

	old := httptest.NewUnstartedServer(identity)
	old.Config.ErrorLog = quiet
	old.TLS = pki.serverTLS(t)
	old.TLS.MinVersion, old.TLS.MaxVersion = 0x0301, 0x0302 // TLS 1.0-1.1
	old.StartTLS()
	t.Cleanup(old.Close)

	for _, tc := range []struct {
		name   string
		url    string
		mutate func(*ControllerConfig)
		want   string
	}{
		{"client certificate and token", srv.URL, nil, "True/Connected"},
		{"no client certificate", srv.URL, func(c *ControllerConfig) { c.CertFile, c.KeyFile = "", "" }, "False/Unreachable"},
		{"another CA", srv.URL, func(c *ControllerConfig) { c.CAFile = other.caFile }, "False/Unreachable"},
		{"system roots", srv.URL, func(c *ControllerConfig) { c.CAFile = "" }, "False/Unreachable"},
		{"wrong token", srv.URL, func(c *ControllerConfig) { c.TokenFile = wrongToken }, "False/Refused"},
		{"TLS 1.1 controller", old.URL, nil, "False/Unreachable"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := controllerSettings(t, tc.url)
			c.Controller.CAFile, c.Controller.CertFile, c.Controller.KeyFile, c.Controller.TokenFile = pki.caFile, pki.certFile, pki.keyFile, tokenFile
			if tc.mutate != nil {
				tc.mutate(&c.Controller)
			}
			if err := c.Validate(); err != nil {
				t.Fatalf("settings do not validate: %v", err)
			}
			s, _, ctx := newTestSource(t, c)
			s.Start(ctx)
			s.WaitFirst(ctx)
			if got := connCondition(s); got != tc.want {
				t.Errorf("ControllerConnected = %s (%s), want %s", got, s.Conditions()[0].Message, tc.want)
			}
			_, err := s.Load()
			if (err == nil) != (tc.want == "True/Connected") {
				t.Errorf("Load: %v", err)
			}
		})
	}
}

// Redirects are followed only to the same scheme, host and port: the
// node's credentials never reach another host.
func TestControllerRedirects(t *testing.T) {
	f := newFakeController(t)
	f.set(testNodeConfig(1, "10.0.0.1/31"))
	var otherHits int
	var mu sync.Mutex
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		otherHits++
		mu.Unlock()
		f.ServeHTTP(w, r)
	}))
	t.Cleanup(other.Close)
	redirect := func(to string) *httptest.Server {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if strings.HasPrefix(r.URL.Path, "/old/") {
				http.Redirect(w, r, to+strings.TrimPrefix(r.URL.RequestURI(), "/old"), http.StatusTemporaryRedirect)
				return
			}
			f.ServeHTTP(w, r)
		}))
		t.Cleanup(srv.Close)
		return srv
	}
	t.Run("same host", func(t *testing.T) {
		srv := redirect("")
		s, _, ctx := newTestSource(t, controllerSettings(t, srv.URL+"/old/"))
		s.Start(ctx)
		s.WaitFirst(ctx)
		if got := connCondition(s); got != "True/Connected" {
			t.Errorf("ControllerConnected = %s: %s", got, s.Conditions()[0].Message)
		}
	})
	t.Run("another host", func(t *testing.T) {
		srv := redirect(other.URL)
		s, _, ctx := newTestSource(t, controllerSettings(t, srv.URL+"/old"))
		s.Start(ctx)
		s.WaitFirst(ctx)
		if c := s.Conditions()[0]; c.Status != StatusFalse || !strings.Contains(c.Message, "another host") {
			t.Errorf("ControllerConnected = %+v", c)
		}
		mu.Lock()
		defer mu.Unlock()
		if otherHits != 0 {
			t.Errorf("the other host got %d requests", otherHits)
		}
	})
}

// The controller section is checked at load, each problem naming its
// field.
func TestControllerConfigValidate(t *testing.T) {
	pki := newTestPKI(t, testNode)
	token := filepath.Join(pki.dir, "token")
	writeFile(t, token, []byte("tok\n"))
	badToken := filepath.Join(pki.dir, "bad-token")
	writeFile(t, badToken, []byte("tok en"))
	empty := filepath.Join(pki.dir, "empty")
	writeFile(t, empty, []byte("\n"))
	for _, tc := range []struct {
		name string
		c    ControllerConfig
		want string // "" valid
	}{
		{"local mode", ControllerConfig{}, ""},
		{"https", ControllerConfig{URL: "https://fabric-ctl:8443"}, ""},
		{"https with a path", ControllerConfig{URL: "https://fabric-ctl:8443/roce/"}, ""},
		{"http without insecure_http", ControllerConfig{URL: "http://fabric-ctl:8080"}, `controller.url: "http://fabric-ctl:8080" is plain HTTP: set controller.insecure_http`},
		{"http with insecure_http", ControllerConfig{URL: "http://fabric-ctl:8080", InsecureHTTP: true}, ""},
		{"another scheme", ControllerConfig{URL: "ftp://fabric-ctl"}, "controller.url: \"ftp://fabric-ctl\" is not an https:// URL"},
		{"no scheme", ControllerConfig{URL: "fabric-ctl:8443"}, "controller.url:"},
		{"no host", ControllerConfig{URL: "https:///v1"}, "controller.url: \"https:///v1\" has no host"},
		{"credentials", ControllerConfig{URL: "https://admin:secret@fabric-ctl"}, "controller.url: \"https://admin:xxxxx@fabric-ctl\" carries credentials"},
		{"query", ControllerConfig{URL: "https://fabric-ctl/?x=1"}, "controller.url: \"https://fabric-ctl/?x=1\" has a query or fragment"},
		{"not a URL", ControllerConfig{URL: "https://fabric ctl/"}, "controller.url: not a URL"},
		{"files without url", ControllerConfig{CAFile: pki.caFile, TokenFile: token, InsecureHTTP: true},
			"controller.ca_file: is set but controller.url is not\ncontroller.token_file: is set but controller.url is not\ncontroller.insecure_http: is set but controller.url is not"},
		{"cert without key", ControllerConfig{URL: "https://c", CertFile: pki.certFile}, "controller.key_file: required with controller.cert_file"},
		{"key without cert", ControllerConfig{URL: "https://c", KeyFile: pki.keyFile}, "controller.cert_file: required with controller.key_file"},
		{"cert and key mixed up", ControllerConfig{URL: "https://c", CertFile: pki.keyFile, KeyFile: pki.certFile}, "controller.cert_file:"},
		{"tls files with http", ControllerConfig{URL: "http://c", InsecureHTTP: true, CAFile: pki.caFile}, "controller.ca_file: needs an https controller.url"},
		{"missing CA", ControllerConfig{URL: "https://c", CAFile: "/nonexistent/ca.pem"}, `controller.ca_file: "/nonexistent/ca.pem": open /nonexistent/ca.pem: no such file or directory`},
		{"CA without a certificate", ControllerConfig{URL: "https://c", CAFile: token}, "controller.ca_file: " + fmt.Sprintf("%q", token) + ": no PEM certificate in it"},
		{"CA a directory", ControllerConfig{URL: "https://c", CAFile: pki.dir}, "is a directory, not a regular file"},
		{"token", ControllerConfig{URL: "https://c", TokenFile: token}, ""},
		{"token with a space", ControllerConfig{URL: "https://c", TokenFile: badToken}, "controller.token_file: " + fmt.Sprintf("%q", badToken) + ": the token has white space"},
		{"empty token", ControllerConfig{URL: "https://c", TokenFile: empty}, "controller.token_file: " + fmt.Sprintf("%q", empty) + ": is empty"},
		{"mTLS", ControllerConfig{URL: "https://c", CAFile: pki.caFile, CertFile: pki.certFile, KeyFile: pki.keyFile}, ""},
		{"intervals", ControllerConfig{HeartbeatInterval: time.Millisecond, StatusInterval: time.Second, Wait: 11 * time.Minute, Timeout: -time.Second},
			"controller.heartbeat_interval: 1ms is outside 1s-10m\ncontroller.status_interval: 1s is outside 10s-24h\ncontroller.wait: 11m0s is outside 1s-10m\ncontroller.timeout: -1s is outside 1s-5m"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := DefaultConfig()
			def := c.Controller
			c.Controller = tc.c
			for _, d := range []struct{ got, def *time.Duration }{
				{&c.Controller.HeartbeatInterval, &def.HeartbeatInterval}, {&c.Controller.StatusInterval, &def.StatusInterval},
				{&c.Controller.Wait, &def.Wait}, {&c.Controller.Timeout, &def.Timeout},
			} {
				if *d.got == 0 {
					*d.got = *d.def
				}
			}
			err := c.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("refused: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("got %v, want %q", err, tc.want)
			}
		})
	}
}

// The daemon in controller mode on a fake namespace: the controller's
// config is applied, every new generation too; the status with
// applied_generation and ControllerConnected goes to the controller and
// is served at /v1/status, with the controller metrics at /metrics.
func TestDaemonWithController(t *testing.T) {
	f := newFakeController(t)
	f.set(testNodeConfig(1, "10.0.0.1/31"))
	host := linktest.New()
	host.AddLink("vethA", 1500)
	c := controllerSettings(t, f.srv.URL)
	s, _, ctx := newTestSource(t, c)
	s.heartbeat = 50 * time.Millisecond
	s.Start(ctx)
	s.WaitFirst(ctx)
	cfg, err := s.Load()
	if err != nil {
		t.Fatal(err)
	}
	d, err := NewDaemon(DaemonOptions{Config: cfg, Log: quietLog(), Host: host, Source: s, Reporter: s, Netns: netns.None()})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- d.Run(runCtx, "") }()
	defer func() { stop(); <-done }()

	hasAddr := func(cidr string) bool {
		l := host.Link("vethA")
		return l != nil && slices.Contains(l.Addrs, netip.MustParsePrefix(cidr))
	}
	reported := func(gen int64, ipv4 string) bool {
		for _, st := range f.gotStatuses() {
			if st.AppliedGeneration != gen || len(st.Rails) == 0 || st.Rails[0].IPv4 != ipv4 {
				continue
			}
			for _, c := range st.Conditions {
				if c.Type == v1.ConditionControllerConnected && c.Status == StatusTrue {
					return true
				}
			}
		}
		return false
	}
	eventually(t, "generation 1 applied", func() bool { return hasAddr("10.0.0.1/31") })
	eventually(t, "generation 1 reported", func() bool { return reported(1, "10.0.0.1/31") })

	f.set(testNodeConfig(2, "10.0.0.3/31"))
	eventually(t, "generation 2 applied", func() bool { return hasAddr("10.0.0.3/31") && !hasAddr("10.0.0.1/31") })
	eventually(t, "generation 2 reported", func() bool { return reported(2, "10.0.0.3/31") })
	eventually(t, "a heartbeat with generation 2", func() bool {
		l := f.gotLeases()
		return len(l) > 0 && l[len(l)-1].AppliedGeneration == 2
	})

	srv := httptest.NewServer(d.Handler())
	defer srv.Close()
	get := func(path string) (int, string) {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	code, body := get("/v1/status")
	var st v1.NodeStatus
	if code != 200 || json.Unmarshal([]byte(body), &st) != nil {
		t.Fatalf("/v1/status: %d %s", code, body)
	}
	if st.AppliedGeneration != 2 || !slices.ContainsFunc(st.Conditions, func(c v1.Condition) bool {
		return c.Type == v1.ConditionControllerConnected && c.Status == StatusTrue && c.Reason == "Connected"
	}) {
		t.Errorf("/v1/status: applied_generation %d, conditions %+v", st.AppliedGeneration, st.Conditions)
	}
	_, metrics := get("/metrics")
	for _, want := range []string{
		"roce_agent_controller_connected 1",
		"roce_agent_controller_config_generation 2",
		`roce_agent_condition_status{rail="node",type="ControllerConnected"} 1`,
		`roce_agent_controller_requests_total{op="status",result="ok"}`,
		`roce_agent_controller_requests_total{op="lease",result="ok"}`,
		`roce_agent_controller_config_rejected_total{reason="invalid"} 0`,
		"roce_agent_controller_last_contact_timestamp_seconds",
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}

// Without a desired state (the controller down, nothing on disk) the
// daemon changes nothing and is not ready, saying why; the controller's
// first config makes it converge and ready.
func TestDaemonWaitsForController(t *testing.T) {
	f := newFakeController(t)
	f.set(testNodeConfig(1, "10.0.0.1/31"))
	f.down()
	host := linktest.New()
	host.AddLink("vethA", 1500)
	c := controllerSettings(t, f.srv.URL)
	s, _, ctx := newTestSource(t, c)
	s.Start(ctx)
	s.WaitFirst(ctx)
	if _, err := s.Load(); err == nil {
		t.Fatal("Load gave a config with the controller down and nothing on disk")
	}
	d, err := NewDaemon(DaemonOptions{Config: c, Log: quietLog(), Host: host, Source: s, Reporter: s, Netns: netns.None()})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- d.Run(runCtx, "") }()
	defer func() { stop(); <-done }()

	srv := httptest.NewServer(d.Handler())
	defer srv.Close()
	eventually(t, "the daemon waiting", func() bool {
		select {
		case err := <-done:
			done <- err
			t.Fatalf("Run: %v", err)
		default:
		}
		return d.waitingFor() != ""
	})
	resp, err := http.Get(srv.URL + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(b), "waiting for a desired state") || !strings.Contains(string(b), "no last good config") {
		t.Errorf("/readyz: %d %s", resp.StatusCode, b)
	}
	d.Trigger()
	time.Sleep(100 * time.Millisecond)
	if w := host.Writes(); len(w) != 0 || d.Ready() || d.Reconciles.Load() != 0 {
		t.Errorf("without a desired state the daemon wrote %v, ran %d reconciles, ready %v", w, d.Reconciles.Load(), d.Ready())
	}
	f.override(nil)
	eventually(t, "ready", d.Ready)
	eventually(t, "the address", func() bool {
		l := host.Link("vethA")
		return l != nil && slices.Contains(l.Addrs, netip.MustParsePrefix("10.0.0.1/31"))
	})
	if gen, _ := persistedGeneration(t, c.StateDir); gen != 1 {
		t.Errorf("persisted generation %d", gen)
	}
}

// Reload reads the settings again with the token: the next request
// carries the new one.
func TestControllerReloadToken(t *testing.T) {
	f := newFakeController(t)
	f.set(testNodeConfig(1, "10.0.0.1/31"))
	dir := t.TempDir()
	token := filepath.Join(dir, "token")
	writeFile(t, token, []byte("first"))
	c := controllerSettings(t, f.srv.URL)
	c.Controller.TokenFile = token
	logs := &syncBuffer{}
	s, err := NewControllerSource(ControllerOptions{Config: c, Version: "test", Log: slog.New(slog.NewTextHandler(logs, nil)),
		Reread: func() (Config, error) { return c, c.Validate() }})
	if err != nil {
		t.Fatal(err)
	}
	s.heartbeat = 20 * time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go s.Report(ctx, func() *v1.NodeStatus { return nil })
	eventually(t, "a heartbeat", func() bool { return len(f.gotLeases()) > 0 })
	writeFile(t, token, []byte("second\n"))
	s.Start(ctx)
	s.WaitFirst(ctx)
	if _, err := s.Reload(); err != nil {
		t.Fatal(err)
	}
	n := len(f.requests())
	eventually(t, "a heartbeat after the reload", func() bool { return len(f.requests()) > n+1 })
	reqs := f.requests()
	if first, last := reqs[0].auth, reqs[len(reqs)-1].auth; first != "Bearer first" || last != "Bearer second" {
		t.Errorf("Authorization before and after the reload: %q, %q", first, last)
	}
	writeFile(t, token, []byte(""))
	if _, err := s.Reload(); err == nil || !strings.Contains(err.Error(), "controller.token_file") {
		t.Errorf("reload with an empty token file: %v", err)
	}
}

// The controller metrics pass client_golang's linter.
func TestControllerMetricsLint(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := newControllerMetrics()
	m.request("config", resultOK)
	reg.MustRegister((&ControllerSource{metrics: m}).Collectors()...)
	problems, err := testutil.GatherAndLint(reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("%s: %s", p.Metric, p.Text)
	}
	n, err := testutil.GatherAndCount(reg)
	if err != nil || n != 3+1+len(rejectReasons) {
		t.Errorf("%d series (%v)", n, err)
	}
}

// LastGoodConfig: plan and apply in controller mode use the saved config,
// checked like the controller's; a missing one wraps fs.ErrNotExist.
func TestLastGoodConfig(t *testing.T) {
	c := controllerSettings(t, "https://fabric-ctl:8443")
	if _, _, err := LastGoodConfig(c); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("no file: %v", err)
	}
	writeLastGood(t, c.StateDir, testNodeConfig(6, "10.0.0.1/31"), `"x"`)
	cfg, lg, err := LastGoodConfig(c)
	if err != nil || cfg.Generation != 6 || lg.ETag != `"x"` || cfg.StateDir != c.StateDir || cfg.Rails[0].IPv4 != "10.0.0.1/31" {
		t.Errorf("LastGoodConfig: %+v %+v %v", cfg, lg, err)
	}
	c.Node.Name = "gpu-018"
	if _, _, err := LastGoodConfig(c); err == nil || !strings.Contains(err.Error(), "config for another node") {
		t.Errorf("another node's file: %v", err)
	}
}

// controller.url may list replicas: when the one in use stops answering,
// the agent moves to the next and keeps its config flowing.
func TestControllerReplicasFailover(t *testing.T) {
	a, b := newFakeController(t), newFakeController(t)
	a.set(testNodeConfig(1, "10.0.0.1/31"))
	b.set(testNodeConfig(1, "10.0.0.1/31"))
	c := controllerSettings(t, a.srv.URL+", "+b.srv.URL)
	s, logs, ctx := newTestSource(t, c)
	s.Start(ctx)
	s.WaitFirst(ctx)
	if got := loadGeneration(t, s); got != 1 {
		t.Fatalf("generation %d", got)
	}
	if len(b.requests()) != 0 {
		t.Errorf("replica 2 asked before replica 1 failed")
	}
	a.srv.CloseClientConnections()
	a.srv.Close()
	b.set(testNodeConfig(2, "10.0.0.3/31"))
	eventually(t, "the config of replica 2", func() bool {
		cfg, err := s.Load()
		return err == nil && cfg.Generation == 2
	})
	if !strings.Contains(logs.String(), "trying the next") {
		t.Errorf("failover not logged:\n%s", logs.String())
	}
	if got := connCondition(s); got != "True/Connected" {
		t.Errorf("ControllerConnected = %s after failover", got)
	}
}

func TestControllerURLList(t *testing.T) {
	for _, tc := range []struct {
		raw, err string
		n        int
	}{
		{"https://a:8443", "", 1},
		{"https://a:8443, https://b:8443", "", 2},
		{"https://a:8443,https://a:8443", "listed twice", 0},
		{"https://a:8443,http://b:8443", "URL 2", 0},
		{"https://a:8443,", "URL 2", 0},
	} {
		urls, err := parseControllerURLs(tc.raw, false)
		switch {
		case tc.err == "" && (err != nil || len(urls) != tc.n):
			t.Errorf("%q: %v %v", tc.raw, urls, err)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("%q: error %v, want %q", tc.raw, err, tc.err)
		}
	}
}

// A controller that comes back is asked for the config as soon as a
// heartbeat gets through, not after the config loop's back-off (up to a
// minute after a long outage).
func TestControllerBackWakesConfigLoop(t *testing.T) {
	f := newFakeController(t)
	f.set(testNodeConfig(1, "10.0.0.1/31"))
	c := controllerSettings(t, f.srv.URL)
	s, _, ctx := newTestSource(t, c)
	s.retryBase, s.retryMax = time.Hour, time.Hour // a back-off no test outlives
	s.heartbeat = 20 * time.Millisecond
	f.down()
	s.Start(ctx)
	go s.Report(ctx, func() *v1.NodeStatus { return nil })
	s.WaitFirst(ctx)
	if got := connCondition(s); got != "False/Unreachable" {
		t.Fatalf("ControllerConnected = %s while down", got)
	}
	f.override(nil)
	eventually(t, "the config after the controller came back", func() bool {
		cfg, err := s.Load()
		return err == nil && cfg.Generation == 1
	})
}

// FuzzControllerConfig: whatever a controller answers, the agent either
// rejects it or holds a config for its node that validates and has a
// desired state.
func FuzzControllerConfig(f *testing.F) {
	good, _ := json.Marshal(testNodeConfig(3, "10.0.0.1/31"))
	f.Add(good)
	f.Add([]byte(`{"generation": 1, "node": {"name": "` + testNode + `"}, "rails": [{"rail": 0, "ipv4": "10.0.0.1/31", "peers": [{"node": "x", "rail": 0, "ipv4": "10.0.0.3"}]}]}`))
	f.Add([]byte(`null`))
	f.Add([]byte(`{"generation": -1}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		nc, rej := decodeNodeConfig(body)
		if rej != nil {
			return
		}
		if rej := checkNodeConfig(nc, testNode); rej != nil {
			return
		}
		if nc.Node.Name != testNode || nc.Validate() != nil || nc.NoDesiredState() != "" {
			t.Fatalf("accepted %+v", nc)
		}
	})
}
