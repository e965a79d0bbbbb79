package agent

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	v1 "github.com/roce-agent/roce-agent/api/v1"
	"github.com/roce-agent/roce-agent/probe"
)

// ProbeRails returns the rails this node probes from and serves probes
// on: those with a host address, an RDMA device and a tenant, with the
// peers the controller listed. It reads the desired state of the last
// refresh (Apply, Plan or Refresh).
func (n *Node) ProbeRails() []probe.Rail {
	n.mu.Lock()
	cfg, inv, desired := n.cfg, n.inv, n.desired
	n.mu.Unlock()
	if inv == nil {
		return nil
	}
	byRail := map[int]RailConfig{}
	for _, r := range cfg.Rails {
		if r.Rail != nil {
			byRail[*r.Rail] = r
		}
	}
	devices := map[int]string{}
	for _, r := range inv.Rails {
		devices[r.Rail] = r.RDMADevice
	}
	tclass := -1
	if cfg.QoS.RoCETos != nil {
		tclass = *cfg.QoS.RoCETos
	}
	var out []probe.Rail
	for _, d := range desired {
		rc := byRail[d.Rail]
		if rc.Tenant == nil || devices[d.Rail] == "" {
			continue
		}
		r := probe.Rail{Rail: d.Rail, Netdev: d.Netdev, Device: devices[d.Rail], Port: 1, Tenant: rc.Tenant.ID, MTU: d.MTU, TClass: tclass}
		if d.IPv4.IsValid() {
			r.IPv4 = d.IPv4.Addr()
		}
		if d.IPv6.IsValid() {
			r.IPv6 = d.IPv6.Addr()
		}
		for _, p := range rc.Peers {
			peer := probe.Peer{Node: p.Node, Rail: p.Rail, IPv4: hostAddr(p.IPv4), IPv6: hostAddr(p.IPv6)}
			if peer.IPv4.IsValid() || peer.IPv6.IsValid() {
				r.Peers = append(r.Peers, peer)
			}
		}
		out = append(out, r)
	}
	return out
}

// hostAddr reads an address written bare or with its prefix length.
func hostAddr(s string) netip.Addr {
	if p, err := netip.ParsePrefix(s); err == nil {
		return p.Addr()
	}
	a, _ := netip.ParseAddr(s)
	return a
}

// probeHost is the probe package's view of the node.
type probeHost struct{ node *Node }

func (h probeHost) Rail(n int) (probe.Rail, bool) {
	for _, r := range h.node.ProbeRails() {
		if r.Rail == n {
			return r, true
		}
	}
	return probe.Rail{}, false
}

func (h probeHost) GIDIndex(device string, port int, addr netip.Addr, netdev string) (int, error) {
	return h.node.FS().GIDIndex(device, port, addr, netdev)
}

// LinkUp says why a rail's netdev cannot carry traffic (nil: it can).
func (n *Node) LinkUp(netdev string) error {
	st, err := n.NetdevState(netdev)
	if err != nil {
		return fmt.Errorf("rail %s: %w", netdev, err)
	}
	if !st.Up {
		return fmt.Errorf("%s is down (no carrier): check the cable or optic and the leaf port", netdev)
	}
	return nil
}

// ProbeTLS is the node's TLS identity for the peer probe API: its
// controller certificate and the fabric CA; nil with probes.insecure_http.
func ProbeTLS(cfg Config) (*tls.Config, error) {
	if cfg.Probes.InsecureHTTP {
		return nil, nil
	}
	cert, err := cfg.Controller.keyPair()
	if err != nil {
		return nil, err
	}
	if cert == nil {
		return nil, fmt.Errorf("listen.probe_api: no node certificate (controller.cert_file, controller.key_file)")
	}
	pool, err := cfg.Controller.rootCAs()
	if err != nil {
		return nil, err
	}
	if pool == nil {
		return nil, fmt.Errorf("listen.probe_api: no fabric CA (controller.ca_file)")
	}
	return &tls.Config{Certificates: []tls.Certificate{*cert}, RootCAs: pool, ClientCAs: pool,
		ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS13}, nil
}

