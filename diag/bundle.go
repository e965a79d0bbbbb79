package diag

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/roce-agent/roce-agent/probe"
)

// The bundle: `roce-agent diag --bundle FILE.tar.gz` collects the host's
// state for a vendor's support team into one gzipped tar with a manifest.
// Every entry is bounded (time, bytes), a missing or hung tool, an
// unreadable file and a daemon that does not answer are recorded in the
// manifest, and nothing in it carries a secret: the configuration is
// redacted and every entry is scanned for private keys.

// BundleSchema names the manifest's layout.
const BundleSchema = "roce-agent/diag-bundle/v1"

// The bundle's defaults.
const (
	DefaultBundleTimeout  = 60 * time.Second
	DefaultBundleMaxEntry = 4 << 20
	DefaultBundleMaxTotal = 64 << 20
	// DefaultBundleToolTimeout bounds each tool run and daemon request.
	DefaultBundleToolTimeout = 5 * time.Second
)

// Per-entry bounds.
const (
	bundleFileTimeout = 5 * time.Second
	// bundleGrace is how long a step that passed its deadline gets to
	// hand back what it has (a killed tool's partial output) before it is
	// abandoned.
	bundleGrace = 200 * time.Millisecond
	// kernelLogLines and kernelLogBytes bound the kernel log's tail.
	kernelLogLines = 2000
	kernelLogBytes = 1 << 20
	// bundleStderr bounds a tool's stderr in the manifest.
	bundleStderr = 2048
	// bundleErrLen bounds an error text in the manifest.
	bundleErrLen = 1024
)

// bundleModules are the kernel modules whose versions the bundle records.
var bundleModules = []string{"mlx5_core", "mlx5_ib", "nvidia", "nvidia_peermem", "bnxt_en", "irdma", "ib_core", "rdma_rxe"}

// EntryStatus is how collecting one bundle entry went.
type EntryStatus string

// The entry statuses.
const (
	EntryOK          EntryStatus = "ok"
	EntryError       EntryStatus = "error"
	EntryMissingTool EntryStatus = "missing-tool"
	EntryTimeout     EntryStatus = "timeout"
	EntryTruncated   EntryStatus = "truncated"
	EntrySkipped     EntryStatus = "skipped"
)

// Reasons a bundle stops early.
const (
	reasonBundleTimeout = "bundle timeout"
	reasonBundleSize    = "bundle size limit"
)

// BundleOptions bound a bundle.
type BundleOptions struct {
	// Path is the .tar.gz to write. It is written to a temporary file in
	// the same directory, then renamed; its mode is 0600.
	Path string
	// Timeout bounds the whole bundle (default 60 s): entries not
	// collected by then are recorded as skipped.
	Timeout time.Duration
	// MaxEntry bounds each entry in bytes (default 4 MiB); a longer one
	// is clipped and recorded as truncated.
	MaxEntry int64
	// MaxTotal bounds the whole bundle, uncompressed (default 64 MiB).
	MaxTotal int64
	// ToolTimeout bounds each tool run and each request to the daemon
	// (default 5 s; the kernel log gets twice as long).
	ToolTimeout time.Duration
	// Version is roce-agent's version.
	Version string
}

// Manifest is manifest.json: what the bundle holds and how each entry
// was collected.
type Manifest struct {
	Schema  string    `json:"schema"`
	Node    string    `json:"node"`
	Version string    `json:"version"`
	Created time.Time `json:"created"`
	// Dir is the top directory of the archive.
	Dir        string `json:"dir"`
	SysfsRoot  string `json:"sysfs_root"`
	Live       bool   `json:"live"`
	Privileged bool   `json:"privileged"`
	Timeout    string `json:"timeout"`
	MaxEntry   int64  `json:"max_entry_bytes"`
	MaxTotal   int64  `json:"max_total_bytes"`
	// TotalBytes is the entries' size, uncompressed (without the
	// manifest).
	TotalBytes int64   `json:"total_bytes"`
	DurationMS float64 `json:"duration_ms"`
	// Complete is false when the bundle stopped early (Stopped says why:
	// "bundle timeout" or "bundle size limit").
	Complete bool            `json:"complete"`
	Stopped  string          `json:"stopped,omitempty"`
	Entries  []ManifestEntry `json:"entries"`
}

// ManifestEntry is one entry of the bundle.
type ManifestEntry struct {
	// Name is the file's path below the archive's top directory.
	Name string `json:"name"`
	What string `json:"what"`
	// Source is where it came from: the command line, the file or the
	// URL.
	Source string      `json:"source"`
	Argv   []string    `json:"argv,omitempty"`
	Status EntryStatus `json:"status"`
	Error  string      `json:"error,omitempty"`
	// Note adds a fact (the fallback used, what was redacted).
	Note     string `json:"note,omitempty"`
	ExitCode *int   `json:"exit_code,omitempty"`
	Stderr   string `json:"stderr,omitempty"`
	// InArchive says the file is in the archive (a missing tool or a
	// skipped entry leaves none).
	InArchive  bool    `json:"in_archive"`
	Size       int64   `json:"size"`
	SHA256     string  `json:"sha256,omitempty"`
	DurationMS float64 `json:"duration_ms"`
	Truncated  bool    `json:"truncated,omitempty"`
	// RedactedKeys counts the private key blocks removed.
	RedactedKeys int `json:"redacted_private_keys,omitempty"`
}

