package agent

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/roce-agent/roce-agent/nic/nettest"
)

// nodeExporterPath is node_exporter (Debian's prometheus-node-exporter),
// or "" when neither name is on PATH.
func nodeExporterPath() string {
	for _, name := range []string{"prometheus-node-exporter", "node_exporter"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

const nodeExporterMissing = "node_exporter is not installed: apt-get install prometheus-node-exporter"

// startNodeExporter runs node_exporter with its infiniband collector alone
// on the sysfs tree at root (--path.sysfs), on a loopback port, and returns
// its /metrics URL once it answers. It is killed when tb ends.
func startNodeExporter(tb testing.TB, exporter, root string) string {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	cmd := exec.Command(exporter, "--path.sysfs="+root, "--collector.disable-defaults", "--collector.infiniband", "--web.listen-address="+addr)
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	url := "http://" + addr + "/metrics"
	client := &http.Client{Timeout: 5 * time.Second}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if resp, err := client.Get(url); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return url
			}
		}
		if time.Now().After(deadline) {
			tb.Fatal("node_exporter did not come up")
		}
	}
}

// BenchmarkScrape times GET /metrics of the agent on the 10-NIC dgx-h100
// fixture (full RDMA counters) against node_exporter's infiniband collector
// alone (--path.sysfs on the same tree), both over loopback HTTP in the
// same run, with the same client (which asks both for gzip). It needs
// Debian's prometheus-node-exporter and fails without it: the comparison
// is the point of the benchmark.
func BenchmarkScrape(b *testing.B) {
	exporter := nodeExporterPath()
	if exporter == "" {
		b.Fatal(nodeExporterMissing)
	}
	root, err := filepath.Abs(filepath.Join("..", "testdata", "sysfs", "dgx-h100", "sys"))
	if err != nil {
		b.Fatal(err)
	}
	exporterURL := startNodeExporter(b, exporter, root)

	m, _ := fixtureMetrics(b, fixtureFS(b, "dgx-h100"), nil)
	d := &Daemon{metrics: m}
	srv := httptest.NewServer(d.metricsHandler())
	defer srv.Close()

	client := &http.Client{Timeout: 5 * time.Second}
	get := func(url string) (time.Duration, int) {
		start := time.Now()
		resp, err := client.Get(url)
		if err != nil {
			return 0, -1
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return time.Since(start), strings.Count(string(body), "\n")
	}
	// Warm both up.
	for i := 0; i < 20; i++ {
		get(srv.URL)
		get(exporterURL)
	}
	var ours, theirs []time.Duration
	var ourLines, theirLines int
	b.ResetTimer()
	for i := 0; i < b.N*10; i++ {
		d1, n1 := get(srv.URL)
		d2, n2 := get(exporterURL)
		if n1 <= 0 || n2 <= 0 {
			b.Fatalf("scrape failed: agent %d lines, node_exporter %d lines", n1, n2)
		}
		ours, theirs = append(ours, d1), append(theirs, d2)
		ourLines, theirLines = n1, n2
	}
	b.StopTimer()
	a, e := median(ours), median(theirs)
	b.ReportMetric(float64(a)/1e6, "agent-ms")
	b.ReportMetric(float64(e)/1e6, "node_exporter-ms")
	b.ReportMetric(float64(a)/float64(e), "agent/node_exporter-x")
	b.ReportMetric(float64(ourLines), "agent-lines")
	b.ReportMetric(float64(theirLines), "node_exporter-lines")
	b.ReportMetric(0, "ns/op")
}

func median(d []time.Duration) time.Duration {
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	if len(s) == 0 {
		return 0
	}
	return s[len(s)/2]
}

// BenchmarkDaemonDriftRepair deletes an owned address by hand under the
// running daemon and times until the address is back: event, debounce
// (10 ms), reconcile.
func BenchmarkDaemonDriftRepair(b *testing.B) {
	nettest.RequireRoot(b)
	lab := nettest.NewLab(b, 8)
	d, err := NewDaemon(DaemonOptions{Config: labDaemonConfig(b, b.TempDir(), 8), Version: "bench", Log: quietLog(), Netns: lab.Host.Handle, Resync: time.Hour})
	if err != nil {
		b.Fatal(err)
	}
	defer d.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = d.Run(ctx, "") }()
	for !d.Ready() {
		time.Sleep(time.Millisecond)
	}
	lab.Host.Settle(b)
	link, err := lab.Host.NL.LinkByName("rail5")
	if err != nil {
		b.Fatal(err)
	}
	addr := &netlink.Addr{IPNet: nettest.ParseCIDR(nettest.HostIPv4(5))}
	var lat []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		start := time.Now()
		if err := lab.Host.NL.AddrDel(link, addr); err != nil {
			b.Fatal(err)
		}
		for !hasAddr(lab.Host, link, addr.IP) {
			if time.Since(start) > 5*time.Second {
				b.Fatal("not repaired in 5s")
			}
			time.Sleep(100 * time.Microsecond)
		}
		lat = append(lat, time.Since(start))
		time.Sleep(30 * time.Millisecond) // let the repair's own events settle
	}
	b.StopTimer()
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	b.ReportMetric(float64(lat[len(lat)/2])/1e6, "p50-ms")
	b.ReportMetric(float64(lat[len(lat)*99/100])/1e6, "p99-ms")
	b.ReportMetric(0, "ns/op")
}
