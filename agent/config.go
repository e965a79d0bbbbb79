// Package agent composes the leaf packages (nic, gpu) into what the
// roce-agent commands do: the node inventory today, the reconcile loop as
// it lands.
package agent

import (
	"errors"
	"fmt"
	"math"
	"net"
	"path/filepath"
	"strings"
	"time"

	v1 "github.com/roce-agent/roce-agent/api/v1"
	"github.com/roce-agent/roce-agent/gpu/topology"
	"github.com/roce-agent/roce-agent/nic"
	"github.com/roce-agent/roce-agent/probe"
	"github.com/roce-agent/roce-agent/qos"
)

// Config is the agent's configuration: the YAML file, ROCE_AGENT_* env and
// flags, decoded by the command. Keys are documented in docs/config.md. It
// is the desired state of the node (v1.NodeConfig, squashed: its keys sit
// at the top level of the file) plus the agent's own settings.
type Config struct {
	v1.NodeConfig `mapstructure:",squash"`
	SysfsRoot     string `mapstructure:"sysfs_root"`
	// SysctlRoot is where the rails' network namespace's /proc/sys is
	// mounted: /proc/sys, or a host mount in a container whose own
	// /proc/sys is read-only (the DaemonSet mounts /proc/sys/net at
	// /host/proc/sys/net). Read at start.
	SysctlRoot string          `mapstructure:"sysctl_root"`
	StateDir   string          `mapstructure:"state_dir"`
	Log        LogConfig       `mapstructure:"log"`
	Listen     ListenConfig    `mapstructure:"listen"`
	Reconcile  ReconcileConfig `mapstructure:"reconcile"`
	GPU        GPUSettings     `mapstructure:"gpu"`
	// Controller is where the desired state comes from when its URL is
	// set (controller mode); unset, it comes from the file (local mode).
	Controller ControllerConfig `mapstructure:"controller"`
	// Probes pace and size the peer probes (docs/probes.md).
	Probes ProbesConfig `mapstructure:"probes"`
	// HostPins pin rails to NICs on this host: a host fact, so it is an
	// agent setting and applies in controller mode too, where rails[]
	// comes from the controller (a host whose NICs the inventory cannot
	// place on rails by GPU affinity: no GPU, soft-RoCE).
	HostPins []HostPin `mapstructure:"pins"`
	// LLDP is the cabling check (cabling.go, docs/config.md).
	LLDP LLDPConfig `mapstructure:"lldp"`
}

// HostPin pins a rail to a netdev or an RDMA device.
type HostPin struct {
	Rail       *int   `mapstructure:"rail"`
	Netdev     string `mapstructure:"netdev"`
	RDMADevice string `mapstructure:"rdma_device"`
}

// ProbesConfig paces and sizes the probes a node runs against its rails'
// peers (listed by the controller), and how it serves theirs. Probes run
// when listen.probe_api is set: the port is the fleet's.
type ProbesConfig struct {
	// Interval is one round: each rail probes PeersPerInterval peers per
	// round, rotating through its tenant. 0 runs no scheduled probes (the
	// API still serves peers, and roce-agent probe works).
	Interval         time.Duration `mapstructure:"interval"`
	PeersPerInterval int           `mapstructure:"peers_per_interval"`
	// Tools run against each peer of a round, in this order.
	Tools []string `mapstructure:"tools"`
	// Families are the GID families probed (where both ends have one).
	Families []string `mapstructure:"families"`
	// MinFractionOfRate is BandwidthOK's bar: the average bandwidth
	// against the port rate.
	MinFractionOfRate float64 `mapstructure:"min_fraction_of_rate"`
	// Sizes of the tests (0: the tool defaults of the probe package).
	BandwidthBytes      int `mapstructure:"bandwidth_bytes"`
	BandwidthIterations int `mapstructure:"bandwidth_iterations"`
	LatencyIterations   int `mapstructure:"latency_iterations"`
	Pings               int `mapstructure:"pings"`
	// Timeout bounds one probe, and the life of a server the node opens
	// for a peer.
	Timeout time.Duration `mapstructure:"timeout"`
	// ToolsDir holds ib_write_bw, ib_write_lat and rping ("" : PATH).
	ToolsDir string `mapstructure:"tools_dir"`
	// InsecureHTTP serves and asks peers over plain HTTP (labs only):
	// the source address alone identifies a peer. Otherwise the node's
	// controller certificate (controller.cert_file, key_file, ca_file)
	// is its identity to peers.
	InsecureHTTP bool `mapstructure:"insecure_http"`
}