// Entry returns the manifest's entry with the given name, or nil.
func (m *Manifest) Entry(name string) *ManifestEntry {
	for i := range m.Entries {
		if m.Entries[i].Name == name {
			return &m.Entries[i]
		}
	}
	return nil
}

// bundleItem is one entry as a step produced it.
type bundleItem struct {
	ManifestEntry
	data []byte
	dur  time.Duration
}

// bundleStep collects one entry (or a few: a tool and its fallback).
type bundleStep struct {
	name, what, source string
	argv               []string
	timeout            time.Duration
	run                func(ctx context.Context) []bundleItem
}

type bundler struct {
	e        *Env
	opts     BundleOptions
	tw       *tar.Writer
	dir      string
	mtime    time.Time
	man      *Manifest
	total    int64
	budget   int64
	procRoot string
	sample   time.Duration
	werr     error
}

// WriteBundle collects the host's state into the gzipped tar at
// opts.Path, with manifest.json last, and returns the manifest. It
// returns an error only when the file cannot be written: every entry that
// could not be collected (a missing or hung tool, an unreadable file, a
// daemon that does not answer, the timeout or the size limit reached) is
// recorded in the manifest instead. Nothing is left at opts.Path on an
// error.
func WriteBundle(ctx context.Context, e *Env, rep *Report, opts BundleOptions) (*Manifest, error) {
	if opts.Path == "" {
		return nil, errors.New("bundle: no output path")
	}
	if e == nil {
		e = &Env{}
	}
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultBundleTimeout
	}
	if opts.MaxEntry <= 0 {
		opts.MaxEntry = DefaultBundleMaxEntry
	}
	if opts.MaxTotal <= 0 {
		opts.MaxTotal = DefaultBundleMaxTotal
	}
	if opts.ToolTimeout <= 0 {
		opts.ToolTimeout = DefaultBundleToolTimeout
	}
	start := time.Now()
	created := e.now().UTC()
	node := e.NodeName()
	name := node
	if name == "" {
		name = "unnamed" // a fixture tree without node.name
	}
	dir := "roce-agent-diag-" + bundleSafeName(name) + "-" + created.Format("20060102T150405Z")

	f, err := os.CreateTemp(filepath.Dir(opts.Path), "."+filepath.Base(opts.Path)+".tmp-*")
	if err != nil {
		return nil, fmt.Errorf("bundle: %w", err)
	}
	tmp := f.Name()
	fail := func(err error) (*Manifest, error) {
		f.Close()
		os.Remove(tmp)
		return nil, fmt.Errorf("bundle %s: %w", opts.Path, err)
	}
	if err := f.Chmod(0o600); err != nil {
		return fail(err)
	}
	gz := gzip.NewWriter(f)
	b := &bundler{
		e: e, opts: opts, tw: tar.NewWriter(gz), dir: dir, mtime: created,
		procRoot: e.ProcRoot, sample: e.Sample,
		man: &Manifest{
			Schema: BundleSchema, Node: node, Version: opts.Version, Created: created, Dir: dir,
			SysfsRoot: e.sysfsRoot(), Live: e.Live, Privileged: e.Privileged, Timeout: opts.Timeout.String(),
			MaxEntry: opts.MaxEntry, MaxTotal: opts.MaxTotal, Complete: true, Entries: []ManifestEntry{},
		},
	}
	if b.procRoot == "" {
		b.procRoot = "/proc"
	}
	if b.sample <= 0 {
		b.sample = 3 * time.Second
	}
	// The manifest is written last, outside the entries' budget: keep
	// room for it.
	reserve := min(opts.MaxTotal/4, 256<<10)
	b.budget = opts.MaxTotal - reserve

	ctx, cancel := context.WithTimeout(ctx, opts.Timeout)
	defer cancel()
	b.collect(ctx, b.steps(rep))
	if b.werr != nil {
		return fail(b.werr)
	}
	b.man.TotalBytes = b.total
	b.man.DurationMS = bundleMS(time.Since(start))
	var mbuf bytes.Buffer
	enc := json.NewEncoder(&mbuf)
	enc.SetIndent("", "  ")
	if err := enc.Encode(b.man); err != nil {
		return fail(err)
	}
	if err := b.writeFile("manifest.json", mbuf.Bytes()); err != nil {
		return fail(err)
	}
	if err := b.tw.Close(); err != nil {
		return fail(err)
	}
	if err := gz.Close(); err != nil {
		return fail(err)
	}
	if err := f.Sync(); err != nil {
		return fail(err)
	}
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		return nil, fmt.Errorf("bundle %s: %w", opts.Path, err)
	}
	if err := os.Rename(tmp, opts.Path); err != nil {
		os.Remove(tmp)
		return nil, fmt.Errorf("bundle %s: %w", opts.Path, err)
	}
	if d, err := os.Open(filepath.Dir(opts.Path)); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return b.man, nil
}

