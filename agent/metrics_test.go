package agent

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/roce-agent/roce-agent/nic"
	"github.com/roce-agent/roce-agent/nic/sysfstest"
	"github.com/roce-agent/roce-agent/qos"
)

// fixtureMetrics builds the metrics of a fixture host as the daemon would
// after a reconcile: status from the inventory, netdev state from sysfs.
func fixtureMetrics(t testing.TB, fs *nic.FS, pfc PFCReader) (*Metrics, *NodeStatus) {
	t.Helper()
	inv, err := DiscoverInventory(InventoryOptions{Node: "gpu-017", FS: fs})
	if err != nil {
		t.Fatal(err)
	}
	st := &NodeStatus{Node: "gpu-017", Inventory: inv}
	for _, r := range inv.Rails {
		st.Rails = append(st.Rails, RailStatus{Rail: r.Rail, Netdev: r.Netdev, RDMADevice: r.RDMADevice, GIDIndexIPv4: 3, GIDIndexIPv6: -1,
			Conditions: []Condition{{Type: "LinkUp", Status: StatusTrue}, {Type: "QoSReady", Status: StatusUnsupported}}})
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	m := NewMetrics("test", func() *nic.FS { return fs }, pfc, fs.ReadNetdev, func() *NodeStatus { return st }, log)
	m.ReloadTime.Set(1.7e9) // the start time varies from run to run
	return m, st
}

type fakePFC map[string]qos.PFC

func (f fakePFC) IEEE(dev string) (qos.IEEE, error) {
	p, ok := f[dev]
	if !ok {
		return qos.IEEE{}, qos.ErrUnsupported
	}
	return qos.IEEE{PFC: &p}, nil
}

// TestMetricsGolden compares the exposition of the mixed-vendor fixture
// with testdata/golden/metrics/mixed-vendor.prom (go test ./agent -update).
func TestMetricsGolden(t *testing.T) {
	fs := fixtureFS(t, "mixed-vendor")
	pfc := qos.PFC{Cap: 8, Enable: 8}
	pfc.Requests[3], pfc.Indications[3] = 12, 34
	m, _ := fixtureMetrics(t, fs, fakePFC{"ens3f0np0": pfc})
	var buf bytes.Buffer
	got := scrape(t, m)
	// Durations vary from run to run.
	for _, line := range strings.Split(got, "\n") {
		if !strings.HasPrefix(line, "roce_agent_collector_duration_seconds{") {
			buf.WriteString(line + "\n")
		}
	}
	compareGolden(t, filepath.Join("..", "testdata", "golden", "metrics", "mixed-vendor.prom"), strings.TrimSuffix(buf.String(), "\n"))
	promtoolCheck(t, got)
}

func scrape(t *testing.T, m *Metrics) string {
	t.Helper()
	mfs, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	for _, mf := range mfs {
		if strings.HasPrefix(mf.GetName(), "roce_agent_build_info") {
			continue // carries the Go version
		}
		if err := writeText(&b, mf); err != nil {
			t.Fatal(err)
		}
	}
	return b.String()
}

// promtoolCheck runs `promtool check metrics` (Debian's prometheus
// package) on an exposition: names, units and counter suffixes.
func promtoolCheck(t *testing.T, exposition string) {
	t.Helper()
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Skip("promtool not installed (apt-get install prometheus); .ci/run installs it")
	}
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = strings.NewReader(exposition)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("promtool check metrics: %v\n%s", err, out)
	}
}

// A counter file that holds garbage or vanishes mid-run drops that series
// only; the scrape succeeds and the collector reports its own failure.
func TestMetricsBadCounterFile(t *testing.T) {
	tree := sysfstest.New(t.TempDir())
	fn := tree.HostBridge("0000:17", 0).Bridge("0000:17:01.0", 0x8086, 1).Function("0000:18:00.0", sysfstest.PCIFunc{Vendor: 0x15b3, Class: 0x020000, Driver: "mlx5_core"})
	fn.AddNetdev("eth0", sysfstest.Netdev{MAC: "02:00:00:00:00:01", MTU: 9000})
	fn.AddRDMA("mlx5_0", sysfstest.RDMADevice{HWCounters: sysfstest.MLX5HWCounters, Counters: sysfstest.PMACounters,
		Ports: []sysfstest.RDMAPort{{State: "4: ACTIVE", PhysState: "5: LinkUp", Rate: "400 Gb/sec (4X NDR)", LinkLayer: "Ethernet"}}})
	port := "/devices/pci0000:17/0000:17:01.0/0000:18:00.0/infiniband/mlx5_0/ports/1"
	tree.WriteFile(port+"/hw_counters/np_cnp_sent", "garbage")
	tree.WriteFile(port+"/hw_counters/rp_cnp_ignored", "18446744073709551616") // 2^64
	tree.WriteFile(port+"/hw_counters/np_ecn_marked_roce_packets", " 42 ")
	tree.Remove(port + "/hw_counters/out_of_sequence")
	if tree.Err() != nil {
		t.Fatal(tree.Err())
	}
	fs, err := nic.NewFS(tree.Root())
	if err != nil {
		t.Fatal(err)
	}
	m, _ := fixtureMetrics(t, fs, nil)
	got := scrape(t, m)
	if strings.Contains(got, `stat="np_cnp_sent"`) || strings.Contains(got, `stat="rp_cnp_ignored"`) ||
		!strings.Contains(got, `roce_agent_rdma_hw_stats_total{port="1",rdma_dev="mlx5_0",stat="np_ecn_marked_roce_packets"} 42`) || !strings.Contains(got, `roce_agent_rdma_hw_stats_total{port="1",rdma_dev="mlx5_0",stat="rp_cnp_handled"} 0`) ||
		!strings.Contains(got, `roce_agent_collector_success{collector="rdma_counters"} 0`) || strings.Contains(got, "lifespan") {
		t.Errorf("scrape:\n%s", got)
	}
}

