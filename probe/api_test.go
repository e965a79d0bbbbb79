package probe

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "github.com/roce-agent/roce-agent/api/v1"
	"github.com/roce-agent/roce-agent/controller"
)

// fakeRunner plays captured tool outputs. A server run ends when a client
// of the same tool has run (or at once, with wait false).
type fakeRunner struct {
	mu      sync.Mutex
	started []Command
	// out is the client output by tool; server output is empty.
	out map[string]Output
	// missing tools fail to start.
	missing map[string]bool
	// hold keeps servers running until release is closed.
	hold chan struct{}
	// help is each tool's --help output (exit status 1, as perftest's);
	// helps counts the --help runs.
	help  map[string]string
	helps int
}

func (f *fakeRunner) Start(ctx context.Context, c Command) (Process, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.missing[c.Name] {
		return nil, fmt.Errorf("%s: %w", c.Name, ErrToolMissing)
	}
	if c.Timeout <= 0 {
		return nil, fmt.Errorf("%s: no timeout", c.Name)
	}
	if len(c.Args) == 1 && c.Args[0] == "--help" {
		f.helps++
		return fakeProc{out: Output{Stdout: f.help[c.Name], ExitCode: 1}}, nil
	}
	f.started = append(f.started, c)
	server := len(c.Args) > 0 && (c.Args[0] == "-s" || !strings.Contains(c.Args[len(c.Args)-1], "."))
	if c.Name == v1.ProbeToolReachability {
		server = c.Args[0] == "-s"
	}
	if server {
		return fakeProc{hold: f.hold, ctx: ctx}, nil
	}
	return fakeProc{out: f.out[c.Name]}, nil
}

func (f *fakeRunner) commands() []Command {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]Command(nil), f.started...)
}

type fakeProc struct {
	out  Output
	hold chan struct{}
	ctx  context.Context // a server ends when it is cancelled, as ExecRunner kills it
}

func (p fakeProc) Wait() (Output, error) {
	if p.hold != nil {
		var done <-chan struct{}
		if p.ctx != nil {
			done = p.ctx.Done()
		}
		select {
		case <-p.hold:
		case <-done:
			return Output{ExitCode: -1}, nil
		}
	}
	return p.out, nil
}

