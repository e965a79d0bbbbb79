package controller

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
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
	clientv3 "go.etcd.io/etcd/client/v3"

	v1 "github.com/roce-agent/roce-agent/api/v1"
	"github.com/roce-agent/roce-agent/fabric"
)

// env is a controller under test: an embedded etcd member, the test
// fabric loaded, and one or more replicas (store, server, TLS listener)
// on it. Every call through env.do is checked against the OpenAPI
// document, request and response.
type env struct {
	t         *testing.T
	member    *Member
	memberDir string
	cli       *clientv3.Client
	ca        *CA
	auth      *Authenticator
	router    routers.Router
	reps      []*replica

	mu      sync.Mutex
	clients map[string]*http.Client
}

type replica struct {
	store  *Store
	server *Server
	ts     *httptest.Server
}

// who is a caller: a client certificate name, a bearer token, or neither.
type who struct {
	cert  string
	token string
}

var (
	admin     = who{cert: "admin"}
	adminTok  = who{token: adminToken}
	anonymous = who{}
)

func node(name string) who { return who{cert: name} }

var (
	docOnce   sync.Once
	docRouter routers.Router
	docErr    error
)

func apiRouter(t testing.TB) routers.Router {
	t.Helper()
	docOnce.Do(func() {
		var doc *openapi3.T
		doc, docErr = openapi3.NewLoader().LoadFromData(v1.OpenAPI())
		if docErr != nil {
			return
		}
		if docErr = doc.Validate(context.Background()); docErr != nil {
			return
		}
		docRouter, docErr = legacy.NewRouter(doc)
	})
	if docErr != nil {
		t.Fatalf("openapi document: %v", docErr)
	}
	return docRouter
}

func newEnv(t *testing.T) *env {
	t.Helper()
	dir := filepath.Join(shortTempDir(t), "etcd")
	m := testMember(t, dir)
	cli, err := NewClient(ClientConfig{Endpoints: m.Endpoints()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	ca, err := NewCA("test CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, member: m, memberDir: dir, cli: cli, ca: ca, router: apiRouter(t), clients: map[string]*http.Client{},
		auth: NewAuthenticator(testTokens(t), []string{"admin"})}
	r := e.addReplica()
	if _, err := r.store.LoadPlan(testCtx(t), fabricPlan(t)); err != nil {
		t.Fatal(err)
	}
	if err := r.store.WaitReady(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	return e
}

// addReplica starts another replica on the same etcd and waits until it
// is ready (when a plan is stored).
func (e *env) addReplica() *replica {
	t := e.t
	s := testStore(t, e.cli, "")
	srv, err := NewServer(ServerConfig{Store: s, Auth: e.auth})
	if err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM, err := e.ca.Issue(CertRequest{CommonName: "localhost", Hosts: []string{"127.0.0.1", "localhost"}, Server: true})
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewUnstartedServer(srv)
	ts.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, ClientCAs: e.ca.Pool(), ClientAuth: tls.VerifyClientCertIfGiven}
	ts.Config.RegisterOnShutdown(srv.CloseLongPolls)
	ts.StartTLS()
	t.Cleanup(func() {
		srv.CloseLongPolls()
		ts.Close()
	})
	r := &replica{store: s, server: srv, ts: ts}
	e.reps = append(e.reps, r)
	if len(e.reps) > 1 {
		if err := s.WaitReady(testCtx(t)); err != nil {
			t.Fatal(err)
		}
	}
	return r
}

// client is an HTTP client presenting the named certificate ("" none).
func (e *env) client(cert string) (*http.Client, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if c, ok := e.clients[cert]; ok {
		return c, nil
	}
	cfg := &tls.Config{RootCAs: e.ca.Pool()}
	if cert != "" {
		certPEM, keyPEM, err := e.ca.Issue(CertRequest{CommonName: cert, Client: true})
		if err != nil {
			return nil, err
		}
		c, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			return nil, err
		}
		cfg.Certificates = []tls.Certificate{c}
	}
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}, Timeout: time.Minute}
	e.clients[cert] = c
	e.t.Cleanup(c.CloseIdleConnections)
	return c, nil
}

// call is one request.
type call struct {
	rep    int // replica
	who    who
	method string
	path   string
	body   any // []byte as is, else JSON
	header map[string]string
	// badRequest: the document itself refuses the request (a test of
	// the server's own checks); validation must fail.
	badRequest bool
}

type result struct {
	code   int
	header http.Header
	body   []byte
	took   time.Duration
}

func (r result) errorBody(t testing.TB) v1.Error {
	t.Helper()
	var e v1.Error
	if err := json.Unmarshal(r.body, &e); err != nil || e.Error == "" {
		t.Fatalf("not an Error body (%d): %s", r.code, r.body)
	}
	return e
}

func (r result) decode(t testing.TB, v any) {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(r.body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		t.Fatalf("decode %T: %v\n%s", v, err, r.body)
	}
}

