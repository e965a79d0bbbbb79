package agent

import (
	"runtime"
	"strconv"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/roce-agent/roce-agent/nic"
)

var (
	descHW  = desc("rdma_hw_stats_total", "RDMA hw_counters, read at scrape time (32-bit counters unwrapped).", "rdma_dev", "port", "stat")
	descPMA = desc("rdma_port_stats_total", "RDMA port (PMA) counters, read at scrape time; port_*_data are in 4-byte words.", "rdma_dev", "port", "stat")
)

// countersPart reads every RDMA port's PMA counters and hw_counters.
type countersPart struct {
	fs func() *nic.FS // the current sysfs tree (a reload may change it)

	mu    sync.Mutex
	wraps map[wrapKey]*wrap
}

// wrapKey identifies one counter series.
type wrapKey struct {
	dev  string
	port int
	hw   bool
	name string
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

func (*countersPart) name() string { return "rdma_counters" }

func (p *countersPart) collect(ch chan<- prometheus.Metric, st *NodeStatus) []error {
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
	for _, n := range st.Inventory.NICs {
		for _, port := range n.Ports() {
			jobs = append(jobs, job{n.RDMADevice, port.Port})
		}
	}
	// Counter reads are system calls; spread the NICs over a few
	// goroutines so a scrape of many NICs uses every core.
	results := make([]result, len(jobs))
	fs := p.fs()
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
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, r := range results {
		errs = append(errs, r.errs...)
		port := strconv.Itoa(r.port)
		for _, ctr := range r.counters {
			d := descPMA
			if ctr.HW {
				d = descHW
			}
			key := wrapKey{r.dev, r.port, ctr.HW, ctr.Name}
			w, ok := p.wraps[key]
			if !ok {
				w = &wrap{}
				p.wraps[key] = w
			}
			ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(w.value(ctr.Value)), r.dev, port, ctr.Name)
		}
	}
	return errs
}
