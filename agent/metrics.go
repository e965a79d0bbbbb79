package agent

import (
	"errors"
	"log/slog"
	"runtime"
	"strconv"
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
	m.Registry.MustRegister(m.Reconciles, m.ReconcileErrors, m.ReconcileDuration, m.Drift, build, m.ReloadSuccess, m.ReloadTime,
		&nodeCollector{fs: fs, pfc: pfc, netdev: netdev, snap: snap, log: log, wraps: map[wrapKey]*wrap{}})
	return m
}

// PFCReader reads per-priority PFC frame counters (dcbnl ieee_pfc
// requests and indications).
type PFCReader interface {
	IEEE(dev string) (qos.IEEE, error)
}

var (
	descGPUInfo   = desc("gpu_info", "A GPU (value 1).", "gpu", "pci", "model", "uuid", "numa")
	descNICInfo   = desc("nic_info", "An RDMA NIC (value 1).", "rdma_dev", "netdev", "pci", "driver", "firmware")
	descRailInfo  = desc("rail_info", "A rail: its NIC and PCIe affinity level to its GPUs (value 1).", "rail", "rdma_dev", "netdev", "level")
	descAffinity  = desc("rail_gpu_affinity_level", "PCIe distance between a rail NIC and one of its GPUs: 0 PIX, 1 PXB, 2 PHB, 3 NODE, 4 SYS, 5 unknown.", "rail", "gpu")
	descPortState = desc("rdma_port_active", "RDMA port state is ACTIVE (1) or not (0).", "rdma_dev", "port")
	descPortRate  = desc("rdma_port_rate_bytes_per_second", "RDMA port rate.", "rdma_dev", "port")
	descLinkUp    = desc("link_up", "Netdev operstate is up (1) or not (0).", "netdev")
	descLinkMTU   = desc("link_mtu_bytes", "Netdev MTU.", "netdev")
	descLinkSpeed = desc("link_speed_bytes_per_second", "Netdev speed (absent when the driver does not know).", "netdev")
	descCond      = desc("condition_status", "Condition status: 1 True, 0 False, -1 Unknown or Unsupported.", "rail", "type")
	descGID       = desc("rail_gid_index", "RoCE v2 GID index of the rail address.", "rail", "rdma_dev", "family")
	descHW        = desc("rdma_hw_stats_total", "RDMA hw_counters, read at scrape time (32-bit counters unwrapped).", "rdma_dev", "port", "stat")
	descPMA       = desc("rdma_port_stats_total", "RDMA port (PMA) counters, read at scrape time; port_*_data are in 4-byte words.", "rdma_dev", "port", "stat")
	descPFC       = desc("pfc_pause_frames_total", "PFC pause frames per priority, from dcbnl ieee_pfc (tx = requests, rx = indications).", "netdev", "priority", "direction")
	descSuccess   = desc("collector_success", "Whether a collector part read everything (1) or dropped series (0).", "collector")
	descDuration  = desc("collector_duration_seconds", "Time a collector part took.", "collector")
)

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(prometheus.BuildFQName(namespace, "", name), help, labels, nil)
}

// nodeCollector reads hardware state at scrape time. It is unchecked (its
// Describe sends nothing) because counter names depend on the driver.
type nodeCollector struct {
	fs     func() *nic.FS // the current sysfs tree (a reload may change it)
	pfc    PFCReader
	netdev func(string) (nic.NetdevState, error)
	snap   func() *NodeStatus
	log    *slog.Logger

	mu    sync.Mutex
	wraps map[wrapKey]*wrap
}

// wrap turns a counter that may wrap at 2^32 (mlx5 q counters) into a
// monotonic one.
type wrap struct {
	last, base uint64
}

func (w *wrap) value(raw uint64) uint64 {
	if raw < w.last {
		if w.last <= 1<<32-1 {
			w.base += 1 << 32 // wrapped
		} else {
			w.base += w.last // reset of a 64-bit counter: keep monotonic
		}
	}
	w.last = raw
	return w.base + raw
}

func (c *nodeCollector) Describe(chan<- *prometheus.Desc) {}

func (c *nodeCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.snap()
	if st == nil || st.Inventory == nil {
		return
	}
	inv := st.Inventory
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	for _, g := range inv.GPUs {
		gauge(descGPUInfo, 1, strconv.Itoa(g.Index), g.PCI, g.Model, g.UUID, strconv.Itoa(g.NUMA))
	}
	for _, n := range inv.NICs {
		gauge(descNICInfo, 1, n.RDMADevice, n.Netdev, n.PCI, n.Driver, n.Firmware)
	}
	for _, r := range inv.Rails {
		rail := strconv.Itoa(r.Rail)
		gauge(descRailInfo, 1, rail, r.RDMADevice, r.Netdev, r.Level.String())
		for _, a := range inv.Affinity {
			for _, g := range r.GPUs {
				if a.GPU == g && a.RDMADevice == r.RDMADevice {
					gauge(descAffinity, float64(a.Level), rail, strconv.Itoa(g))
				}
			}
		}
	}
	for _, rs := range st.Rails {
		rail := strconv.Itoa(rs.Rail)
		for _, cond := range rs.Conditions {
			gauge(descCond, statusValue(cond.Status), rail, cond.Type)
		}
		if rs.GIDIndexIPv4 >= 0 && rs.RDMADevice != "" {
			gauge(descGID, float64(rs.GIDIndexIPv4), rail, rs.RDMADevice, "ipv4")
		}
		if rs.GIDIndexIPv6 >= 0 && rs.RDMADevice != "" {
			gauge(descGID, float64(rs.GIDIndexIPv6), rail, rs.RDMADevice, "ipv6")
		}
	}
	for _, cond := range st.Conditions {
		gauge(descCond, statusValue(cond.Status), "node", cond.Type)
	}
	c.collectLinks(ch, inv)
	c.collectCounters(ch, inv)
	c.collectPFC(ch, inv)
}