// collect runs the steps in order, each under its own timeout and the
// bundle's, and writes what they produce.
func (b *bundler) collect(ctx context.Context, steps []bundleStep) {
	for i, st := range steps {
		if b.werr != nil {
			return
		}
		if ctx.Err() != nil || b.total >= b.budget {
			reason := reasonBundleSize
			if ctx.Err() != nil {
				reason = reasonBundleTimeout
			}
			b.man.Complete, b.man.Stopped = false, reason
			for _, rest := range steps[i:] {
				b.record(bundleItem{ManifestEntry: ManifestEntry{Name: rest.name, What: rest.what, Source: rest.source, Argv: rest.argv, Status: EntrySkipped, Error: reason}})
			}
			return
		}
		for _, it := range b.runStep(ctx, st) {
			if it.Name == "" {
				it.Name = st.name
			}
			if it.What == "" {
				it.What = st.what
			}
			if it.Source == "" {
				it.Source, it.Argv = st.source, st.argv
			}
			b.add(it)
		}
	}
}

// runStep runs a step in its own goroutine so that one stuck in a call
// that ignores its context (a hung read) is abandoned at its deadline: the
// bundle never waits past its timeout. A step that panics is an error
// entry.
func (b *bundler) runStep(ctx context.Context, st bundleStep) []bundleItem {
	timeout := st.timeout
	if timeout <= 0 {
		timeout = bundleFileTimeout
	}
	sctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	start := time.Now()
	done := make(chan []bundleItem, 1)
	go func() {
		defer func() {
			if p := recover(); p != nil {
				b.e.logf("bundle step panicked", "entry", st.name, "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
				done <- []bundleItem{{ManifestEntry: ManifestEntry{Status: EntryError, Error: fmt.Sprintf("collecting it failed: %v (a bug in roce-agent)", p)}, dur: time.Since(start)}}
			}
		}()
		items := st.run(sctx)
		for i := range items {
			if items[i].dur == 0 {
				items[i].dur = time.Since(start)
			}
		}
		done <- items
	}()
	select {
	case items := <-done:
		return items
	case <-sctx.Done():
	}
	grace := time.NewTimer(bundleGrace)
	defer grace.Stop()
	select {
	case items := <-done:
		return items
	case <-grace.C:
	}
	reason := fmt.Sprintf("did not finish within %s", timeout)
	if ctx.Err() != nil {
		reason = reasonBundleTimeout
		b.man.Complete, b.man.Stopped = false, reasonBundleTimeout
	}
	return []bundleItem{{ManifestEntry: ManifestEntry{Status: EntryTimeout, Error: reason}, dur: time.Since(start)}}
}

// add bounds an item (private keys out, the entry and bundle limits) and
// writes it.
func (b *bundler) add(it bundleItem) {
	if it.Status == "" {
		it.Status = EntryOK
	}
	if b.total >= b.budget && (it.data != nil || it.Status == EntryOK) {
		it.Status, it.Error, it.data = EntrySkipped, reasonBundleSize, nil
		b.record(it)
		return
	}
	if it.data != nil || it.Status == EntryOK || it.Status == EntryTruncated {
		data, n := redactPrivateKeys(it.data)
		if n > 0 {
			it.RedactedKeys = n
			it.Note = bundleJoin(it.Note, fmt.Sprintf("%d private key block(s) removed", n))
		}
		if int64(len(data)) > b.opts.MaxEntry {
			data = data[:b.opts.MaxEntry]
			it.clip(fmt.Sprintf("clipped at the entry limit of %d bytes", b.opts.MaxEntry))
		}
		if room := b.budget - b.total; int64(len(data)) > room {
			data = data[:max(room, 0)]
			it.clip(fmt.Sprintf("clipped at the bundle limit of %d bytes", b.opts.MaxTotal))
			b.man.Complete, b.man.Stopped = false, reasonBundleSize
		}
		if err := b.writeFile(it.Name, data); err != nil {
			b.werr = err
			return
		}
		sum := sha256.Sum256(data)
		it.InArchive, it.Size, it.SHA256 = true, int64(len(data)), hex.EncodeToString(sum[:])
		b.total += int64(len(data))
	}
	b.record(it)
}

// clip marks an item truncated.
func (it *bundleItem) clip(note string) {
	it.Truncated = true
	if it.Status == EntryOK {
		it.Status = EntryTruncated
	}
	it.Note = bundleJoin(it.Note, note)
}

func (b *bundler) record(it bundleItem) {
	it.DurationMS = bundleMS(it.dur)
	it.Error = bundleClip(redactKeysText(it.Error), bundleErrLen)
	it.Note = bundleClip(redactKeysText(it.Note), bundleErrLen)
	it.Stderr = redactKeysText(it.Stderr)
	b.man.Entries = append(b.man.Entries, it.ManifestEntry)
}

func (b *bundler) writeFile(name string, data []byte) error {
	hdr := &tar.Header{
		Typeflag: tar.TypeReg, Name: b.dir + "/" + name, Mode: 0o600, Size: int64(len(data)),
		ModTime: b.mtime, Format: tar.FormatPAX,
	}
	if err := b.tw.WriteHeader(hdr); err != nil {
		return err
	}
	_, err := b.tw.Write(data)
	return err
}

// steps lists what the bundle collects, in order: the quick and vital
// entries first, the counters' sampling and the daemon last.
func (b *bundler) steps(rep *Report) []bundleStep {
	e := b.e
	steps := []bundleStep{
		{name: "report.json", what: "the checks' results (diag --json)", source: "diag", run: b.reportStep(rep)},
		{name: "inventory.json", what: "the node inventory", source: e.sysfsRoot(), run: b.inventoryStep},
		{name: "config.json", what: "the effective configuration, secrets redacted", source: "agent configuration", run: b.configStep},
		{name: "versions.txt", what: "roce-agent, kernel, driver and firmware versions", source: path.Join(b.procRoot, "version") + ", " + path.Join(b.procRoot, "sys/kernel/osrelease") + ", /sys/module/*/version, /sys/class/infiniband/*/fw_ver", run: b.versionsStep},
		b.procStep("cmdline.txt", "the kernel command line", "cmdline"),
	}
	tools := []struct {
		name, what string
		argv       []string
	}{
		{"ip/addr.txt", "addresses", []string{"ip", "-d", "addr", "show"}},
		{"ip/link.txt", "links", []string{"ip", "-d", "link", "show"}},
		{"ip/rule4.txt", "IPv4 policy rules", []string{"ip", "-d", "-4", "rule", "show"}},
		{"ip/rule6.txt", "IPv6 policy rules", []string{"ip", "-d", "-6", "rule", "show"}},
		{"ip/route4.txt", "IPv4 routes, every table", []string{"ip", "-d", "-4", "route", "show", "table", "all"}},
		{"ip/route6.txt", "IPv6 routes, every table", []string{"ip", "-d", "-6", "route", "show", "table", "all"}},
		{"rdma/link.txt", "RDMA links", []string{"rdma", "link", "show"}},
		{"rdma/dev.txt", "RDMA devices", []string{"rdma", "dev", "show", "-d"}},
		{"rdma/statistic.txt", "RDMA statistics", []string{"rdma", "statistic", "show"}},
	}
	for _, t := range tools {
		steps = append(steps, b.toolStep(t.name, t.what, b.opts.ToolTimeout, t.argv...))
	}
	for _, nd := range b.railNetdevs() {
		dir := "rails/" + bundleSafeName(nd) + "/"
		steps = append(steps,
			b.toolStep(dir+"ethtool.txt", "link settings of "+nd, b.opts.ToolTimeout, "ethtool", nd),
			b.toolStep(dir+"ethtool-i.txt", "driver and firmware of "+nd, b.opts.ToolTimeout, "ethtool", "-i", nd),
			b.toolStep(dir+"ethtool-S.txt", "NIC statistics of "+nd, b.opts.ToolTimeout, "ethtool", "-S", nd),
			b.dcbStep(nd, dir),
		)
	}
	steps = append(steps,
		b.toolStep("lldp.json", "LLDP neighbours", b.opts.ToolTimeout, "lldpctl", "-f", "json"),
		b.kernelLogStep(),
		bundleStep{name: "counters.json", what: "RDMA port counters and hw_counters, sampled twice", source: path.Join(e.sysfsRoot(), "class/infiniband/*/ports/*/{counters,hw_counters}"), timeout: b.sample + 30*time.Second, run: b.countersStep},
	)
	for _, p := range []struct{ name, what, path string }{
		{"daemon/status.json", "the daemon's status", "/v1/status"},
		{"daemon/metrics.txt", "the daemon's metrics", "/metrics"},
	} {
		steps = append(steps, b.httpStep(p.name, p.what, p.path))
	}
	return steps
}

func (b *bundler) reportStep(rep *Report) func(context.Context) []bundleItem {
	return func(context.Context) []bundleItem {
		if rep == nil {
			return []bundleItem{{ManifestEntry: ManifestEntry{Status: EntrySkipped, Error: "no checks were run"}}}
		}
		var buf bytes.Buffer
		if err := rep.WriteJSON(&buf); err != nil {
			return []bundleItem{{ManifestEntry: ManifestEntry{Status: EntryError, Error: err.Error()}}}
		}
		return []bundleItem{{data: buf.Bytes()}}
	}
}

func (b *bundler) inventoryStep(context.Context) []bundleItem {
	if b.e.Inventory == nil {
		msg := "no inventory"
		if b.e.InventoryErr != nil {
			msg = "no inventory: " + b.e.InventoryErr.Error()
		}
		return []bundleItem{{ManifestEntry: ManifestEntry{Status: EntryError, Error: msg}}}
	}
	var buf bytes.Buffer
	if err := b.e.Inventory.WriteJSON(&buf); err != nil {
		return []bundleItem{{ManifestEntry: ManifestEntry{Status: EntryError, Error: err.Error()}}}
	}
	return []bundleItem{{data: buf.Bytes()}}
}

// configStep writes the effective configuration with every secret
// redacted. The files it names (keys, certificates, tokens, the web
// configuration) are never read.
func (b *bundler) configStep(context.Context) []bundleItem {
	doc := map[string]any{"config": redactConfig(b.e.Config), "desired_state": b.e.Desired}
	var it bundleItem
	if b.e.ConfigErr != nil {
		doc["config_error"] = redactString(b.e.ConfigErr.Error())
		it.Note = "the configuration could not be used: these are the defaults diag ran with"
	}
	data, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return []bundleItem{{ManifestEntry: ManifestEntry{Status: EntryError, Error: err.Error()}}}
	}
	it.data = append(data, '\n')
	return []bundleItem{it}
}

