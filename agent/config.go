// Package agent composes the leaf packages (nic, gpu) into what the
// roce-agent commands do: the node inventory today, the reconcile loop as
// it lands.
package agent

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/roce-agent/roce-agent/gpu"
	"github.com/roce-agent/roce-agent/nic"
	"github.com/roce-agent/roce-agent/qos"
)

// Config is the agent's configuration: the YAML file, ROCE_AGENT_* env and
// flags, decoded by the command. Keys are documented in docs/config.md.
type Config struct {
	Node       NodeConfig       `mapstructure:"node"`
	SysfsRoot  string           `mapstructure:"sysfs_root"`
	StateDir   string           `mapstructure:"state_dir"`
	Log        LogConfig        `mapstructure:"log"`
	Link       LinkConfig       `mapstructure:"link"`
	Rails      []RailConfig     `mapstructure:"rails"`
	Addressing AddressingConfig `mapstructure:"addressing"`
	QoS        QoSConfig        `mapstructure:"qos"`
	Listen     ListenConfig     `mapstructure:"listen"`
	Reconcile  ReconcileConfig  `mapstructure:"reconcile"`
}

// ListenConfig is where the daemon serves HTTP.
type ListenConfig struct {
	// Metrics serves /metrics, /healthz, /readyz and /v1/status. The
	// default is loopback: set the management address (or ":9487") for a
	// remote Prometheus. Connections arriving on a rail address are
	// closed unserved whatever this says; "" serves nothing.
	Metrics string `mapstructure:"metrics"`
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

// QoSConfig is the QoS profile of every rail NIC (docs/qos.md). Unset
// knobs are left alone.
type QoSConfig struct {
	Trust          string       `mapstructure:"trust"`
	PFCPriorities  []int        `mapstructure:"pfc_priorities"`
	DSCPToPriority map[int]int  `mapstructure:"dscp_to_priority"`
	DCBX           string       `mapstructure:"dcbx"`
	ETS            *ETSConfig   `mapstructure:"ets"`
	RoCETos        *int         `mapstructure:"roce_tos"`
	RoCEMode       string       `mapstructure:"roce_mode"`
	DCQCN          *DCQCNConfig `mapstructure:"dcqcn"`
}

// ETSConfig is the traffic class layout, eight entries each.
type ETSConfig struct {
	PrioTC []int    `mapstructure:"prio_tc"`
	TSA    []string `mapstructure:"tsa"`
	BW     []int    `mapstructure:"bw"`
}

// DCQCNConfig is DCQCN in generic parameter names (qos.DCQCNParams).
type DCQCNConfig struct {
	Enabled    *bool            `mapstructure:"enabled"`
	Priorities []int            `mapstructure:"priorities"`
	NP         map[string]int64 `mapstructure:"np"`
	RP         map[string]int64 `mapstructure:"rp"`
}

// NodeConfig identifies the node.
type NodeConfig struct {
	// Name defaults to the host name.
	Name string `mapstructure:"name"`
	// Index selects the node's addresses in the addressing pools.
	Index *int `mapstructure:"index"`
}

// LinkConfig is the link engine's node-wide settings.
type LinkConfig struct {
	MTU int `mapstructure:"mtu"`
	// IPv6SLAAC accepts router advertisements on rails (accept_ra=1)
	// instead of static addressing only.
	IPv6SLAAC bool `mapstructure:"ipv6_slaac"`
	// Routes are the prefixes every rail reaches through its leaf, for
	// rails that do not list their own.
	Routes  []string      `mapstructure:"routes"`
	Routing RoutingConfig `mapstructure:"routing"`
}

// RoutingConfig places the per-rail tables and rules: rail n uses table
// TableBase+n and a source rule at priority RulePriorityBase+n.
type RoutingConfig struct {
	TableBase        int `mapstructure:"table_base"`
	RulePriorityBase int `mapstructure:"rule_priority_base"`
}

// AddressingConfig derives rail addresses: rail n takes pool n, the host
// is pool + 2*index + 1 and the leaf pool + 2*index.
type AddressingConfig struct {
	IPv4Pools []string `mapstructure:"ipv4_pools"`
	IPv6Pools []string `mapstructure:"ipv6_pools"`
}

// TenantConfig is the tenant a rail belongs to (reported, not configured on
// the host: the leaf puts the port in the tenant's VRF).
type TenantConfig struct {
	ID  string `mapstructure:"id"`
	VRF string `mapstructure:"vrf"`
	VNI int    `mapstructure:"vni"`
}

// LogConfig selects the log level and format.
type LogConfig struct {
	Level  string `mapstructure:"level"`  // debug, info, warn, error
	Format string `mapstructure:"format"` // auto (json under systemd or Kubernetes), text or json
}

// RailConfig is one rail's desired state: optionally pinned to a NIC (by
// netdev or RDMA device; otherwise the inventory's rail of that number),
// its host addresses (explicit, else from the addressing pools), the
// prefixes reached through its leaf, and its tenant.
type RailConfig struct {
	Rail       *int          `mapstructure:"rail"`
	Netdev     string        `mapstructure:"netdev"`
	RDMADevice string        `mapstructure:"rdma_device"`
	IPv4       string        `mapstructure:"ipv4"`
	IPv6       string        `mapstructure:"ipv6"`
	LeafIPv4   string        `mapstructure:"leaf_ipv4"`
	LeafIPv6   string        `mapstructure:"leaf_ipv6"`
	Routes     []string      `mapstructure:"routes"`
	Tenant     *TenantConfig `mapstructure:"tenant"`
}

// DefaultConfig is the configuration with nothing set.
func DefaultConfig() Config {
	return Config{
		SysfsRoot: nic.DefaultRoot,
		StateDir:  "/var/lib/roce-agent",
		Log:       LogConfig{Level: "info", Format: "auto"},
		Listen:    ListenConfig{Metrics: "127.0.0.1:9487"},
		Reconcile: ReconcileConfig{ResyncInterval: time.Minute, Debounce: 10 * time.Millisecond},
		Link: LinkConfig{
			MTU:     9000,
			Routing: RoutingConfig{TableBase: 1000, RulePriorityBase: 1000},
		},
	}
}

// Validate reports every problem in the configuration at once, each naming
// its field.
func (c Config) Validate() error {
	var errs []error
	fail := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", field, fmt.Sprintf(format, args...)))
	}
	if c.SysfsRoot == "" {
		fail("sysfs_root", "must not be empty")
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		fail("log.level", "%s is not one of debug, info, warn, error", clip(c.Log.Level))
	}
	switch c.Log.Format {
	case "auto", "text", "json":
	default:
		fail("log.format", "%s is not one of auto, text, json", clip(c.Log.Format))
	}
	if c.Reconcile.ResyncInterval < time.Second {
		fail("reconcile.resync_interval", "%s is below 1s", c.Reconcile.ResyncInterval)
	}
	if c.Reconcile.Debounce < 0 || c.Reconcile.Debounce > 10*time.Second {
		fail("reconcile.debounce", "%s is outside 0-10s", c.Reconcile.Debounce)
	}
	if c.StateDir == "" {
		fail("state_dir", "must not be empty")
	}
	if c.Node.Index != nil && *c.Node.Index < 0 {
		fail("node.index", "%d is negative", *c.Node.Index)
	}
	rails := map[int]int{}
	netdevs := map[string]int{}
	devices := map[string]int{}
	for i, r := range c.Rails {
		field := fmt.Sprintf("rails[%d]", i)
		switch {
		case r.Rail == nil:
			fail(field+".rail", "required")
		case *r.Rail < 0 || *r.Rail > 255:
			fail(field+".rail", "%d is outside 0-255", *r.Rail)
		default:
			if j, dup := rails[*r.Rail]; dup {
				fail(field+".rail", "rail %d is also rails[%d]", *r.Rail, j)
			}
			rails[*r.Rail] = i
		}

		if r.Netdev != "" {
			if err := validNetdevName(r.Netdev); err != nil {
				fail(field+".netdev", "%v", err)
			}
			if j, dup := netdevs[r.Netdev]; dup {
				fail(field+".netdev", "%q is also rails[%d]", r.Netdev, j)
			}
			netdevs[r.Netdev] = i
		}
		if r.RDMADevice != "" {
			if len(r.RDMADevice) > 63 || strings.ContainsAny(r.RDMADevice, "/ \t\n") {
				fail(field+".rdma_device", "%s is not a device name", clip(r.RDMADevice))
			}
			if j, dup := devices[r.RDMADevice]; dup {
				fail(field+".rdma_device", "%q is also rails[%d]", r.RDMADevice, j)
			}
			devices[r.RDMADevice] = i
		}
	}
	errs = append(errs, c.validateLink()...)
	_, qerrs := c.QoSProfile()
	errs = append(errs, qerrs...)
	return errors.Join(errs...)
}

