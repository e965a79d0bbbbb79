package diag

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/roce-agent/roce-agent/agent"
	"github.com/roce-agent/roce-agent/nic/linkengine/linktest"
	"github.com/roce-agent/roce-agent/nic/sysfstest"
	"github.com/roce-agent/roce-agent/probe"
	"github.com/roce-agent/roce-agent/qos"
)

// bundleTool is a canned answer of the fake runner.
type bundleTool struct {
	stdout, stderr string
	exit           int
	// hang waits for the context or the command's timeout, as a tool
	// the runner kills; stuck ignores both (a runner that does not honour
	// its context).
	hang, stuck bool
}

// bundleRunner replays canned outputs by command line; a command it does not
// know is not installed.
type bundleRunner struct {
	mu    sync.Mutex
	tools map[string]bundleTool
	calls []string
	// unstick releases the stuck tools at the end of the test.
	unstick chan struct{}
}

func newBundleRunner(t *testing.T, tools map[string]bundleTool) *bundleRunner {
	r := &bundleRunner{tools: tools, unstick: make(chan struct{})}
	t.Cleanup(func() { close(r.unstick) })
	return r
}

func (r *bundleRunner) Start(ctx context.Context, c probe.Command) (probe.Process, error) {
	r.mu.Lock()
	r.calls = append(r.calls, c.String())
	tool, ok := r.tools[c.String()]
	r.mu.Unlock()
	if !ok {
		return nil, fmt.Errorf("%s: %w", c.Name, probe.ErrToolMissing)
	}
	if c.Timeout <= 0 {
		return nil, fmt.Errorf("%s: no timeout", c.Name)
	}
	return bundleProcess{ctx: ctx, c: c, tool: tool, unstick: r.unstick}, nil
}

func (r *bundleRunner) ran(cmd string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, c := range r.calls {
		if c == cmd {
			return true
		}
	}
	return false
}

type bundleProcess struct {
	ctx     context.Context
	c       probe.Command
	tool    bundleTool
	unstick chan struct{}
}

func (p bundleProcess) Wait() (probe.Output, error) {
	start := time.Now()
	switch {
	case p.tool.stuck:
		<-p.unstick
		return probe.Output{ExitCode: -1, TimedOut: true}, nil
	case p.tool.hang:
		t := time.NewTimer(p.c.Timeout)
		defer t.Stop()
		select {
		case <-p.ctx.Done():
		case <-t.C:
		}
		return probe.Output{Stdout: p.tool.stdout, ExitCode: -1, TimedOut: true, Duration: time.Since(start)}, nil
	}
	return probe.Output{Stdout: p.tool.stdout, Stderr: p.tool.stderr, ExitCode: p.tool.exit, Duration: time.Since(start)}, nil
}

const (
	bundleToken = "s3cr3t-bearer-token-4f9a"
	bundleKey   = "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7-private-key-bytes"
	bundleHash  = "$2y$10$Q4tbasicAuthHashThatMustNotLeak"
)

// bundleEnv is the DGX fixture with a procfs tree, module versions, a
// config naming a token, a key and a web configuration, a fake clock whose
// Sleep moves a counter, and the daemon at addr.
func bundleEnv(t *testing.T, runner probe.Runner, addr string) *Env {
	t.Helper()
	e := dgx(t, nil)
	root := e.FS.Root()
	write := func(p, s string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(filepath.Join(e.ProcRoot, "version"), "Linux version 6.8.0-49-generic (buildd@lcy02) #49-Ubuntu SMP\n")
	write(filepath.Join(e.ProcRoot, "sys/kernel/osrelease"), "6.8.0-49-generic\n")
	write(filepath.Join(e.ProcRoot, "cmdline"), "BOOT_IMAGE=/vmlinuz root=UUID=1234 iommu=pt\n")
	write(filepath.Join(root, "module/mlx5_core/version"), "24.10-1.1.4\n")
	if err := os.MkdirAll(filepath.Join(root, "module/mlx5_ib"), 0o755); err != nil {
		t.Fatal(err)
	}

	secrets := t.TempDir()
	keyFile := filepath.Join(secrets, "node.key")
	tokenFile := filepath.Join(secrets, "token")
	webFile := filepath.Join(secrets, "web.yml")
	write(keyFile, "-----BEGIN PRIVATE KEY-----\n"+bundleKey+"\n-----END PRIVATE KEY-----\n")
	write(tokenFile, bundleToken+"\n")
	write(webFile, "basic_auth_users:\n  prometheus: "+bundleHash+"\n")
	e.Config.Controller.URL = "https://fabric-ctl:8443"
	e.Config.Controller.TokenFile = tokenFile
	e.Config.Controller.KeyFile = keyFile
	e.Config.Controller.CertFile = filepath.Join(secrets, "node.crt")
	e.Config.Controller.CAFile = filepath.Join(secrets, "ca.crt")
	e.Config.Listen.WebConfigFile = webFile
	e.Config.Listen.Metrics = addr
	e.Runner = runner
	e.HTTP = &http.Client{}

	var mu sync.Mutex
	now := time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)
	e.Clock = func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		return now
	}
	e.Sample = 3 * time.Second
	e.Sleep = func(ctx context.Context, d time.Duration) error {
		mu.Lock()
		now = now.Add(d)
		mu.Unlock()
		// Traffic between the samples.
		write(filepath.Join(root, "class/infiniband", sysfstest.DGXRDMADevice(0), "ports/1/counters/port_rcv_data"), "1000\n")
		write(filepath.Join(root, "class/infiniband", sysfstest.DGXRDMADevice(0), "ports/1/hw_counters/out_of_sequence"), "7\n")
		return ctx.Err()
	}
	return e
}