// do makes a call (try) and fails the test on an error.
func (e *env) do(t testing.TB, c call) result {
	t.Helper()
	r, err := e.try(c)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// try makes a call and validates request and response against the
// OpenAPI document (API paths only); it may run on any goroutine.
func (e *env) try(c call) (result, error) {
	var raw []byte
	switch b := c.body.(type) {
	case nil:
	case []byte:
		raw = b
	default:
		var err error
		if raw, err = json.Marshal(b); err != nil {
			return result{}, err
		}
	}
	newReq := func() (*http.Request, error) {
		var body io.Reader
		if raw != nil {
			body = bytes.NewReader(raw)
		}
		req, err := http.NewRequest(c.method, e.reps[c.rep].ts.URL+c.path, body)
		if err != nil {
			return nil, err
		}
		if raw != nil {
			req.Header.Set("Content-Type", "application/json")
		}
		for k, v := range c.header {
			req.Header.Set(k, v)
		}
		if c.who.token != "" {
			req.Header.Set("Authorization", "Bearer "+c.who.token)
		}
		return req, nil
	}
	what := c.method + " " + c.path
	api := strings.HasPrefix(c.path, "/v1/")
	var in *openapi3filter.RequestValidationInput
	if api {
		vreq, err := newReq()
		if err != nil {
			return result{}, err
		}
		route, params, err := e.router.FindRoute(vreq)
		switch {
		case err != nil && c.badRequest:
			api = false // not in the document, as the test means
		case err != nil:
			return result{}, fmt.Errorf("%s: not in the OpenAPI document: %w", what, err)
		default:
			in = &openapi3filter.RequestValidationInput{Request: vreq, PathParams: params, Route: route,
				Options: &openapi3filter.Options{AuthenticationFunc: openapi3filter.NoopAuthenticationFunc}}
			err = openapi3filter.ValidateRequest(context.Background(), in)
			switch {
			case c.badRequest && err == nil:
				return result{}, fmt.Errorf("%s: the document accepts a request the test means to be bad", what)
			case !c.badRequest && err != nil:
				return result{}, fmt.Errorf("%s: request does not match the document: %w", what, err)
			}
		}
	}
	client, err := e.client(c.who.cert)
	if err != nil {
		return result{}, err
	}
	req, err := newReq()
	if err != nil {
		return result{}, err
	}
	start := time.Now()
	resp, err := client.Do(req)
	if err != nil {
		return result{}, fmt.Errorf("%s: %w", what, err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return result{}, fmt.Errorf("%s: %w", what, err)
	}
	res := result{code: resp.StatusCode, header: resp.Header, body: body, took: time.Since(start)}
	if ct := resp.Header.Get("Content-Type"); res.code >= 400 && c.path != "/readyz" && ct != "application/json" {
		return res, fmt.Errorf("%s: %d with Content-Type %q, want an Error body", what, res.code, ct)
	}
	if !api {
		return res, nil
	}
	if res.code == http.StatusUnauthorized {
		// The document lists no 401: check the Error body only.
		var eb v1.Error
		if err := json.Unmarshal(body, &eb); err != nil || eb.Error == "" {
			return res, fmt.Errorf("%s: 401 without an Error body: %s", what, body)
		}
		return res, nil
	}
	out := &openapi3filter.ResponseValidationInput{RequestValidationInput: in, Status: res.code, Header: resp.Header,
		Body: io.NopCloser(bytes.NewReader(body)), Options: &openapi3filter.Options{IncludeResponseStatus: true}}
	if err := openapi3filter.ValidateResponse(context.Background(), out); err != nil {
		return res, fmt.Errorf("%s: %d response does not match the document: %w\n%s", what, res.code, err, body)
	}
	return res, nil
}

// outcome is what try returned.
type outcome struct {
	r   result
	err error
}

// start makes a call on another goroutine.
func (e *env) start(c call) <-chan outcome {
	ch := make(chan outcome, 1)
	go func() {
		r, err := e.try(c)
		ch <- outcome{r, err}
	}()
	return ch
}

// await is a started call's result.
func await(t testing.TB, ch <-chan outcome) result {
	t.Helper()
	o := <-ch
	if o.err != nil {
		t.Fatal(o.err)
	}
	return o.r
}

// want checks a result's status code.
func (r result) want(t testing.TB, code int) result {
	t.Helper()
	if r.code != code {
		t.Fatalf("status %d, want %d: %s", r.code, code, r.body)
	}
	return r
}

func configPath(node string) string { return "/v1/nodes/" + node + "/config" }

// etag fetches a node's config and returns its ETag.
func (e *env) etag(rep int, node string) string {
	e.t.Helper()
	r := e.do(e.t, call{rep: rep, who: admin, method: "GET", path: configPath(node)}).want(e.t, 200)
	return r.header.Get("ETag")
}

func TestConfigETag(t *testing.T) {
	e := newEnv(t)
	r := e.do(t, call{who: node("gpu-01"), method: "GET", path: configPath("gpu-01")}).want(t, 200)
	var cfg v1.NodeConfig
	r.decode(t, &cfg)
	if tag := r.header.Get("ETag"); tag != `"g1"` || cfg.Generation != 1 {
		t.Fatalf("ETag %s generation %d, want \"g1\" and 1", tag, cfg.Generation)
	}
	if err := cfg.Validate(); err != nil {
		t.Errorf("served config does not validate: %v", err)
	}
	if cfg.Node.Name != "gpu-01" || len(cfg.Rails) != 2 || cfg.Rails[0].Tenant.ID != "tenant-b" || cfg.Rails[1].Tenant.ID != "tenant-c" {
		t.Errorf("config: %+v", cfg)
	}
	r = e.do(t, call{who: node("gpu-01"), method: "GET", path: configPath("gpu-01"), header: map[string]string{"If-None-Match": `"g1"`}}).want(t, 304)
	if r.header.Get("ETag") != `"g1"` || len(r.body) != 0 {
		t.Errorf("304: ETag %q body %q", r.header.Get("ETag"), r.body)
	}
	e.do(t, call{who: node("gpu-01"), method: "GET", path: configPath("gpu-01"), header: map[string]string{"If-None-Match": `"g0", W/"g1"`}}).want(t, 304)
	e.do(t, call{who: node("gpu-01"), method: "GET", path: configPath("gpu-01"), header: map[string]string{"If-None-Match": `"g0"`}}).want(t, 200)
	// An unknown node: to an admin, and to a node of that name.
	if er := e.do(t, call{who: admin, method: "GET", path: configPath("gpu-99")}).want(t, 404).errorBody(t); !strings.Contains(er.Error, "gpu-99") {
		t.Errorf("404 says %q", er.Error)
	}
	e.do(t, call{who: node("gpu-99"), method: "GET", path: configPath("gpu-99")}).want(t, 404)
	// A bad wait names the parameter.
	if er := e.do(t, call{who: node("gpu-01"), method: "GET", path: configPath("gpu-01") + "?wait=soon", badRequest: true}).want(t, 400).errorBody(t); er.Field != "wait" {
		t.Errorf("bad wait: field %q", er.Field)
	}
}

func TestLongPoll(t *testing.T) {
	e := newEnv(t)
	tag := e.etag(0, "gpu-01")
	quiet := e.etag(0, "gpu-04")

	// Nothing changes: 304 when the wait ends.
	r := e.do(t, call{who: node("gpu-01"), method: "GET", path: configPath("gpu-01") + "?wait=300ms", header: map[string]string{"If-None-Match": tag}}).want(t, 304)
	if r.took < 300*time.Millisecond {
		t.Errorf("timeout answered after %v", r.took)
	}

	// A move wakes the long-polls of the nodes it changes, only those.
	movedC := e.start(call{who: node("gpu-01"), method: "GET", path: configPath("gpu-01") + "?wait=30s", header: map[string]string{"If-None-Match": tag}})
	untouchedC := e.start(call{who: node("gpu-04"), method: "GET", path: configPath("gpu-04") + "?wait=1500ms", header: map[string]string{"If-None-Match": quiet}})
	waitFor(t, "two long-polls waiting", func() bool { return gaugeValue(t, e.reps[0].server, "roce_controller_long_polls") == 2 })
	start := time.Now()
	var res v1.MoveResult
	e.do(t, call{who: admin, method: "POST", path: "/v1/moves", body: moveTo("gpu-01", "tenant-a")}).want(t, 200).decode(t, &res)
	if !slices.Contains(res.ChangedNodes, "gpu-01") || slices.Contains(res.ChangedNodes, "gpu-04") {
		t.Errorf("changed nodes %v", res.ChangedNodes)
	}
	moved := await(t, movedC).want(t, 200)
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("the long-poll took %v after the move", d)
	}
	var cfg v1.NodeConfig
	moved.decode(t, &cfg)
	if cfg.Generation != 2 || moved.header.Get("ETag") != `"g2"` || cfg.Rails[0].Tenant.ID != "tenant-a" {
		t.Errorf("woken with generation %d, ETag %s, rail 0 %+v", cfg.Generation, moved.header.Get("ETag"), cfg.Rails[0].Tenant)
	}
	untouched := await(t, untouchedC).want(t, 304)
	if untouched.took < 1500*time.Millisecond {
		t.Errorf("a node the move did not change was answered after %v", untouched.took)
	}
	// Without If-None-Match there is nothing to wait for.
	e.do(t, call{who: node("gpu-01"), method: "GET", path: configPath("gpu-01") + "?wait=30s"}).want(t, 200)

	// Several nodes in one move: one change.
	var many v1.MoveResult
	e.do(t, call{who: admin, method: "POST", path: "/v1/moves", body: v1.Move{Nodes: []string{"gpu-01", "gpu-04"}, Tenant: "tenant-a"}}).want(t, 200).decode(t, &many)
	if !slices.Contains(many.ChangedNodes, "gpu-01") || !slices.Contains(many.ChangedNodes, "gpu-04") {
		t.Errorf("a move of two nodes changed %v", many.ChangedNodes)
	}
	for _, n := range []string{"gpu-01", "gpu-04"} {
		var c v1.NodeConfig
		e.do(t, call{who: admin, method: "GET", path: configPath(n)}).want(t, 200).decode(t, &c)
		if c.Rails[1].Tenant == nil || c.Rails[1].Tenant.ID != "tenant-a" {
			t.Errorf("%s rail 1 after the move of two nodes: %+v", n, c.Rails[1].Tenant)
		}
	}
}

// A move through one replica wakes a long-poll on another.
func TestLongPollOtherReplica(t *testing.T) {
	e := newEnv(t)
	e.addReplica()
	tag := e.etag(1, "gpu-03")
	done := e.start(call{rep: 1, who: node("gpu-03"), method: "GET", path: configPath("gpu-03") + "?wait=30s", header: map[string]string{"If-None-Match": tag}})
	waitFor(t, "the long-poll on replica 2", func() bool { return gaugeValue(t, e.reps[1].server, "roce_controller_long_polls") == 1 })
	start := time.Now()
	e.do(t, call{rep: 0, who: adminTok, method: "POST", path: "/v1/moves", body: moveTo("gpu-03", "", 1)}).want(t, 200)
	r := await(t, done).want(t, 200)
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("replica 2 answered %v after the move on replica 1", d)
	}
	var cfg v1.NodeConfig
	r.decode(t, &cfg)
	if cfg.Rails[1].Tenant != nil || cfg.Rails[0].Tenant.ID != "tenant-b" {
		t.Errorf("gpu-03 after the move: rail 0 %+v rail 1 %+v", cfg.Rails[0].Tenant, cfg.Rails[1].Tenant)
	}
	// The tenant as replica 2 serves it.
	var ten v1.Tenant
	e.do(t, call{rep: 1, who: admin, method: "GET", path: "/v1/tenants/tenant-c"}).want(t, 200).decode(t, &ten)
	if len(ten.Members) != 1 || ten.Members[0].Node != "gpu-01" {
		t.Errorf("tenant-c on replica 2: %+v", ten)
	}
}

