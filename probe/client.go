package probe

import (
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
	"net/url"
	"strconv"
	"strings"
	"time"

	v1 "github.com/roce-agent/roce-agent/api/v1"
)

// Outcome classifies a probe attempt.
type Outcome string

// Outcomes. Pass and Fail are results: the probe ran (or could not run
// because of the rail or the path) and says something about the rail.
// Busy means the peer's or this NIC's slot was taken: try again later, it
// says nothing about the rail. Refused means the peer would not serve the
// probe (not a peer there, rail not served): the two nodes disagree about
// the tenant. Error is a local problem (a tool missing, no GID).
const (
	OutcomePass    Outcome = "pass"
	OutcomeFail    Outcome = "fail"
	OutcomeBusy    Outcome = "busy"
	OutcomeRefused Outcome = "refused"
	OutcomeError   Outcome = "error"
)

// Outcomes lists them (metric label values).
var Outcomes = []Outcome{OutcomePass, OutcomeFail, OutcomeBusy, OutcomeRefused, OutcomeError}

// Result is one probe: the wire result and how it went.
type Result struct {
	v1.ProbeResult
	Outcome Outcome
	// RetryAfter is the busy NIC's hint.
	RetryAfter time.Duration
	// Bare is the tool's own result, for callers that want more than
	// the wire result (nil when it did not run to the end).
	Bandwidth *BandwidthResult
	Latency   *LatencyResult
}

// Client runs probes from this node's rails: it asks the peer's probe
// API for a server, runs the tool's client against it and reads the
// result. It explains a failure: a rail that is down, a path that drops
// full-size packets, or the tool's own words.
type Client struct {
	Host   Host
	Runner Runner
	Slots  *Slots
	// TLS carries this node's certificate and the fabric CA (RootCAs);
	// the peer's certificate must name the peer node. nil: plain HTTP
	// (labs).
	TLS *tls.Config
	// APIPort is the peers' probe API port.
	APIPort int
	// Timeout bounds one probe: the API request, the tool run and the
	// checks.
	Timeout time.Duration
	// LinkUp says why a rail cannot carry traffic (nil: it can).
	LinkUp func(netdev string) error
	// PathMTU checks the path (nil: CheckPathMTU).
	PathMTU func(ctx context.Context, local, peer netip.Addr, mtu int) error

	perftest perftestFeatures
}

// connectWindow is how long the client retries a connection the server
// is not ready for yet (the server starts as the API answers; its
// listen comes a little later).
var connectWindow = 5 * time.Second