// bundleTools answers every command the bundle runs on the DGX host,
// with dmesg refused (not root) and lldpctl's output carrying a private
// key.
func bundleTools() map[string]bundleTool {
	tools := map[string]bundleTool{
		"ip -d addr show":                  {stdout: "1: lo: <LOOPBACK,UP,LOWER_UP> mtu 65536\n    inet 127.0.0.1/8 scope host lo\n"},
		"ip -d link show":                  {stdout: "1: lo: <LOOPBACK,UP,LOWER_UP> mtu 65536\n"},
		"ip -d -4 rule show":               {stdout: "0:\tfrom all lookup local\n1000:\tfrom 10.0.0.1 lookup 1000\n"},
		"ip -d -6 rule show":               {stdout: "0:\tfrom all lookup local\n"},
		"ip -d -4 route show table all":    {stdout: "unicast 10.200.0.0/16 via 10.0.0.0 dev enp27s0np0 table 1000\n"},
		"ip -d -6 route show table all":    {stdout: "unicast ::1 dev lo table local\n"},
		"rdma link show":                   {stdout: "link mlx5_0/1 state ACTIVE physical_state LINK_UP netdev enp27s0np0\n"},
		"rdma dev show -d":                 {stdout: "0: mlx5_0: node_type ca fw 28.39.1002\n"},
		"dmesg --time-format iso":          {stderr: "dmesg: read kernel buffer failed: Operation not permitted\n", exit: 1},
		"journalctl -k -n 2000 --no-pager": {stdout: "Nov 22 10:00:00 gpu-017 kernel: mlx5_core 0000:1b:00.0: Port module event: module 0, Cable plugged\n"},
		"lldpctl -f json":                  {stdout: `{"lldp": {"interface": {"enp27s0np0": {"chassis": {"leaf-01": {}}}}, "note": "-----BEGIN RSA PRIVATE KEY-----\nLLDPKEYMATERIAL\n-----END RSA PRIVATE KEY-----"}}` + "\n"},
	}
	for rail := 0; rail < 8; rail++ {
		nd := sysfstest.DGXNetdev(rail)
		tools["ethtool "+nd] = bundleTool{stdout: "Settings for " + nd + ":\n\tSpeed: 400000Mb/s\n"}
		tools["ethtool -i "+nd] = bundleTool{stdout: "driver: mlx5_core\nfirmware-version: 28.39.1002 (MT_0000000838)\n"}
		tools["ethtool -S "+nd] = bundleTool{stdout: "NIC statistics:\n     rx_prio3_pause: 12\n"}
		for _, obj := range []string{"ets", "pfc", "app"} {
			tools["dcb -j "+obj+" show dev "+nd] = bundleTool{stdout: `{"` + obj + `": "` + nd + `"}` + "\n"}
		}
	}
	return tools
}

