package agent

import (
	"runtime"
	"strconv"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/roce-agent/roce-agent/nic"
)

var (
	descHW  = desc("rdma_hw_stats_total", "RDMA hw_counters, read at scrape time (32-bit counters unwrapped).", "rdma_dev", "port", "stat")
	descPMA = desc("rdma_port_stats_total", "RDMA port (PMA) counters, read at scrape time; port_xmit_data and port_rcv_data are exported in bytes as rdma_port_data_*_bytes_total.", "rdma_dev", "port", "stat")
	// The PMA data counters count 4-octet words; they are exported in
	// bytes, as node_exporter's infiniband collector does
	// (node_infiniband_port_data_{transmitted,received}_bytes_total).
	descTxBytes = desc("rdma_port_data_transmitted_bytes_total", "Data transmitted on an RDMA port, in bytes (PMA counters/port_xmit_data, which counts 4-octet words, times 4), read at scrape time.", "rdma_dev", "port")
	descRxBytes = desc("rdma_port_data_received_bytes_total", "Data received on an RDMA port, in bytes (PMA counters/port_rcv_data, which counts 4-octet words, times 4), read at scrape time.", "rdma_dev", "port")
)

// pmaWords are the PMA counters in 4-octet words, by file name.
var pmaWords = map[string]*prometheus.Desc{"port_xmit_data": descTxBytes, "port_rcv_data": descRxBytes}

// countersPart reads every RDMA port's PMA counters and hw_counters.
type countersPart struct {
	fs func() *nic.FS // the current sysfs tree (a reload may change it)

	scratch sync.Pool // *counterScratch

	// mu serializes scrapes: the wrap state must see each series' raw
	// values in the order they were read.
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

// counterMetric is the value of a series at one scrape. It writes the
// series' label pairs as they are, as prometheus' own const metrics do;
// the registry still checks them.
type counterMetric struct {
	s     *wrap
	value float64
	ctr   dto.Counter
}

func (m *counterMetric) Desc() *prometheus.Desc { return m.s.desc }

func (m *counterMetric) Write(out *dto.Metric) error {
	m.ctr.Value = &m.value
	out.Label = m.s.labels
	out.Counter = &m.ctr
	return nil
}

// wrap is one exported counter series, kept from scrape to scrape. It
// turns a counter that may wrap at 2^32 (mlx5 q counters) into a monotonic
// one, and holds the series' descriptor and label pairs, built once.
type wrap struct {
	last, base uint64

	desc   *prometheus.Desc
	labels []*dto.LabelPair
	scale  float64 // 4 for counters in 4-octet words, else 1
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

// counterScratch is what one reading goroutine reuses between scrapes.
type counterScratch struct {
	buf      nic.CounterBuf
	counters []nic.Counter
}

func (*countersPart) name() string { return "rdma_counters" }

func (p *countersPart) collect(ch chan<- prometheus.Metric, st *NodeStatus) []error {
	type result struct {
		dev      string
		port     int
		counters []nic.Counter
		errs     []error
	}
	var results []result
	for _, n := range st.Inventory.NICs {
		for _, port := range n.Ports() {
			results = append(results, result{dev: n.RDMADevice, port: port.Port})
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	// Counter reads are system calls; spread the NICs over a few
	// goroutines so a scrape of many NICs uses every core.
	fs := p.fs()
	workers := min(runtime.GOMAXPROCS(0), len(results), 4)
	scratch := make([]*counterScratch, workers)
	var wg sync.WaitGroup
	for w := range workers {
		sc, _ := p.scratch.Get().(*counterScratch)
		if sc == nil {
			sc = &counterScratch{}
		}
		scratch[w] = sc
		wg.Add(1)
		go func() {
			defer wg.Done()
			all := sc.counters[:0]
			for i := w; i < len(results); i += workers {
				r := &results[i]
				start := len(all)
				all, r.errs = fs.AppendPortCounters(all, r.dev, r.port, &sc.buf)
				r.counters = all[start:len(all):len(all)]
			}
			sc.counters = all
		}()
	}
	wg.Wait()

	var errs []error
	total := 0
	for _, r := range results {
		total += len(r.counters)
	}
	metrics := make([]counterMetric, total)
	k := 0
	for _, r := range results {
		errs = append(errs, r.errs...)
		for _, ctr := range r.counters {
			key := wrapKey{r.dev, r.port, ctr.HW, ctr.Name}
			s := p.wraps[key]
			if s == nil {
				s = newSeries(r.dev, r.port, ctr)
				p.wraps[key] = s
			}
			m := &metrics[k]
			m.s, m.value = s, float64(s.value(ctr.Value))*s.scale
			k++
		}
	}
	for _, sc := range scratch {
		p.scratch.Put(sc)
	}
	for i := range metrics {
		ch <- &metrics[i]
	}
	return errs
}

// newSeries builds the series of counter ctr of a port.
func newSeries(dev string, port int, ctr nic.Counter) *wrap {
	s := &wrap{desc: descPMA, scale: 1}
	labels := []string{dev, strconv.Itoa(port), ctr.Name}
	switch d, words := pmaWords[ctr.Name]; {
	case ctr.HW:
		s.desc = descHW
	case words:
		s.desc, s.scale, labels = d, 4, labels[:2]
	}
	s.labels = prometheus.MakeLabelPairs(s.desc, labels)
	return s
}
