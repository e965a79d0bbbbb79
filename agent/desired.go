package agent

import (
	"github.com/roce-agent/roce-agent/nic/linkengine"
	"github.com/roce-agent/roce-agent/qos"
)

// Desired state derivation: what the configuration and the inventory ask
// of the link engine (DesiredLinks, links.go) and of the QoS engine.

// LinkRange is the table and priority range the configuration gives the
// link engine.
func (c Config) LinkRange() linkengine.TableRange {
	return linkengine.TableRange{TableBase: c.Link.Routing.TableBase, PriorityBase: c.Link.Routing.RulePriorityBase, Size: RailTableSpan}
}

// QoSTargets are the rail NICs the QoS profile applies to: every
// inventory rail with a netdev.
func QoSTargets(inv *Inventory) []qos.Target {
	var out []qos.Target
	for _, r := range inv.Rails {
		if r.Netdev == "" {
			continue
		}
		t := qos.Target{Rail: r.Rail, Netdev: r.Netdev, RDMADevice: r.RDMADevice, Port: 1, PCI: r.PCI}
		if n := inv.NIC(r.RDMADevice); n != nil {
			t.Port, t.Driver = n.Port.Port, n.Driver
		}
		out = append(out, t)
	}
	return out
}
