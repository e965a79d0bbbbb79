package agent

import (
	"errors"
	"log/slog"
	"runtime"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/roce-agent/roce-agent/nic"
	"github.com/roce-agent/roce-agent/qos"
)

const namespace = "roce_agent"

// Metrics is the agent's own registry: reconcile counters kept by the
// loop, and a collector that reads hardware state at scrape time.
type Metrics struct {
	Registry          *prometheus.Registry
	Reconciles        prometheus.Counter
	ReconcileErrors   prometheus.Counter
	ReconcileDuration prometheus.Histogram
	Drift             *prometheus.CounterVec
	// ReloadSuccess is 1 when the last configuration reload was applied
	// (and before any), 0 when it was rejected; ReloadTime is when one
	// last succeeded (the start, before any).
	ReloadSuccess prometheus.Gauge
	ReloadTime    prometheus.Gauge
}

// NewMetrics registers the agent's metrics; snap gives the collector the
// current inventory and status at scrape time.
func NewMetrics(version string, fs func() *nic.FS, pfc PFCReader, netdev func(string) (nic.NetdevState, error), snap func() *NodeStatus, log *slog.Logger) *Metrics {
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		Reconciles: prometheus.NewCounter(prometheus.CounterOpts{Namespace: namespace, Subsystem: "reconcile", Name: "runs_total",
			Help: "Reconciles run."}),
		ReconcileErrors: prometheus.NewCounter(prometheus.CounterOpts{Namespace: namespace, Subsystem: "reconcile", Name: "errors_total",
			Help: "Reconciles that left a rail not converged or failed to read the host."}),
		ReconcileDuration: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: namespace, Subsystem: "reconcile", Name: "duration_seconds",
			Help: "Time a reconcile took.", Buckets: []float64{.0005, .001, .002, .005, .01, .025, .05, .1, .25, 1}}),
		Drift: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "drift_events_total",
			Help: "Changes that repaired state that had converged, by kind of change."}, []string{"kind"}),
	}
	build := prometheus.NewGauge(prometheus.GaugeOpts{Namespace: namespace, Name: "build_info", Help: "Build information.",
		ConstLabels: prometheus.Labels{"version": version, "goversion": runtime.Version()}})
	build.Set(1)
	m.ReloadSuccess = prometheus.NewGauge(prometheus.GaugeOpts{Namespace: namespace, Subsystem: "config", Name: "last_reload_successful",
		Help: "Whether the last configuration reload was applied (1) or rejected and the running config kept (0)."})
	m.ReloadSuccess.Set(1)
	m.ReloadTime = prometheus.NewGauge(prometheus.GaugeOpts{Namespace: namespace, Subsystem: "config", Name: "last_reload_success_timestamp_seconds",
		Help: "When the configuration was last loaded successfully (start or reload), in Unix seconds."})
	m.ReloadTime.SetToCurrentTime()
	// The scrape-time parts, in the order they run. A new collector is a
	// file with a type implementing scrapePart, added here.
	parts := []scrapePart{
		inventoryPart{},
		statusPart{},
		&linksPart{netdev: netdev},
		&countersPart{fs: fs, wraps: map[wrapKey]*wrap{}},
		cablingPart{},
	}
	if pfc != nil {
		parts = append(parts, &pfcPart{pfc: pfc})
	}
	m.Registry.MustRegister(m.Reconciles, m.ReconcileErrors, m.ReconcileDuration, m.Drift, build, m.ReloadSuccess, m.ReloadTime,
		&nodeCollector{parts: parts, snap: snap, log: log})
	return m
}

// PFCReader reads per-priority PFC frame counters (dcbnl ieee_pfc
// requests and indications).
type PFCReader interface {
	IEEE(dev string) (qos.IEEE, error)
}

var (
	descSuccess  = desc("collector_success", "Whether a collector part read everything (1) or dropped series (0).", "collector")
	descDuration = desc("collector_duration_seconds", "Time a collector part took.", "collector")
)

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(prometheus.BuildFQName(namespace, "", name), help, labels, nil)
}

func gauge(ch chan<- prometheus.Metric, d *prometheus.Desc, v float64, labels ...string) {
	ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
}

// scrapePart is one collector of node state read at scrape time
// (metrics_*.go). A part that reads the host returns its name, which labels
// collector_success and collector_duration_seconds, and the errors that
// made it drop series; a part that only renders the status returns "".
type scrapePart interface {
	name() string
	collect(ch chan<- prometheus.Metric, st *NodeStatus) []error
}

// nodeCollector runs the parts at scrape time. It is unchecked (its
// Describe sends nothing) because counter names depend on the driver.
type nodeCollector struct {
	parts []scrapePart
	snap  func() *NodeStatus
	log   *slog.Logger

	mu      sync.Mutex
	failing map[string]string // part -> the errors it last logged
}

// logTransition logs a part's dropped series when they start or change,
// and once when the part reads everything again: never on every scrape.
func (c *nodeCollector) logTransition(name string, errs []error) {
	msg := errors.Join(errs...)
	text := ""
	if msg != nil {
		text = msg.Error()
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.failing == nil {
		c.failing = map[string]string{}
	}
	if c.failing[name] == text {
		return
	}
	if text == "" {
		c.log.Info("metrics: collector reads everything again", "collector", name)
	} else {
		c.log.Warn("metrics: series dropped", "collector", name, "err", text)
	}
	c.failing[name] = text
}

func (c *nodeCollector) Describe(chan<- *prometheus.Desc) {}

func (c *nodeCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.snap()
	if st == nil || st.Inventory == nil {
		return
	}
	for _, p := range c.parts {
		start := time.Now()
		errs := p.collect(ch, st)
		name := p.name()
		if name == "" {
			continue
		}
		ok := 1.0
		if len(errs) > 0 {
			ok = 0
		}
		c.logTransition(name, errs)
		gauge(ch, descSuccess, ok, name)
		gauge(ch, descDuration, time.Since(start).Seconds(), name)
	}
}