// ProbeAPIPort is the port of listen.probe_api: the port peers serve on.
func ProbeAPIPort(cfg Config) (int, error) {
	_, p, err := net.SplitHostPort(cfg.Listen.ProbeAPI)
	if err != nil {
		return 0, fmt.Errorf("listen.probe_api: %w", err)
	}
	port, err := strconv.Atoi(p)
	if err != nil || port < 1 || port > 65535 {
		return 0, fmt.Errorf("listen.probe_api: port %q", p)
	}
	return port, nil
}

// ProbeTests are the tests of one peer in a round, from the settings.
func ProbeTests(p ProbesConfig, tools, families []string) []probe.Test {
	if len(tools) == 0 {
		tools = p.Tools
	}
	if len(families) == 0 {
		families = p.Families
	}
	var out []probe.Test
	for _, tool := range tools {
		for _, f := range families {
			t := probe.Test{Tool: tool, Family: f}
			switch tool {
			case v1.ProbeToolBandwidth:
				t.MessageBytes, t.Iterations = p.BandwidthBytes, p.BandwidthIterations
			case v1.ProbeToolLatency:
				t.Iterations = p.LatencyIterations
			case v1.ProbeToolReachability:
				t.Count = p.Pings
			}
			out = append(out, t)
		}
	}
	return out
}

// NewProbeClient is the client the daemon and roce-agent probe use.
func NewProbeClient(node *Node, cfg Config, tlsCfg *tls.Config, slots *probe.Slots) (*probe.Client, error) {
	port, err := ProbeAPIPort(cfg)
	if err != nil {
		return nil, err
	}
	return &probe.Client{Host: probeHost{node}, Runner: probe.ExecRunner{Dir: cfg.Probes.ToolsDir}, Slots: slots, TLS: tlsCfg,
		APIPort: port, Timeout: cfg.Probes.Timeout, LinkUp: node.LinkUp}, nil
}

// probeKey names a result: one per rail, peer, tool and family.
type probeKey struct {
	rail         int
	peer         string
	peerRail     int
	tool, family string
}

type countKey struct {
	rail       int
	peer, tool string
	outcome    probe.Outcome
}

// Prober runs the node's probes: it serves the peer probe API and runs the
// scheduled rounds, and keeps the last result of each probe for the
// status, the conditions and the metrics.
type Prober struct {
	node    *Node
	log     *slog.Logger
	client  *probe.Client
	api     *probe.API
	changed func() // the status changed in a way the controller should hear now

	mu      sync.Mutex
	results map[probeKey]probe.Result
	counts  map[countKey]float64
	apiHits map[string]float64
	conds   map[int]conditionSet // transition times of the probe conditions, by rail
}

// NewProber sets up the node's prober from the configuration (which has
// listen.probe_api set).
func NewProber(node *Node, cfg Config, log *slog.Logger, changed func()) (*Prober, error) {
	tlsCfg, err := ProbeTLS(cfg)
	if err != nil {
		return nil, err
	}
	// Slots are lock files in the state directory: the daemon and
	// roce-agent probe never test one NIC at once.
	slots := &probe.Slots{Dir: cfg.StateDir}
	client, err := NewProbeClient(node, cfg, tlsCfg, slots)
	if err != nil {
		return nil, err
	}
	p := &Prober{node: node, log: log, client: client, changed: changed,
		results: map[probeKey]probe.Result{}, counts: map[countKey]float64{}, apiHits: map[string]float64{}, conds: map[int]conditionSet{}}
	p.api = &probe.API{Host: probeHost{node}, Runner: client.Runner, Slots: slots, Log: log, Timeout: cfg.Probes.Timeout,
		RequireCertificate: tlsCfg != nil, Count: func(r string) { p.mu.Lock(); p.apiHits[r]++; p.mu.Unlock() }}
	return p, nil
}

// TLS is the API's server configuration (nil: plain HTTP).
func (p *Prober) TLS() *tls.Config { return p.client.TLS }

// Handler serves the peer probe API.
func (p *Prober) Handler() *probe.API { return p.api }