// Shutting down ends waiting long-polls at once.
func TestLongPollShutdown(t *testing.T) {
	e := newEnv(t)
	tag := e.etag(0, "gpu-00")
	done := e.start(call{who: node("gpu-00"), method: "GET", path: configPath("gpu-00") + "?wait=1m", header: map[string]string{"If-None-Match": tag}})
	waitFor(t, "the long-poll", func() bool { return gaugeValue(t, e.reps[0].server, "roce_controller_long_polls") == 1 })
	e.reps[0].server.CloseLongPolls()
	select {
	case o := <-done:
		if o.err != nil {
			t.Fatal(o.err)
		}
		o.r.want(t, 304)
	case <-time.After(5 * time.Second):
		t.Fatal("the long-poll outlived CloseLongPolls")
	}
}

func TestAuthorization(t *testing.T) {
	e := newEnv(t)
	hb := v1.Heartbeat{AppliedGeneration: 1}
	for _, tc := range []struct {
		name   string
		who    who
		method string
		path   string
		body   any
		code   int
	}{
		{"own config by cert", node("gpu-00"), "GET", configPath("gpu-00"), nil, 200},
		{"own config by token", who{token: nodeToken}, "GET", configPath("gpu-00"), nil, 200},
		{"other config by cert", node("gpu-00"), "GET", configPath("gpu-01"), nil, 403},
		{"other config by token", who{token: nodeToken}, "GET", configPath("gpu-01"), nil, 403},
		{"other node's unknown config", node("gpu-00"), "GET", configPath("gpu-99"), nil, 403},
		{"no identity", anonymous, "GET", configPath("gpu-00"), nil, 401},
		{"wrong token", who{token: "not-a-token-of-the-file"}, "GET", configPath("gpu-00"), nil, 401},
		{"wrong token with a good cert", who{cert: "gpu-00", token: "not-a-token-of-the-file"}, "GET", configPath("gpu-00"), nil, 401},
		{"own lease", node("gpu-00"), "PUT", "/v1/nodes/gpu-00/lease", hb, 204},
		{"other lease", node("gpu-00"), "PUT", "/v1/nodes/gpu-01/lease", hb, 403},
		{"other status", who{token: nodeToken}, "PUT", "/v1/nodes/gpu-01/status", testStatus("gpu-01", 1), 403},
		{"own status read", node("gpu-00"), "GET", "/v1/nodes/gpu-00/status", nil, 403},
		{"node list", node("gpu-00"), "GET", "/v1/nodes", nil, 403},
		{"tenant", node("gpu-00"), "GET", "/v1/tenants/tenant-a", nil, 403},
		{"tenant put", node("gpu-00"), "PUT", "/v1/tenants/tenant-a", v1.Tenant{ID: "tenant-a", VRF: "TENANT-A", VNI: 10001}, 403},
		{"health", who{token: nodeToken}, "GET", "/v1/tenants/tenant-a/health", nil, 403},
		{"move", node("gpu-00"), "POST", "/v1/moves", moveTo("gpu-00", ""), 403},
		{"move anonymous", anonymous, "POST", "/v1/moves", moveTo("gpu-00", ""), 401},
		{"node list by admin cert", admin, "GET", "/v1/nodes", nil, 200},
		{"node list by admin token", adminTok, "GET", "/v1/nodes", nil, 200},
		{"tenant by admin", adminTok, "GET", "/v1/tenants/tenant-a", nil, 200},
		{"health by admin", admin, "GET", "/v1/tenants/tenant-a/health", nil, 200},
		{"a node's config by admin", admin, "GET", configPath("gpu-03"), nil, 200},
		{"a node's lease by admin", adminTok, "PUT", "/v1/nodes/gpu-03/lease", hb, 204},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := e.do(t, call{who: tc.who, method: tc.method, path: tc.path, body: tc.body}).want(t, tc.code)
			if tc.code == 401 && r.header.Get("WWW-Authenticate") == "" {
				t.Error("401 without WWW-Authenticate")
			}
			if tc.code >= 400 {
				r.errorBody(t)
			}
		})
	}
	// Health, readiness and metrics need no identity.
	for _, p := range []string{"/healthz", "/readyz", "/metrics"} {
		e.do(t, call{who: anonymous, method: "GET", path: p}).want(t, 200)
	}
}

