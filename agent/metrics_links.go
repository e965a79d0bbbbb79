package agent

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/roce-agent/roce-agent/nic"
)

var (
	descPortState = desc("rdma_port_active", "RDMA port state is ACTIVE (1) or not (0).", "rdma_dev", "port")
	descPortRate  = desc("rdma_port_rate_bytes_per_second", "RDMA port rate.", "rdma_dev", "port")
	descLinkUp    = desc("link_up", "Netdev operstate is up (1) or not (0).", "netdev")
	descLinkMTU   = desc("link_mtu_bytes", "Netdev MTU.", "netdev")
	descLinkSpeed = desc("link_speed_bytes_per_second", "Netdev speed (absent when the driver does not know).", "netdev")
)

// linksPart reads RDMA port state and rate, and each rail netdev's state
// in the rails' namespace.
type linksPart struct {
	netdev func(string) (nic.NetdevState, error)
}

func (*linksPart) name() string { return "links" }

func (p *linksPart) collect(ch chan<- prometheus.Metric, st *NodeStatus) []error {
	inv := st.Inventory
	var errs []error
	for _, n := range inv.NICs {
		for _, port := range n.Ports() {
			active := 0.0
			if port.Active() {
				active = 1
			}
			gauge(ch, descPortState, active, n.RDMADevice, strconv.Itoa(port.Port))
			if port.RateGbps > 0 {
				gauge(ch, descPortRate, port.RateGbps*1e9/8, n.RDMADevice, strconv.Itoa(port.Port))
			}
		}
	}
	seen := map[string]bool{}
	for _, r := range inv.Rails {
		if r.Netdev == "" || seen[r.Netdev] {
			continue
		}
		seen[r.Netdev] = true
		ns, err := p.netdev(r.Netdev)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		up := 0.0
		if ns.Up {
			up = 1
		}
		gauge(ch, descLinkUp, up, r.Netdev)
		gauge(ch, descLinkMTU, float64(ns.MTU), r.Netdev)
		if ns.SpeedMbs >= 0 {
			gauge(ch, descLinkSpeed, float64(ns.SpeedMbs)*1e6/8, r.Netdev)
		}
	}
	return errs
}
