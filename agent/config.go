// Package agent composes the leaf packages (nic, gpu) into what the
// roce-agent commands do: the node inventory today, the reconcile loop as
// it lands.
package agent

import (
	"errors"
	"fmt"
	"strings"

	"github.com/roce-agent/roce-agent/gpu"
	"github.com/roce-agent/roce-agent/nic"
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
	Format string `mapstructure:"format"` // text or json
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
		Log:       LogConfig{Level: "info", Format: "text"},
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
		fail("log.level", "%q is not one of debug, info, warn, error", c.Log.Level)
	}
	switch c.Log.Format {
	case "text", "json":
	default:
		fail("log.format", "%q is not one of text, json", c.Log.Format)
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
			if strings.ContainsAny(r.RDMADevice, "/ \t\n") {
				fail(field+".rdma_device", "%q is not a device name", r.RDMADevice)
			}
			if j, dup := devices[r.RDMADevice]; dup {
				fail(field+".rdma_device", "%q is also rails[%d]", r.RDMADevice, j)
			}
			devices[r.RDMADevice] = i
		}
	}
	errs = append(errs, c.validateLink()...)
	return errors.Join(errs...)
}

// validNetdevName applies the kernel's rules (dev_valid_name): 1-15 bytes,
// not "." or "..", no '/', ':' or white space.
func validNetdevName(name string) error {
	if len(name) == 0 || len(name) > 15 {
		return fmt.Errorf("%q must be 1-15 characters", name)
	}
	if name == "." || name == ".." || strings.ContainsAny(name, "/: \t\n") {
		return fmt.Errorf("%q is not a valid interface name", name)
	}
	return nil
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