// versionsStep writes roce-agent's, the kernel's, the drivers' and the
// NICs' firmware versions, one per line.
func (b *bundler) versionsStep(ctx context.Context) []bundleItem {
	var buf strings.Builder
	var errs []string
	version := b.opts.Version
	if version == "" {
		version = "unknown"
	}
	fmt.Fprintf(&buf, "roce-agent: %s\ngo: %s\n", version, runtime.Version())
	for _, p := range []string{"version", "sys/kernel/osrelease"} {
		data, _, err := bundleReadFile(path.Join(b.procRoot, p), 4096)
		if err != nil {
			errs = append(errs, err.Error())
			fmt.Fprintf(&buf, "%s: unreadable: %v\n", p, err)
			continue
		}
		fmt.Fprintf(&buf, "%s: %s\n", p, strings.TrimSpace(string(data)))
	}
	for _, m := range bundleModules {
		if ctx.Err() != nil {
			break
		}
		fmt.Fprintf(&buf, "module %s: %s\n", m, b.moduleVersion(m))
	}
	if inv := b.e.Inventory; inv != nil {
		for _, n := range inv.NICs {
			fw := n.Firmware
			if fw == "" {
				fw = "unknown"
			}
			fmt.Fprintf(&buf, "firmware %s (%s, %s): %s\n", n.RDMADevice, orDash(n.Netdev), orDash(n.Driver), fw)
		}
	} else if b.e.FS != nil {
		devs, _ := b.e.FS.ReadDir("/class/infiniband")
		for _, d := range devs {
			fw, err := b.e.FS.ReadString(path.Join("/class/infiniband", d, "fw_ver"))
			if err != nil {
				fw = "unreadable: " + err.Error()
			}
			fmt.Fprintf(&buf, "firmware %s: %s\n", d, fw)
		}
	}
	it := bundleItem{data: []byte(buf.String())}
	if len(errs) > 0 {
		it.Note = "unreadable: " + strings.Join(errs, "; ")
	}
	return []bundleItem{it}
}