func statusValue(s string) float64 {
	switch s {
	case StatusTrue:
		return 1
	case StatusFalse:
		return 0
	}
	return -1
}

func (c *nodeCollector) part(ch chan<- prometheus.Metric, name string, start time.Time, errs []error) {
	ok := 1.0
	for _, err := range errs {
		ok = 0
		c.log.Warn("metrics: series dropped", "collector", name, "err", err)
	}
	ch <- prometheus.MustNewConstMetric(descSuccess, prometheus.GaugeValue, ok, name)
	ch <- prometheus.MustNewConstMetric(descDuration, prometheus.GaugeValue, time.Since(start).Seconds(), name)
}

func (c *nodeCollector) collectLinks(ch chan<- prometheus.Metric, inv *Inventory) {
	start := time.Now()
	var errs []error
	seen := map[string]bool{}
	for _, n := range inv.NICs {
		for _, p := range n.Ports() {
			active := 0.0
			if p.Active() {
				active = 1
			}
			ch <- prometheus.MustNewConstMetric(descPortState, prometheus.GaugeValue, active, n.RDMADevice, strconv.Itoa(p.Port))
			if p.RateGbps > 0 {
				ch <- prometheus.MustNewConstMetric(descPortRate, prometheus.GaugeValue, p.RateGbps*1e9/8, n.RDMADevice, strconv.Itoa(p.Port))
			}
		}
	}
	for _, r := range inv.Rails {
		if r.Netdev == "" || seen[r.Netdev] {
			continue
		}
		seen[r.Netdev] = true
		st, err := c.netdev(r.Netdev)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		up := 0.0
		if st.Up {
			up = 1
		}
		ch <- prometheus.MustNewConstMetric(descLinkUp, prometheus.GaugeValue, up, r.Netdev)
		ch <- prometheus.MustNewConstMetric(descLinkMTU, prometheus.GaugeValue, float64(st.MTU), r.Netdev)
		if st.SpeedMbs >= 0 {
			ch <- prometheus.MustNewConstMetric(descLinkSpeed, prometheus.GaugeValue, float64(st.SpeedMbs)*1e6/8, r.Netdev)
		}
	}
	c.part(ch, "links", start, errs)
}

func (c *nodeCollector) collectCounters(ch chan<- prometheus.Metric, inv *Inventory) {
	start := time.Now()
	type job struct {
		dev  string
		port int
	}
	type result struct {
		job
		counters []nic.Counter
		errs     []error
	}
	var jobs []job
	for _, n := range inv.NICs {
		for _, p := range n.Ports() {
			jobs = append(jobs, job{n.RDMADevice, p.Port})
		}
	}
	// Counter reads are system calls; spread the NICs over a few
	// goroutines so a scrape of many NICs uses every core.
	results := make([]result, len(jobs))
	fs := c.fs()
	workers := min(runtime.GOMAXPROCS(0), len(jobs), 4)
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := w; i < len(jobs); i += workers {
				cs, errs := fs.PortCounters(jobs[i].dev, jobs[i].port)
				results[i] = result{jobs[i], cs, errs}
			}
		}(w)
	}
	wg.Wait()

	var errs []error
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, r := range results {
		errs = append(errs, r.errs...)
		port := strconv.Itoa(r.port)
		for _, ctr := range r.counters {
			d := descPMA
			if ctr.HW {
				d = descHW
			}
			key := wrapKey{r.dev, r.port, ctr.HW, ctr.Name}
			w, ok := c.wraps[key]
			if !ok {
				w = &wrap{}
				c.wraps[key] = w
			}
			ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(w.value(ctr.Value)), r.dev, port, ctr.Name)
		}
	}
	c.part(ch, "rdma_counters", start, errs)
}

// wrapKey identifies one counter series.
type wrapKey struct {
	dev  string
	port int
	hw   bool
	name string
}

func (c *nodeCollector) collectPFC(ch chan<- prometheus.Metric, inv *Inventory) {
	if c.pfc == nil {
		return
	}
	start := time.Now()
	var errs []error
	for _, r := range inv.Rails {
		if r.Netdev == "" {
			continue
		}
		st, err := c.pfc.IEEE(r.Netdev)
		switch {
		case errors.Is(err, qos.ErrUnsupported), errors.Is(err, qos.ErrNoDevice):
			continue // no dcbnl (veth, VF, rxe) or not in this namespace: nothing to report
		case err != nil:
			errs = append(errs, err)
			continue
		case st.PFC == nil:
			continue // the driver has no getpfc
		}
		for prio := 0; prio < 8; prio++ {
			ch <- prometheus.MustNewConstMetric(descPFC, prometheus.CounterValue, float64(st.PFC.Requests[prio]), r.Netdev, strconv.Itoa(prio), "tx")
			ch <- prometheus.MustNewConstMetric(descPFC, prometheus.CounterValue, float64(st.PFC.Indications[prio]), r.Netdev, strconv.Itoa(prio), "rx")
		}
	}
	c.part(ch, "pfc", start, errs)
}