// Record keeps a result: the last of its kind, counted by outcome. A
// result that flips a probe between pass and fail is logged and
// reported to the controller at once.
func (p *Prober) Record(r probe.Result) {
	if r.Outcome == probe.OutcomeBusy {
		p.mu.Lock()
		p.counts[countKey{r.Rail, r.PeerNode, r.Tool, r.Outcome}]++
		p.mu.Unlock()
		return
	}
	k := probeKey{r.Rail, r.PeerNode, r.PeerRail, r.Tool, r.Family}
	p.mu.Lock()
	prev, had := p.results[k]
	p.results[k] = r
	p.counts[countKey{r.Rail, r.PeerNode, r.Tool, r.Outcome}]++
	p.mu.Unlock()
	log := p.log.With("rail", r.Rail, "peer_node", r.PeerNode, "tool", r.Tool, "family", r.Family)
	flipped := !had || (prev.Outcome == probe.OutcomePass) != (r.Outcome == probe.OutcomePass)
	switch {
	case r.Outcome == probe.OutcomePass && flipped && had:
		log.Info("probe passes again", "result", DescribeProbe(r.ProbeResult))
	case r.Outcome != probe.OutcomePass && (flipped || prev.Error != r.Error):
		log.Warn("probe failed", "outcome", r.Outcome, "err", r.Error)
	default:
		log.Debug("probe", "outcome", r.Outcome, "result", DescribeProbe(r.ProbeResult))
	}
	if flipped && p.changed != nil {
		p.changed()
	}
}

// DescribeProbe is a probe result's figure in words (its error when it
// failed): the daemon's logs and roce-agent probe's table.
func DescribeProbe(r v1.ProbeResult) string {
	switch {
	case r.Error != "":
		return r.Error
	case r.Bandwidth != nil:
		return fmt.Sprintf("%.2f Gb/s average, %.2f Gb/s peak (%d x %d B)", r.Bandwidth.AvgGbps, r.Bandwidth.PeakGbps, r.Bandwidth.Iterations, r.Bandwidth.MessageBytes)
	case r.Latency != nil:
		l := r.Latency
		return fmt.Sprintf("%.2f us typical, %.2f min, %.2f p99, %.2f p99.9 (%d x %d B)", l.TypicalUs, l.MinUs, l.P99Us, l.P999Us, l.Iterations, l.MessageBytes)
	case r.Reachable != nil && *r.Reachable:
		return "reachable over RDMA CM"
	}
	return ""
}

// prune drops results and counters of peers a rail no longer lists, so
// that the metrics' peer labels stay the controller's bounded list.
func (p *Prober) prune(rails []probe.Rail) {
	keep := map[int]map[string]bool{}
	for _, r := range rails {
		keep[r.Rail] = map[string]bool{}
		for _, peer := range r.Peers {
			keep[r.Rail][peer.Node] = true
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for k := range p.results {
		if !keep[k.rail][k.peer] {
			delete(p.results, k)
		}
	}
	for k := range p.counts {
		if !keep[k.rail][k.peer] {
			delete(p.counts, k)
		}
	}
}

// Results returns the last results, sorted by rail, peer, tool, family.
func (p *Prober) Results() []probe.Result {
	p.mu.Lock()
	out := make([]probe.Result, 0, len(p.results))
	for _, r := range p.results {
		out = append(out, r)
	}
	p.mu.Unlock()
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.Rail != b.Rail {
			return a.Rail < b.Rail
		}
		if a.PeerNode != b.PeerNode {
			return a.PeerNode < b.PeerNode
		}
		if a.Tool != b.Tool {
			return a.Tool < b.Tool
		}
		return a.Family < b.Family
	})
	return out
}