// Probe runs one test from rail against peer.
func (c *Client) Probe(ctx context.Context, rail Rail, peer Peer, t Test) Result {
	t = t.WithDefaults()
	res := Result{ProbeResult: v1.ProbeResult{Rail: rail.Rail, PeerNode: peer.Node, PeerRail: peer.Rail, Tool: t.Tool, Family: t.Family, Time: time.Now().UTC()}}
	fail := func(o Outcome, format string, args ...any) Result {
		res.Outcome = o
		res.Error = clip(fmt.Sprintf(format, args...))
		return res
	}
	if err := t.Validate(); err != nil {
		return fail(OutcomeError, "%v", err)
	}
	timeout := c.Timeout
	if timeout <= 0 {
		timeout = time.Minute
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	local, remote := rail.Addr(t.Family), peer.Addr(t.Family)
	if !local.IsValid() || !remote.IsValid() {
		return fail(OutcomeError, "rail %d: no %s address on both ends (%s, %s %s)", rail.Rail, t.Family, addrOr(local), peer.Node, addrOr(remote))
	}
	if c.LinkUp != nil {
		if err := c.LinkUp(rail.Netdev); err != nil {
			return fail(OutcomeFail, "%v", err)
		}
	}
	gid, err := c.Host.GIDIndex(rail.Device, rail.Port, local, rail.Netdev)
	if err != nil {
		return fail(OutcomeError, "%v", err)
	}
	// what the installed perftest can do, read before the peer starts a
	// server for this probe (once per tool: cached)
	pf := c.perftest.get(ctx, c.Runner, t.Tool)
	release, err := c.Slots.Acquire(rail.Device, fmt.Sprintf("%s to %s", t.Tool, peer.Node), min(t.Expected(), timeout))
	if err != nil {
		var busy *Busy
		if errors.As(err, &busy) {
			res.RetryAfter = busy.RetryAfter
			return fail(OutcomeBusy, "%v", err)
		}
		return fail(OutcomeError, "%v", err)
	}
	defer release()

	sess, err := c.open(ctx, rail, peer, t)
	if err != nil {
		var re *refusal
		switch {
		case errors.As(err, &re) && re.status == http.StatusConflict:
			res.RetryAfter = re.retryAfter
			return fail(OutcomeBusy, "%s: %v", peer.Node, err)
		case errors.As(err, &re) && re.status == http.StatusTooManyRequests:
			res.RetryAfter = re.retryAfter
			return fail(OutcomeBusy, "%s: %v", peer.Node, err)
		case errors.As(err, &re):
			return fail(OutcomeRefused, "%s refused the probe: %v", peer.Node, err)
		}
		// The peer's API did not answer over the rail: that is the
		// rail's (or the path's) problem as much as a missing agent.
		return fail(OutcomeFail, "%s", c.explain(ctx, rail, local, remote, fmt.Errorf("probe api of %s at %s: %w", peer.Node, remote, err)))
	}
	oobFrom, oob := rail.IPv4, peer.IPv4
	if !oobFrom.IsValid() || !oob.IsValid() {
		oobFrom, oob = local, remote
	}
	cmd := ClientCommand(t, Binding{Device: rail.Device, Port: rail.Port, GIDIndex: gid, Addr: local}, remote, oobFrom, oob, sess.Port, rail.TClass, pf)
	out, err := c.run(ctx, cmd)
	if err != nil || out.ExitCode != 0 {
		c.end(ctx, rail, peer, sess.ID)
	}
	if err != nil {
		return fail(OutcomeError, "%v", err)
	}
	if err := c.read(&res, t, out); err != nil {
		return fail(OutcomeFail, "%s", c.explain(ctx, rail, local, remote, err))
	}
	res.Outcome = OutcomePass
	return res
}

func addrOr(a netip.Addr) string {
	if a.IsValid() {
		return a.String()
	}
	return "none"
}

// run runs the client, again while the server is not listening yet.
func (c *Client) run(ctx context.Context, cmd Command) (Output, error) {
	start := time.Now()
	for {
		dl, _ := ctx.Deadline()
		cmd.Timeout = time.Until(dl)
		if cmd.Timeout <= 0 {
			return Output{}, fmt.Errorf("%s: %w", cmd.Name, context.DeadlineExceeded)
		}
		out, err := Run(ctx, c.Runner, cmd)
		if err != nil || out.ExitCode == 0 || !notListening(out) || time.Since(start) > connectWindow {
			return out, err
		}
		select {
		case <-ctx.Done():
			return out, nil
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// notListening recognizes a client that came before its server listened:
// perftest's refused out-of-band connect, rping's rejected CM connect.
func notListening(o Output) bool {
	s := o.Stderr + o.Stdout
	return strings.Contains(s, "Couldn't connect to") || strings.Contains(s, "RDMA_CM_EVENT_REJECTED") ||
		strings.Contains(s, "Unable to init the socket connection")
}

// read parses the tool's output into res.
func (c *Client) read(res *Result, t Test, out Output) error {
	if out.TimedOut {
		if err := toolError(t.Tool, out.Stderr, out.Stdout); err != nil {
			return fmt.Errorf("%w (then timed out after %s)", err, out.Duration.Round(time.Millisecond))
		}
		return fmt.Errorf("%s: timed out after %s with no result", t.Tool, out.Duration.Round(time.Millisecond))
	}
	switch t.Tool {
	case v1.ProbeToolBandwidth:
		bw, err := ParseBandwidth(out.Stdout, out.Stderr)
		if err == nil && out.ExitCode != 0 {
			err = fmt.Errorf("%s: exit status %d", t.Tool, out.ExitCode)
		}
		if err != nil {
			return err
		}
		row := bw.Last()
		res.Bandwidth = &bw
		res.ProbeResult.Bandwidth = &v1.BandwidthProbe{AvgGbps: row.AvgGbps, PeakGbps: row.PeakGbps, MessageBytes: row.MessageBytes, Iterations: row.Iterations}
	case v1.ProbeToolLatency:
		lat, err := ParseLatency(out.Stdout, out.Stderr)
		if err == nil && out.ExitCode != 0 {
			err = fmt.Errorf("%s: exit status %d", t.Tool, out.ExitCode)
		}
		if err != nil {
			return err
		}
		res.Latency = &lat
		res.ProbeResult.Latency = &v1.LatencyProbe{MinUs: lat.MinUs, TypicalUs: lat.TypicalUs, P99Us: lat.P99Us, P999Us: lat.P999Us,
			MessageBytes: lat.MessageBytes, Iterations: lat.Iterations}
	case v1.ProbeToolReachability:
		if _, err := ParseRping(out.Stdout, out.Stderr, out.ExitCode, t.Count); err != nil {
			no := false
			res.Reachable = &no
			return err
		}
		yes := true
		res.Reachable = &yes
	}
	return nil
}

// explain turns a failure into what an operator can act on: the rail is
// down, or the path drops full-size packets; otherwise the failure as it
// was.
func (c *Client) explain(ctx context.Context, rail Rail, local, remote netip.Addr, failure error) string {
	if c.LinkUp != nil {
		if err := c.LinkUp(rail.Netdev); err != nil {
			return fmt.Sprintf("%v (%v)", err, failure)
		}
	}
	if rail.MTU > 0 {
		check := c.PathMTU
		if check == nil {
			check = func(ctx context.Context, l, p netip.Addr, mtu int) error {
				return CheckPathMTU(ctx, l, p, mtu, 500*time.Millisecond)
			}
		}
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if err := check(cctx, local, remote, rail.MTU); errors.Is(err, ErrPathMTU) || errors.Is(err, ErrNoEcho) {
			return fmt.Sprintf("%v (%v)", err, failure)
		}
	}
	return failure.Error()
}

// refusal is an answer of the peer's API other than 201.
type refusal struct {
	status     int
	msg        string
	retryAfter time.Duration
}

func (r *refusal) Error() string {
	return fmt.Sprintf("%d %s: %s", r.status, http.StatusText(r.status), r.msg)
}

// open asks the peer's probe API for a server, over the rail: from this
// rail's address to the peer's, so the request takes the rail's routing
// and only reaches a peer the tenant's VRF connects.
func (c *Client) open(ctx context.Context, rail Rail, peer Peer, t Test) (SessionResponse, error) {
	var resp SessionResponse
	body, _ := json.Marshal(SessionRequest{Rail: peer.Rail, PeerRail: rail.Rail, Test: t})
	r, err := c.peerRequest(ctx, rail, peer, http.MethodPost, SessionsPath, body)
	if err != nil {
		return resp, err
	}
	defer r.Body.Close()
	data, err := io.ReadAll(io.LimitReader(r.Body, 64<<10))
	if err != nil {
		return resp, err
	}
	if r.StatusCode != http.StatusCreated {
		var e APIError
		_ = json.Unmarshal(data, &e)
		ref := &refusal{status: r.StatusCode, msg: clip(e.Error)}
		if ref.msg == "" {
			ref.msg = clip(strings.TrimSpace(string(data)))
		}
		if e.RetryAfterSeconds > 0 {
			ref.retryAfter = time.Duration(e.RetryAfterSeconds) * time.Second
		} else if s, err := strconv.Atoi(r.Header.Get("Retry-After")); err == nil {
			ref.retryAfter = time.Duration(s) * time.Second
		}
		return resp, ref
	}
	if err := json.Unmarshal(data, &resp); err != nil {
		return resp, fmt.Errorf("answer: %w", err)
	}
	if resp.Port <= 0 || resp.Port > 65535 {
		return resp, fmt.Errorf("answer: port %d", resp.Port)
	}
	return resp, nil
}

// peerRequest sends one request to the peer's probe API over the rail.
func (c *Client) peerRequest(ctx context.Context, rail Rail, peer Peer, method, path string, body []byte) (*http.Response, error) {
	family := FamilyIPv4
	if !rail.IPv4.IsValid() || !peer.IPv4.IsValid() {
		family = FamilyIPv6
	}
	local, remote := rail.Addr(family), peer.Addr(family)
	dialer := &net.Dialer{LocalAddr: &net.TCPAddr{IP: local.AsSlice()}, Timeout: 5 * time.Second}
	tr := &http.Transport{DialContext: dialer.DialContext, DisableKeepAlives: true, TLSHandshakeTimeout: 5 * time.Second, ResponseHeaderTimeout: 10 * time.Second}
	scheme := "http"
	if c.TLS != nil {
		scheme = "https"
		tr.TLSClientConfig = peerTLS(c.TLS, peer.Node)
	}
	target := scheme + "://" + net.JoinHostPort(remote.String(), strconv.Itoa(c.APIPort)) + path
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, target, rd)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	// one request per transport, no keep-alive: nothing idles after it
	return (&http.Client{Transport: tr}).Do(req)
}

// end asks the peer to end a session whose client run failed, so that
// its server frees the peer NIC's probe slot now rather than at its
// timeout. Best effort: an older peer (no ID, or no DELETE) or one that
// does not answer keeps its server until the timeout, as before.
func (c *Client) end(ctx context.Context, rail Rail, peer Peer, id string) {
	if id == "" {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	r, err := c.peerRequest(ctx, rail, peer, http.MethodDelete, SessionsPath+"/"+url.PathEscape(id), nil)
	if err != nil {
		return
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(r.Body, 4<<10))
	r.Body.Close()
}

// peerTLS verifies the peer's certificate against the fabric CA and
// checks that it names the peer node: rail addresses are not in
// certificates, node names are.
func peerTLS(base *tls.Config, node string) *tls.Config {
	cfg := base.Clone()
	roots := cfg.RootCAs
	cfg.InsecureSkipVerify = true // replaced by VerifyConnection below
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return errors.New("peer sent no certificate")
		}
		inter := x509.NewCertPool()
		for _, c := range cs.PeerCertificates[1:] {
			inter.AddCert(c)
		}
		leaf := cs.PeerCertificates[0]
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
			return fmt.Errorf("peer certificate: %w", err)
		}
		if leaf.Subject.CommonName != node {
			return fmt.Errorf("peer certificate names %q, not %q", leaf.Subject.CommonName, node)
		}
		return nil
	}
	return cfg
}
