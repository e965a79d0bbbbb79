package agent

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	v1 "github.com/roce-agent/roce-agent/api/v1"
	"github.com/roce-agent/roce-agent/nic/linkengine"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/roce-agent/roce-agent/nic"
	"github.com/roce-agent/roce-agent/qos"
)

// DaemonOptions configure the daemon.
type DaemonOptions struct {
	Config  Config
	Version string
	Log     *slog.Logger
	// NVML is asked for GPUs when the sysfs root is the live /sys.
	NVML func() nvml.Interface
	// Netns is the namespace the rails live in; closed means the
	// process's own.
	Netns netns.NsHandle
	// Debounce is how long an event burst is collected before one
	// reconcile; Resync is the period of a full resync (inventory and
	// reconcile) that catches what events miss.
	Debounce, Resync time.Duration
	Notifier         Notifier
	// Host is the rails' namespace; nil opens Netns. Tests inject a
	// recording fake (nic/linktest).
	Host linkengine.RailHost
	// DCB is the dcbnl client; nil opens one in the namespace.
	DCB qos.DCBClient
	// Source gives the configuration on reload and says when it changed;
	// nil: reloads come only through Reload.
	Source ConfigSource
	// Reporter sends the node's status elsewhere (the controller); nil:
	// nowhere.
	Reporter StatusReporter
	// Lock is the state directory's lock the daemon holds; it is
	// verified before every reconcile (nil: none, in tests).
	Lock *StateLock
}

// ConfigSource gives the daemon its configuration: the file (read again
// on SIGHUP), or the controller (ControllerSource, which also signals
// Changed when a new generation arrives).
type ConfigSource interface {
	// Load returns the current configuration, validated, or why there is
	// none to use.
	Load() (Config, error)
	// Changed signals that Load has something new; nil when changes come
	// only with SIGHUP.
	Changed() <-chan struct{}
}

// StatusReporter sends the node's status somewhere (ControllerSource: to
// the controller). Run starts it and tells it about every reconcile.
type StatusReporter interface {
	// Report runs until ctx ends; status returns the node's status, nil
	// before the first reconcile.
	Report(ctx context.Context, status func() *v1.NodeStatus)
	// StatusChanged says that a reconcile produced a status.
	StatusChanged()
	// Conditions are node conditions of the reporter's own
	// (ControllerConnected), with their transition times, added to the
	// status when it is read.
	Conditions() []Condition
	// Collectors are its metrics, registered in the daemon's registry.
	Collectors() []prometheus.Collector
}

// Daemon is `roce-agent run`: it keeps the rails converged, driven by
// netlink events and a periodic resync, and says how the node is. The
// work itself is the Node pipeline; the daemon paces it and serves it.
type Daemon struct {
	opts    DaemonOptions
	log     *slog.Logger
	node    *Node
	metrics *Metrics
	routes  map[string]http.Handler

	mu     sync.Mutex // guards what follows
	status *NodeStatus
	// applied is the generation of the last reconcile that converged
	// (the status's applied_generation).
	applied int64
	// waiting says why the daemon changes nothing: no desired state yet
	// ("" when it has one).
	waiting string

	reloadMu sync.Mutex // one reload at a time (SIGHUP and the source)

	// http limits the HTTP server; railAddrs are the rails' host
	// addresses, on which it serves nothing.
	http      *HTTPGuard
	railAddrs atomic.Pointer[map[netip.Addr]bool]

	// prober serves and runs the peer probes (nil without
	// listen.probe_api); probeHTTP guards its listener, which serves
	// only the rails' addresses.
	prober    *Prober
	probeHTTP *HTTPGuard
	// cabling is the LLDP cabling check (cabling.go).
	cabling *cablingCheck

	trigger    chan struct{}
	heartbeat  atomic.Int64 // unix nanoseconds of the loop's last sign of life
	ready      atomic.Bool
	lockLost   atomic.Bool
	lastErr    string          // the loop's last reconcile error, for transition logging
	ncclNotes  map[string]bool // the NCCL hand-off notes in force
	listen     atomic.Value    // the listen address Run serves (string)
	webConfig  atomic.Value    // the web configuration Run serves with (webServed)
	Reconciles atomic.Int64    // reconciles run, for tests
}