// Run runs the scheduled rounds until ctx ends. Rounds are aligned to
// the wall clock (round i starts at i*interval since the epoch), so that
// the fleet's rotations agree and every NIC serves about as many tests
// as it runs.
func (p *Prober) Run(ctx context.Context, cfg func() Config) {
	type railState struct {
		deferred []string
		busy     bool
	}
	var mu sync.Mutex
	states := map[int]*railState{}
	var wg sync.WaitGroup
	defer wg.Wait()
	rnd := rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
	for {
		c := cfg()
		interval := c.Probes.Interval
		if interval <= 0 {
			interval = time.Minute // no rounds; look again later
		}
		now := time.Now()
		round := uint64(now.UnixNano() / int64(interval))
		end := time.Unix(0, int64(round+1)*int64(interval))
		rails := p.node.ProbeRails()
		p.prune(rails)
		if c.Probes.Interval > 0 {
			for _, r := range rails {
				mu.Lock()
				st := states[r.Rail]
				if st == nil {
					st = &railState{}
					states[r.Rail] = st
				}
				if st.busy { // the last round is still retrying
					mu.Unlock()
					continue
				}
				st.busy = true
				deferred := st.deferred
				mu.Unlock()
				wg.Add(1)
				go func(r probe.Rail, seed uint64) {
					defer wg.Done()
					left := p.round(ctx, c, r, round, deferred, end, rand.New(rand.NewPCG(seed, round)))
					mu.Lock()
					st.deferred, st.busy = left, false
					mu.Unlock()
				}(r, rnd.Uint64())
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Until(end)):
		}
	}
}

// round probes one rail's peers of round i: each peer at its own jittered
// start, every test of the round against it in turn. A busy peer is
// retried while the round lasts and then carried to the next round.
func (p *Prober) round(ctx context.Context, c Config, r probe.Rail, i uint64, deferred []string, end time.Time, rnd *rand.Rand) []string {
	names := make([]string, 0, len(r.Peers))
	byName := map[string]probe.Peer{}
	self := c.Node.Name
	for _, peer := range r.Peers {
		if peer.Node == self {
			continue
		}
		if _, dup := byName[peer.Node]; !dup {
			names = append(names, peer.Node)
		}
		byName[peer.Node] = peer
	}
	if len(names) == 0 {
		return nil
	}
	rot, err := probe.NewRotation(self, names, c.Probes.PeersPerInterval)
	if err != nil {
		p.log.Warn("probe schedule", "rail", r.Rail, "err", err)
		return nil
	}
	peers := rot.Next(i, deferred)
	start := time.Now()
	starts := probe.Starts(time.Until(end), len(peers), rnd)
	tests := ProbeTests(c.Probes, nil, nil)
	var carry []string
	for j, name := range peers {
		if !sleepUntil(ctx, start.Add(starts[j])) {
			return nil
		}
		peer := byName[name]
		for _, t := range tests {
			if !r.Addr(t.Family).IsValid() || !peer.Addr(t.Family).IsValid() {
				continue
			}
			res, gaveUp := p.probeRetrying(ctx, r, peer, t, end, rnd)
			if ctx.Err() != nil {
				return nil
			}
			if gaveUp {
				carry = append(carry, name)
				break
			}
			p.Record(res)
		}
	}
	return carry
}

// probeRetrying runs one test, again while a NIC is busy; gaveUp says it
// stayed busy until the round's retries ran out.
func (p *Prober) probeRetrying(ctx context.Context, r probe.Rail, peer probe.Peer, t probe.Test, end time.Time, rnd *rand.Rand) (probe.Result, bool) {
	for attempt := 1; ; attempt++ {
		res := p.client.Probe(ctx, r, peer, t)
		if res.Outcome != probe.OutcomeBusy {
			return res, false
		}
		p.Record(res)
		wait := probe.RetryAfter(res.RetryAfter, attempt, rnd)
		if probe.ShouldDefer(attempt, wait, time.Until(end)) {
			return res, true
		}
		if !sleepUntil(ctx, time.Now().Add(wait)) {
			return res, false
		}
	}
}

func sleepUntil(ctx context.Context, t time.Time) bool {
	d := time.Until(t)
	if d <= 0 {
		return ctx.Err() == nil
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-timer.C:
		return true
	}
}

