// Package loadtest drives a controller with simulated agents over its HTTP
// API, the way roce-agent talks to it: a long-polled config, a heartbeat
// (lease renewal) every few seconds and a full status on change and
// every status interval. It measures request latency by operation and how
// long a tenant change takes to reach the agents it affects.
package loadtest

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	v1 "github.com/roce-agent/roce-agent/api/v1"
)

// Options describe the simulated fleet.
type Options struct {
	// BaseURL is the controller, e.g. http://127.0.0.1:8443.
	BaseURL string
	// Nodes are the simulated agents' node names; Token(node) is each
	// one's bearer token.
	Nodes []string
	Token func(node string) string
	// Heartbeat, StatusInterval and Wait are the agent's intervals
	// (defaults 10s, 5m, 30s).
	Heartbeat, StatusInterval, Wait time.Duration
	// Status builds a node's status body for an applied generation.
	Status func(node string, generation int64) []byte
	// SourceAddrs spread the agents' connections over local addresses
	// (127.0.0.x), so that more than one port range of connections fit.
	SourceAddrs []string
	// Start is how long the fleet takes to come up (connections spread
	// over it).
	Start time.Duration
	// HTTP2 makes the agents share connections as HTTP/2 streams
	// (unencrypted, h2c with prior knowledge), the way agents behind an
	// L7 load balancer reach the controller: ConnsPerSource clients per
	// source address (default 4), each opening another connection when
	// the controller's stream limit is reached. Without it every agent
	// has its own HTTP/1.1 connections (one per request in flight), as
	// agents that each reach the controller directly do.
	HTTP2          bool
	ConnsPerSource int
}

// Mode says how the agents' requests reach the controller.
func (o Options) Mode() string {
	if o.HTTP2 {
		return fmt.Sprintf("HTTP/2 (h2c): agents multiplexed as streams over shared connections, %d clients per source address x %d source addresses (like agents behind an L7 load balancer)", cmp.Or(o.ConnsPerSource, 4), max(len(o.SourceAddrs), 1))
	}
	return fmt.Sprintf("HTTP/1.1: each agent's long-poll holds its own connection, as agents reaching the controller directly; heartbeats and statuses share up to %d connections per source address (%d)", shortConns, max(len(o.SourceAddrs), 1))
}

// Op names a measured request kind.
type Op string

// Operations.
const (
	OpConfig    Op = "config GET (answered at once)"
	OpHeartbeat Op = "lease PUT (heartbeat)"
	OpStatus    Op = "status PUT"
)

// Fleet is a running set of simulated agents.
type Fleet struct {
	opts    Options
	clients []*http.Client
	// short carry heartbeats and statuses: over HTTP/1.1 a shared pool
	// per source address (shortConns at most), so that connections are
	// one per agent for its long-poll plus the pool.
	short     []*http.Client
	measuring atomic.Bool

	mu       sync.Mutex
	lat      map[Op][]time.Duration
	errs     map[string]int
	receipts map[string][]Receipt
	ready    int
	readyCh  chan struct{}
}

// Receipt is a config an agent received.
type Receipt struct {
	At         time.Time
	Generation int64
	// Tenant0 is rail 0's tenant ("" none).
	Tenant0 string
}

// Start brings the fleet up; Ready is closed when every agent has its
// first config.
func Start(ctx context.Context, o Options) *Fleet {
	if o.Heartbeat == 0 {
		o.Heartbeat = 10 * time.Second
	}
	if o.StatusInterval == 0 {
		o.StatusInterval = 5 * time.Minute
	}
	if o.Wait == 0 {
		o.Wait = 30 * time.Second
	}
	if len(o.SourceAddrs) == 0 {
		o.SourceAddrs = []string{""}
	}
	if o.ConnsPerSource <= 0 {
		o.ConnsPerSource = 4
	}
	f := &Fleet{opts: o, lat: map[Op][]time.Duration{}, errs: map[string]int{}, receipts: map[string][]Receipt{}, readyCh: make(chan struct{})}
	for _, src := range o.SourceAddrs {
		d := &net.Dialer{Timeout: 10 * time.Second}
		if src != "" {
			d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(src)}
		}
		if !o.HTTP2 {
			f.clients = append(f.clients, &http.Client{Transport: &http.Transport{
				DialContext: d.DialContext, MaxIdleConns: 0, MaxIdleConnsPerHost: 1 << 20, IdleConnTimeout: 2 * time.Minute,
				DisableCompression: true,
			}})
			f.short = append(f.short, &http.Client{Transport: &http.Transport{
				DialContext: d.DialContext, MaxIdleConns: 0, MaxIdleConnsPerHost: shortConns, MaxConnsPerHost: shortConns,
				IdleConnTimeout: 2 * time.Minute, DisableCompression: true,
			}})
			continue
		}
		for range o.ConnsPerSource {
			protos := new(http.Protocols)
			protos.SetUnencryptedHTTP2(true)
			f.clients = append(f.clients, &http.Client{Transport: &http.Transport{
				DialContext: d.DialContext, Protocols: protos, IdleConnTimeout: 2 * time.Minute, DisableCompression: true,
				HTTP2: &http.HTTP2Config{SendPingTimeout: 30 * time.Second},
			}})
		}
	}
	if f.short == nil {
		f.short = f.clients
	}
	for i, n := range o.Nodes {
		delay := time.Duration(0)
		if o.Start > 0 {
			delay = time.Duration(int64(o.Start) * int64(i) / int64(len(o.Nodes)))
		}
		go f.agent(ctx, n, f.clients[i%len(f.clients)], f.short[i%len(f.short)], delay)
	}
	return f
}