func (b *bundler) moduleVersion(m string) string {
	sys := b.e.FS
	if sys == nil {
		return "unknown (no sysfs tree)"
	}
	dir := path.Join("/module", m)
	if !sys.Exists(dir) {
		return "not loaded"
	}
	v, err := sys.ReadString(path.Join(dir, "version"))
	switch {
	case errors.Is(err, os.ErrNotExist):
		return "loaded (no version: in-tree module)"
	case err != nil:
		return "loaded (version unreadable: " + err.Error() + ")"
	}
	return v
}

// procStep writes a procfs file, bounded.
func (b *bundler) procStep(name, what, p string) bundleStep {
	full := path.Join(b.procRoot, p)
	return bundleStep{name: name, what: what, source: full, run: func(context.Context) []bundleItem {
		data, clipped, err := bundleReadFile(full, int(b.opts.MaxEntry))
		if err != nil {
			return []bundleItem{{ManifestEntry: ManifestEntry{Status: EntryError, Error: err.Error()}}}
		}
		it := bundleItem{data: data}
		if clipped {
			it.clip(fmt.Sprintf("clipped at the entry limit of %d bytes", b.opts.MaxEntry))
		}
		return []bundleItem{it}
	}}
}

// toolStep runs one tool.
func (b *bundler) toolStep(name, what string, timeout time.Duration, argv ...string) bundleStep {
	return bundleStep{name: name, what: what, source: strings.Join(argv, " "), argv: argv, timeout: timeout + time.Second,
		run: func(ctx context.Context) []bundleItem { return []bundleItem{b.runTool(ctx, timeout, argv)} }}
}

// runTool runs a tool through the Env's runner and turns its outcome into
// an entry: its stdout as the file, its stderr and exit code in the
// manifest.
func (b *bundler) runTool(ctx context.Context, timeout time.Duration, argv []string) bundleItem {
	it := bundleItem{ManifestEntry: ManifestEntry{Source: strings.Join(argv, " "), Argv: argv}}
	start := time.Now()
	out, err := b.e.RunTool(ctx, timeout, argv[0], argv[1:]...)
	it.dur = time.Since(start)
	switch {
	case errors.Is(err, probe.ErrToolMissing):
		it.Status, it.Error = EntryMissingTool, argv[0]+" is not installed"
		return it
	case err != nil && (errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) || ctx.Err() != nil):
		it.Status, it.Error = EntryTimeout, fmt.Sprintf("%s did not finish: %v", argv[0], err)
	case err != nil:
		it.Status, it.Error = EntryError, err.Error()
	case out.TimedOut:
		it.Status, it.Error = EntryTimeout, fmt.Sprintf("%s was killed after %s", argv[0], timeout)
	case out.ExitCode != 0:
		it.Status, it.Error = EntryError, fmt.Sprintf("exit status %d", out.ExitCode)
		if line := bundleFirstLine(out.Stderr); line != "" {
			it.Error += ": " + line
		}
	default:
		it.Status = EntryOK
	}
	if err == nil {
		code := out.ExitCode
		it.ExitCode = &code
	}
	it.Stderr = bundleClip(strings.TrimSpace(out.Stderr), bundleStderr)
	data := []byte(out.Stdout)
	if len(data) > probe.MaxOutput {
		data = data[:probe.MaxOutput]
		it.clip(fmt.Sprintf("%s's output passed %d bytes: the first %d are kept", argv[0], probe.MaxOutput, probe.MaxOutput))
	}
	if len(data) > 0 || it.Status == EntryOK || it.Status == EntryTruncated {
		it.data = data
	}
	return it
}