func testStatus(node string, gen int64) v1.NodeStatus {
	since := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	cond := func(ty v1.ConditionType, st v1.ConditionStatus) v1.Condition {
		return v1.Condition{Type: ty, Status: st, Reason: "Converged", Since: since}
	}
	rail := func(r int, tenant string) v1.RailStatus {
		rs := v1.RailStatus{Rail: r, Netdev: fmt.Sprintf("eth%d", r), RDMADevice: fmt.Sprintf("mlx5_%d", r), GIDIndexIPv4: 3, GIDIndexIPv6: -1,
			Conditions: []v1.Condition{cond(v1.ConditionLinkUp, v1.StatusTrue), cond(v1.ConditionAddressesReady, v1.StatusTrue)}}
		if tenant != "" {
			rs.Tenant = &v1.TenantConfig{ID: tenant, VRF: strings.ToUpper(tenant), VNI: 10001}
		}
		return rs
	}
	return v1.NodeStatus{
		Node: node, Version: "test", AppliedGeneration: gen,
		Rails:         []v1.RailStatus{rail(0, "tenant-a"), rail(1, "tenant-a")},
		Conditions:    []v1.Condition{cond(v1.ConditionNVMLReady, v1.StatusUnsupported)},
		LastReconcile: since,
	}
}

func TestStatusRoundTrip(t *testing.T) {
	e := newEnv(t)
	e.do(t, call{who: admin, method: "GET", path: "/v1/nodes/gpu-02/status"}).want(t, 404)
	st := testStatus("gpu-02", 1)
	st.Probes = []v1.ProbeResult{{Rail: 0, PeerNode: "gpu-00", PeerRail: 0, Tool: v1.ProbeToolBandwidth, Time: st.LastReconcile,
		Bandwidth: &v1.BandwidthProbe{AvgGbps: 391.2, PeakGbps: 395, MessageBytes: 65536, Iterations: 5000}}}
	e.do(t, call{who: node("gpu-02"), method: "PUT", path: "/v1/nodes/gpu-02/status", body: st}).want(t, 204)
	r := e.do(t, call{who: admin, method: "GET", path: "/v1/nodes/gpu-02/status"}).want(t, 200)
	var got v1.NodeStatus
	r.decode(t, &got)
	want, _ := json.Marshal(st)
	back, _ := json.Marshal(got)
	if !bytes.Equal(want, back) {
		t.Errorf("status round trip:\n got %s\nwant %s", back, want)
	}
	var list v1.NodeList
	e.do(t, call{who: admin, method: "GET", path: "/v1/nodes"}).want(t, 200).decode(t, &list)
	if len(list.Nodes) != 5 {
		t.Fatalf("%d nodes, want 5", len(list.Nodes))
	}
	for _, n := range list.Nodes {
		reported := n.Name == "gpu-02"
		if (n.Reported != nil) != reported || (reported && (n.AppliedGeneration != 1 || time.Since(*n.Reported) > time.Minute)) {
			t.Errorf("%s: reported %v applied %d", n.Name, n.Reported, n.AppliedGeneration)
		}
		if n.ConfigGeneration != 1 || n.Alive {
			t.Errorf("%s: config generation %d alive %v", n.Name, n.ConfigGeneration, n.Alive)
		}
	}
	if list.Nodes[2].Name != "gpu-02" || list.Nodes[2].Index != 2 {
		t.Errorf("not by name: %+v", list.Nodes)
	}
}

