package controller

import (
	"context"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

const namespace = "roce_controller"

// scrapeTimeout bounds the etcd reads of one scrape.
const scrapeTimeout = 2 * time.Second

// Metrics are the controller's metrics, in their own registry (namespace
// roce_controller).
type Metrics struct {
	Registry *prometheus.Registry

	requests      *prometheus.HistogramVec
	longPolls     prometheus.Gauge
	longPollsDone *prometheus.CounterVec
}

// NewMetrics registers the controller's metrics for a store: request
// latency by route and code (long-polls that waited are counted apart, by
// how they ended), long-polls waiting, nodes by state (read from etcd at
// scrape time), plan epoch, plan changes and conflicts, readiness and
// etcd reachability, plus the Go and process collectors.
func NewMetrics(store *Store) *Metrics {
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		requests: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Subsystem: "http", Name: "request_duration_seconds",
			Help:    "Time to answer an API request, by route pattern and status code (long-polls that waited are not observed).",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}, []string{"route", "code"}),
		longPolls: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: namespace, Name: "long_polls",
			Help: "Config long-polls waiting now.",
		}),
		longPollsDone: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "long_polls_completed_total",
			Help: "Config long-polls that waited, by how they ended: changed (200), timeout (304), closed (shutdown), gone (client left), error.",
		}, []string{"result"}),
	}
	for _, r := range []string{"changed", "timeout", "closed", "gone", "error"} {
		m.longPollsDone.WithLabelValues(r)
	}
	m.Registry.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.requests, m.longPolls, m.longPollsDone,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: namespace, Name: "plan_epoch",
			Help: "Epoch of the plan this replica serves (0: none).",
		}, func() float64 { return float64(store.Epoch()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Namespace: namespace, Name: "plan_changes_total",
			Help: "Plan changes this replica wrote.",
		}, func() float64 { return float64(store.Changes()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Namespace: namespace, Name: "plan_conflicts_total",
			Help: "Plan writes this replica retried because another writer came first.",
		}, func() float64 { return float64(store.Conflicts()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: namespace, Name: "etcd_ready",
			Help: "1 when etcd answered the last linearizable readiness check.",
		}, func() float64 { return boolFloat(store.EtcdOK()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: namespace, Name: "ready",
			Help: "1 when the controller serves (etcd answers, the plan watch is synced, a plan is stored).",
		}, func() float64 { return boolFloat(store.Ready() == nil) }),
		&nodeStates{store: store, desc: prometheus.NewDesc(prometheus.BuildFQName(namespace, "", "nodes"),
			"Nodes of the plan by state: alive (lease held), silent (no lease, reported once), unreported.", []string{"state"}, nil)},
	)
	return m
}

func boolFloat(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// observe records a request that did not wait.
func (m *Metrics) observe(route string, code int, d time.Duration) {
	m.requests.WithLabelValues(route, strconv.Itoa(code)).Observe(d.Seconds())
}

// nodeStates counts the nodes by state at scrape time: two keys-only
// range reads, nothing when the store is not ready.
type nodeStates struct {
	store *Store
	desc  *prometheus.Desc
}

func (c *nodeStates) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *nodeStates) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), scrapeTimeout)
	defer cancel()
	alive, silent, unreported, err := c.store.NodeStates(ctx)
	if err != nil {
		return
	}
	ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(alive), "alive")
	ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(silent), "silent")
	ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(unreported), "unreported")
}