func capture(t testing.TB, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// fakeHost serves rails with a fixed GID table.
type fakeHost struct {
	rails map[int]Rail
	gids  map[netip.Addr]int
}

func (h fakeHost) Rail(n int) (Rail, bool) { r, ok := h.rails[n]; return r, ok }

func (h fakeHost) GIDIndex(dev string, port int, a netip.Addr, netdev string) (int, error) {
	if i, ok := h.gids[a]; ok {
		return i, nil
	}
	return -1, fmt.Errorf("%s port %d, %s on %s: no RoCE v2 GID for the address", dev, port, a, netdev)
}

var (
	addrA = netip.MustParseAddr("127.0.0.1")
	addrB = netip.MustParseAddr("127.0.0.2")
	addrX = netip.MustParseAddr("127.0.0.3")
)

// pair is two nodes, a and b, each serving rail 0 on a loopback address,
// each the other's peer.
type pair struct {
	runner *fakeRunner
	api    *API
	url    string
	client *Client
	railA  Rail
	peerB  Peer
	counts map[string]int
	mu     sync.Mutex
}

func newPair(t *testing.T, pki *testPKI) *pair {
	t.Helper()
	p := &pair{runner: &fakeRunner{out: map[string]Output{
		v1.ProbeToolBandwidth:    {Stdout: capture(t, "ib_write_bw_v4.client.txt")},
		v1.ProbeToolLatency:      {Stdout: capture(t, "ib_write_lat_v4.client.txt")},
		v1.ProbeToolReachability: {Stdout: capture(t, "rping_v4.client.txt"), Stderr: capture(t, "rping_v4.client.stderr.txt")},
	}}, counts: map[string]int{}}
	p.railA = Rail{Rail: 0, Netdev: "railA", Device: "rxeA", Port: 1, IPv4: addrA, Tenant: "t1", MTU: 9000, TClass: -1,
		Peers: []Peer{{Node: "node-b", Rail: 0, IPv4: addrB}}}
	railB := Rail{Rail: 0, Netdev: "railB", Device: "rxeB", Port: 1, IPv4: addrB, Tenant: "t1", MTU: 9000, TClass: 106,
		Peers: []Peer{{Node: "node-a", Rail: 0, IPv4: addrA}}}
	p.peerB = Peer{Node: "node-b", Rail: 0, IPv4: addrB}
	hostB := fakeHost{rails: map[int]Rail{0: railB}, gids: map[netip.Addr]int{addrB: 3}}
	hostA := fakeHost{rails: map[int]Rail{0: p.railA}, gids: map[netip.Addr]int{addrA: 1}}
	p.api = &API{Host: hostB, Runner: p.runner, Slots: &Slots{}, Timeout: 10 * time.Second, RequireCertificate: pki != nil,
		Count: func(r string) { p.mu.Lock(); p.counts[r]++; p.mu.Unlock() }}
	ln, err := net.Listen("tcp", netip.AddrPortFrom(addrB, 0).String())
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: p.api.Handler(), ReadHeaderTimeout: 5 * time.Second}
	scheme := "http"
	if pki != nil {
		scheme = "https"
		srv.TLSConfig = pki.serverConfig(t, "node-b")
		ln = tls.NewListener(ln, srv.TLSConfig)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	port := ln.Addr().(*net.TCPAddr).Port
	p.url = fmt.Sprintf("%s://%s%s", scheme, ln.Addr(), SessionsPath)
	p.client = &Client{Host: hostA, Runner: p.runner, Slots: &Slots{}, APIPort: port, Timeout: 10 * time.Second,
		PathMTU: func(context.Context, netip.Addr, netip.Addr, int) error { return nil }}
	if pki != nil {
		p.client.TLS = pki.clientConfig(t, "node-a")
	}
	return p
}

func (p *pair) count(r string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.counts[r]
}

type testPKI struct {
	dir string
	ca  *x509.CertPool
}

func newPKI(t *testing.T, names ...string) *testPKI {
	t.Helper()
	dir := t.TempDir()
	if _, err := controller.WriteCerts(dir, []string{"controller"}, names); err != nil {
		t.Fatal(err)
	}
	pem, err := os.ReadFile(filepath.Join(dir, controller.CACertFile))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	return &testPKI{dir: dir, ca: pool}
}

func (k *testPKI) cert(t *testing.T, name string) tls.Certificate {
	t.Helper()
	c, err := tls.LoadX509KeyPair(filepath.Join(k.dir, name+".pem"), filepath.Join(k.dir, name+"-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func (k *testPKI) serverConfig(t *testing.T, name string) *tls.Config {
	return &tls.Config{Certificates: []tls.Certificate{k.cert(t, name)}, ClientCAs: k.ca, ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS13}
}

func (k *testPKI) clientConfig(t *testing.T, name string) *tls.Config {
	return &tls.Config{Certificates: []tls.Certificate{k.cert(t, name)}, RootCAs: k.ca, MinVersion: tls.VersionTLS13}
}

// post sends a raw request to the API from a local address.
func (p *pair) post(t *testing.T, from netip.Addr, tlsCfg *tls.Config, body string) (int, APIError) {
	t.Helper()
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: from.AsSlice()}}
	tr := &http.Transport{DialContext: d.DialContext, TLSClientConfig: tlsCfg, DisableKeepAlives: true}
	if tlsCfg != nil {
		tr.TLSClientConfig = tlsCfg.Clone()
		tr.TLSClientConfig.InsecureSkipVerify = true
	}
	resp, err := (&http.Client{Transport: tr, Timeout: 5 * time.Second}).Post(p.url, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatalf("post: %v", err)
	}
	defer resp.Body.Close()
	var e APIError
	_ = json.NewDecoder(resp.Body).Decode(&e)
	return resp.StatusCode, e
}

func TestProbeBandwidthThroughAPI(t *testing.T) {
	p := newPair(t, nil)
	res := p.client.Probe(context.Background(), p.railA, p.peerB, Test{Tool: v1.ProbeToolBandwidth, Family: FamilyIPv4, Iterations: 2000})
	if res.Outcome != OutcomePass || res.Error != "" {
		t.Fatalf("outcome %s, error %q", res.Outcome, res.Error)
	}
	if res.ProbeResult.Bandwidth == nil || res.ProbeResult.Bandwidth.AvgGbps <= 0 || res.ProbeResult.Bandwidth.MessageBytes != 65536 {
		t.Fatalf("bandwidth %+v", res.ProbeResult.Bandwidth)
	}
	cmds := p.runner.commands()
	if len(cmds) != 2 {
		t.Fatalf("commands %v", cmds)
	}
	// The server binds its GID (index 3, by value) and the RoCE ToS;
	// the client binds its own and goes to the peer's rail address.
	srv, cli := cmds[0].String(), cmds[1].String()
	for _, want := range []string{"ib_write_bw -d rxeB -i 1 -x 3 -s 65536 -n 2000 -p ", "--tclass=106"} {
		if !strings.Contains(srv, want) {
			t.Errorf("server %q lacks %q", srv, want)
		}
	}
	// MiB/s, not --report_gbits: two decimals of Gb/s are too coarse at low rates
	if strings.Contains(srv+cli, "report_gbits") {
		t.Errorf("server %q or client %q asks for --report_gbits", srv, cli)
	}
	if !strings.HasPrefix(cli, "ib_write_bw -d rxeA -i 1 -x 1 -s 65536 -n 2000 -p ") || !strings.HasSuffix(cli, " --source_ip 127.0.0.1 127.0.0.2") || strings.Contains(cli, "tclass") {
		t.Errorf("client %q", cli)
	}
	if p.count("started") != 1 {
		t.Errorf("counts %v", p.counts)
	}
}

func TestProbeLatencyAndRping(t *testing.T) {
	p := newPair(t, nil)
	res := p.client.Probe(context.Background(), p.railA, p.peerB, Test{Tool: v1.ProbeToolLatency, Family: FamilyIPv4})
	if res.Outcome != OutcomePass || res.ProbeResult.Latency == nil || res.ProbeResult.Latency.TypicalUs <= 0 {
		t.Fatalf("latency: %+v", res)
	}
	// The peer frees its NIC's slot when its one-shot server has exited,
	// which may be just after our client did: busy then, as a real
	// prober would, retry after the hint.
	for deadline := time.Now().Add(10 * time.Second); ; {
		res = p.client.Probe(context.Background(), p.railA, p.peerB, Test{Tool: v1.ProbeToolReachability, Family: FamilyIPv4, Count: 5})
		if res.Outcome != OutcomeBusy || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if res.Outcome != OutcomePass || res.Reachable == nil || !*res.Reachable {
		t.Fatalf("rping: %+v", res)
	}
	cmds := p.runner.commands()
	if got := cmds[len(cmds)-1].String(); !strings.HasPrefix(got, "rping -c -I 127.0.0.1 -a 127.0.0.2 -v -C 5 -p ") {
		t.Errorf("rping client %q", got)
	}
	if got := cmds[len(cmds)-2].String(); !strings.HasPrefix(got, "rping -s -a 127.0.0.2 -v -C 5 -p ") {
		t.Errorf("rping server %q", got)
	}
}

func TestProbeToolFailuresAreResults(t *testing.T) {
	defer func(w time.Duration) { connectWindow = w }(connectWindow)
	connectWindow = 300 * time.Millisecond
	for _, tc := range []struct {
		name string
		out  Output
		want string
	}{
		{"no server", Output{Stdout: capture(t, "ib_write_bw_no_server.txt"), Stderr: capture(t, "ib_write_bw_no_server.stderr.txt"), ExitCode: 1}, "Couldn't connect"},
		{"empty exit 0", Output{}, "no result"},
		{"truncated", Output{Stdout: capture(t, "ib_write_bw_v4_gbits.client.txt")[:900]}, "ib_write_bw"},
		{"garbage", Output{Stdout: "\x00\x01\n #bytes #iterations BW peak[Gb/sec] BW average[Gb/sec] MsgRate[Mpps]\n 65536 2000 inf -nan 0\n"}, "not a"},
		{"hang", Output{TimedOut: true, ExitCode: -1, Duration: 10 * time.Second}, "timed out"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newPair(t, nil)
			p.runner.out[v1.ProbeToolBandwidth] = tc.out
			res := p.client.Probe(context.Background(), p.railA, p.peerB, Test{Tool: v1.ProbeToolBandwidth, Family: FamilyIPv4})
			if res.Outcome != OutcomeFail || !strings.Contains(res.Error, tc.want) || res.ProbeResult.Bandwidth != nil {
				t.Fatalf("outcome %s error %q bandwidth %+v, want fail with %q", res.Outcome, res.Error, res.ProbeResult.Bandwidth, tc.want)
			}
			// The NIC's slot is free again.
			rel, err := p.client.Slots.Acquire("rxeA", "test", time.Second)
			if err != nil {
				t.Fatalf("slot still held: %v", err)
			}
			rel()
		})
	}
}

func TestProbeMissingToolStartsNothing(t *testing.T) {
	p := newPair(t, nil)
	p.runner.missing = map[string]bool{v1.ProbeToolBandwidth: true}
	res := p.client.Probe(context.Background(), p.railA, p.peerB, Test{Tool: v1.ProbeToolBandwidth, Family: FamilyIPv4})
	if res.Outcome != OutcomeRefused || !strings.Contains(res.Error, "not installed") {
		t.Fatalf("outcome %s error %q", res.Outcome, res.Error)
	}
	if n := len(p.runner.commands()); n != 0 {
		t.Fatalf("%d tools started", n)
	}
	// The peer's NIC slot was given back.
	rel, err := p.api.Slots.Acquire("rxeB", "test", time.Second)
	if err != nil {
		t.Fatal(err)
	}
	rel()
}

func TestAPIRefusals(t *testing.T) {
	p := newPair(t, nil)
	ok := `{"rail":0,"peer_rail":0,"tool":"rping","family":"ipv4"}`
	for _, tc := range []struct {
		name   string
		from   netip.Addr
		body   string
		status int
		field  string
		want   string
	}{
		{"not a peer", addrX, ok, 403, "", "not a probe peer"},
		{"unknown rail", addrA, `{"rail":5,"peer_rail":0,"tool":"rping","family":"ipv4"}`, 404, "rail", "not served"},
		{"wrong peer rail", addrA, `{"rail":0,"peer_rail":2,"tool":"rping","family":"ipv4"}`, 403, "peer_rail", "probes from rail 0"},
		{"bad tool", addrA, `{"rail":0,"peer_rail":0,"tool":"sh","family":"ipv4"}`, 400, "tool", "not ib_write_bw"},
		{"bad family", addrA, `{"rail":0,"peer_rail":0,"tool":"rping","family":"ipx"}`, 400, "family", "not ipv4"},
		{"huge iterations", addrA, `{"rail":0,"peer_rail":0,"tool":"ib_write_bw","family":"ipv4","iterations":100000000}`, 400, "iterations", "not in"},
		{"unknown field", addrA, `{"rail":0,"peer_rail":0,"tool":"rping","family":"ipv4","cmd":"rm"}`, 400, "", "unknown field"},
		{"two values", addrA, ok + ok, 400, "", "more than one"},
		{"garbage", addrA, "\x00\xff", 400, "", "request body"},
		{"no v6 address", addrA, `{"rail":0,"peer_rail":0,"tool":"rping","family":"ipv6"}`, 404, "family", "no ipv6 address"},
		{"huge body", addrA, `{"rail":0,"peer_rail":0,"tool":"rping","family":"ipv4","x":"` + strings.Repeat("a", 10000) + `"}`, 413, "", "larger than"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, e := p.post(t, tc.from, nil, tc.body)
			if status != tc.status || e.Field != tc.field || !strings.Contains(e.Error, tc.want) {
				t.Fatalf("got %d %+v, want %d field %q %q", status, e, tc.status, tc.field, tc.want)
			}
		})
	}
	if n := len(p.runner.commands()); n != 0 {
		t.Fatalf("%d tools started by refused requests", n)
	}
}