func TestBadRequests(t *testing.T) {
	e := newEnv(t)
	big := testStatus("gpu-00", 1)
	big.LastError = strings.Repeat("x", MaxStatusBody)
	hugeTenant := v1.Tenant{ID: "tenant-a", VRF: "TENANT-A", VNI: 10001, Members: []v1.TenantMember{{Node: strings.Repeat("n", MaxBody)}}}
	for _, tc := range []struct {
		name       string
		who        who
		method     string
		path       string
		body       any
		badRequest bool
		code       int
		field      string
	}{
		{"unknown field", admin, "PUT", "/v1/tenants/tenant-a", []byte(`{"id":"tenant-a","vrf":"TENANT-A","vni":10001,"members":[{"node":"gpu-00"},{"node":"gpu-02","gpux":[1]}]}`), true, 400, "members[1].gpux"},
		{"unknown top-level field", node("gpu-00"), "PUT", "/v1/nodes/gpu-00/lease", []byte(`{"applied_generation":1,"extra":true}`), true, 400, "extra"},
		{"wrong type", admin, "POST", "/v1/moves", []byte(`{"node":"gpu-00","tenant":"tenant-a","gpus":["0"]}`), true, 400, "gpus"},
		{"trailing data", admin, "POST", "/v1/moves", []byte(`{"node":"gpu-00","tenant":""} {}`), false, 400, ""},
		{"not JSON", admin, "POST", "/v1/moves", []byte(`node=gpu-00`), true, 400, ""},
		{"status of another node in the body", node("gpu-00"), "PUT", "/v1/nodes/gpu-00/status", testStatus("gpu-01", 1), false, 400, "node"},
		{"tenant id not the path's", admin, "PUT", "/v1/tenants/tenant-a", v1.Tenant{ID: "tenant-b", VRF: "TENANT-B", VNI: 10002}, false, 400, "id"},
		{"member not a node", admin, "PUT", "/v1/tenants/tenant-a", v1.Tenant{ID: "tenant-a", VRF: "TENANT-A", VNI: 10001, Members: []v1.TenantMember{{Node: "gpu-99"}}}, false, 400, "members[0].node"},
		{"GPU of another tenant", admin, "PUT", "/v1/tenants/tenant-a", v1.Tenant{ID: "tenant-a", VRF: "TENANT-A", VNI: 10001, Members: []v1.TenantMember{{Node: "gpu-01", GPUs: []int{0}}}}, false, 409, ""},
		{"move of an unknown node", admin, "POST", "/v1/moves", moveTo("gpu-99", "tenant-a"), false, 404, ""},
		{"move naming node and nodes", admin, "POST", "/v1/moves", v1.Move{Node: "gpu-00", Nodes: []string{"gpu-01"}, Tenant: "tenant-a"}, false, 400, "nodes"},
		{"move of a node twice", admin, "POST", "/v1/moves", v1.Move{Nodes: []string{"gpu-00", "gpu-00"}, Tenant: "tenant-a"}, false, 400, "nodes[1]"},
		{"move to an unknown tenant", admin, "POST", "/v1/moves", moveTo("gpu-00", "tenant-z"), false, 404, ""},
		{"move of a GPU the node lacks", admin, "POST", "/v1/moves", moveTo("gpu-00", "tenant-b", 7), false, 400, "gpus[0]"},
		{"lease of an unknown node", admin, "PUT", "/v1/nodes/gpu-99/lease", v1.Heartbeat{}, false, 404, ""},
		{"status of an unknown node", node("gpu-99"), "PUT", "/v1/nodes/gpu-99/status", testStatus("gpu-99", 0), false, 404, ""},
		{"status over 4 MiB", node("gpu-00"), "PUT", "/v1/nodes/gpu-00/status", big, false, 413, ""},
		{"tenant over 1 MiB", admin, "PUT", "/v1/tenants/tenant-a", hugeTenant, false, 413, ""},
		{"empty body", admin, "POST", "/v1/moves", []byte{}, true, 400, ""},
		{"unknown tenant", admin, "GET", "/v1/tenants/tenant-z", nil, false, 404, ""},
		{"unknown tenant health", admin, "GET", "/v1/tenants/tenant-z/health", nil, false, 404, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := e.do(t, call{who: tc.who, method: tc.method, path: tc.path, body: tc.body, badRequest: tc.badRequest}).want(t, tc.code)
			if er := r.errorBody(t); er.Field != tc.field {
				t.Errorf("field %q, want %q (%s)", er.Field, tc.field, er.Error)
			}
		})
	}
	// A condition status the agent cannot send.
	st := testStatus("gpu-00", 1)
	st.Rails[1].Conditions[0].Status = "Maybe"
	if er := e.do(t, call{who: node("gpu-00"), method: "PUT", path: "/v1/nodes/gpu-00/status", body: st, badRequest: true}).want(t, 400).errorBody(t); er.Field != "rails[1].conditions[0].status" {
		t.Errorf("field %q", er.Field)
	}
	// The refused changes changed nothing.
	if e.reps[0].store.Epoch() != 1 {
		t.Errorf("epoch %d after refused changes", e.reps[0].store.Epoch())
	}
	// Outside the API: unknown paths and methods get Error bodies too.
	if r := e.do(t, call{who: admin, method: "GET", path: "/v2/nodes"}).want(t, 404); r.errorBody(t).Error == "" {
		t.Error("no error text")
	}
	r := e.do(t, call{who: admin, method: "DELETE", path: "/v1/tenants/tenant-a", badRequest: true}).want(t, 405)
	if r.header.Get("Allow") != "GET, PUT" {
		t.Errorf("Allow %q", r.header.Get("Allow"))
	}
}

// etcd stops: not ready, API calls 503 (never stale data as fresh), the
// process alive; etcd comes back on the same data: ready again.
func TestEtcdDown(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.do(t, call{who: anonymous, method: "GET", path: "/readyz"}).want(t, 200)
	// etcd refuses new calls at once, then waits up to its request timeout
	// (7s) for open streams (this replica's watch) before it is down.
	closed := make(chan struct{})
	go func() { e.member.Close(); close(closed) }()
	waitFor(t, "/readyz 503", func() bool {
		return e.do(t, call{who: anonymous, method: "GET", path: "/readyz"}).code == 503
	})
	r := e.do(t, call{who: node("gpu-00"), method: "GET", path: configPath("gpu-00")}).want(t, 503)
	if er := r.errorBody(t); !strings.Contains(er.Error, "etcd") {
		t.Errorf("503 says %q", er.Error)
	}
	e.do(t, call{who: node("gpu-00"), method: "PUT", path: "/v1/nodes/gpu-00/status", body: testStatus("gpu-00", 1)}).want(t, 503)
	e.do(t, call{who: admin, method: "GET", path: "/v1/tenants/tenant-a"}).want(t, 503)
	e.do(t, call{who: anonymous, method: "GET", path: "/healthz"}).want(t, 200)
	if v := gaugeValue(t, e.reps[0].server, "roce_controller_etcd_ready"); v != 0 {
		t.Errorf("etcd_ready %v", v)
	}
	select {
	case <-closed:
	case <-time.After(30 * time.Second):
		t.Fatal("etcd did not stop")
	}
	testMember(t, e.memberDir)
	waitFor(t, "/readyz 200 with etcd back", func() bool {
		return e.do(t, call{who: anonymous, method: "GET", path: "/readyz"}).code == 200
	})
	e.do(t, call{who: node("gpu-00"), method: "GET", path: configPath("gpu-00")}).want(t, 200)
	e.do(t, call{who: admin, method: "POST", path: "/v1/moves", body: moveTo("gpu-04", "tenant-a")}).want(t, 200)
	if e.etag(0, "gpu-04") != `"g2"` {
		t.Error("no change after etcd came back")
	}
	// Stop the watch before the member (or it waits for its streams).
	e.reps[0].store.Close()
	e.cli.Close()
}