// Ready is closed when every agent has its first config.
func (f *Fleet) Ready() <-chan struct{} { return f.readyCh }

// Measure starts (true) or stops recording latencies.
func (f *Fleet) Measure(on bool) { f.measuring.Store(on) }

func (f *Fleet) record(op Op, d time.Duration) {
	if !f.measuring.Load() {
		return
	}
	f.mu.Lock()
	f.lat[op] = append(f.lat[op], d)
	f.mu.Unlock()
}

func (f *Fleet) fail(what string) {
	f.mu.Lock()
	f.errs[what]++
	f.mu.Unlock()
}

func (f *Fleet) do(ctx context.Context, c *http.Client, node, method, path string, body []byte, hdr map[string]string) (int, http.Header, []byte, time.Duration, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, f.opts.BaseURL+path, rd)
	if err != nil {
		return 0, nil, nil, 0, err
	}
	req.Header.Set("Authorization", "Bearer "+f.opts.Token(node))
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	t0 := time.Now()
	resp, err := c.Do(req)
	if err != nil {
		return 0, nil, nil, time.Since(t0), err
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	resp.Body.Close()
	return resp.StatusCode, resp.Header, b, time.Since(t0), err
}

// shortConns bounds an HTTP/1.1 source address's connections for
// heartbeats and statuses.
const shortConns = 256

func (f *Fleet) agent(ctx context.Context, node string, c, short *http.Client, delay time.Duration) {
	select {
	case <-time.After(delay):
	case <-ctx.Done():
		return
	}
	var gen atomic.Int64
	statusNow := make(chan struct{}, 1)
	go f.heartbeats(ctx, node, short, &gen)
	go f.statuses(ctx, node, short, &gen, statusNow)
	etag := ""
	first := true
	backoff := time.Second
	for ctx.Err() == nil {
		path := "/v1/nodes/" + node + "/config"
		hdr := map[string]string{}
		if etag != "" {
			path += "?wait=" + f.opts.Wait.String()
			hdr["If-None-Match"] = etag
		}
		code, h, body, d, err := f.do(ctx, c, node, http.MethodGet, path, nil, hdr)
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			f.fail("config: " + err.Error())
		case code == http.StatusNotModified:
			backoff = time.Second
			continue
		case code == http.StatusOK:
			backoff = time.Second
			var cfg v1.NodeConfig
			if err := json.Unmarshal(body, &cfg); err != nil {
				f.fail("config: bad body")
				break
			}
			if etag == "" || d < time.Second {
				// Answered at once: a first fetch, or a change that
				// arrived while the request was on its way.
				f.record(OpConfig, d)
			}
			etag = h.Get("ETag")
			gen.Store(cfg.Generation)
			r := Receipt{At: time.Now(), Generation: cfg.Generation}
			if len(cfg.Rails) > 0 && cfg.Rails[0].Tenant != nil {
				r.Tenant0 = cfg.Rails[0].Tenant.ID
			}
			f.mu.Lock()
			f.receipts[node] = append(f.receipts[node], r)
			if first {
				first = false
				f.ready++
				if f.ready == len(f.opts.Nodes) {
					close(f.readyCh)
				}
			}
			f.mu.Unlock()
			select {
			case statusNow <- struct{}{}:
			default:
			}
			continue
		default:
			f.fail("config: HTTP " + strconv.Itoa(code))
		}
		select {
		case <-time.After(backoff + rand.N(backoff)):
		case <-ctx.Done():
			return
		}
		backoff = min(2*backoff, 30*time.Second)
	}
}

func (f *Fleet) heartbeats(ctx context.Context, node string, c *http.Client, gen *atomic.Int64) {
	t := time.NewTimer(rand.N(f.opts.Heartbeat))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		t.Reset(f.opts.Heartbeat)
		body, _ := json.Marshal(v1.Heartbeat{AppliedGeneration: gen.Load()})
		code, _, _, d, err := f.do(ctx, c, node, http.MethodPut, "/v1/nodes/"+node+"/lease", body, nil)
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			f.fail("lease: " + err.Error())
		case code != http.StatusNoContent:
			f.fail("lease: HTTP " + strconv.Itoa(code))
		default:
			f.record(OpHeartbeat, d)
		}
	}
}

