// Package agent composes the leaf packages (nic, gpu) into what the
// roce-agent commands do: the node inventory today, the reconcile loop as
// it lands.
package agent

import (
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"time"

	v1 "github.com/roce-agent/roce-agent/api/v1"
	"github.com/roce-agent/roce-agent/gpu/topology"
	"github.com/roce-agent/roce-agent/nic"
	"github.com/roce-agent/roce-agent/qos"
)

// Config is the agent's configuration: the YAML file, ROCE_AGENT_* env and
// flags, decoded by the command. Keys are documented in docs/config.md. It
// is the desired state of the node (v1.NodeConfig, squashed: its keys sit
// at the top level of the file) plus the agent's own settings.
type Config struct {
	v1.NodeConfig `mapstructure:",squash"`
	SysfsRoot     string          `mapstructure:"sysfs_root"`
	StateDir      string          `mapstructure:"state_dir"`
	Log           LogConfig       `mapstructure:"log"`
	Listen        ListenConfig    `mapstructure:"listen"`
	Reconcile     ReconcileConfig `mapstructure:"reconcile"`
	GPU           GPUSettings     `mapstructure:"gpu"`
	// Controller is where the desired state comes from when its URL is
	// set (controller mode); unset, it comes from the file (local mode).
	Controller ControllerConfig `mapstructure:"controller"`
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
		SysfsRoot: nic.DefaultRoot,
		StateDir:  "/var/lib/roce-agent",
		Log:       LogConfig{Level: "info", Format: "auto"},
		Listen:    ListenConfig{Metrics: "127.0.0.1:9487"},
		Reconcile: ReconcileConfig{ResyncInterval: time.Minute, Debounce: 10 * time.Millisecond},
		GPU:       GPUSettings{NVML: "auto"},
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
	errs = append(errs, c.Controller.problems()...)
	errs = append(errs, c.NodeConfig.Problems()...)
	return errors.Join(errs...)
}

// Pins returns the rail pins of the configuration: the rails[] entries
// that name a netdev or an RDMA device.
func (c Config) Pins() []topology.RailPin {
	pins := make([]topology.RailPin, 0, len(c.Rails))
	for _, r := range c.Rails {
		if r.Rail == nil || (r.Netdev == "" && r.RDMADevice == "") {
			continue
		}
		pins = append(pins, topology.RailPin{Rail: *r.Rail, Netdev: r.Netdev, RDMADevice: r.RDMADevice})
	}
	return pins
}

// QoSProfile converts the qos section into the engine's profile, with the
// problems Validate reports for it.
func (c Config) QoSProfile() (qos.Profile, []error) {
	_, errs := c.QoS.Check("qos")
	return qos.FromConfig(c.QoS), errs
}