func TestLeaseExpiry(t *testing.T) {
	e := newEnv(t)
	beat := func(gen int64) {
		e.do(t, call{who: node("gpu-00"), method: "PUT", path: "/v1/nodes/gpu-00/lease", body: v1.Heartbeat{AppliedGeneration: gen}}).want(t, 204)
	}
	summary := func() v1.NodeSummary {
		var list v1.NodeList
		e.do(t, call{who: admin, method: "GET", path: "/v1/nodes"}).want(t, 200).decode(t, &list)
		return list.Nodes[0]
	}
	beat(1)
	first := e.leaseOf("gpu-00")
	beat(1)
	beat(2) // a new applied generation rewrites the key, on the same lease
	if got := e.leaseOf("gpu-00"); got != first {
		t.Errorf("lease %x, then %x: renewals must keep the lease", first, got)
	}
	s := summary()
	if !s.Alive || s.LastHeartbeat == nil || time.Since(*s.LastHeartbeat) > 3*time.Second {
		t.Fatalf("after heartbeats: %+v", s)
	}
	var rec aliveRecord
	resp, err := e.cli.Get(testCtx(t), e.reps[0].store.aliveKey("gpu-00"))
	if err != nil || len(resp.Kvs) != 1 || json.Unmarshal(resp.Kvs[0].Value, &rec) != nil || rec.AppliedGeneration != 2 {
		t.Fatalf("liveness key: %v %v", resp, err)
	}
	// Silence: the lease expires (TTL 2s) and the node is not alive.
	waitFor(t, "the lease to expire", func() bool { return !summary().Alive })
	if v := e.nodeStates(t); v["alive"] != 0 || v["unreported"] != 5 {
		t.Errorf("node states %v", v)
	}
	// The next heartbeat grants a new lease.
	beat(2)
	if s := summary(); !s.Alive || e.leaseOf("gpu-00") == first {
		t.Errorf("after a new heartbeat: %+v", s)
	}
	// A replica that never saw the node renews the same lease.
	r2 := e.addReplica()
	lease := e.leaseOf("gpu-00")
	if err := r2.store.Heartbeat(testCtx(t), "gpu-00", v1.Heartbeat{AppliedGeneration: 2}); err != nil {
		t.Fatal(err)
	}
	if e.leaseOf("gpu-00") != lease {
		t.Error("a second replica granted another lease")
	}
	if v := e.nodeStates(t); v["alive"] != 1 || v["unreported"] != 4 {
		t.Errorf("node states %v", v)
	}
}

func (e *env) leaseOf(node string) int64 {
	e.t.Helper()
	resp, err := e.cli.Get(testCtx(e.t), e.reps[0].store.aliveKey(node))
	if err != nil || len(resp.Kvs) != 1 {
		e.t.Fatalf("liveness key of %s: %v %v", node, resp, err)
	}
	return resp.Kvs[0].Lease
}

func (e *env) nodeStates(t testing.TB) map[string]float64 {
	t.Helper()
	out := map[string]float64{}
	mfs, err := e.reps[0].server.metrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "roce_controller_nodes" {
			for _, m := range mf.GetMetric() {
				out[m.GetLabel()[0].GetValue()] = m.GetGauge().GetValue()
			}
		}
	}
	return out
}

func TestTenantHealth(t *testing.T) {
	e := newEnv(t)
	// gpu-00: both rails bound and fine. gpu-02: rail 1 link down.
	e.do(t, call{who: node("gpu-00"), method: "PUT", path: "/v1/nodes/gpu-00/status", body: testStatus("gpu-00", 1)}).want(t, 204)
	st := testStatus("gpu-02", 1)
	st.Rails[1].Conditions[0].Status = v1.StatusFalse
	st.Rails[1].Conditions[0].Reason = "NoCarrier"
	e.do(t, call{who: node("gpu-02"), method: "PUT", path: "/v1/nodes/gpu-02/status", body: st}).want(t, 204)
	for _, n := range []string{"gpu-00", "gpu-02"} {
		e.do(t, call{who: node(n), method: "PUT", path: "/v1/nodes/" + n + "/lease", body: v1.Heartbeat{AppliedGeneration: 1}}).want(t, 204)
	}
	var h v1.TenantHealth
	e.do(t, call{who: admin, method: "GET", path: "/v1/tenants/tenant-a/health"}).want(t, 200).decode(t, &h)
	if h.Tenant != "tenant-a" || h.Total != 4 || h.Healthy != 3 || len(h.Rails) != 4 {
		t.Fatalf("health: %+v", h)
	}
	for _, r := range h.Rails {
		if !r.Alive || r.LastHeartbeat == nil || !r.Bound || r.AppliedGeneration != 1 || r.ConfigGeneration != 1 || len(r.Conditions) != 2 {
			t.Errorf("rail %s/%d: %+v", r.Node, r.Rail, r)
		}
	}
	if r := h.Rails[3]; r.Node != "gpu-02" || r.Rail != 1 || r.Conditions[0].Reason != "NoCarrier" {
		t.Errorf("last rail %+v", r)
	}

	// GPU members bring their rail only; nothing reported, nothing healthy.
	h = v1.TenantHealth{}
	e.do(t, call{who: admin, method: "GET", path: "/v1/tenants/tenant-c/health"}).want(t, 200).decode(t, &h)
	if h.Total != 2 || h.Healthy != 0 || h.Rails[0].Node != "gpu-01" || h.Rails[0].Rail != 1 || h.Rails[1].Node != "gpu-03" || h.Rails[1].Rail != 1 {
		t.Fatalf("tenant-c health: %+v", h)
	}
	if r := h.Rails[0]; r.Alive || r.Bound || r.LastHeartbeat != nil || r.Conditions == nil {
		t.Errorf("unreported rail %+v", r)
	}

	// A node whose status says another tenant is alive but not bound.
	e.do(t, call{who: admin, method: "POST", path: "/v1/moves", body: moveTo("gpu-00", "tenant-c")}).want(t, 200)
	h = v1.TenantHealth{}
	e.do(t, call{who: admin, method: "GET", path: "/v1/tenants/tenant-c/health"}).want(t, 200).decode(t, &h)
	if h.Total != 4 || h.Healthy != 0 || h.Rails[2].Node != "gpu-00" || !h.Rails[2].Alive || h.Rails[2].Bound || h.Rails[2].ConfigGeneration != 2 {
		t.Fatalf("after the move: %+v", h)
	}
}