func TestAPIOneTestPerNIC(t *testing.T) {
	p := newPair(t, nil)
	p.runner.hold = make(chan struct{})
	body := `{"rail":0,"peer_rail":0,"tool":"ib_write_bw","family":"ipv4"}`
	if status, e := p.post(t, addrA, nil, body); status != http.StatusCreated {
		t.Fatalf("first: %d %+v", status, e)
	}
	// The server holds the NIC: a second test is refused with a hint,
	// whatever the tool.
	for _, tool := range []string{"ib_write_bw", "rping"} {
		status, e := p.post(t, addrA, nil, `{"rail":0,"peer_rail":0,"tool":"`+tool+`","family":"ipv4"}`)
		if status != http.StatusConflict || e.RetryAfterSeconds < 1 || !strings.Contains(e.Error, "busy") {
			t.Fatalf("%s: %d %+v", tool, status, e)
		}
	}
	// The client sees busy, not a failure of the rail.
	res := p.client.Probe(context.Background(), p.railA, p.peerB, Test{Tool: v1.ProbeToolBandwidth, Family: FamilyIPv4})
	if res.Outcome != OutcomeBusy || res.RetryAfter < time.Second {
		t.Fatalf("client: %s %q retry %s", res.Outcome, res.Error, res.RetryAfter)
	}
	close(p.runner.hold) // the server ends
	deadline := time.Now().Add(5 * time.Second)
	for {
		status, _ := p.post(t, addrA, nil, `{"rail":0,"peer_rail":0,"tool":"rping","family":"ipv4"}`)
		if status == http.StatusCreated {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("slot never freed: %d", status)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if p.count("busy") != 3 {
		t.Errorf("busy count %d", p.count("busy"))
	}
}

func TestAPIFloodIsRateLimited(t *testing.T) {
	p := newPair(t, nil)
	p.runner.missing = map[string]bool{v1.ProbeToolReachability: true} // no slot held between requests
	limited := 0
	for i := 0; i < 30; i++ {
		status, _ := p.post(t, addrA, nil, `{"rail":0,"peer_rail":0,"tool":"rping","family":"ipv4"}`)
		if status == http.StatusTooManyRequests {
			limited++
		}
	}
	if limited < 15 {
		t.Fatalf("%d of 30 requests limited", limited)
	}
}

func TestAPIMutualTLS(t *testing.T) {
	pki := newPKI(t, "node-a", "node-b", "node-x")
	p := newPair(t, pki)
	res := p.client.Probe(context.Background(), p.railA, p.peerB, Test{Tool: v1.ProbeToolReachability, Family: FamilyIPv4, Count: 5})
	if res.Outcome != OutcomePass {
		t.Fatalf("mTLS probe: %s %q", res.Outcome, res.Error)
	}
	ok := `{"rail":0,"peer_rail":0,"tool":"rping","family":"ipv4"}`
	// node-x's certificate from node-a's address: a forged identity.
	if status, e := p.post(t, addrA, pki.clientConfig(t, "node-x"), ok); status != http.StatusForbidden || !strings.Contains(e.Error, `certificate of "node-x"`) {
		t.Fatalf("forged: %d %+v", status, e)
	}
	// A certificate from another CA never gets past the handshake.
	other := newPKI(t, "node-a")
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: addrA.AsSlice()}}
	cfg := other.clientConfig(t, "node-a")
	cfg.InsecureSkipVerify = true
	tr := &http.Transport{DialContext: d.DialContext, TLSClientConfig: cfg}
	if resp, err := (&http.Client{Transport: tr, Timeout: 5 * time.Second}).Post(p.url, "application/json", strings.NewReader(ok)); err == nil {
		resp.Body.Close()
		t.Fatalf("foreign CA answered %d", resp.StatusCode)
	}
	// The client refuses a server whose certificate names another node.
	p.client.TLS = pki.clientConfig(t, "node-a")
	wrong := p.peerB
	wrong.Node = "node-x"
	res = p.client.Probe(context.Background(), p.railA, wrong, Test{Tool: v1.ProbeToolReachability, Family: FamilyIPv4})
	if res.Outcome == OutcomePass || !strings.Contains(res.Error, `names "node-b", not "node-x"`) {
		t.Fatalf("wrong server name: %s %q", res.Outcome, res.Error)
	}
	if p.count("started") != 1 {
		t.Fatalf("started %d", p.count("started"))
	}
}