// ControllerConfig says how to reach the controller (design.md section 5):
// the agent long-polls its NodeConfig, reports its status and sends a
// heartbeat.
type ControllerConfig struct {
	// URL is the controller's base URL (https://fabric-ctl:8443); "" is
	// local mode. http:// needs InsecureHTTP.
	URL string `mapstructure:"url"`
	// CAFile verifies the controller's certificate (default: the system
	// roots); CertFile and KeyFile are the node's client certificate
	// (mTLS: the node's identity is the certificate's name).
	CAFile   string `mapstructure:"ca_file"`
	CertFile string `mapstructure:"cert_file"`
	KeyFile  string `mapstructure:"key_file"`
	// TokenFile holds a bearer token, sent as Authorization: Bearer; it is
	// read at start and on reload.
	TokenFile string `mapstructure:"token_file"`
	// InsecureHTTP allows an http:// URL (labs only).
	InsecureHTTP bool `mapstructure:"insecure_http"`
	// HeartbeatInterval paces the lease renewals; StatusInterval is the
	// longest time between two full status reports (they are sent on
	// change too).
	HeartbeatInterval time.Duration `mapstructure:"heartbeat_interval"`
	StatusInterval    time.Duration `mapstructure:"status_interval"`
	// Wait is how long the controller may hold a config request
	// (long-poll); Timeout bounds every request beyond that.
	Wait    time.Duration `mapstructure:"wait"`
	Timeout time.Duration `mapstructure:"timeout"`
}

// GPUSettings say how GPUs are found.
type GPUSettings struct {
	// NVML is "auto" (ask NVML when sysfs_root is the live /sys: a tree is
	// read alone), "on" (always ask it; a failure falls back to the sysfs
	// scan and says so) or "off" (never: the sysfs PCI scan only).
	NVML string `mapstructure:"nvml"`
}

// The desired state's sections, as api/v1 defines them.
type (
	LinkConfig       = v1.LinkConfig
	RoutingConfig    = v1.RoutingConfig
	AddressingConfig = v1.AddressingConfig
	RailConfig       = v1.RailConfig
	TenantConfig     = v1.TenantConfig
	QoSConfig        = v1.QoSConfig
	ETSConfig        = v1.ETSConfig
	DCQCNConfig      = v1.DCQCNConfig
)

// ListenConfig is where the daemon serves HTTP.
type ListenConfig struct {
	// Metrics serves /metrics, /healthz, /readyz and /v1/status. The
	// default is loopback: set the management address (or ":9487") for a
	// remote Prometheus. Connections arriving on a rail address are
	// closed unserved whatever this says; "" serves nothing.
	Metrics string `mapstructure:"metrics"`
	// ProbeAPI is where peers ask this node for probe servers (":9488");
	// it answers only on the rails' own addresses, over the rails. ""
	// serves no probes and runs none.
	ProbeAPI string `mapstructure:"probe_api"`
	// WebConfigFile is a Prometheus web configuration file (the format of
	// node_exporter's --web.config.file: TLS, client certificates, basic
	// auth) for that endpoint; "" serves plain HTTP.
	WebConfigFile string `mapstructure:"web_config_file"`
}

// ReconcileConfig paces the daemon's loop.
type ReconcileConfig struct {
	// ResyncInterval is the period of a full resync (inventory and
	// reconcile) behind the event-driven reconciles.
	ResyncInterval time.Duration `mapstructure:"resync_interval"`
	// Debounce is how long an event burst is collected before one
	// reconcile.
	Debounce time.Duration `mapstructure:"debounce"`
}

// LogConfig selects the log level and format.
type LogConfig struct {
	Level  string `mapstructure:"level"`  // debug, info, warn, error
	Format string `mapstructure:"format"` // auto (json under systemd or Kubernetes), text or json
}

// DefaultConfig is the configuration with nothing set.
func DefaultConfig() Config {
	return Config{
		SysfsRoot:  nic.DefaultRoot,
		SysctlRoot: "/proc/sys",
		StateDir:   "/var/lib/roce-agent",
		Log:        LogConfig{Level: "info", Format: "auto"},
		Listen:     ListenConfig{Metrics: "127.0.0.1:9487"},
		Reconcile:  ReconcileConfig{ResyncInterval: time.Minute, Debounce: 10 * time.Millisecond},
		GPU:        GPUSettings{NVML: "auto"},
		LLDP:       DefaultLLDPConfig(),
		Probes: ProbesConfig{
			Interval: 5 * time.Minute, PeersPerInterval: 2,
			Tools:    []string{"rping", "ib_write_lat", "ib_write_bw"},
			Families: []string{"ipv4", "ipv6"}, MinFractionOfRate: 0.9, Timeout: time.Minute,
		},
		Controller: ControllerConfig{
			HeartbeatInterval: 10 * time.Second,
			StatusInterval:    5 * time.Minute,
			Wait:              30 * time.Second,
			Timeout:           10 * time.Second,
		},
		NodeConfig: v1.NodeConfig{
			Link: LinkConfig{
				MTU:     9000,
				Routing: RoutingConfig{TableBase: 1000, RulePriorityBase: 1000},
			},
		},
	}
}