// The health's rail-pair matrix: the last result per tool and family of
// each directed pair of member rails, results naming a rail outside the
// tenant dropped (and dropped again when a move makes them stale).
func TestTenantHealthPairs(t *testing.T) {
	e := newEnv(t)
	// tenant-a: gpu-00, gpu-02 and now gpu-04, whole nodes.
	e.do(t, call{who: admin, method: "POST", path: "/v1/moves", body: moveTo("gpu-04", "tenant-a")}).want(t, 200)
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	t1 := t0.Add(time.Minute)
	yes := true
	bw := func(rail int, peer string, peerRail int, family string, at time.Time, gbps float64) v1.ProbeResult {
		return v1.ProbeResult{Rail: rail, PeerNode: peer, PeerRail: peerRail, Tool: v1.ProbeToolBandwidth, Family: family, Time: at,
			Bandwidth: &v1.BandwidthProbe{AvgGbps: gbps, PeakGbps: gbps, MessageBytes: 65536, Iterations: 5000}}
	}
	rping := func(rail int, peer string, peerRail int, family string, errText string) v1.ProbeResult {
		r := v1.ProbeResult{Rail: rail, PeerNode: peer, PeerRail: peerRail, Tool: v1.ProbeToolReachability, Family: family, Time: t1, Error: errText}
		if errText == "" {
			r.Reachable = &yes
		}
		return r
	}
	lat := v1.ProbeResult{Rail: 0, PeerNode: "gpu-02", PeerRail: 0, Tool: v1.ProbeToolLatency, Family: v1.ProbeFamilyIPv4, Time: t1,
		Latency: &v1.LatencyProbe{MinUs: 1.9, TypicalUs: 2.1, P99Us: 2.8, P999Us: 4.4, MessageBytes: 2, Iterations: 1000}}
	statuses := map[string][]v1.ProbeResult{
		"gpu-00": {
			rping(0, "gpu-02", 0, v1.ProbeFamilyIPv6, ""),
			bw(0, "gpu-02", 0, v1.ProbeFamilyIPv4, t1, 390), // the last bandwidth result...
			lat,
			{Rail: 0, PeerNode: "gpu-02", PeerRail: 0, Tool: v1.ProbeToolBandwidth, Family: v1.ProbeFamilyIPv4, Time: t0, Error: "ib_write_bw: old failure"}, // ...not this older one
			bw(0, "gpu-01", 0, v1.ProbeFamilyIPv4, t1, 100),             // gpu-01 rail 0 is tenant-b's
			rping(1, "gpu-04", 1, v1.ProbeFamilyIPv4, "rping: timeout"), // the one error
			rping(1, "gpu-03", 1, v1.ProbeFamilyIPv4, ""),               // tenant-c's
			rping(5, "gpu-02", 5, v1.ProbeFamilyIPv4, ""),               // no such rail
		},
		"gpu-02": {
			bw(0, "gpu-00", 0, v1.ProbeFamilyIPv6, t1, 380),
			bw(0, "gpu-00", 0, v1.ProbeFamilyIPv4, t1, 385),
			rping(0, "gpu-04", 0, v1.ProbeFamilyIPv4, ""),
		},
		"gpu-04": {rping(1, "gpu-00", 1, "", "")},
		// Not a member: its results are not the tenant's.
		"gpu-03": {rping(0, "gpu-00", 0, v1.ProbeFamilyIPv4, "")},
	}
	for n, probes := range statuses {
		st := testStatus(n, 1)
		st.Probes = probes
		e.do(t, call{who: node(n), method: "PUT", path: "/v1/nodes/" + n + "/status", body: st}).want(t, 204)
	}
	type want struct {
		pair    string
		ok      bool
		results []string // tool/family
	}
	check := func(what string, wants []want) v1.TenantHealth {
		t.Helper()
		var h v1.TenantHealth
		e.do(t, call{who: admin, method: "GET", path: "/v1/tenants/tenant-a/health"}).want(t, 200).decode(t, &h)
		ok := 0
		for _, w := range wants {
			if w.ok {
				ok++
			}
		}
		if h.PairsTotal != len(wants) || len(h.Pairs) != len(wants) || h.PairsOK != ok {
			t.Fatalf("%s: %d pairs (%d listed), %d ok; want %d, %d ok: %+v", what, h.PairsTotal, len(h.Pairs), h.PairsOK, len(wants), ok, h.Pairs)
		}
		for i, w := range wants {
			p := h.Pairs[i]
			got := fmt.Sprintf("%s/%d>%s/%d", p.Node, p.Rail, p.PeerNode, p.PeerRail)
			var results []string
			for _, r := range p.Results {
				results = append(results, r.Tool+"/"+r.Family)
			}
			if got != w.pair || p.OK != w.ok || !slices.Equal(results, w.results) {
				t.Errorf("%s: pair %d is %s ok %v results %v; want %s ok %v results %v", what, i, got, p.OK, results, w.pair, w.ok, w.results)
			}
		}
		return h
	}
	h := check("gpu-04 in tenant-a", []want{
		{"gpu-00/0>gpu-02/0", true, []string{"ib_write_bw/ipv4", "ib_write_lat/ipv4", "rping/ipv6"}},
		{"gpu-00/1>gpu-04/1", false, []string{"rping/ipv4"}},
		{"gpu-02/0>gpu-00/0", true, []string{"ib_write_bw/ipv4", "ib_write_bw/ipv6"}},
		{"gpu-02/0>gpu-04/0", true, []string{"rping/ipv4"}},
		{"gpu-04/1>gpu-00/1", true, []string{"rping/"}},
	})
	if r := h.Pairs[0].Results[0]; r.Error != "" || r.Bandwidth == nil || r.Bandwidth.AvgGbps != 390 || !r.Time.Equal(t1) {
		t.Errorf("the last bandwidth result of gpu-00/0>gpu-02/0: %+v", r)
	}
	if r := h.Pairs[0].Results[1]; r.Latency == nil || r.Latency.P99Us != 2.8 {
		t.Errorf("the latency result: %+v", r)
	}
	if r := h.Pairs[1].Results[0]; r.Error != "rping: timeout" {
		t.Errorf("the failed result: %+v", r)
	}
	if h.Total != 6 {
		t.Errorf("%d rails, want 6", h.Total)
	}

	// gpu-04 leaves: the results naming it are stale, not the tenant's.
	e.do(t, call{who: admin, method: "POST", path: "/v1/moves", body: moveTo("gpu-04", "")}).want(t, 200)
	check("gpu-04 moved out", []want{
		{"gpu-00/0>gpu-02/0", true, []string{"ib_write_bw/ipv4", "ib_write_lat/ipv4", "rping/ipv6"}},
		{"gpu-02/0>gpu-00/0", true, []string{"ib_write_bw/ipv4", "ib_write_bw/ipv6"}},
	})

	// A tenant nobody reported for has an empty matrix, not null.
	var hc v1.TenantHealth
	r := e.do(t, call{who: admin, method: "GET", path: "/v1/tenants/tenant-b/health"}).want(t, 200)
	r.decode(t, &hc)
	if hc.Pairs == nil || len(hc.Pairs) != 0 || hc.PairsOK != 0 || hc.PairsTotal != 0 || !bytes.Contains(r.body, []byte(`"pairs":[]`)) {
		t.Errorf("tenant-b pairs: %+v %s", hc, r.body)
	}
}