func TestProbeExplainsRailDown(t *testing.T) {
	p := newPair(t, nil)
	p.client.LinkUp = func(netdev string) error { return fmt.Errorf("%s is down: no carrier", netdev) }
	res := p.client.Probe(context.Background(), p.railA, p.peerB, Test{Tool: v1.ProbeToolBandwidth, Family: FamilyIPv4})
	if res.Outcome != OutcomeFail || !strings.Contains(res.Error, "railA is down: no carrier") || len(p.runner.commands()) != 0 {
		t.Fatalf("%s %q", res.Outcome, res.Error)
	}
}

func TestProbeExplainsPathMTU(t *testing.T) {
	p := newPair(t, nil)
	p.runner.out[v1.ProbeToolBandwidth] = Output{Stdout: " Completion with error at client\n Failed status 12: wr_id 0 syndrom 0x81\n", ExitCode: 1}
	p.client.PathMTU = func(_ context.Context, l, r netip.Addr, mtu int) error {
		return fmt.Errorf("%w: a %d-byte don't-fragment ping from %s to %s got no answer, a 1500-byte one did", ErrPathMTU, mtu, l, r)
	}
	res := p.client.Probe(context.Background(), p.railA, p.peerB, Test{Tool: v1.ProbeToolBandwidth, Family: FamilyIPv4})
	if res.Outcome != OutcomeFail || !strings.Contains(res.Error, "path MTU below the rail MTU") || !strings.Contains(res.Error, "Completion with error") {
		t.Fatalf("%s %q", res.Outcome, res.Error)
	}
}

