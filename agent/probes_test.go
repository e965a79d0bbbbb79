package agent

import (
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	v1 "github.com/roce-agent/roce-agent/api/v1"
	"github.com/roce-agent/roce-agent/probe"
)

func probeResult(rail int, peer, tool, family string, outcome probe.Outcome) probe.Result {
	r := probe.Result{ProbeResult: v1.ProbeResult{Rail: rail, PeerNode: peer, Tool: tool, Family: family, Time: time.Unix(1700000000, 0).UTC()}, Outcome: outcome}
	if outcome != probe.OutcomePass {
		r.Error = tool + ": Couldn't connect to 10.0.0.3:18515"
		return r
	}
	switch tool {
	case v1.ProbeToolBandwidth:
		r.ProbeResult.Bandwidth = &v1.BandwidthProbe{AvgGbps: 380, PeakGbps: 390, MessageBytes: 65536, Iterations: 5000}
	case v1.ProbeToolLatency:
		r.ProbeResult.Latency = &v1.LatencyProbe{MinUs: 1.9, TypicalUs: 2.1, P99Us: 2.8, P999Us: 4.4, MessageBytes: 2, Iterations: 1000}
	case v1.ProbeToolReachability:
		yes := true
		r.Reachable = &yes
	}
	return r
}

func TestProbeConditions(t *testing.T) {
	rail := probe.Rail{Rail: 0, Peers: []probe.Peer{{Node: "gpu-002"}, {Node: "gpu-003"}}}
	pass := func(peer, tool string) probe.Result { return probeResult(0, peer, tool, "ipv4", probe.OutcomePass) }
	slow := pass("gpu-003", v1.ProbeToolBandwidth)
	slow.ProbeResult.Bandwidth = &v1.BandwidthProbe{AvgGbps: 180.5}
	for _, tc := range []struct {
		name                 string
		rail                 probe.Rail
		served               bool
		results              []probe.Result
		rate                 float64
		reach, bw            v1.ConditionStatus
		reachWhy, bwWhy, msg string
	}{
		{"not served", rail, false, nil, 400, StatusUnknown, StatusUnknown, "NotProbed", "NotProbed", "no tenant"},
		{"no peers", probe.Rail{}, true, nil, 400, StatusUnknown, StatusUnknown, "NoPeers", "NoPeers", "no peer"},
		{"no results yet", rail, true, nil, 400, StatusUnknown, StatusUnknown, "NotProbedYet", "NotProbedYet", "2 peers"},
		{"all pass", rail, true, []probe.Result{pass("gpu-002", "rping"), pass("gpu-002", "ib_write_bw"), pass("gpu-003", "ib_write_lat")}, 400,
			StatusTrue, StatusTrue, "Reachable", "AtRate", "gpu-002 ipv4: 380.00 Gb/s"},
		{"below rate", rail, true, []probe.Result{pass("gpu-002", "rping"), slow}, 400,
			StatusTrue, StatusFalse, "Reachable", "BelowRate", "gpu-003 ipv4: 180.50 Gb/s, below 90% of the 400 Gb/s port rate"},
		{"rate unknown", rail, true, []probe.Result{slow}, 0, StatusTrue, StatusUnknown, "Reachable", "RateUnknown", "port rate is unknown"},
		{"unreachable", rail, true, []probe.Result{pass("gpu-002", "rping"), probeResult(0, "gpu-003", "rping", "ipv6", probe.OutcomeFail)}, 400,
			StatusFalse, StatusUnknown, "PeerUnreachable", "NotProbedYet", "1 of 2 failing: gpu-003 ipv6 (rping): rping: Couldn't connect"},
		{"bandwidth failed", rail, true, []probe.Result{pass("gpu-002", "rping"), probeResult(0, "gpu-002", "ib_write_bw", "ipv4", probe.OutcomeFail)}, 400,
			StatusTrue, StatusFalse, "Reachable", "ProbeFailed", "gpu-002 ipv4: ib_write_bw: Couldn't connect"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reach, bw := probeConditions(tc.rail, tc.served, tc.results, tc.rate, 0.9)
			if reach.Type != v1.ConditionPeerReachable || bw.Type != v1.ConditionBandwidthOK {
				t.Fatalf("types %s %s", reach.Type, bw.Type)
			}
			if reach.Status != tc.reach || reach.Reason != tc.reachWhy || bw.Status != tc.bw || bw.Reason != tc.bwWhy {
				t.Fatalf("got %s/%s %s/%s, want %s/%s %s/%s (%q; %q)", reach.Status, reach.Reason, bw.Status, bw.Reason,
					tc.reach, tc.reachWhy, tc.bw, tc.bwWhy, reach.Message, bw.Message)
			}
			if !strings.Contains(reach.Message+" | "+bw.Message, tc.msg) {
				t.Fatalf("messages %q | %q lack %q", reach.Message, bw.Message, tc.msg)
			}
		})
	}
}