// NoDesiredState says why the configuration gives the agent nothing to
// converge ("" when it does): no rail with an address (explicit or from the
// addressing pools) and no qos section. Such a configuration must never
// reach an engine: an empty desired state would read as "remove
// everything".
func (c Config) NoDesiredState() string {
	if len(c.Addressing.IPv4Pools) > 0 || len(c.Addressing.IPv6Pools) > 0 {
		return ""
	}
	for _, r := range c.Rails {
		if r.IPv4 != "" || r.IPv6 != "" {
			return ""
		}
	}
	if p, _ := c.QoSProfile(); !p.Empty() {
		return ""
	}
	if len(c.Rails) == 0 {
		return "it has no rails (rails[] is empty or absent) and no qos section"
	}
	return "no rail has an address (rails[].ipv4, rails[].ipv6 or addressing pools) and there is no qos section"
}

// validNetdevName applies the kernel's rules (dev_valid_name): 1-15 bytes,
// not "." or "..", no '/', ':' or white space.
func validNetdevName(name string) error {
	if len(name) == 0 || len(name) > 15 {
		return fmt.Errorf("%s must be 1-15 characters", clip(name))
	}
	if name == "." || name == ".." || strings.ContainsAny(name, "/: \t\n") {
		return fmt.Errorf("%q is not a valid interface name", name)
	}
	return nil
}