func TestProbePeerAPIUnreachable(t *testing.T) {
	p := newPair(t, nil)
	p.client.APIPort = 1 // nothing listens
	res := p.client.Probe(context.Background(), p.railA, p.peerB, Test{Tool: v1.ProbeToolReachability, Family: FamilyIPv4})
	if res.Outcome != OutcomeFail || !strings.Contains(res.Error, "probe api of node-b") {
		t.Fatalf("%s %q", res.Outcome, res.Error)
	}
}

func TestSlotsAcrossProcesses(t *testing.T) {
	dir := t.TempDir()
	a, b := &Slots{Dir: dir}, &Slots{Dir: dir}
	rel, err := a.Acquire("mlx5_0", "ib_write_bw to n2", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	var busy *Busy
	if _, err := b.Acquire("mlx5_0", "x", time.Second); !errors.As(err, &busy) {
		t.Fatalf("second holder: %v", err)
	}
	if _, err := a.Acquire("mlx5_0", "x", time.Second); !errors.As(err, &busy) || !strings.Contains(busy.What, "ib_write_bw to n2") {
		t.Fatalf("same process: %v", err)
	}
	if rel2, err := b.Acquire("mlx5_1", "x", time.Second); err != nil {
		t.Fatalf("other NIC: %v", err)
	} else {
		rel2()
	}
	rel()
	rel()
	if rel3, err := b.Acquire("mlx5_0", "x", time.Second); err != nil {
		t.Fatalf("after release: %v", err)
	} else {
		rel3()
	}
}

// FuzzSessionRequest feeds the probe API arbitrary bodies from a listed
// peer: it never panics, answers with a JSON error unless it started a
// server, and starts a tool only for a request that validates.
func FuzzSessionRequest(f *testing.F) {
	for _, s := range []string{
		`{"rail":0,"peer_rail":0,"tool":"rping","family":"ipv4"}`,
		`{"rail":0,"peer_rail":0,"tool":"ib_write_bw","family":"ipv4","message_bytes":65536,"iterations":5000}`,
		`{"rail":0,"peer_rail":0,"tool":"ib_write_lat","family":"ipv6","iterations":-1}`,
		`{"rail":1e99}`, `[]`, `null`, `{"rail":0}{"rail":0}`, "",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, body string) {
		runner := &fakeRunner{}
		rail := Rail{Rail: 0, Netdev: "railB", Device: "rxeB", Port: 1, IPv4: addrB, IPv6: netip.MustParseAddr("fd00::3"), Tenant: "t1", TClass: -1,
			Peers: []Peer{{Node: "node-a", Rail: 0, IPv4: addrA, IPv6: netip.MustParseAddr("fd00::1")}}}
		api := &API{Host: fakeHost{rails: map[int]Rail{0: rail}, gids: map[netip.Addr]int{addrB: 3, rail.IPv6: 4}}, Runner: runner, Slots: &Slots{}, Timeout: time.Second}
		req := httptest.NewRequest(http.MethodPost, SessionsPath, strings.NewReader(body))
		req.RemoteAddr = "127.0.0.1:40000"
		w := httptest.NewRecorder()
		api.Handler().ServeHTTP(w, req)
		started := len(runner.commands())
		var sr SessionRequest
		dec := json.NewDecoder(strings.NewReader(body))
		dec.DisallowUnknownFields()
		valid := dec.Decode(&sr) == nil && !dec.More() && sr.Test.Validate() == nil && sr.Rail == 0 && sr.PeerRail == 0
		switch {
		case w.Code == http.StatusCreated:
			if started != 1 || !valid {
				t.Fatalf("201 with %d tools for %q", started, body)
			}
		case started != 0:
			t.Fatalf("%d answered and %d tools started for %q", w.Code, started, body)
		default:
			var e APIError
			if err := json.Unmarshal(w.Body.Bytes(), &e); err != nil || e.Error == "" {
				t.Fatalf("%d without a JSON error: %q", w.Code, w.Body.String())
			}
		}
	})
}