// Conditions adds PeerReachable and BandwidthOK to each rail of st from
// the last results: reachability from rping and latency runs (bandwidth
// runs when no other tool is configured), bandwidth against
// minFraction of the port rate.
func (p *Prober) Conditions(st *NodeStatus, minFraction float64, now time.Time) {
	results := p.Results()
	rails := p.node.ProbeRails()
	served := map[int]probe.Rail{}
	for _, r := range rails {
		served[r.Rail] = r
	}
	byRail := map[int][]probe.Result{}
	for _, r := range results {
		byRail[r.Rail] = append(byRail[r.Rail], r)
		st.Probes = append(st.Probes, r.ProbeResult)
	}
	for i := range st.Rails {
		rs := &st.Rails[i]
		rate := 0.0
		if st.Inventory != nil {
			if n := st.Inventory.NIC(rs.RDMADevice); n != nil {
				rate = n.RateGbps
			}
		}
		r, ok := served[rs.Rail]
		reach, bw := probeConditions(r, ok, byRail[rs.Rail], rate, minFraction)
		p.mu.Lock()
		cs := p.conds[rs.Rail]
		if cs == nil {
			cs = conditionSet{}
			p.conds[rs.Rail] = cs
		}
		reach, bw = cs.set(reach.Type, now, reach), cs.set(bw.Type, now, bw)
		p.mu.Unlock()
		rs.Conditions = append(slices.Clip(rs.Conditions), reach, bw)
	}
}

// probeConditions judges one rail.
func probeConditions(r probe.Rail, served bool, results []probe.Result, rateGbps, minFraction float64) (Condition, Condition) {
	reach := Condition{Type: v1.ConditionPeerReachable}
	bw := Condition{Type: v1.ConditionBandwidthOK}
	switch {
	case !served:
		reach.Status, reach.Reason = StatusUnknown, "NotProbed"
		reach.Message = "the rail has no tenant, address or RDMA device to probe from"
		bw.Status, bw.Reason, bw.Message = reach.Status, reach.Reason, reach.Message
		return reach, bw
	case len(r.Peers) == 0:
		reach.Status, reach.Reason, reach.Message = StatusUnknown, "NoPeers", "the controller lists no peer for the rail"
		bw.Status, bw.Reason, bw.Message = reach.Status, reach.Reason, reach.Message
		return reach, bw
	}
	onlyBW := true
	for _, res := range results {
		if res.Tool != v1.ProbeToolBandwidth {
			onlyBW = false
		}
	}
	var reachable, unreachable, bwOK, bwBad []string
	var bwFirst string
	for _, res := range results {
		who := res.PeerNode + " " + res.Family
		if res.Tool != v1.ProbeToolBandwidth || onlyBW {
			if res.Error != "" {
				unreachable = append(unreachable, who+" ("+res.Tool+"): "+res.Error)
			} else {
				reachable = append(reachable, who)
			}
		}
		if res.Tool != v1.ProbeToolBandwidth {
			continue
		}
		switch {
		case res.Error != "":
			bwBad = append(bwBad, who+": "+res.Error)
		case res.ProbeResult.Bandwidth != nil && rateGbps > 0 && res.ProbeResult.Bandwidth.AvgGbps < minFraction*rateGbps:
			bwBad = append(bwBad, fmt.Sprintf("%s: %.2f Gb/s, below %.3g%% of the %.0f Gb/s port rate", who, res.ProbeResult.Bandwidth.AvgGbps, minFraction*100, rateGbps))
		case res.ProbeResult.Bandwidth != nil:
			bwOK = append(bwOK, who)
			if bwFirst == "" {
				bwFirst = fmt.Sprintf("%s: %.2f Gb/s", who, res.ProbeResult.Bandwidth.AvgGbps)
			}
		}
	}
	summary := func(bad []string, total int) string {
		msg := fmt.Sprintf("%d of %d failing: %s", len(bad), total, bad[0])
		if len(bad) > 1 {
			msg += fmt.Sprintf("; and %d more", len(bad)-1)
		}
		return msg
	}
	switch {
	case len(unreachable) > 0:
		reach.Status, reach.Reason, reach.Message = StatusFalse, "PeerUnreachable", summary(unreachable, len(unreachable)+len(reachable))
	case len(reachable) > 0:
		reach.Status, reach.Reason, reach.Message = StatusTrue, "Reachable", fmt.Sprintf("%d probes passed: %s", len(reachable), strings.Join(firstN(reachable, 4), ", "))
	default:
		reach.Status, reach.Reason, reach.Message = StatusUnknown, "NotProbedYet", fmt.Sprintf("%d peers, no result yet", len(r.Peers))
	}
	switch {
	case len(bwBad) > 0:
		bw.Status, bw.Reason, bw.Message = StatusFalse, "BelowRate", summary(bwBad, len(bwBad)+len(bwOK))
		for _, res := range results {
			if res.Tool == v1.ProbeToolBandwidth && res.Error != "" {
				bw.Reason = "ProbeFailed"
			}
		}
	case len(bwOK) > 0 && rateGbps > 0:
		bw.Status, bw.Reason, bw.Message = StatusTrue, "AtRate", fmt.Sprintf("%d of %d at or above %.3g%% of %.0f Gb/s; %s", len(bwOK), len(bwOK), minFraction*100, rateGbps, bwFirst)
	case len(bwOK) > 0:
		bw.Status, bw.Reason, bw.Message = StatusUnknown, "RateUnknown", "the port rate is unknown; "+bwFirst
	default:
		bw.Status, bw.Reason, bw.Message = StatusUnknown, "NotProbedYet", "no bandwidth result yet"
	}
	return reach, bw
}