// Validate reports every problem in the configuration at once, each naming
// its field: the agent's settings, then the desired state
// (v1.NodeConfig.Validate).
func (c Config) Validate() error {
	var errs []error
	fail := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", field, fmt.Sprintf(format, args...)))
	}
	if strings.TrimSpace(c.SysfsRoot) == "" {
		fail("sysfs_root", "must not be empty or blank")
	}
	if !filepath.IsAbs(c.SysctlRoot) || len(c.SysctlRoot) > 1024 {
		fail("sysctl_root", "%s is not an absolute path of at most 1024 bytes", v1.Clip(c.SysctlRoot))
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		fail("log.level", "%s is not one of debug, info, warn, error", v1.Clip(c.Log.Level))
	}
	switch c.Log.Format {
	case "auto", "text", "json":
	default:
		fail("log.format", "%s is not one of auto, text, json", v1.Clip(c.Log.Format))
	}
	switch c.GPU.NVML {
	case "auto", "on", "off":
	default:
		fail("gpu.nvml", "%s is not one of auto, on, off", v1.Clip(c.GPU.NVML))
	}
	if c.Reconcile.ResyncInterval < time.Second {
		fail("reconcile.resync_interval", "%s is below 1s", c.Reconcile.ResyncInterval)
	}
	if c.Reconcile.Debounce < 0 || c.Reconcile.Debounce > 10*time.Second {
		fail("reconcile.debounce", "%s is outside 0-10s", c.Reconcile.Debounce)
	}
	switch {
	case c.StateDir == "":
		fail("state_dir", "must not be empty")
	case len(c.StateDir) > 1024:
		fail("state_dir", "%s is longer than 1024 bytes", v1.Clip(c.StateDir))
	case !filepath.IsAbs(c.StateDir):
		fail("state_dir", "%s is not an absolute path", v1.Clip(c.StateDir))
	}
	if len(c.SysfsRoot) > 1024 {
		fail("sysfs_root", "%s is longer than 1024 bytes", v1.Clip(c.SysfsRoot))
	}
	if l := c.Listen.Metrics; l != "" {
		if _, port, err := net.SplitHostPort(l); err != nil || len(l) > 256 || port == "" {
			fail("listen.metrics", "%s is not host:port (e.g. 127.0.0.1:9487, :9487, [::1]:9487)", v1.Clip(l))
		}
	}
	if f := c.Listen.WebConfigFile; f != "" {
		if err := checkWebConfig(f); err != nil {
			fail("listen.web_config_file", "%s: %v", v1.Clip(f), err)
		}
	}
	if l := c.Listen.ProbeAPI; l != "" {
		if _, port, err := net.SplitHostPort(l); err != nil || len(l) > 256 || port == "" || port == "0" {
			fail("listen.probe_api", "%s is not host:port with a port (e.g. :9488)", v1.Clip(l))
		}
		if !c.Probes.InsecureHTTP && (c.Controller.CertFile == "" || c.Controller.KeyFile == "" || c.Controller.CAFile == "") {
			fail("listen.probe_api", "needs the node's certificate (controller.cert_file, controller.key_file) and the fabric CA (controller.ca_file) to authenticate peers, or probes.insecure_http for a lab")
		}
	}
	errs = append(errs, c.pinProblems()...)
	errs = append(errs, c.Probes.problems()...)
	errs = append(errs, c.LLDP.problems()...)
	errs = append(errs, c.Controller.problems()...)
	errs = append(errs, c.NodeConfig.Problems()...)
	return errors.Join(errs...)
}

// Pins returns the rail pins of the configuration: the rails[] entries
// that name a netdev or an RDMA device, then the pins[] of rails that
// rails[] does not pin.
func (c Config) Pins() []topology.RailPin {
	pins := make([]topology.RailPin, 0, len(c.Rails)+len(c.HostPins))
	pinned := map[int]bool{}
	for _, r := range c.Rails {
		if r.Rail == nil || (r.Netdev == "" && r.RDMADevice == "") {
			continue
		}
		pinned[*r.Rail] = true
		pins = append(pins, topology.RailPin{Rail: *r.Rail, Netdev: r.Netdev, RDMADevice: r.RDMADevice})
	}
	for _, p := range c.HostPins {
		if p.Rail != nil && !pinned[*p.Rail] {
			pins = append(pins, topology.RailPin{Rail: *p.Rail, Netdev: p.Netdev, RDMADevice: p.RDMADevice})
		}
	}
	return pins
}