// railNetdevs are the rails' netdevs, in rail order.
func (b *bundler) railNetdevs() []string {
	var out []string
	seen := map[string]bool{}
	for _, r := range b.e.Rails() {
		if r.Netdev != "" && !seen[r.Netdev] {
			seen[r.Netdev] = true
			out = append(out, r.Netdev)
		}
	}
	return out
}

// dcbStep records a rail netdev's DCB state (ETS, PFC, the APP table):
// from the dcb tool when it is installed, else over dcbnl through the
// node pipeline; without either it is skipped.
func (b *bundler) dcbStep(nd, dir string) bundleStep {
	return bundleStep{name: dir + "dcb.json", what: "DCB state (ETS, PFC, APP) of " + nd, source: "dcb -j {ets,pfc,app} show dev " + nd,
		timeout: 3*b.opts.ToolTimeout + time.Second,
		run: func(ctx context.Context) []bundleItem {
			var items []bundleItem
			for _, obj := range []string{"ets", "pfc", "app"} {
				it := b.runTool(ctx, b.opts.ToolTimeout, []string{"dcb", "-j", obj, "show", "dev", nd})
				it.Name, it.What = dir+"dcb-"+obj+".json", "DCB "+strings.ToUpper(obj)+" of "+nd
				if it.Status == EntryMissingTool {
					return []bundleItem{b.dcbnl(nd, dir)}
				}
				items = append(items, it)
			}
			return items
		}}
}

// bundleDCB is the dcbnl fallback's document.
type bundleDCB struct {
	Netdev string   `json:"netdev"`
	IEEE   any      `json:"ieee,omitempty"`
	DCBX   *uint8   `json:"dcbx,omitempty"`
	Errors []string `json:"errors,omitempty"`
}

func (b *bundler) dcbnl(nd, dir string) bundleItem {
	it := bundleItem{ManifestEntry: ManifestEntry{Name: dir + "dcb.json", What: "DCB state (IEEE ETS, PFC, APP; DCBX) of " + nd + " over dcbnl", Source: "dcbnl RTM_GETDCB " + nd}}
	if b.e.Node == nil || b.e.Node.DCB() == nil {
		it.Status, it.Error = EntrySkipped, "the dcb tool is not installed and dcbnl is not available"
		if b.e.NodeErr != nil {
			it.Error += ": " + b.e.NodeErr.Error()
		}
		return it
	}
	it.Note = "the dcb tool is not installed: read over dcbnl"
	dcb := b.e.Node.DCB()
	doc := bundleDCB{Netdev: nd}
	ieee, err := dcb.IEEE(nd)
	if err != nil {
		doc.Errors = append(doc.Errors, "ieee: "+err.Error())
	} else {
		doc.IEEE = ieee
	}
	if mode, err := dcb.DCBX(nd); err != nil {
		doc.Errors = append(doc.Errors, "dcbx: "+err.Error())
	} else {
		doc.DCBX = &mode
	}
	if len(doc.Errors) > 0 {
		it.Status, it.Error = EntryError, strings.Join(doc.Errors, "; ")
	}
	data, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		it.Status, it.Error = EntryError, err.Error()
		return it
	}
	it.data = append(data, '\n')
	return it
}

// kernelLogStep records the tail of the kernel log: dmesg, or journalctl
// where dmesg is refused (dmesg_restrict without root) or its output
// passed the runner's cap (which keeps the head, not the tail).
func (b *bundler) kernelLogStep() bundleStep {
	dmesg := []string{"dmesg", "--time-format", "iso"}
	journal := []string{"journalctl", "-k", "-n", strconv.Itoa(kernelLogLines), "--no-pager"}
	return bundleStep{name: "kernel.log", what: "the tail of the kernel log", source: strings.Join(dmesg, " "), argv: dmesg,
		timeout: 4*b.opts.ToolTimeout + time.Second,
		run: func(ctx context.Context) []bundleItem {
			d := b.runTool(ctx, 2*b.opts.ToolTimeout, dmesg)
			if d.Status == EntryOK {
				d.data = bundleTail(d.data, kernelLogLines, kernelLogBytes)
				d.Note = fmt.Sprintf("the last %d lines of dmesg", kernelLogLines)
				return []bundleItem{d}
			}
			if ctx.Err() != nil {
				return []bundleItem{d}
			}
			why := "dmesg: " + d.Error
			if d.Truncated {
				why = "dmesg's output passed the runner's cap, which keeps its head"
			}
			j := b.runTool(ctx, 2*b.opts.ToolTimeout, journal)
			if j.Status == EntryOK {
				j.data = bundleTail(j.data, kernelLogLines, kernelLogBytes)
				j.Note = why + "; from journalctl instead"
				return []bundleItem{j}
			}
			d.data = bundleTail(d.data, kernelLogLines, kernelLogBytes)
			d.Error = bundleJoin(why, "journalctl: "+j.Error)
			if d.Status == EntryMissingTool && j.Status != EntryMissingTool {
				d.Status = j.Status
			}
			return []bundleItem{d}
		}}
}

