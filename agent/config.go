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
	Node      NodeConfig   `mapstructure:"node"`
	SysfsRoot string       `mapstructure:"sysfs_root"`
	Log       LogConfig    `mapstructure:"log"`
	Rails     []RailConfig `mapstructure:"rails"`
}

// NodeConfig identifies the node.
type NodeConfig struct {
	// Name defaults to the host name.
	Name string `mapstructure:"name"`
}

// LogConfig selects the log level and format.
type LogConfig struct {
	Level  string `mapstructure:"level"`  // debug, info, warn, error
	Format string `mapstructure:"format"` // text or json
}

// RailConfig pins one rail to a NIC, by netdev or RDMA device.
type RailConfig struct {
	Rail       *int   `mapstructure:"rail"`
	Netdev     string `mapstructure:"netdev"`
	RDMADevice string `mapstructure:"rdma_device"`
}

// DefaultConfig is the configuration with nothing set.
func DefaultConfig() Config {
	return Config{
		SysfsRoot: nic.DefaultRoot,
		Log:       LogConfig{Level: "info", Format: "text"},
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
		if r.Netdev == "" && r.RDMADevice == "" {
			fail(field, "set netdev or rdma_device")
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

// Pins returns the rail pins of the configuration.
func (c Config) Pins() []gpu.RailPin {
	pins := make([]gpu.RailPin, 0, len(c.Rails))
	for _, r := range c.Rails {
		if r.Rail == nil {
			continue
		}
		pins = append(pins, gpu.RailPin{Rail: *r.Rail, Netdev: r.Netdev, RDMADevice: r.RDMADevice})
	}
	return pins
}