// pinProblems names every invalid pins[] entry, and a pin that rails[]
// contradicts.
func (c Config) pinProblems() []error {
	var errs []error
	seen := map[int]bool{}
	for i, p := range c.HostPins {
		field := fmt.Sprintf("pins[%d]", i)
		switch {
		case p.Rail == nil:
			errs = append(errs, fmt.Errorf("%s.rail: required", field))
			continue
		case *p.Rail < 0 || *p.Rail > 255:
			errs = append(errs, fmt.Errorf("%s.rail: %d is outside 0-255", field, *p.Rail))
			continue
		case seen[*p.Rail]:
			errs = append(errs, fmt.Errorf("%s.rail: rail %d is pinned twice", field, *p.Rail))
		case p.Netdev == "" && p.RDMADevice == "":
			errs = append(errs, fmt.Errorf("%s: names neither netdev nor rdma_device", field))
		}
		seen[*p.Rail] = true
		if p.Netdev != "" {
			if err := v1.CheckNetdevName(p.Netdev); err != nil {
				errs = append(errs, fmt.Errorf("%s.netdev: %w", field, err))
			}
		}
		for _, r := range c.Rails {
			if r.Rail != nil && *r.Rail == *p.Rail && (r.Netdev != "" || r.RDMADevice != "") &&
				(r.Netdev != p.Netdev || r.RDMADevice != p.RDMADevice) {
				errs = append(errs, fmt.Errorf("%s: rails[] pins rail %d to %s%s already", field, *p.Rail, r.Netdev, r.RDMADevice))
			}
		}
	}
	return errs
}

// QoSProfile converts the qos section into the engine's profile, with the
// problems Validate reports for it.
func (c Config) QoSProfile() (qos.Profile, []error) {
	_, errs := c.QoS.Check("qos")
	return qos.FromConfig(c.QoS), errs
}

// problems names every invalid probes setting.
func (p ProbesConfig) problems() []error {
	var errs []error
	fail := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("probes.%s: %s", field, fmt.Sprintf(format, args...)))
	}
	if p.Interval != 0 && (p.Interval < 5*time.Second || p.Interval > 24*time.Hour) {
		fail("interval", "%s is outside 5s-24h (0: no scheduled probes)", p.Interval)
	}
	if p.PeersPerInterval < 1 || p.PeersPerInterval > 64 {
		fail("peers_per_interval", "%d is outside 1-64", p.PeersPerInterval)
	}
	seen := map[string]bool{}
	for _, t := range p.Tools {
		if !probe.ValidTool(t) {
			fail("tools", "%s is not ib_write_bw, ib_write_lat or rping", v1.Clip(t))
		} else if seen[t] {
			fail("tools", "%s is listed twice", t)
		}
		seen[t] = true
	}
	for _, f := range p.Families {
		if !probe.ValidFamily(f) {
			fail("families", "%s is not ipv4 or ipv6", v1.Clip(f))
		} else if seen[f] {
			fail("families", "%s is listed twice", f)
		}
		seen[f] = true
	}
	if len(p.Families) == 0 {
		fail("families", "must list ipv4, ipv6 or both")
	}
	if p.MinFractionOfRate < 0 || p.MinFractionOfRate > 1 || math.IsNaN(p.MinFractionOfRate) {
		fail("min_fraction_of_rate", "%v is outside 0-1", p.MinFractionOfRate)
	}
	t := probe.Test{Tool: "ib_write_bw", Family: "ipv4", MessageBytes: p.BandwidthBytes, Iterations: p.BandwidthIterations}
	if err := t.Validate(); err != nil {
		fail("bandwidth_"+strings.TrimPrefix(strings.SplitN(err.Error(), ":", 2)[0], "message_"), "%s", strings.TrimSpace(strings.SplitN(err.Error(), ":", 2)[1]))
	}
	if p.LatencyIterations < 0 || p.LatencyIterations > probe.MaxIterations {
		fail("latency_iterations", "%d is outside 0-%d", p.LatencyIterations, probe.MaxIterations)
	}
	if p.Pings < 0 || p.Pings > probe.MaxPings {
		fail("pings", "%d is outside 0-%d", p.Pings, probe.MaxPings)
	}
	if p.Timeout < time.Second || p.Timeout > time.Hour {
		fail("timeout", "%s is outside 1s-1h", p.Timeout)
	}
	if len(p.ToolsDir) > 1024 || (p.ToolsDir != "" && !filepath.IsAbs(p.ToolsDir)) {
		fail("tools_dir", "%s is not an absolute path", v1.Clip(p.ToolsDir))
	}
	return errs
}
