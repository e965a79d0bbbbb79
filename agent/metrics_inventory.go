package agent

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
)

var (
	descGPUInfo  = desc("gpu_info", "A GPU (value 1).", "gpu", "pci", "model", "uuid", "numa")
	descNICInfo  = desc("nic_info", "An RDMA NIC (value 1).", "rdma_dev", "netdev", "pci", "driver", "firmware")
	descRailInfo = desc("rail_info", "A rail: its NIC and PCIe affinity level to its GPUs (value 1).", "rail", "rdma_dev", "netdev", "level")
	descAffinity = desc("rail_gpu_affinity_level", "PCIe distance between a rail NIC and one of its GPUs: 0 PIX, 1 PXB, 2 PHB, 3 NODE, 4 SYS, 5 unknown.", "rail", "gpu")
)

// inventoryPart renders the inventory: GPUs, NICs, rails and their PCIe
// affinity.
type inventoryPart struct{}

func (inventoryPart) name() string { return "" }

func (inventoryPart) collect(ch chan<- prometheus.Metric, st *NodeStatus) []error {
	inv := st.Inventory
	for _, g := range inv.GPUs {
		gauge(ch, descGPUInfo, 1, strconv.Itoa(g.Index), g.PCI, g.Model, g.UUID, strconv.Itoa(g.NUMA))
	}
	for _, n := range inv.NICs {
		gauge(ch, descNICInfo, 1, n.RDMADevice, n.Netdev, n.PCI, n.Driver, n.Firmware)
	}
	for _, r := range inv.Rails {
		rail := strconv.Itoa(r.Rail)
		gauge(ch, descRailInfo, 1, rail, r.RDMADevice, r.Netdev, r.Level.String())
		for _, a := range inv.Affinity {
			for _, g := range r.GPUs {
				if a.GPU == g && a.RDMADevice == r.RDMADevice {
					gauge(ch, descAffinity, float64(a.Level), rail, strconv.Itoa(g))
				}
			}
		}
	}
	return nil
}