// PUT a tenant: create, replace, and the configs that change.
func TestServerPutTenant(t *testing.T) {
	e := newEnv(t)
	var res v1.MoveResult
	newT := v1.Tenant{ID: "tenant-d", VRF: "TENANT-D", VNI: 10004, Members: []v1.TenantMember{{Node: "gpu-04"}}}
	e.do(t, call{who: admin, method: "PUT", path: "/v1/tenants/tenant-d", body: newT}).want(t, 200).decode(t, &res)
	if !slices.Equal(res.ChangedNodes, []string{"gpu-04"}) {
		t.Errorf("changed %v", res.ChangedNodes)
	}
	var got v1.Tenant
	e.do(t, call{who: admin, method: "GET", path: "/v1/tenants/tenant-d"}).want(t, 200).decode(t, &got)
	if got.VNI != 10004 || len(got.Members) != 1 {
		t.Errorf("tenant-d %+v", got)
	}
	// The same again changes nothing.
	e.do(t, call{who: admin, method: "PUT", path: "/v1/tenants/tenant-d", body: newT}).want(t, 200).decode(t, &res)
	if len(res.ChangedNodes) != 0 || res.ChangedNodes == nil {
		t.Errorf("unchanged tenant: changed %v", res.ChangedNodes)
	}
	if e.etag(0, "gpu-04") != `"g2"` || e.etag(0, "gpu-00") != `"g1"` {
		t.Error("generations after the tenant put")
	}
}

func TestMetrics(t *testing.T) {
	e := newEnv(t)
	e.etag(0, "gpu-00")
	e.do(t, call{who: node("gpu-00"), method: "PUT", path: "/v1/nodes/gpu-00/lease", body: v1.Heartbeat{}}).want(t, 204)
	r := e.do(t, call{who: anonymous, method: "GET", path: "/metrics"}).want(t, 200)
	for _, want := range []string{
		`roce_controller_http_request_duration_seconds_count{code="200",route="GET /v1/nodes/{node}/config"} 1`,
		`roce_controller_nodes{state="alive"} 1`,
		`roce_controller_nodes{state="unreported"} 4`,
		`roce_controller_nodes{state="silent"} 0`,
		`roce_controller_plan_epoch 1`,
		`roce_controller_etcd_ready 1`,
		`roce_controller_ready 1`,
		`roce_controller_long_polls 0`,
		`roce_controller_long_polls_completed_total{result="changed"} 0`,
		`roce_controller_plan_changes_total 1`,
	} {
		if !strings.Contains(string(r.body), want+"\n") {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}

// waitFor polls cond for up to 10 seconds.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func gaugeValue(t testing.TB, s *Server, name string) float64 {
	t.Helper()
	mfs, err := s.metrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatalf("no gauge %s", name)
	return 0
}

// FuzzDecodeBody: any body decodes or is refused with a fabric.FieldError (a
// 400), never a panic, and a named unknown field is a path into the body.
func FuzzDecodeBody(f *testing.F) {
	for _, seed := range []string{
		`{"id":"t","vrf":"T","vni":1,"members":[{"node":"a","gpus":[0]}]}`,
		`{"id":"t","members":[{"node":"a","gpux":[1]}]}`,
		`{"node":"a","rails":[{"rail":0,"conditions":[{"type":"LinkUp","status":"True","x":1}]}]}`,
		`{"applied_generation":-1} {}`, `[]`, `null`, `{"vni":"x"}`, ``,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		for _, dst := range []any{&v1.Tenant{}, &v1.NodeStatus{}, &v1.Move{}, &v1.Heartbeat{}} {
			r := httptest.NewRequest("PUT", "/", bytes.NewReader(body))
			err := decodeBody(httptest.NewRecorder(), r, MaxBody, dst)
			if err == nil {
				continue
			}
			var fe *fabric.FieldError
			var tl *tooLargeError
			if !errors.As(err, &fe) && !errors.As(err, &tl) {
				t.Fatalf("%T: %v is neither a fabric.FieldError nor too large", dst, err)
			}
			if fe != nil && fe.Reason == "is not a known field" && fe.Field == "" {
				t.Fatalf("%T: unknown field without a name", dst)
			}
		}
	})
}