// NewDaemon opens the node (netlink and dcbnl sockets of the rails'
// namespace, the sysfs tree) and the metrics registry. The configuration
// must have passed Validate.
func NewDaemon(opts DaemonOptions) (*Daemon, error) {
	if opts.Debounce <= 0 {
		opts.Debounce = 10 * time.Millisecond
	}
	if opts.Resync <= 0 {
		opts.Resync = time.Minute
	}
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	node, err := OpenNode(NodeOptions{Config: opts.Config, Netns: opts.Netns, Host: opts.Host, DCB: opts.DCB, NVML: opts.NVML, Log: opts.Log})
	if err != nil {
		return nil, err
	}
	d := &Daemon{opts: opts, log: opts.Log, node: node, trigger: make(chan struct{}, 1), routes: map[string]http.Handler{}}
	var pfc PFCReader
	if dcb := node.DCB(); dcb != nil {
		pfc = dcb
	}
	d.metrics = NewMetrics(opts.Version, node.FS, pfc, node.NetdevState, d.Status, d.log)
	d.http = &HTTPGuard{Refuse: d.onRail}
	d.metrics.Registry.MustRegister(
		prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: namespace, Subsystem: "http", Name: "refused_connections_total",
			Help: "HTTP connections closed unserved because they arrived on a rail address."}, func() float64 { return float64(d.http.Refused.Load()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: namespace, Subsystem: "http", Name: "evicted_connections_total",
			Help: "Idle HTTP connections closed to make room at the connection cap."}, func() float64 { return float64(d.http.Evicted.Load()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: namespace, Subsystem: "http", Name: "open_connections",
			Help: "HTTP connections open now (at most the cap)."}, func() float64 { return float64(d.http.Open.Load()) }),
	)
	if opts.Reporter != nil {
		d.metrics.Registry.MustRegister(opts.Reporter.Collectors()...)
	}
	if opts.Config.Listen.ProbeAPI != "" {
		changed := func() {}
		if opts.Reporter != nil {
			changed = opts.Reporter.StatusChanged
		}
		if d.prober, err = NewProber(node, opts.Config, d.log, changed); err != nil {
			node.Close()
			return nil, err
		}
		d.probeHTTP = &HTTPGuard{Refuse: func(a netip.Addr) bool { return !d.onRail(a) }}
		d.metrics.Registry.MustRegister(d.prober)
	}
	d.cabling = newCablingCheck(d)
	d.heartbeat.Store(time.Now().UnixNano())
	return d, nil
}

// Close releases the sockets.
func (d *Daemon) Close() { d.node.Close() }

// builtinPaths are the daemon's own routes; Mount cannot replace them.
var builtinPaths = map[string]bool{"/metrics": true, "/healthz": true, "/readyz": true, "/v1/status": true}

// Mount adds a route to the daemon's HTTP server (the probe API, say);
// call it before Run. A built-in path or one already mounted is an error.
func (d *Daemon) Mount(pattern string, h http.Handler) error {
	if builtinPaths[pattern] || d.routes[pattern] != nil {
		return fmt.Errorf("mount %s: the path is taken", pattern)
	}
	d.routes[pattern] = h
	return nil
}

// Reload reads a new configuration with load (which validates it) and
// swaps it in, then reconciles; changes that follow from it do not count
// as drift. A configuration load rejects, or one that changes state_dir
// (the lock and the ownership record live there), keeps the running
// config. systemd hears RELOADING=1 (with MONOTONIC_USEC=) and then
// READY=1 either way, which is Type=notify-reload's protocol, and
// roce_agent_config_last_reload_successful says how it went. A changed
// listen address takes effect at restart, and the log says so.
func (d *Daemon) Reload(load func() (Config, error)) (err error) {
	d.reloadMu.Lock()
	defer d.reloadMu.Unlock()
	// Before the first reconcile systemd has not heard READY=1: a reload
	// then is part of starting, not a reload.
	if d.Ready() {
		_ = d.opts.Notifier.Reloading()
		defer func() {
			status := d.summary()
			if err != nil {
				status = "reload refused, running config kept (see the log); " + status
			}
			_ = d.opts.Notifier.Ready(status)
		}()
	}
	cfg, err := load()
	if err == nil {
		old := d.node.Config()
		if cfg.StateDir != old.StateDir {
			err = fmt.Errorf("state_dir: %s differs from the running %s; changing it needs a restart", cfg.StateDir, old.StateDir)
		} else {
			if bound, ok := d.listen.Load().(string); ok && cfg.Listen.Metrics != bound {
				d.log.Warn("listen.metrics differs from the address served; it takes effect at restart", "serving", bound, "configured", cfg.Listen.Metrics)
			}
			if served, ok := d.webConfig.Load().(webServed); ok && !served.same(cfg.Listen.WebConfigFile) {
				d.log.Warn("listen.web_config_file (or a file it names) differs from what is served; it takes effect at restart", "serving", served.path, "configured", cfg.Listen.WebConfigFile)
			}
		}
	}
	if err == nil {
		err = d.node.SetConfig(cfg)
	}
	if err != nil {
		d.metrics.ReloadSuccess.Set(0)
		d.log.Error("reload rejected; keeping the running config", "err", err)
		d.mu.Lock()
		if d.waiting != "" {
			d.waiting = err.Error()
		}
		d.mu.Unlock()
		return err
	}
	d.metrics.ReloadSuccess.Set(1)
	d.metrics.ReloadTime.SetToCurrentTime()
	d.log.Info("config reloaded", "generation", cfg.Generation)
	d.Trigger()
	return nil
}