// clip quotes a configured string for a message, cut to 64 bytes: a
// hostile value is never echoed in full.
func clip(s string) string {
	const max = 64
	if len(s) <= max {
		return strconv.Quote(s)
	}
	return fmt.Sprintf("%s... (%d bytes)", strconv.Quote(s[:max]), len(s))
}

// Pins returns the rail pins of the configuration: the rails[] entries
// that name a netdev or an RDMA device.
func (c Config) Pins() []gpu.RailPin {
	pins := make([]gpu.RailPin, 0, len(c.Rails))
	for _, r := range c.Rails {
		if r.Rail == nil || (r.Netdev == "" && r.RDMADevice == "") {
			continue
		}
		pins = append(pins, gpu.RailPin{Rail: *r.Rail, Netdev: r.Netdev, RDMADevice: r.RDMADevice})
	}
	return pins
}

// QoSProfile converts the qos section into the engine's profile, with the
// problems Validate reports.
func (c Config) QoSProfile() (qos.Profile, []error) {
	q := c.QoS
	p := qos.Profile{Trust: q.Trust, PFC: q.PFCPriorities, DSCPToPriority: q.DSCPToPriority, DCBX: q.DCBX, RoCETos: q.RoCETos, RoCEMode: q.RoCEMode}
	var errs []error
	if e := q.ETS; e != nil {
		if len(e.PrioTC) != 8 || len(e.TSA) != 8 || len(e.BW) != 8 {
			errs = append(errs, fmt.Errorf("qos.ets: prio_tc, tsa and bw need 8 entries each (got %d, %d, %d)", len(e.PrioTC), len(e.TSA), len(e.BW)))
		} else {
			var ets qos.ETSProfile
			copy(ets.PrioTC[:], e.PrioTC)
			copy(ets.TSA[:], e.TSA)
			copy(ets.BW[:], e.BW)
			p.ETS = &ets
		}
	}
	if d := q.DCQCN; d != nil {
		p.DCQCN = &qos.DCQCNProfile{Enabled: d.Enabled, Priorities: d.Priorities, NP: d.NP, RP: d.RP}
	}
	_, verrs := p.Validate("qos")
	return p, append(errs, verrs...)
}

// QoSWarnings are legal QoS settings that will not give a lossless class.
func (c Config) QoSWarnings() []string {
	p, _ := c.QoSProfile()
	w, _ := p.Validate("qos")
	return w
}