// The client binds perftest's out-of-band exchange to the rail address
// where the installed perftest can (--bind_source_ip, read once from its
// --help); Debian 12's 4.5 gets --source_ip, which it ignores.
func TestProbePerftestSourceBinding(t *testing.T) {
	for _, tc := range []struct {
		help, flag string
		helps      int
	}{
		{"ib_write_bw_25.10_help.txt", " --bind_source_ip 127.0.0.1 127.0.0.2", 1},
		{"ib_write_bw_4.5_help.txt", " --source_ip 127.0.0.1 127.0.0.2", 1},
		// no usage printed: not cached, asked again
		{"", " --source_ip 127.0.0.1 127.0.0.2", 2},
	} {
		p := newPair(t, nil)
		if tc.help != "" {
			p.runner.help = map[string]string{v1.ProbeToolBandwidth: capture(t, tc.help)}
		}
		for i := 0; i < 2; i++ {
			res := p.client.Probe(context.Background(), p.railA, p.peerB, Test{Tool: v1.ProbeToolBandwidth, Family: FamilyIPv4, Iterations: 2000})
			if res.Outcome != OutcomePass {
				t.Fatalf("%s: outcome %s, error %q", tc.help, res.Outcome, res.Error)
			}
		}
		cmds := p.runner.commands()
		if len(cmds) != 4 {
			t.Fatalf("%s: commands %v", tc.help, cmds)
		}
		for _, c := range []Command{cmds[1], cmds[3]} {
			if cli := c.String(); !strings.HasSuffix(cli, tc.flag) || strings.Count(cli, "source_ip") != 1 {
				t.Errorf("%s: client %q, want it to end in %q", tc.help, cli, tc.flag)
			}
		}
		if p.runner.helps != tc.helps {
			t.Errorf("%s: %d --help runs, want %d", tc.help, p.runner.helps, tc.helps)
		}
	}
}