// Trigger asks for a reconcile; a burst of triggers costs one.
func (d *Daemon) Trigger() {
	select {
	case d.trigger <- struct{}{}:
	default:
	}
}

// Status returns the latest node status (nil before the first
// reconcile): a copy, with the reporter's conditions as they are now.
func (d *Daemon) Status() *NodeStatus {
	d.mu.Lock()
	if d.status == nil {
		d.mu.Unlock()
		return nil
	}
	st := *d.status
	d.mu.Unlock()
	if d.opts.Reporter != nil {
		st.Conditions = append(slices.Clip(st.Conditions), d.opts.Reporter.Conditions()...)
	}
	if d.prober != nil {
		// The rails are shared with the stored status: copy them before
		// adding the probe conditions.
		st.Rails = slices.Clone(st.Rails)
		d.prober.Conditions(&st, d.node.Config().Probes.MinFractionOfRate, time.Now())
	}
	if d.cabling != nil {
		st.Rails = slices.Clone(st.Rails)
		d.cabling.apply(&st)
	}
	return &st
}

// Metrics returns the daemon's metrics.
func (d *Daemon) Metrics() *Metrics { return d.metrics }

// Healthy reports a live loop: it showed a sign of life in the last 30 s.
func (d *Daemon) Healthy() bool {
	return time.Since(time.Unix(0, d.heartbeat.Load())) < 30*time.Second
}

// Ready reports that the first reconcile is done.
func (d *Daemon) Ready() bool { return d.ready.Load() }