// bundleDaemon is an httptest daemon serving /v1/status and /metrics.
func bundleDaemon(t *testing.T) *httptest.Server {
	mux := http.NewServeMux()
	mux.HandleFunc("/v1/status", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"node":"gpu-017","ready":true}`)
	})
	mux.HandleFunc("/metrics", func(w http.ResponseWriter, _ *http.Request) {
		io.WriteString(w, "# TYPE roce_agent_up gauge\nroce_agent_up 1\n")
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

// bundleHangingDaemon accepts connections and never answers.
func bundleHangingDaemon(t *testing.T) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
		<-r.Context().Done()
	}))
	t.Cleanup(srv.Close)
	return srv
}

// bundleUnpacked is a bundle read back.
type bundleUnpacked struct {
	dir      string
	files    map[string][]byte
	manifest Manifest
	raw      []byte // the whole tar stream, uncompressed
}

func readBundle(t *testing.T, p string) bundleUnpacked {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	gz, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := io.ReadAll(gz)
	if err != nil {
		t.Fatal(err)
	}
	u := bundleUnpacked{files: map[string][]byte{}, raw: raw}
	tr := tar.NewReader(bytes.NewReader(raw))
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		dir, name, ok := strings.Cut(h.Name, "/")
		if !ok || (u.dir != "" && dir != u.dir) {
			t.Fatalf("entry %s outside one top directory", h.Name)
		}
		u.dir = dir
		if h.Mode != 0o600 {
			t.Errorf("%s: mode %o", h.Name, h.Mode)
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		if _, dup := u.files[name]; dup {
			t.Errorf("%s twice", name)
		}
		u.files[name] = data
	}
	m, ok := u.files["manifest.json"]
	if !ok {
		t.Fatal("no manifest.json")
	}
	if err := json.Unmarshal(m, &u.manifest); err != nil {
		t.Fatalf("manifest: %v", err)
	}
	// The manifest and the archive agree.
	for _, en := range u.manifest.Entries {
		data, in := u.files[en.Name]
		if in != en.InArchive {
			t.Errorf("%s: in the archive %v, manifest says %v", en.Name, in, en.InArchive)
		}
		if in && int64(len(data)) != en.Size {
			t.Errorf("%s: %d bytes, manifest says %d", en.Name, len(data), en.Size)
		}
	}
	for name := range u.files {
		if name != "manifest.json" && u.manifest.Entry(name) == nil {
			t.Errorf("%s is not in the manifest", name)
		}
	}
	return u
}

// entry returns a manifest entry and checks its status.
func (u bundleUnpacked) entry(t *testing.T, name string, st EntryStatus, words ...string) ManifestEntry {
	t.Helper()
	en := u.manifest.Entry(name)
	if en == nil {
		t.Fatalf("no %s in the manifest", name)
	}
	if en.Status != st {
		t.Errorf("%s: status %s (%s), want %s", name, en.Status, en.Error, st)
	}
	text := en.Error + " | " + en.Note + " | " + en.Source
	for _, w := range words {
		if !strings.Contains(text, w) {
			t.Errorf("%s: %q lacks %q", name, text, w)
		}
	}
	return *en
}

func TestBundleDGX(t *testing.T) {
	tools := bundleTools()
	hung := "ethtool -S " + sysfstest.DGXNetdev(1)
	tools[hung] = bundleTool{hang: true, stdout: "NIC statistics:\n"}
	runner := newBundleRunner(t, tools)
	srv := bundleDaemon(t)
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	e := bundleEnv(t, runner, ":"+port) // a wildcard address is asked on loopback
	rep := Run(context.Background(), e, nil, Options{})
	out := filepath.Join(t.TempDir(), "bundle.tar.gz")

	start := time.Now()
	m, err := WriteBundle(context.Background(), e, rep, BundleOptions{Path: out, Version: "1.2.3", ToolTimeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("took %s", d)
	}
	st, err := os.Stat(out)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", st.Mode().Perm())
	}
	u := readBundle(t, out)
	if !strings.HasPrefix(u.dir, "roce-agent-diag-gpu-017-20261122T100000Z") {
		t.Errorf("top directory %s", u.dir)
	}
	if !m.Complete || !u.manifest.Complete || u.manifest.Schema != BundleSchema || u.manifest.Version != "1.2.3" {
		t.Errorf("manifest: complete %v, schema %s, version %s", u.manifest.Complete, u.manifest.Schema, u.manifest.Version)
	}
	// 5 files, 9 ip and rdma commands, 6 per rail, lldp, the kernel
	// log, the counters and the daemon's 2 pages.
	if len(m.Entries) != 5+9+6*8+3+2 {
		t.Errorf("%d entries", len(m.Entries))
	}
	if len(m.Entries) != len(u.manifest.Entries) {
		t.Errorf("returned %d entries, wrote %d", len(m.Entries), len(u.manifest.Entries))
	}

	for _, name := range []string{"report.json", "inventory.json", "config.json", "versions.txt", "cmdline.txt",
		"ip/addr.txt", "ip/link.txt", "ip/rule4.txt", "ip/rule6.txt", "ip/route4.txt", "ip/route6.txt",
		"rdma/link.txt", "rdma/dev.txt", "counters.json", "daemon/status.json", "daemon/metrics.txt"} {
		en := u.entry(t, name, EntryOK)
		if en.SHA256 == "" || en.Size == 0 || en.What == "" || en.Source == "" {
			t.Errorf("%s: %+v", name, en)
		}
	}
	u.entry(t, "ip/route6.txt", EntryOK, "ip -d -6 route show table all")
	u.entry(t, "rdma/statistic.txt", EntryMissingTool, "not installed")
	u.entry(t, "rails/"+sysfstest.DGXNetdev(1)+"/ethtool-S.txt", EntryTimeout, "killed")
	for rail := 0; rail < 8; rail++ {
		nd := sysfstest.DGXNetdev(rail)
		for _, f := range []string{"ethtool.txt", "ethtool-i.txt", "dcb-ets.json", "dcb-pfc.json", "dcb-app.json"} {
			u.entry(t, "rails/"+nd+"/"+f, EntryOK)
		}
	}
	u.entry(t, "kernel.log", EntryOK, "journalctl -k -n 2000 --no-pager", "dmesg: exit status 1: dmesg: read kernel buffer failed")
	if !bytes.Contains(u.files["kernel.log"], []byte("Cable plugged")) {
		t.Errorf("kernel.log: %q", u.files["kernel.log"])
	}
	u.entry(t, "daemon/status.json", EntryOK, "http://127.0.0.1:"+port+"/v1/status", "web_config_file")
	if string(u.files["daemon/status.json"]) != `{"node":"gpu-017","ready":true}` {
		t.Errorf("status: %s", u.files["daemon/status.json"])
	}
	if !bytes.Contains(u.files["daemon/metrics.txt"], []byte("roce_agent_up 1")) {
		t.Errorf("metrics: %s", u.files["daemon/metrics.txt"])
	}

	// The private key in lldpctl's output is gone, and the manifest says so.
	lldp := u.entry(t, "lldp.json", EntryOK, "private key")
	if lldp.RedactedKeys != 1 || bytes.Contains(u.raw, []byte("LLDPKEYMATERIAL")) || !bytes.Contains(u.files["lldp.json"], []byte(privateKeyMarker)) {
		t.Errorf("lldp.json: %d keys redacted: %s", lldp.RedactedKeys, u.files["lldp.json"])
	}

	// versions.txt.
	v := string(u.files["versions.txt"])
	for _, w := range []string{"roce-agent: 1.2.3", "6.8.0-49-generic", "#49-Ubuntu", "module mlx5_core: 24.10-1.1.4",
		"module mlx5_ib: loaded (no version", "module nvidia_peermem: not loaded",
		"firmware " + sysfstest.DGXRDMADevice(0) + " (" + sysfstest.DGXNetdev(0) + ", mlx5_core): 28.39.1002"} {
		if !strings.Contains(v, w) {
			t.Errorf("versions.txt lacks %q:\n%s", w, v)
		}
	}
	if !strings.Contains(string(u.files["cmdline.txt"]), "iommu=pt") {
		t.Errorf("cmdline: %q", u.files["cmdline.txt"])
	}
	var report Report
	if err := json.Unmarshal(u.files["report.json"], &report); err != nil || report.Schema != Schema {
		t.Errorf("report.json: %v %+v", err, report)
	}
	var inv struct {
		NICs []any `json:"nics"`
	}
	if err := json.Unmarshal(u.files["inventory.json"], &inv); err != nil || len(inv.NICs) != len(e.Inventory.NICs) {
		t.Errorf("inventory.json: %v", err)
	}

	// counters.json: two samples of every counter of every port, and
	// their deltas.
	var counters struct {
		Sample     string     `json:"sample"`
		FirstTime  time.Time  `json:"first_time"`
		SecondTime *time.Time `json:"second_time"`
		Counters   []struct {
			Device   string  `json:"device"`
			Port     int     `json:"port"`
			Dir      string  `json:"dir"`
			Name     string  `json:"name"`
			First    *uint64 `json:"first"`
			Second   *uint64 `json:"second"`
			Delta    *int64  `json:"delta"`
			Interval float64 `json:"interval"`
		} `json:"counters"`
	}
	if err := json.Unmarshal(u.files["counters.json"], &counters); err != nil {
		t.Fatal(err)
	}
	if counters.Sample != "3s" || counters.SecondTime == nil || counters.SecondTime.Sub(counters.FirstTime) != 3*time.Second {
		t.Errorf("counters: sample %s, %v to %v", counters.Sample, counters.FirstTime, counters.SecondTime)
	}
	devices := map[string]bool{}
	perPort := 0
	for _, c := range counters.Counters {
		devices[c.Device] = true
		if c.Device == sysfstest.DGXRDMADevice(0) {
			perPort++
		}
		if c.First == nil || c.Second == nil || c.Delta == nil || c.Interval != 3 {
			t.Fatalf("counter %+v", c)
		}
		if c.Name == "lifespan" {
			t.Errorf("lifespan is not a counter")
		}
		want := int64(0)
		if c.Device == sysfstest.DGXRDMADevice(0) && c.Port == 1 {
			switch c.Dir + "/" + c.Name {
			case "counters/port_rcv_data":
				want = 1000
			case "hw_counters/out_of_sequence":
				want = 7
			}
		}
		if *c.Delta != want || *c.Second-*c.First != uint64(want) {
			t.Errorf("%s %d %s/%s: %d -> %d, delta %d, want %d", c.Device, c.Port, c.Dir, c.Name, *c.First, *c.Second, *c.Delta, want)
		}
	}
	if len(devices) != len(e.Inventory.NICs) || perPort != len(sysfstest.PMACounters)+len(sysfstest.MLX5HWCounters)-1 {
		t.Errorf("counters of %d devices (want %d), %d of %s", len(devices), len(e.Inventory.NICs), perPort, sysfstest.DGXRDMADevice(0))
	}

	// config.json: the paths stay, no secret does; the archive holds
	// neither the key nor the token nor the basic-auth hash.
	var cfg struct {
		Config map[string]any `json:"config"`
	}
	if err := json.Unmarshal(u.files["config.json"], &cfg); err != nil {
		t.Fatal(err)
	}
	ctl, _ := cfg.Config["controller"].(map[string]any)
	if ctl["token_file"] != e.Config.Controller.TokenFile || ctl["key_file"] != e.Config.Controller.KeyFile || ctl["url"] != "https://fabric-ctl:8443" {
		t.Errorf("controller: %v", ctl)
	}
	if cfg.Config["sysfs_root"] != e.FS.Root() || cfg.Config["link"] == nil {
		t.Errorf("config: %v", cfg.Config)
	}
	for _, secret := range []string{bundleToken, bundleKey, bundleHash, "PRIVATE KEY-----"} {
		if bytes.Contains(u.raw, []byte(secret)) {
			t.Errorf("the archive holds %q", secret)
		}
	}
	gzBytes, _ := os.ReadFile(out)
	if bytes.Contains(gzBytes, []byte(bundleToken)) {
		t.Error("the file holds the token")
	}
	if !runner.ran("journalctl -k -n 2000 --no-pager") || !runner.ran("dcb -j pfc show dev "+sysfstest.DGXNetdev(7)) {
		t.Error("runner calls")
	}
	if left, _ := filepath.Glob(filepath.Join(filepath.Dir(out), ".*tmp*")); len(left) > 0 {
		t.Errorf("left behind: %v", left)
	}
}

// TestBundleDaemonHangs: a daemon that accepts and never answers is an
// entry that timed out; the bundle goes on.
func TestBundleDaemonHangs(t *testing.T) {
	srv := bundleHangingDaemon(t)
	e := bundleEnv(t, newBundleRunner(t, bundleTools()), srv.Listener.Addr().String())
	out := filepath.Join(t.TempDir(), "b.tar.gz")
	start := time.Now()
	if _, err := WriteBundle(context.Background(), e, nil, BundleOptions{Path: out, ToolTimeout: 200 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("took %s", d)
	}
	u := readBundle(t, out)
	u.entry(t, "daemon/status.json", EntryTimeout, "did not answer")
	u.entry(t, "daemon/metrics.txt", EntryTimeout, "did not answer")
	u.entry(t, "report.json", EntrySkipped, "no checks")
	u.entry(t, "counters.json", EntryOK)

	// No daemon at all: a refused connection is an error.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e.Config.Listen.Metrics = ln.Addr().String()
	ln.Close()
	if _, err := WriteBundle(context.Background(), e, nil, BundleOptions{Path: out, ToolTimeout: 200 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	readBundle(t, out).entry(t, "daemon/status.json", EntryError, "did not answer")

	// No listen address: skipped.
	e.Config.Listen.Metrics = ""
	if _, err := WriteBundle(context.Background(), e, nil, BundleOptions{Path: out, ToolTimeout: 200 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	readBundle(t, out).entry(t, "daemon/metrics.txt", EntrySkipped, "listen.metrics is empty")
}

// TestBundleTimeout: tools stuck past any deadline (a runner that ignores
// its context) do not hold the bundle past its timeout; what was not
// collected is recorded as skipped.
func TestBundleTimeout(t *testing.T) {
	tools := bundleTools()
	for k := range tools {
		if strings.HasPrefix(k, "ip ") {
			tools[k] = bundleTool{stuck: true}
		}
	}
	e := bundleEnv(t, newBundleRunner(t, tools), "")
	out := filepath.Join(t.TempDir(), "b.tar.gz")
	start := time.Now()
	m, err := WriteBundle(context.Background(), e, nil, BundleOptions{Path: out, Timeout: 2 * time.Second, ToolTimeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 4*time.Second {
		t.Fatalf("took %s with a timeout of 2s", d)
	}
	u := readBundle(t, out)
	if m.Complete || u.manifest.Complete || u.manifest.Stopped != "bundle timeout" {
		t.Errorf("complete %v, stopped %q", u.manifest.Complete, u.manifest.Stopped)
	}
	u.entry(t, "config.json", EntryOK)
	u.entry(t, "ip/addr.txt", EntryTimeout, "did not finish within 1.3s")
	u.entry(t, "ip/link.txt", EntryTimeout, "bundle timeout")
	u.entry(t, "counters.json", EntrySkipped, "bundle timeout")
	u.entry(t, "daemon/metrics.txt", EntrySkipped, "bundle timeout")
	if len(u.manifest.Entries) < 20 {
		t.Errorf("%d entries: every planned one is recorded", len(u.manifest.Entries))
	}

	// A context already ended: everything is skipped, the file is still
	// written.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := WriteBundle(ctx, e, nil, BundleOptions{Path: out}); err != nil {
		t.Fatal(err)
	}
	u = readBundle(t, out)
	u.entry(t, "report.json", EntrySkipped, "bundle timeout")
	if len(u.files) != 1 {
		t.Errorf("%d files", len(u.files))
	}
}

// TestBundleSizeLimits: an entry past MaxEntry is clipped and marked
// truncated; past MaxTotal the rest is skipped.
func TestBundleSizeLimits(t *testing.T) {
	tools := bundleTools()
	tools["ip -d addr show"] = bundleTool{stdout: strings.Repeat("0123456789abcdef", 1024)} // 16 KiB
	e := bundleEnv(t, newBundleRunner(t, tools), "")
	out := filepath.Join(t.TempDir(), "b.tar.gz")
	if _, err := WriteBundle(context.Background(), e, nil, BundleOptions{Path: out, MaxEntry: 4096, ToolTimeout: 200 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	u := readBundle(t, out)
	en := u.entry(t, "ip/addr.txt", EntryTruncated, "entry limit of 4096")
	if !en.Truncated || en.Size != 4096 || len(u.files["ip/addr.txt"]) != 4096 {
		t.Errorf("ip/addr.txt: %+v", en)
	}
	if !u.manifest.Complete {
		t.Error("a clipped entry does not stop the bundle")
	}

	// The total: the inventory of the DGX alone is larger than 12 KiB.
	const total = 16 << 10
	if _, err := WriteBundle(context.Background(), e, nil, BundleOptions{Path: out, MaxEntry: 4096, MaxTotal: total, ToolTimeout: 200 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	u = readBundle(t, out)
	if u.manifest.Complete || u.manifest.Stopped != "bundle size limit" || u.manifest.TotalBytes > total {
		t.Errorf("complete %v, stopped %q, %d bytes", u.manifest.Complete, u.manifest.Stopped, u.manifest.TotalBytes)
	}
	var sum int64
	for name, data := range u.files {
		if name != "manifest.json" {
			sum += int64(len(data))
		}
	}
	if sum != u.manifest.TotalBytes || sum > total {
		t.Errorf("%d bytes of entries, manifest says %d", sum, u.manifest.TotalBytes)
	}
	u.entry(t, "daemon/metrics.txt", EntrySkipped, "bundle size limit")
	clipped := 0
	for _, en := range u.manifest.Entries {
		if en.Truncated && strings.Contains(en.Note, "bundle limit") {
			clipped++
		}
	}
	if clipped != 1 {
		t.Errorf("%d entries clipped at the bundle limit, want 1", clipped)
	}
}

// TestBundleAtomic: a bundle that cannot be written leaves nothing at
// Path (nor a temporary file), and replaces an old bundle only when done.
func TestBundleAtomic(t *testing.T) {
	e := bundleEnv(t, newBundleRunner(t, bundleTools()), "")
	dir := t.TempDir()
	opts := BundleOptions{ToolTimeout: 100 * time.Millisecond}

	opts.Path = filepath.Join(dir, "missing", "b.tar.gz")
	if _, err := WriteBundle(context.Background(), e, nil, opts); err == nil {
		t.Error("no error for a missing directory")
	}
	// Path is a directory: everything is collected, the rename fails.
	opts.Path = filepath.Join(dir, "isdir")
	if err := os.Mkdir(opts.Path, 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := WriteBundle(context.Background(), e, nil, opts); err == nil {
		t.Error("no error writing over a directory")
	}
	if st, err := os.Stat(opts.Path); err != nil || !st.IsDir() {
		t.Errorf("%s: %v", opts.Path, err)
	}
	names, _ := os.ReadDir(dir)
	if len(names) != 1 {
		t.Errorf("left behind: %v", names)
	}
	if _, err := WriteBundle(context.Background(), e, nil, BundleOptions{}); err == nil {
		t.Error("no error without a path")
	}

	// An old bundle is replaced whole.
	opts.Path = filepath.Join(dir, "b.tar.gz")
	if err := os.WriteFile(opts.Path, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := WriteBundle(context.Background(), e, nil, opts); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(opts.Path)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("%v %v", st, err)
	}
	readBundle(t, opts.Path)
}

// bundleFakeDCB answers dcbnl reads.
type bundleFakeDCB struct{}

func (bundleFakeDCB) IEEE(dev string) (qos.IEEE, error) {
	if dev == sysfstest.DGXNetdev(1) {
		return qos.IEEE{}, qos.ErrUnsupported
	}
	return qos.IEEE{PFC: &qos.PFC{Cap: 8, Enable: 1 << 3}, Apps: []qos.App{{Selector: qos.AppSelectorDSCP, Priority: 3, Protocol: 26}}}, nil
}
func (bundleFakeDCB) SetIEEE(string, qos.IEEE) error  { return errors.New("read-only") }
func (bundleFakeDCB) DelApps(string, []qos.App) error { return errors.New("read-only") }
func (bundleFakeDCB) DCBX(string) (uint8, error)      { return qos.DCBXHost | qos.DCBXVerIEEE, nil }
func (bundleFakeDCB) SetDCBX(string, uint8) error     { return errors.New("read-only") }

// TestBundleDCBFallback: without the dcb tool the bundle reads dcbnl
// through the node pipeline; without either the entry is skipped.
func TestBundleDCBFallback(t *testing.T) {
	tools := bundleTools()
	for k := range tools {
		if strings.HasPrefix(k, "dcb ") {
			delete(tools, k)
		}
	}
	e := bundleEnv(t, newBundleRunner(t, tools), "")
	out := filepath.Join(t.TempDir(), "b.tar.gz")
	opts := BundleOptions{Path: out, ToolTimeout: 100 * time.Millisecond}
	if _, err := WriteBundle(context.Background(), e, nil, opts); err != nil {
		t.Fatal(err)
	}
	u := readBundle(t, out)
	nd := sysfstest.DGXNetdev(0)
	u.entry(t, "rails/"+nd+"/dcb.json", EntrySkipped, "dcb tool is not installed")
	if u.manifest.Entry("rails/"+nd+"/dcb-ets.json") != nil {
		t.Error("a dcb-ets.json entry without the tool")
	}

	node, err := agent.OpenNode(agent.NodeOptions{Config: e.Config, Host: linktest.New(), DCB: bundleFakeDCB{}})
	if err != nil {
		t.Fatal(err)
	}
	defer node.Close()
	e.Node = node
	if _, err := WriteBundle(context.Background(), e, nil, opts); err != nil {
		t.Fatal(err)
	}
	u = readBundle(t, out)
	u.entry(t, "rails/"+nd+"/dcb.json", EntryOK, "dcbnl", "not installed")
	var doc struct {
		Netdev string `json:"netdev"`
		IEEE   struct {
			PFC struct{ Enable uint8 }
		} `json:"ieee"`
		DCBX *uint8 `json:"dcbx"`
	}
	if err := json.Unmarshal(u.files["rails/"+nd+"/dcb.json"], &doc); err != nil {
		t.Fatal(err)
	}
	if doc.Netdev != nd || doc.IEEE.PFC.Enable != 8 || doc.DCBX == nil || *doc.DCBX != qos.DCBXHost|qos.DCBXVerIEEE {
		t.Errorf("dcb.json: %s", u.files["rails/"+nd+"/dcb.json"])
	}
	u.entry(t, "rails/"+sysfstest.DGXNetdev(1)+"/dcb.json", EntryError, "not supported")
}

// TestBundleKernelLog: dmesg's tail when it answers; a failure of both
// dmesg and journalctl is recorded with both reasons.
func TestBundleKernelLog(t *testing.T) {
	tools := bundleTools()
	var log strings.Builder
	for i := 0; i < 2500; i++ {
		fmt.Fprintf(&log, "2026-11-22T10:00:00,%06d+00:00 line %d\n", i, i)
	}
	tools["dmesg --time-format iso"] = bundleTool{stdout: log.String()}
	e := bundleEnv(t, newBundleRunner(t, tools), "")
	out := filepath.Join(t.TempDir(), "b.tar.gz")
	opts := BundleOptions{Path: out, ToolTimeout: 100 * time.Millisecond}
	if _, err := WriteBundle(context.Background(), e, nil, opts); err != nil {
		t.Fatal(err)
	}
	u := readBundle(t, out)
	u.entry(t, "kernel.log", EntryOK, "dmesg --time-format iso", "last 2000 lines")
	kl := string(u.files["kernel.log"])
	if n := strings.Count(kl, "\n"); n != 2000 || !strings.HasPrefix(kl, "2026-11-22T10:00:00,000500+00:00 line 500\n") || !strings.HasSuffix(kl, "line 2499\n") {
		t.Errorf("kernel.log: %d lines, starting %q", n, kl[:60])
	}

	tools["dmesg --time-format iso"] = bundleTool{stderr: "dmesg: read kernel buffer failed: Operation not permitted", exit: 1}
	delete(tools, "journalctl -k -n 2000 --no-pager")
	if _, err := WriteBundle(context.Background(), e, nil, opts); err != nil {
		t.Fatal(err)
	}
	u = readBundle(t, out)
	u.entry(t, "kernel.log", EntryError, "Operation not permitted", "journalctl: journalctl is not installed")
}

func TestRedactConfig(t *testing.T) {
	type Web struct {
		Users    map[string]string `mapstructure:"basic_auth_users"`
		Password string            `mapstructure:"password"`
		PassFile string            `mapstructure:"password_file"`
		Token    string            `mapstructure:"token"`
		Keys     []string          `mapstructure:"api_keys"`
		Empty    string            `mapstructure:"secret"`
		Interval time.Duration     `mapstructure:"interval"`
		URL      string            `mapstructure:"url"`
		Inline   string            `mapstructure:"cert"`
	}
	type cfg struct {
		Web   `mapstructure:",squash"`
		Name  string `mapstructure:"name"`
		Rails []int  `mapstructure:"rails"`
	}
	c := cfg{
		Web: Web{
			Users: map[string]string{"alice": bundleHash}, Password: "hunter2", PassFile: "/etc/pw", Token: bundleToken,
			Keys: []string{"k1"}, Interval: 3 * time.Second, URL: "https://bob:pa55@ctl:8443/x?token=abc&node=n1",
			Inline: "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----",
		},
		Name: "gpu-017", Rails: []int{0, 1},
	}
	got, err := json.Marshal(redactConfig(c))
	if err != nil {
		t.Fatal(err)
	}
	s := string(got)
	for _, leak := range []string{bundleHash, "hunter2", bundleToken, "k1", "pa55", "abc", "MIIB"} {
		if strings.Contains(s, leak) {
			t.Errorf("%q leaks in %s", leak, s)
		}
	}
	for _, keep := range []string{`"alice":"\u003credacted\u003e"`, `"password_file":"/etc/pw"`, `"secret":""`, `"interval":"3s"`,
		`"name":"gpu-017"`, `"rails":[0,1]`, `node=n1`, `bob:REDACTED@ctl:8443`} {
		if !strings.Contains(s, keep) {
			t.Errorf("%s lacks %s", s, keep)
		}
	}
}

func TestRedactPrivateKeys(t *testing.T) {
	for _, c := range []struct {
		in, want string
		n        int
	}{
		{"no key here", "no key here", 0},
		{"a\n-----BEGIN PRIVATE KEY-----\nAAAA\nBBBB\n-----END PRIVATE KEY-----\nb\n", "a\n" + privateKeyMarker + "\nb\n", 1},
		{"x -----BEGIN EC PRIVATE KEY-----\\nAAAA\\n-----END EC PRIVATE KEY----- y -----BEGIN OPENSSH PRIVATE KEY-----\nCCC\n-----END OPENSSH PRIVATE KEY-----",
			"x " + privateKeyMarker + " y " + privateKeyMarker, 2},
		{"-----BEGIN CERTIFICATE-----\nCERT\n-----END CERTIFICATE-----\n-----BEGIN RSA PRIVATE KEY-----\nKEY", "-----BEGIN CERTIFICATE-----\nCERT\n-----END CERTIFICATE-----\n" + privateKeyMarker, 1},
		{"tail of a clipped key\n-----END PRIVATE KEY-----\nafter", "tail of a clipped key\n" + privateKeyMarker + "\nafter", 1},
		{"tail of a clipped key\nQUJD+/=\nREVG\n-----END PRIVATE KEY-----\nafter", "tail of a clipped key\n" + privateKeyMarker + "\nafter", 1},
	} {
		got, n := redactPrivateKeys([]byte(c.in))
		if string(got) != c.want || n != c.n {
			t.Errorf("%q: got %q (%d), want %q (%d)", c.in, got, n, c.want, c.n)
		}
	}
}