func firstN(s []string, n int) []string {
	if len(s) > n {
		return append(s[:n:n], "...")
	}
	return s
}

// Metrics of the probes, read at scrape time from the last results.
var (
	descProbeBandwidth = desc("probe_bandwidth_bytes_per_second", "Average bandwidth of the last passing ib_write_bw probe to a peer.", "rail", "peer_node", "family")
	descProbeLatency   = desc("probe_latency_seconds", "Latency of the last passing ib_write_lat probe to a peer, by statistic (min, typical, p99, p99_9).", "rail", "peer_node", "family", "stat")
	descProbeResults   = prometheus.NewDesc(namespace+"_probe_results_total", "Probes run, by tool and outcome (pass, fail, busy, refused, error). Peers are the rail's current peers.", []string{"rail", "peer_node", "tool", "outcome"}, nil)
	descProbeUp        = desc("probe_success", "1 when the last probe of a tool to a peer passed, 0 when it failed.", "rail", "peer_node", "tool", "family")
	descProbeAPI       = prometheus.NewDesc(namespace+"_probe_api_requests_total", "Peer probe API requests, by result (started, ended, busy, forbidden, not_found, bad_request, too_large, rate_limited, unavailable).", []string{"result"}, nil)
)

// Describe sends nothing: the collector is unchecked.
func (p *Prober) Describe(chan<- *prometheus.Desc) {}

// Collect writes the probe metrics.
func (p *Prober) Collect(ch chan<- prometheus.Metric) {
	for _, r := range p.Results() {
		rail := strconv.Itoa(r.Rail)
		up := 0.0
		if r.Outcome == probe.OutcomePass {
			up = 1
		}
		gauge(ch, descProbeUp, up, rail, r.PeerNode, r.Tool, r.Family)
		if b := r.ProbeResult.Bandwidth; b != nil {
			gauge(ch, descProbeBandwidth, b.AvgGbps*1e9/8, rail, r.PeerNode, r.Family)
		}
		if l := r.ProbeResult.Latency; l != nil {
			for _, s := range []struct {
				name string
				us   float64
			}{{"min", l.MinUs}, {"typical", l.TypicalUs}, {"p99", l.P99Us}, {"p99_9", l.P999Us}} {
				gauge(ch, descProbeLatency, s.us/1e6, rail, r.PeerNode, r.Family, s.name)
			}
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for k, v := range p.counts {
		ch <- prometheus.MustNewConstMetric(descProbeResults, prometheus.CounterValue, v, strconv.Itoa(k.rail), k.peer, k.tool, string(k.outcome))
	}
	for k, v := range p.apiHits {
		ch <- prometheus.MustNewConstMetric(descProbeAPI, prometheus.CounterValue, v, k)
	}
}