// Handler serves /metrics, /healthz, /readyz and /v1/status.
func (d *Daemon) Handler() http.Handler {
	mux := http.NewServeMux()
	for pattern, h := range d.routes {
		mux.Handle(pattern, h)
	}
	mux.Handle("/metrics", d.metricsHandler())
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { healthProbe(w, d.Healthy(), "loop stuck") })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		why := "first reconcile not done"
		if reason := d.waitingFor(); reason != "" {
			why = "waiting for a desired state: " + reason
		}
		healthProbe(w, d.Ready(), why)
	})
	mux.HandleFunc("/v1/status", func(w http.ResponseWriter, _ *http.Request) {
		st := d.Status()
		if st == nil {
			why := "first reconcile not done"
			if reason := d.waitingFor(); reason != "" {
				why = "waiting for a desired state: " + reason
			}
			http.Error(w, why, http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(st.Wire())
	})
	return mux
}

// metricsHandler serves the registry; a collector that fails reports its
// own success metric and the scrape goes on.
func (d *Daemon) metricsHandler() http.Handler {
	return promhttp.HandlerFor(d.metrics.Registry, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
}

func healthProbe(w http.ResponseWriter, ok bool, why string) {
	if !ok {
		http.Error(w, why, http.StatusServiceUnavailable)
		return
	}
	_, _ = w.Write([]byte("ok\n"))
}

// Run reconciles, serves HTTP on listen (empty: no server), and loops on
// netlink events, the resync timer and ctx until ctx ends.
func (d *Daemon) Run(ctx context.Context, listen string) error {
	d.listen.Store(listen)
	if listen != "" {
		ln, err := net.Listen("tcp", listen)
		if err != nil {
			return fmt.Errorf("listen %s: %w", listen, err)
		}
		// The server has its own context: it stops after the loop, and
		// nothing it holds (connections, fds) is needed by the loop.
		limits := DefaultHTTPLimits().Effective()
		cfg := d.node.Config()
		served := webServed{path: cfg.Listen.WebConfigFile}
		webConfig := ""
		if served.path != "" {
			// Serve a snapshot: exporter-toolkit reads its file again on
			// every connection, and a file edited under the daemon must
			// not change (or break) the endpoint before a restart.
			data, err := LoadWebConfig(served.path)
			if err != nil {
				ln.Close()
				return fmt.Errorf("listen.web_config_file %s: %w", served.path, err)
			}
			webConfig = filepath.Join(cfg.StateDir, WebConfigSnapshot)
			if err := linkengine.WriteFileAtomic(webConfig, data, 0o600); err != nil {
				ln.Close()
				return err
			}
			served.data = data
		}
		d.webConfig.Store(served)
		srv := NewHTTPServer(d.Handler(), limits, d.log)
		hctx, stopHTTP := context.WithCancel(context.Background())
		stopped := make(chan struct{})
		go func() {
			defer close(stopped)
			if err := ServeWeb(hctx, ln, srv, limits, d.http, webConfig, d.log); err != nil {
				d.log.Error("http server failed", "err", err)
			}
		}()
		defer func() { stopHTTP(); <-stopped }()
		d.log.Info("serving", "listen", ln.Addr().String(), "max_connections", limits.MaxConns, "web_config_file", served.path, "tls", served.path != "")
	}
	if d.prober != nil {
		stop, err := d.serveProbes(ctx)
		if err != nil {
			return err
		}
		defer stop()
	}
	done := make(chan struct{})
	defer close(done)
	if err := d.subscribe(done); err != nil {
		return err
	}
	if d.opts.Reporter != nil {
		rctx, stopReport := context.WithCancel(ctx)
		reported := make(chan struct{})
		go func() {
			defer close(reported)
			d.opts.Reporter.Report(rctx, func() *v1.NodeStatus { return d.Status().Wire() })
		}()
		defer func() { stopReport(); <-reported }()
	}
	defer d.cabling.start(ctx)()
	d.runReconcile()

	if every := d.opts.Notifier.WatchdogInterval(); every > 0 {
		go d.watchdog(ctx, every)
	}
	var changed <-chan struct{}
	if d.opts.Source != nil {
		changed = d.opts.Source.Changed()
	}
	resync := time.NewTicker(d.opts.Resync)
	defer resync.Stop()
	alive := time.NewTicker(time.Second)
	defer alive.Stop()
	for {
		d.heartbeat.Store(time.Now().UnixNano())
		select {
		case <-ctx.Done():
			_ = d.opts.Notifier.Stopping()
			d.log.Info("stopping")
			return nil
		case <-alive.C:
			// A wiped state directory is noticed within a second, and
			// the lock taken again before another process can take it.
			d.checkLock()
		case <-resync.C:
			d.node.MarkStale()
			d.runReconcile()
		case <-changed:
			_ = d.Reload(d.opts.Source.Load)
		case <-d.trigger:
			// Debounce: let the rest of a burst arrive, then reconcile once.
			t := time.NewTimer(d.opts.Debounce)
		collect:
			for {
				select {
				case <-d.trigger:
				case <-t.C:
					break collect
				case <-ctx.Done():
					t.Stop()
					break collect
				}
			}
			d.runReconcile()
		}
	}
}

// runReconcile runs one reconcile for the loop. A persistent problem is
// logged when it starts, changes and ends; in between it shows in the
// status (conditions, last_error) and in roce_agent_reconcile_errors_total.
// Without a desired state (the controller has not answered and there is
// no last good config) it changes nothing and says why, once. The first
// reconcile makes the daemon ready.
func (d *Daemon) runReconcile() {
	if why := d.node.Config().NoDesiredState(); why != "" {
		d.mu.Lock()
		first := d.waiting == ""
		d.mu.Unlock()
		if first {
			// The source knows better why there is none (the controller
			// unreachable, say).
			waiting := "no desired state: " + why
			if d.opts.Source != nil {
				if _, err := d.opts.Source.Load(); err != nil {
					waiting = err.Error()
				}
			}
			d.mu.Lock()
			d.waiting = waiting
			d.mu.Unlock()
			d.log.Warn("changing nothing until a desired state arrives; not ready", "reason", waiting)
			_ = d.opts.Notifier.Status("waiting for a desired state")
		}
		return
	}
	d.mu.Lock()
	wasWaiting := d.waiting != ""
	d.waiting = ""
	d.mu.Unlock()
	if wasWaiting {
		d.log.Info("desired state arrived")
	}
	err := d.reconcile()
	msg := ""
	if err != nil {
		msg = err.Error()
	}
	switch {
	case msg == d.lastErr:
	case msg == "":
		d.log.Info("reconcile converged again", "after", d.lastErr)
	default:
		d.log.Error("reconcile failed", "err", err)
	}
	d.lastErr = msg
	if d.opts.Reporter != nil {
		d.opts.Reporter.StatusChanged()
	}
	if !d.ready.Load() {
		d.ready.Store(true)
		_ = d.opts.Notifier.Ready(d.summary())
		return
	}
	_ = d.opts.Notifier.Status(d.summary())
}

// waitingFor says why the daemon changes nothing ("" when it has a desired
// state).
func (d *Daemon) waitingFor() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.waiting
}

func (d *Daemon) watchdog(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if d.Healthy() {
				_ = d.opts.Notifier.Watchdog()
			}
		}
	}
}