func TestProberMetricsAndPruning(t *testing.T) {
	p := &Prober{log: slog.New(slog.NewTextHandler(io.Discard, nil)), results: map[probeKey]probe.Result{}, counts: map[countKey]float64{},
		apiHits: map[string]float64{"started": 2, "forbidden": 1}, conds: map[int]conditionSet{}}
	changed := 0
	p.changed = func() { changed++ }
	p.Record(probeResult(0, "gpu-002", v1.ProbeToolBandwidth, "ipv4", probe.OutcomePass))
	p.Record(probeResult(0, "gpu-002", v1.ProbeToolBandwidth, "ipv4", probe.OutcomePass))
	p.Record(probeResult(0, "gpu-002", v1.ProbeToolLatency, "ipv6", probe.OutcomePass))
	p.Record(probeResult(1, "gpu-009", v1.ProbeToolReachability, "ipv4", probe.OutcomeFail))
	p.Record(probe.Result{ProbeResult: v1.ProbeResult{Rail: 0, PeerNode: "gpu-003", Tool: v1.ProbeToolBandwidth, Family: "ipv4"}, Outcome: probe.OutcomeBusy})
	// First results and flips tell the controller; a repeat does not.
	if changed != 3 {
		t.Fatalf("status changes %d, want 3", changed)
	}
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(p)
	want := `
# HELP roce_agent_probe_bandwidth_bytes_per_second Average bandwidth of the last passing ib_write_bw probe to a peer.
# TYPE roce_agent_probe_bandwidth_bytes_per_second gauge
roce_agent_probe_bandwidth_bytes_per_second{family="ipv4",peer_node="gpu-002",rail="0"} 4.75e+10
# HELP roce_agent_probe_results_total Probes run, by tool and outcome (pass, fail, busy, refused, error). Peers are the rail's current peers.
# TYPE roce_agent_probe_results_total counter
roce_agent_probe_results_total{outcome="busy",peer_node="gpu-003",rail="0",tool="ib_write_bw"} 1
roce_agent_probe_results_total{outcome="fail",peer_node="gpu-009",rail="1",tool="rping"} 1
roce_agent_probe_results_total{outcome="pass",peer_node="gpu-002",rail="0",tool="ib_write_bw"} 2
roce_agent_probe_results_total{outcome="pass",peer_node="gpu-002",rail="0",tool="ib_write_lat"} 1
# HELP roce_agent_probe_api_requests_total Peer probe API requests, by result (started, ended, busy, forbidden, not_found, bad_request, too_large, rate_limited, unavailable).
# TYPE roce_agent_probe_api_requests_total counter
roce_agent_probe_api_requests_total{result="forbidden"} 1
roce_agent_probe_api_requests_total{result="started"} 2
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "roce_agent_probe_bandwidth_bytes_per_second", "roce_agent_probe_results_total", "roce_agent_probe_api_requests_total"); err != nil {
		t.Fatal(err)
	}
	if n, err := testutil.GatherAndCount(reg, "roce_agent_probe_latency_seconds"); err != nil || n != 4 {
		t.Fatalf("latency series %d, %v", n, err)
	}
	// gpu-009 leaves rail 1's peer list: its series go.
	p.prune([]probe.Rail{{Rail: 0, Peers: []probe.Peer{{Node: "gpu-002"}, {Node: "gpu-003"}}}, {Rail: 1}})
	if n, _ := testutil.GatherAndCount(reg, "roce_agent_probe_results_total"); n != 3 {
		t.Fatalf("after prune: %d result series, want 3", n)
	}
	if got := len(p.Results()); got != 2 {
		t.Fatalf("after prune: %d results, want 2", got)
	}
}

func TestProbesConfigValidation(t *testing.T) {
	base := DefaultConfig()
	for _, tc := range []struct {
		name string
		edit func(*Config)
		want string
	}{
		{"interval", func(c *Config) { c.Probes.Interval = time.Second }, "probes.interval: 1s is outside 5s-24h"},
		{"k", func(c *Config) { c.Probes.PeersPerInterval = 0 }, "probes.peers_per_interval: 0 is outside 1-64"},
		{"tool", func(c *Config) { c.Probes.Tools = []string{"ib_write_bw", "sh"} }, `probes.tools: "sh" is not`},
		{"tool twice", func(c *Config) { c.Probes.Tools = []string{"rping", "rping"} }, "probes.tools: rping is listed twice"},
		{"family", func(c *Config) { c.Probes.Families = []string{"ipx"} }, `probes.families: "ipx" is not ipv4 or ipv6`},
		{"no family", func(c *Config) { c.Probes.Families = nil }, "probes.families: must list"},
		{"fraction", func(c *Config) { c.Probes.MinFractionOfRate = 1.5 }, "probes.min_fraction_of_rate: 1.5 is outside 0-1"},
		{"bw size", func(c *Config) { c.Probes.BandwidthBytes = 1 << 30 }, "probes.bandwidth_bytes:"},
		{"bw iterations", func(c *Config) { c.Probes.BandwidthIterations = -1 }, "probes.bandwidth_iterations:"},
		{"timeout", func(c *Config) { c.Probes.Timeout = 0 }, "probes.timeout: 0s is outside 1s-1h"},
		{"tools dir", func(c *Config) { c.Probes.ToolsDir = "bin" }, `probes.tools_dir: "bin" is not an absolute path`},
		{"api port", func(c *Config) { c.Listen.ProbeAPI = "9488"; c.Probes.InsecureHTTP = true }, `listen.probe_api: "9488" is not host:port`},
		{"api without identity", func(c *Config) { c.Listen.ProbeAPI = ":9488" }, "listen.probe_api: needs the node's certificate"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := base
			c.Probes.Tools = append([]string(nil), base.Probes.Tools...)
			tc.edit(&c)
			err := c.Validate()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want %q", err, tc.want)
			}
		})
	}
	c := base
	c.Listen.ProbeAPI, c.Probes.InsecureHTTP = ":9488", true
	if err := c.Validate(); err != nil && strings.Contains(err.Error(), "probe") {
		t.Fatalf("valid probes settings refused: %v", err)
	}
}

func TestHostPins(t *testing.T) {
	rail := func(n int) *int { return &n }
	c := DefaultConfig()
	c.HostPins = []HostPin{{Rail: rail(0), Netdev: "rail0"}, {Rail: rail(1), RDMADevice: "rxe1"}}
	c.Rails = []RailConfig{{Rail: rail(1), RDMADevice: "rxe1"}, {Rail: rail(2), Netdev: "eth2"}}
	pins := c.Pins()
	if len(pins) != 3 || pins[0].Rail != 1 || pins[1].Rail != 2 || pins[2].Rail != 0 || pins[2].Netdev != "rail0" {
		t.Fatalf("pins %+v", pins)
	}
	for _, tc := range []struct {
		pins []HostPin
		want string
	}{
		{[]HostPin{{Netdev: "x"}}, "pins[0].rail: required"},
		{[]HostPin{{Rail: rail(256), Netdev: "x"}}, "pins[0].rail: 256 is outside 0-255"},
		{[]HostPin{{Rail: rail(3)}}, "pins[0]: names neither netdev nor rdma_device"},
		{[]HostPin{{Rail: rail(3), Netdev: "a"}, {Rail: rail(3), Netdev: "b"}}, "pins[1].rail: rail 3 is pinned twice"},
		{[]HostPin{{Rail: rail(3), Netdev: "a b"}}, "pins[0].netdev:"},
		{[]HostPin{{Rail: rail(2), Netdev: "eth9"}}, "pins[0]: rails[] pins rail 2 to eth2 already"},
	} {
		c.HostPins = tc.pins
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v, want %q", tc.pins, err, tc.want)
		}
	}
}