// statuses sends the status when a config arrives (a change) and every
// status interval, the first after a random part of it.
func (f *Fleet) statuses(ctx context.Context, node string, c *http.Client, gen *atomic.Int64, now <-chan struct{}) {
	t := time.NewTimer(rand.N(f.opts.StatusInterval))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			t.Reset(f.opts.StatusInterval)
		case <-now:
		}
		code, _, _, d, err := f.do(ctx, c, node, http.MethodPut, "/v1/nodes/"+node+"/status", f.opts.Status(node, gen.Load()), nil)
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			f.fail("status: " + err.Error())
		case code != http.StatusNoContent:
			f.fail("status: HTTP " + strconv.Itoa(code))
		default:
			f.record(OpStatus, d)
		}
	}
}

// Stats are latency figures of one operation.
type Stats struct {
	Count         int
	P50, P99, Max time.Duration
}

// Latencies returns the recorded figures by operation.
func (f *Fleet) Latencies() map[Op]Stats {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := map[Op]Stats{}
	for op, l := range f.lat {
		out[op] = Summarize(l)
	}
	return out
}

// ResetLatencies forgets what was recorded.
func (f *Fleet) ResetLatencies() {
	f.mu.Lock()
	f.lat = map[Op][]time.Duration{}
	f.mu.Unlock()
}

// Errors returns the failures by kind.
func (f *Fleet) Errors() map[string]int {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := map[string]int{}
	for k, v := range f.errs {
		out[k] = v
	}
	return out
}

// Summarize computes p50, p99 and max.
func Summarize(l []time.Duration) Stats {
	if len(l) == 0 {
		return Stats{}
	}
	s := slices.Clone(l)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	q := func(p float64) time.Duration { return s[min(len(s)-1, int(p*float64(len(s))))] }
	return Stats{Count: len(s), P50: q(0.50), P99: q(0.99), Max: s[len(s)-1]}
}

// Propagation is how long after t0 each node first received a config
// whose rail 0 is in tenant (the moved nodes), or, with tenant "", its
// last config received within window after t0 (every affected node).
func (f *Fleet) Propagation(t0 time.Time, nodes []string, tenant string, window time.Duration) (got []time.Duration, missing []string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, n := range nodes {
		var at time.Time
		for _, r := range f.receipts[n] {
			if r.At.Before(t0) || r.At.After(t0.Add(window)) {
				continue
			}
			if tenant != "" && r.Tenant0 == tenant {
				at = r.At
				break
			}
			if tenant == "" {
				at = r.At
			}
		}
		if at.IsZero() {
			missing = append(missing, n)
			continue
		}
		got = append(got, at.Sub(t0))
	}
	return got, missing
}

// Admin does administrator requests with a token.
type Admin struct {
	BaseURL, Token string
	Client         *http.Client
}

// Do sends a JSON body and decodes a JSON answer into out (nil: ignored).
func (a Admin) Do(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, a.BaseURL+path, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+a.Token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := a.Client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s %s: HTTP %d: %s", method, path, resp.StatusCode, bytes.TrimSpace(b))
	}
	if out != nil {
		return json.Unmarshal(b, out)
	}
	return nil
}

// FleetPlan is the fabric the load test serves: n nodes in tenants of 1,000 whole nodes (server
// isolation), 8 rails.
func FleetPlan(n int) v1.FabricPlan {
	p := v1.FabricPlan{Rails: 8}
	for r := 0; r < 8; r++ {
		p.Addressing.IPv4Pools = append(p.Addressing.IPv4Pools, fmt.Sprintf("10.%d.0.0/16", 100+r))
		p.Addressing.IPv6Pools = append(p.Addressing.IPv6Pools, fmt.Sprintf("fd00:0:0:%x::/64", 0x100+r))
	}
	for i := 0; i < n; i++ {
		p.Nodes = append(p.Nodes, v1.PlanNode{Name: fmt.Sprintf("gpu-%05d", i), Index: i})
	}
	for k := 0; k*1000 < n; k++ {
		t := v1.Tenant{ID: fmt.Sprintf("tenant-%02d", k), VRF: fmt.Sprintf("T%02d", k), VNI: 10000 + k}
		for i := k * 1000; i < min(n, (k+1)*1000); i++ {
			t.Members = append(t.Members, v1.TenantMember{Node: p.Nodes[i].Name})
		}
		p.Tenants = append(p.Tenants, t)
	}
	return p
}