// subscribe forwards link, address, route, policy rule and netconf events
// of the namespace as triggers. The receivers drain the kernel continuously, so an event storm
// costs one reconcile per debounce window and no goroutines.
func (d *Daemon) subscribe(done <-chan struct{}) error {
	var ns *netns.NsHandle
	if d.opts.Netns.IsOpen() {
		ns = &d.opts.Netns
	}
	errf := func(err error) {
		select {
		case <-done: // closing the subscription at shutdown
		default:
			d.log.Warn("netlink subscription", "err", err)
		}
	}
	links := make(chan netlink.LinkUpdate, 256)
	addrs := make(chan netlink.AddrUpdate, 256)
	routes := make(chan netlink.RouteUpdate, 256)
	if err := netlink.LinkSubscribeWithOptions(links, done, netlink.LinkSubscribeOptions{Namespace: ns, ErrorCallback: errf}); err != nil {
		return fmt.Errorf("subscribe to link events: %w", err)
	}
	if err := netlink.AddrSubscribeWithOptions(addrs, done, netlink.AddrSubscribeOptions{Namespace: ns, ErrorCallback: errf}); err != nil {
		return fmt.Errorf("subscribe to address events: %w", err)
	}
	if err := netlink.RouteSubscribeWithOptions(routes, done, netlink.RouteSubscribeOptions{Namespace: ns, ErrorCallback: errf}); err != nil {
		return fmt.Errorf("subscribe to route events: %w", err)
	}
	// Policy rules and netconf (rp_filter) have no subscription in
	// vishvananda/netlink; without them a deleted rule would wait for
	// the resync.
	if err := linkengine.SubscribeRuleAndNetconfEvents(d.opts.Netns, done, func(string) { d.Trigger() }, errf); err != nil {
		return err
	}
	go func() {
		for {
			select {
			case <-done:
				return
			case _, ok := <-links:
				if !ok {
					return
				}
			case _, ok := <-addrs:
				if !ok {
					return
				}
			case _, ok := <-routes:
				if !ok {
					return
				}
			}
			d.Trigger()
		}
	}()
	return nil
}

// webServed is the web configuration the endpoint serves: the configured
// path and the self-contained snapshot taken at start.
type webServed struct {
	path string
	data []byte
}

// same reports whether path, read now, is what is served.
func (w webServed) same(path string) bool {
	if path != w.path {
		return false
	}
	if path == "" {
		return true
	}
	data, err := LoadWebConfig(path)
	return err == nil && string(data) == string(w.data)
}

// checkLock verifies the state directory's lock, logging when it is lost
// to another process and when it is held again.
func (d *Daemon) checkLock() {
	err := d.opts.Lock.Verify()
	lost := err != nil
	if lost != d.lockLost.Load() {
		d.lockLost.Store(lost)
		if lost {
			d.log.Error("state_dir lock lost; changing nothing until it is held again", "err", err)
		} else {
			d.log.Info("state_dir lock held again")
		}
	}
}