// A client whose run failed ends its session: the peer's server is
// killed and the NIC's slot is free at once, not at the server's
// timeout. Only the session's requester may end it.
func TestClientEndsFailedSession(t *testing.T) {
	k := newPKI(t, "node-a", "node-b", "node-c")
	p := newPair(t, k)
	p.runner.hold = make(chan struct{}) // servers run until ended
	defer close(p.runner.hold)
	p.runner.out[v1.ProbeToolBandwidth] = Output{Stderr: "Couldn't connect to 127.0.0.2:18515\n", ExitCode: 1}
	res := p.client.Probe(context.Background(), p.railA, p.peerB, Test{Tool: v1.ProbeToolBandwidth, Family: FamilyIPv4})
	if res.Outcome != OutcomeFail {
		t.Fatalf("outcome %s %q, want fail", res.Outcome, res.Error)
	}
	if p.count("ended") != 1 {
		t.Fatalf("counts %v: the failed client did not end its session", p.counts)
	}
	// the slot is free: the next test starts a server (no busy)
	if status, e := p.post(t, addrA, k.clientConfig(t, "node-a"), `{"rail":0,"peer_rail":0,"tool":"rping","family":"ipv4"}`); status != http.StatusCreated {
		t.Fatalf("after the end: %d %+v", status, e)
	}

	// Someone else's DELETE: another node's certificate, or another
	// address, is refused; an unknown session is 404.
	var sess SessionResponse
	body := `{"rail":0,"peer_rail":0,"tool":"ib_write_bw","family":"ipv4"}`
	p.api.Slots = &Slots{} // a fresh NIC slot for this session
	status, data := p.do(t, http.MethodPost, addrA, k.clientConfig(t, "node-a"), SessionsPath, body)
	if status != http.StatusCreated || json.Unmarshal(data, &sess) != nil || sess.ID == "" {
		t.Fatalf("open: %d %s", status, data)
	}
	for _, tc := range []struct {
		name string
		from netip.Addr
		cert string
		id   string
		want int
	}{
		{"another node's certificate", addrA, "node-c", sess.ID, http.StatusForbidden},
		{"another address", netip.MustParseAddr("127.0.0.3"), "node-a", sess.ID, http.StatusForbidden},
		{"unknown session", addrA, "node-a", "00112233445566778899aabb", http.StatusNotFound},
		{"the requester", addrA, "node-a", sess.ID, http.StatusNoContent},
		{"again", addrA, "node-a", sess.ID, http.StatusNotFound},
	} {
		if status, data := p.do(t, http.MethodDelete, tc.from, k.clientConfig(t, tc.cert), SessionsPath+"/"+tc.id, ""); status != tc.want {
			t.Errorf("%s: %d %s, want %d", tc.name, status, data, tc.want)
		}
	}
}

// do sends one request to the pair's API from an address, with a client
// certificate when tlsCfg is set, and returns the status and body.
func (p *pair) do(t *testing.T, method string, from netip.Addr, tlsCfg *tls.Config, path, body string) (int, []byte) {
	t.Helper()
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: from.AsSlice()}}
	tr := &http.Transport{DialContext: d.DialContext, DisableKeepAlives: true}
	if tlsCfg != nil {
		tr.TLSClientConfig = tlsCfg.Clone()
		tr.TLSClientConfig.InsecureSkipVerify = true
	}
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, strings.TrimSuffix(p.url, SessionsPath)+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := (&http.Client{Transport: tr, Timeout: 5 * time.Second}).Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, data
}