// bundleCounter is one counter sampled twice.
type bundleCounter struct {
	Device string `json:"device"`
	Port   int    `json:"port"`
	// Dir is "counters" (PMA) or "hw_counters" (the driver's).
	Dir    string  `json:"dir"`
	Name   string  `json:"name"`
	First  *uint64 `json:"first"`
	Second *uint64 `json:"second"`
	// Delta is second - first (negative after a reset).
	Delta *int64 `json:"delta"`
	// Interval is the seconds between the port's two reads.
	Interval float64 `json:"interval"`
}

// bundleCounters is counters.json.
type bundleCounters struct {
	Sample     string          `json:"sample"`
	FirstTime  time.Time       `json:"first_time"`
	SecondTime *time.Time      `json:"second_time,omitempty"`
	Counters   []bundleCounter `json:"counters"`
	Errors     []string        `json:"errors,omitempty"`
}

type bundlePort struct {
	dev  string
	port int
}

// counterPorts lists every RDMA device's ports: from the inventory, else
// from the tree.
func (b *bundler) counterPorts() []bundlePort {
	var out []bundlePort
	if inv := b.e.Inventory; inv != nil {
		for i := range inv.NICs {
			n := &inv.NICs[i]
			for _, p := range n.Ports() {
				if p.Port > 0 {
					out = append(out, bundlePort{n.RDMADevice, p.Port})
				}
			}
		}
		return out
	}
	devs, _ := b.e.FS.ReadDir("/class/infiniband")
	for _, d := range devs {
		ports, _ := b.e.FS.ReadDir(path.Join("/class/infiniband", d, "ports"))
		for _, p := range ports {
			if n, err := strconv.Atoi(p); err == nil && n > 0 {
				out = append(out, bundlePort{d, n})
			}
		}
	}
	return out
}

// countersStep reads every port's counters and hw_counters twice,
// Env.Sample apart.
func (b *bundler) countersStep(ctx context.Context) []bundleItem {
	if b.e.FS == nil {
		return []bundleItem{{ManifestEntry: ManifestEntry{Status: EntrySkipped, Error: "no sysfs tree"}}}
	}
	ports := b.counterPorts()
	if len(ports) == 0 {
		return []bundleItem{{ManifestEntry: ManifestEntry{Status: EntrySkipped, Error: "no RDMA device"}}}
	}
	type sample struct {
		at   time.Time
		vals map[string]uint64
		keys []string
	}
	var doc bundleCounters
	doc.Sample = b.sample.String()
	read := func(p bundlePort) sample {
		s := sample{at: b.e.now(), vals: map[string]uint64{}}
		cs, errs := b.e.FS.PortCounters(p.dev, p.port)
		for _, c := range cs {
			k := "counters/" + c.Name
			if c.HW {
				k = "hw_counters/" + c.Name
			}
			s.vals[k] = c.Value
			s.keys = append(s.keys, k)
		}
		for _, err := range errs {
			doc.Errors = append(doc.Errors, err.Error())
		}
		return s
	}
	first := make([]sample, len(ports))
	doc.FirstTime = b.e.now().UTC()
	for i, p := range ports {
		first[i] = read(p)
	}
	it := bundleItem{}
	second := make([]sample, len(ports))
	if err := b.e.Wait(ctx, b.sample); err != nil {
		it.Status, it.Error = EntryTimeout, "interrupted before the second sample: "+err.Error()
		second = nil
	} else {
		t := b.e.now().UTC()
		doc.SecondTime = &t
		for i, p := range ports {
			second[i] = read(p)
		}
	}
	doc.Counters = []bundleCounter{}
	for i, p := range ports {
		keys := first[i].keys
		seen := map[string]bool{}
		for _, k := range keys {
			seen[k] = true
		}
		if second != nil {
			for _, k := range second[i].keys {
				if !seen[k] {
					keys = append(keys, k)
				}
			}
		}
		for _, k := range keys {
			dir, name, _ := strings.Cut(k, "/")
			c := bundleCounter{Device: p.dev, Port: p.port, Dir: dir, Name: name}
			if v, ok := first[i].vals[k]; ok {
				c.First = &v
			}
			if second != nil {
				c.Interval = second[i].at.Sub(first[i].at).Seconds()
				if v, ok := second[i].vals[k]; ok {
					c.Second = &v
				}
			}
			if c.First != nil && c.Second != nil {
				d := int64(*c.Second - *c.First)
				c.Delta = &d
			}
			doc.Counters = append(doc.Counters, c)
		}
	}
	if len(doc.Errors) > 0 {
		it.Note = fmt.Sprintf("%d counter(s) unreadable, listed in errors", len(doc.Errors))
		if len(doc.Errors) > 100 {
			doc.Errors = append(doc.Errors[:100], fmt.Sprintf("and %d more", len(doc.Errors)-100))
		}
	}
	data, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return []bundleItem{{ManifestEntry: ManifestEntry{Status: EntryError, Error: err.Error()}}}
	}
	it.data = append(data, '\n')
	return []bundleItem{it}
}