// Reconcile runs one reconcile now (tests and `apply`-like callers).
func (d *Daemon) Reconcile() error { return d.reconcile() }

func (d *Daemon) reconcile() error {
	start := time.Now()
	d.Reconciles.Add(1)
	d.metrics.Reconciles.Inc()
	err := d.reconcileOnce()
	d.metrics.ReconcileDuration.Observe(time.Since(start).Seconds())
	if err != nil {
		d.metrics.ReconcileErrors.Inc()
		d.mu.Lock()
		if d.status != nil {
			d.status.LastError = err.Error()
		}
		d.mu.Unlock()
	}
	return err
}

func (d *Daemon) reconcileOnce() error {
	// A state directory wiped under the daemon loses the lock's file:
	// take it again, or change nothing while someone else holds it.
	if err := d.opts.Lock.Verify(); err != nil {
		return fmt.Errorf("not reconciling: %w", err)
	}
	// The generation is read before the apply: a reload during it
	// reconciles again, and that reconcile reports the new one.
	running := d.node.Config()
	if why := running.NoDesiredState(); why != "" {
		return fmt.Errorf("not reconciling: no desired state: %s", why)
	}
	a, err := d.node.Apply()
	if err != nil {
		return err
	}
	d.setRailAddrs(a.Desired)
	for kind, n := range a.Link.Drift {
		d.metrics.Drift.WithLabelValues(string(kind)).Add(float64(n))
	}
	a.Log(d.log)
	st := d.node.Observe(a, d.opts.Version)
	d.mu.Lock()
	if a.Link.Converged() {
		d.applied = running.Generation
	}
	st.AppliedGeneration = d.applied
	d.status = st
	d.mu.Unlock()

	cfg := d.node.Config()
	if err := d.handOff(cfg, st); err != nil {
		d.log.Warn("nccl hand-off", "err", err)
	}
	if err := saveDesired(cfg.StateDir, a.Desired); err != nil {
		d.log.Warn("persist desired state", "err", err)
	}
	if !a.Link.Converged() {
		return a.Link.Err()
	}
	return nil
}

// onRail reports whether a local address is one of the rails' host
// addresses: the HTTP server closes such connections unserved.
func (d *Daemon) onRail(a netip.Addr) bool {
	m := d.railAddrs.Load()
	return m != nil && (*m)[a]
}

// setRailAddrs records the rails' host addresses for onRail.
func (d *Daemon) setRailAddrs(desired []linkengine.RailLink) {
	m := map[netip.Addr]bool{}
	for _, r := range desired {
		for _, p := range []netip.Prefix{r.IPv4, r.IPv6} {
			if p.IsValid() {
				m[p.Addr()] = true
			}
		}
	}
	d.railAddrs.Store(&m)
}

// remaining is the QoS plan after apply: what did not get applied.
func remaining(plan qos.Plan, results []qos.Result) qos.Plan {
	out := qos.Plan{Unsupported: plan.Unsupported, Errs: plan.Errs}
	applied := map[string]bool{}
	for _, r := range results {
		for _, c := range r.Applied {
			applied[c] = true
		}
		if r.Err != nil {
			out.Errs = append(out.Errs, qos.RailError{Rail: r.Rail, Netdev: r.Netdev, Err: r.Err})
		}
	}
	for _, c := range plan.Changes {
		if !applied[c.Command] {
			out.Changes = append(out.Changes, c)
		}
	}
	return out
}

// nodeConditions are NVMLReady and PeerMemReady.
func nodeConditions(inv *Inventory, fs *nic.FS) []Condition {
	var out []Condition
	switch {
	case inv.NVML.Available:
		out = append(out, Condition{Type: v1.ConditionNVMLReady, Status: StatusTrue, Reason: "Available", Message: "driver " + inv.NVML.DriverVersion})
	case inv.NVML.Queried:
		out = append(out, Condition{Type: v1.ConditionNVMLReady, Status: StatusFalse, Reason: "Unavailable", Message: inv.NVML.Error})
	default:
		out = append(out, Condition{Type: v1.ConditionNVMLReady, Status: StatusUnknown, Reason: "NotQueried"})
	}
	peermem := false
	for _, m := range []string{"nvidia_peermem", "nv_peer_mem"} {
		if s, err := fs.ReadString("/module/" + m + "/initstate"); err == nil && s == "live" {
			peermem = true
		}
	}
	switch {
	case len(inv.GPUs) == 0:
		out = append(out, Condition{Type: v1.ConditionPeerMemReady, Status: StatusUnknown, Reason: "NoGPU"})
	case peermem:
		out = append(out, Condition{Type: v1.ConditionPeerMemReady, Status: StatusTrue, Reason: "ModuleLoaded"})
	default:
		out = append(out, Condition{Type: v1.ConditionPeerMemReady, Status: StatusFalse, Reason: "ModuleNotLoaded",
			Message: "nvidia_peermem is not loaded; GPUDirect RDMA needs it or DMA-BUF"})
	}
	return out
}

