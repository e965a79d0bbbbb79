package agent

import (
	v1 "github.com/roce-agent/roce-agent/api/v1"
	"github.com/roce-agent/roce-agent/gpu"
	"github.com/roce-agent/roce-agent/gpu/topology"
	"github.com/roce-agent/roce-agent/nic"
)

// Conversions to the wire types of api/v1. Their JSON is byte-identical to
// that of the agent's own types (agent/wire_test.go proves it): nil lists
// stay nil, empty ones empty.

// Wire returns the inventory as the v1 wire type; nil for nil.
func (inv *Inventory) Wire() *v1.Inventory {
	if inv == nil {
		return nil
	}
	return &v1.Inventory{
		Schema:    inv.Schema,
		Node:      inv.Node,
		SysfsRoot: inv.SysfsRoot,
		GPUSource: inv.GPUSource,
		NVML:      v1.NVMLStatus(inv.NVML),
		GPUs:      convert(inv.GPUs, wireGPU),
		NICs:      convert(inv.NICs, wireNIC),
		Affinity:  convert(inv.Affinity, wireAffinity),
		Rails:     convert(inv.Rails, wireRail),
		NonRail:   convert(inv.NonRail, func(n topology.NonRail) v1.NonRail { return v1.NonRail(n) }),
		Warnings:  nic.WarningStrings(inv.Warnings),
	}
}

// Wire returns the status as the v1 wire type; nil for nil.
func (st *NodeStatus) Wire() *v1.NodeStatus {
	if st == nil {
		return nil
	}
	return &v1.NodeStatus{
		Node:              st.Node,
		Version:           st.Version,
		AppliedGeneration: st.AppliedGeneration,
		Inventory:         st.Inventory.Wire(),
		Rails:             st.Rails,
		Conditions:        st.Conditions,
		Probes:            st.Probes,
		LastReconcile:     st.LastReconcile,
		LastError:         st.LastError,
	}
}

// convert maps a list, keeping nil nil (JSON null) and empty empty ([]).
func convert[T, U any](in []T, f func(T) U) []U {
	if in == nil {
		return nil
	}
	out := make([]U, len(in))
	for i, x := range in {
		out[i] = f(x)
	}
	return out
}

func wireLevel(l topology.Level) v1.Level { return v1.Level(l.String()) }

func wirePCIe(l *nic.PCIeLink) *v1.PCIeLink {
	if l == nil {
		return nil
	}
	w := v1.PCIeLink(*l)
	return &w
}

func wireGPU(g gpu.GPU) v1.GPU {
	return v1.GPU{Index: g.Index, PCI: g.PCI, UUID: g.UUID, Model: g.Model, NUMA: g.NUMA, Source: g.Source, PCIe: wirePCIe(g.PCIe)}
}

func wirePort(p nic.Port) v1.Port {
	return v1.Port{
		Port:      p.Port,
		State:     p.State,
		PhysState: p.PhysState,
		Rate:      p.Rate,
		RateGbps:  p.RateGbps,
		LinkLayer: p.LinkLayer,
		GIDs:      convert(p.GIDs, func(g nic.GID) v1.GID { return v1.GID(g) }),
	}
}

func wireNIC(n nic.NIC) v1.NIC {
	return v1.NIC{
		RDMADevice: n.RDMADevice,
		Netdev:     n.Netdev,
		PCI:        n.PCI,
		NUMA:       n.NUMA,
		Driver:     n.Driver,
		Vendor:     n.Vendor,
		Firmware:   n.Firmware,
		NodeGUID:   n.NodeGUID,
		HCAType:    n.HCAType,
		BoardID:    n.BoardID,
		Software:   n.Software,
		MAC:        n.MAC,
		MTU:        n.MTU,
		PCIe:       wirePCIe(n.PCIe),
		Port:       wirePort(n.Port),
		OtherPorts: convert(n.OtherPorts, wirePort),
	}
}

func wireAffinity(a topology.Affinity) v1.Affinity {
	return v1.Affinity{
		GPU:            a.GPU,
		RDMADevice:     a.RDMADevice,
		Level:          wireLevel(a.Level),
		CommonAncestor: a.CommonAncestor,
		Switches:       a.Switches,
		SameHostBridge: a.SameHostBridge,
		SameNUMA:       a.SameNUMA,
		GPUNUMA:        a.GPUNUMA,
		NICNUMA:        a.NICNUMA,
	}
}

func wireRail(r topology.Rail) v1.Rail {
	return v1.Rail{
		Rail:       r.Rail,
		RDMADevice: r.RDMADevice,
		Netdev:     r.Netdev,
		PCI:        r.PCI,
		GPUs:       convert(r.GPUs, func(i int) int { return i }),
		Level:      wireLevel(r.Level),
		Pinned:     r.Pinned,
		Missing:    r.Missing,
	}
}