// daemonURL is the daemon's address on this host from listen.metrics: a
// wildcard address is asked on loopback.
func (b *bundler) daemonURL(p string) (string, error) {
	l := b.e.Config.Listen.Metrics
	if l == "" {
		return "", errors.New("listen.metrics is empty: the daemon serves no HTTP")
	}
	host, port, err := net.SplitHostPort(l)
	if err != nil {
		return "", fmt.Errorf("listen.metrics %q: %w", l, err)
	}
	switch host {
	case "", "0.0.0.0":
		host = "127.0.0.1"
	case "::":
		host = "::1"
	}
	return "http://" + net.JoinHostPort(host, port) + p, nil
}

// httpStep asks the daemon for one of its pages. A daemon that does not
// answer is a recorded error, not a failure of the bundle.
func (b *bundler) httpStep(name, what, p string) bundleStep {
	u, uerr := b.daemonURL(p)
	source := u
	if uerr != nil {
		source = "listen.metrics " + p
	}
	return bundleStep{name: name, what: what, source: source, timeout: b.opts.ToolTimeout + time.Second,
		run: func(ctx context.Context) []bundleItem {
			if uerr != nil {
				return []bundleItem{{ManifestEntry: ManifestEntry{Status: EntrySkipped, Error: uerr.Error()}}}
			}
			return []bundleItem{b.fetch(ctx, u)}
		}}
}

func (b *bundler) fetch(ctx context.Context, u string) bundleItem {
	var it bundleItem
	if b.e.Config.Listen.WebConfigFile != "" {
		it.Note = "listen.web_config_file is set: the endpoint may want TLS or basic auth, which diag does not send"
	}
	ctx, cancel := context.WithTimeout(ctx, b.opts.ToolTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		it.Status, it.Error = EntryError, err.Error()
		return it
	}
	client := b.e.HTTP
	if client == nil {
		client = &http.Client{}
	}
	resp, err := client.Do(req)
	if err != nil {
		it.Status, it.Error = EntryError, "the daemon did not answer: "+err.Error()
		if ctx.Err() != nil {
			it.Status = EntryTimeout
		}
		return it
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, b.opts.MaxEntry+1))
	if int64(len(data)) > b.opts.MaxEntry {
		data = data[:b.opts.MaxEntry]
		it.clip(fmt.Sprintf("clipped at the entry limit of %d bytes", b.opts.MaxEntry))
	}
	it.data = data
	switch {
	case err != nil:
		it.Status, it.Error = EntryError, "reading the answer: "+err.Error()
		if ctx.Err() != nil {
			it.Status = EntryTimeout
		}
	case resp.StatusCode != http.StatusOK:
		it.Status, it.Error = EntryError, "HTTP "+resp.Status
	case it.Status == "":
		it.Status = EntryOK
	}
	return it
}

// bundleReadFile reads a file (procfs: its size reads 0) without blocking and
// without growing past max bytes: a regular file only; clipped says it
// was longer.
func bundleReadFile(p string, max int) (data []byte, clipped bool, err error) {
	fd, err := unix.Open(p, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, false, &fs.PathError{Op: "open", Path: p, Err: err}
	}
	f := os.NewFile(uintptr(fd), p)
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, false, err
	}
	if !st.Mode().IsRegular() {
		return nil, false, fmt.Errorf("%s: not a regular file", p)
	}
	data, err = io.ReadAll(io.LimitReader(f, int64(max)+1))
	if err != nil {
		return nil, false, fmt.Errorf("read %s: %w", p, err)
	}
	if len(data) > max {
		return data[:max], true, nil
	}
	return data, false, nil
}

// bundleTail returns the last n lines of b, at most max bytes (cut at a
// line start where it can be).
func bundleTail(b []byte, n, max int) []byte {
	if len(b) == 0 {
		return b
	}
	end := len(b)
	if b[end-1] == '\n' {
		end--
	}
	i := end
	for lines := 0; i > 0; {
		j := bytes.LastIndexByte(b[:i], '\n')
		if j < 0 {
			i = 0
			break
		}
		lines++
		if lines == n {
			i = j + 1
			break
		}
		i = j
	}
	out := b[i:]
	if len(out) > max {
		out = out[len(out)-max:]
		if k := bytes.IndexByte(out, '\n'); k >= 0 && k < len(out)-1 {
			out = out[k+1:]
		}
	}
	return out
}

// bundleSafeName makes a name safe as a path element in the archive.
func bundleSafeName(s string) string {
	var sb strings.Builder
	for _, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_', r == '.', r == '@', r == ':':
			sb.WriteRune(r)
		default:
			sb.WriteByte('_')
		}
	}
	s = sb.String()
	if s == "" || s == "." || s == ".." {
		return "_"
	}
	return s
}

func bundleFirstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	return bundleClip(s, 256)
}

func bundleClip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

func bundleJoin(a, b string) string {
	switch {
	case a == "":
		return b
	case b == "":
		return a
	}
	return a + "; " + b
}

func bundleMS(d time.Duration) float64 {
	return float64(d.Microseconds()) / 1000
}