func (d *Daemon) handOff(cfg Config, st *NodeStatus) error {
	data, notes := NCCLEnv(st.Rails, cfg.QoS.RoCETos)
	// A note is logged when it appears and when it clears, not on every
	// reconcile.
	now := map[string]bool{}
	for _, n := range notes {
		now[n] = true
		if !d.ncclNotes[n] {
			d.log.Warn("nccl hand-off", "note", n)
		}
	}
	for n := range d.ncclNotes {
		if !now[n] {
			d.log.Info("nccl hand-off note cleared", "note", n)
		}
	}
	d.ncclNotes = now
	changed, err := writeIfChanged(ncclPath(cfg.StateDir), data)
	if changed {
		d.log.Info("nccl env written", "path", ncclPath(cfg.StateDir))
	}
	return err
}

// DesiredFile records the last applied desired state under the state
// directory.
const DesiredFile = "desired.json"

func saveDesired(stateDir string, desired []linkengine.RailLink) error {
	b, err := json.MarshalIndent(desired, "", "  ")
	if err != nil {
		return err
	}
	_, err = writeIfChanged(filepath.Join(stateDir, DesiredFile), append(b, '\n'))
	return err
}

// summary is the one-line STATUS= for systemd.
func (d *Daemon) summary() string {
	st := d.Status()
	if st == nil {
		if d.waitingFor() != "" {
			return "waiting for a desired state"
		}
		return "starting"
	}
	ok := 0
	for _, r := range st.Rails {
		good := true
		for _, c := range r.Conditions {
			if c.Status == StatusFalse {
				good = false
			}
		}
		if good {
			ok++
		}
	}
	s := fmt.Sprintf("%d/%d rails healthy, last reconcile %s", ok, len(st.Rails), st.LastReconcile.Format(time.RFC3339))
	if st.LastError != "" {
		s += " (error)"
	}
	return s
}

// serveProbes serves the peer probe API on listen.probe_api, answering
// only connections to the rails' own addresses (peers reach it over the
// rails, through the tenant's VRF), and runs the scheduled probes. stop
// ends both.
func (d *Daemon) serveProbes(ctx context.Context) (stop func(), err error) {
	cfg := d.node.Config()
	raw, err := net.Listen("tcp", cfg.Listen.ProbeAPI)
	if err != nil {
		return nil, fmt.Errorf("listen.probe_api %s: %w", cfg.Listen.ProbeAPI, err)
	}
	lim := newLimitListener(raw, probeAPIConns, d.probeHTTP)
	var ln net.Listener = lim
	if t := d.prober.TLS(); t != nil {
		ln = tls.NewListener(lim, t)
	}
	srv := &http.Server{Handler: d.prober.Handler().Handler(), ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second,
		WriteTimeout: 10 * time.Second, IdleTimeout: 5 * time.Second, MaxHeaderBytes: 8 << 10, ErrorLog: newHTTPErrorLog(d.log)}
	served := make(chan struct{})
	go func() {
		defer close(served)
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			d.log.Error("probe api failed", "err", err)
		}
	}()
	pctx, stopProbes := context.WithCancel(ctx)
	probed := make(chan struct{})
	go func() {
		defer close(probed)
		d.prober.Run(pctx, d.node.Config)
	}()
	d.log.Info("serving probes", "listen", raw.Addr().String(), "tls", d.prober.TLS() != nil,
		"interval", cfg.Probes.Interval, "peers_per_interval", cfg.Probes.PeersPerInterval)
	return func() {
		stopProbes()
		_ = srv.Close()
		<-served
		<-probed
	}, nil
}

// probeAPIConns bounds the probe API's connections: peers ask a few times
// per interval.
const probeAPIConns = 64