// mlx5 q counters are 32-bit: a value that goes down from near 2^32 has
// wrapped, and the exported counter keeps rising.
func TestCounterWrap(t *testing.T) {
	w := &wrap{}
	for _, tc := range []struct{ raw, want uint64 }{
		{100, 100}, {1<<32 - 10, 1<<32 - 10}, {5, 1<<32 + 5}, {50, 1<<32 + 50},
	} {
		if got := w.value(tc.raw); got != tc.want {
			t.Errorf("value(%d) = %d, want %d", tc.raw, got, tc.want)
		}
	}
	// A 64-bit counter that goes down was reset: stay monotonic.
	w = &wrap{}
	w.value(1 << 40)
	if got := w.value(7); got != 1<<40+7 {
		t.Errorf("reset: %d", got)
	}
}

func TestMetricsLint(t *testing.T) {
	m, _ := fixtureMetrics(t, fixtureFS(t, "dgx-h100"), nil)
	problems, err := testutil.GatherAndLint(m.Registry)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
}

// writeText writes one metric family in the text exposition format.
func writeText(w io.Writer, mf *dto.MetricFamily) error {
	_, err := expfmt.MetricFamilyToText(w, mf)
	return err
}

type brokenPFC struct{}

func (brokenPFC) IEEE(dev string) (qos.IEEE, error) {
	if dev == "ens3f0np0" {
		return qos.IEEE{}, errors.New("dcb ieee get ens3f0np0: receive: resource temporarily unavailable")
	}
	return qos.IEEE{}, qos.ErrUnsupported
}

// A dcbnl read that fails (not "unsupported") drops that NIC's PFC series
// and makes the pfc collector report failure; the scrape still succeeds.
func TestMetricsPFCFailure(t *testing.T) {
	m, _ := fixtureMetrics(t, fixtureFS(t, "mixed-vendor"), brokenPFC{})
	got := scrape(t, m)
	if strings.Contains(got, "roce_agent_pfc_pause_frames_total{") || !strings.Contains(got, `roce_agent_collector_success{collector="pfc"} 0`) ||
		!strings.Contains(got, `roce_agent_collector_success{collector="links"} 1`) {
		t.Errorf("scrape:\n%s", got)
	}
}

// The PMA data counters count 4-octet words; the agent exports them in
// bytes, as node_exporter's infiniband collector does. On a copy of the
// 10-NIC dgx-h100 fixture with distinct word counts per port (some past
// 2^32 bytes), both must export the same bytes for every device and port.
func TestDataBytesMatchNodeExporter(t *testing.T) {
	exporter := nodeExporterPath()
	if exporter == "" {
		t.Skip(nodeExporterMissing)
	}
	tree, err := sysfstest.DGXH100(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	dirs, err := filepath.Glob(filepath.Join(tree.Root(), "class", "infiniband", "*", "ports", "*", "counters"))
	if err != nil || len(dirs) != 10 {
		t.Fatalf("counters directories: %v, %v", dirs, err)
	}
	for i, dir := range dirs {
		for j, name := range []string{"port_xmit_data", "port_rcv_data"} {
			words := uint64(1_000_000_007)*uint64(i+1) + uint64(j)*3_000_000_019
			if err := os.WriteFile(filepath.Join(dir, name), fmt.Appendf(nil, "%d\n", words), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	url := startNodeExporter(t, exporter, tree.Root())

	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	theirs, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	fs, err := nic.NewFS(tree.Root())
	if err != nil {
		t.Fatal(err)
	}
	m, _ := fixtureMetrics(t, fs, nil)
	mfs, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	ours := map[string]*dto.MetricFamily{}
	for _, mf := range mfs {
		ours[mf.GetName()] = mf
	}
	for _, dir := range []string{"transmitted", "received"} {
		got := bytesByPort(ours["roce_agent_rdma_port_data_"+dir+"_bytes_total"], "rdma_dev")
		want := bytesByPort(theirs["node_infiniband_port_data_"+dir+"_bytes_total"], "device")
		if len(want) != 10 {
			t.Fatalf("node_exporter exported %d %s series, want 10: %v", len(want), dir, want)
		}
		for port, w := range want {
			if w == 0 {
				t.Errorf("node_exporter %s %s: 0, the test wrote more", dir, port)
			}
			if g, ok := got[port]; !ok || g != w {
				t.Errorf("%s bytes of %s: agent %v (exported %v), node_exporter %v", dir, port, g, ok, w)
			}
		}
		if len(got) != len(want) {
			t.Errorf("%s: agent exports %d series, node_exporter %d", dir, len(got), len(want))
		}
	}
	got := scrape(t, m)
	if strings.Contains(got, `stat="port_xmit_data"`) || strings.Contains(got, `stat="port_rcv_data"`) {
		t.Error("rdma_port_stats_total still exports the data counters in words")
	}
}

// bytesByPort maps "device/port" to the value of each counter of mf, the
// device named by label dev.
func bytesByPort(mf *dto.MetricFamily, dev string) map[string]float64 {
	out := map[string]float64{}
	for _, m := range mf.GetMetric() {
		var d, p string
		for _, l := range m.GetLabel() {
			switch l.GetName() {
			case dev:
				d = l.GetValue()
			case "port":
				p = l.GetValue()
			}
		}
		out[d+"/"+p] = m.GetCounter().GetValue()
	}
	return out
}
