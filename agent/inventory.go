package agent

import (
	"fmt"
	"path"
	"sort"
	"strings"

	"github.com/NVIDIA/go-nvml/pkg/nvml"

	"github.com/roce-agent/roce-agent/gpu"
	"github.com/roce-agent/roce-agent/gpu/topology"
	"github.com/roce-agent/roce-agent/nic"
)

// InventorySchema names the version of the inventory JSON contract
// (docs/inventory.md).
const InventorySchema = "roce-agent.inventory/v1"

// Inventory is what the node has: GPUs, RDMA NICs, the PCIe affinity of
// every GPU x NIC pair, the rails and what looks wrong. Its JSON form is a
// public contract, documented in docs/inventory.md.
type Inventory struct {
	Schema    string              `json:"schema"`
	Node      string              `json:"node"`
	SysfsRoot string              `json:"sysfs_root"`
	GPUSource string              `json:"gpu_source"`
	NVML      gpu.NVMLStatus      `json:"nvml"`
	GPUs      []gpu.GPU           `json:"gpus"`
	NICs      []nic.NIC           `json:"nics"`
	Affinity  []topology.Affinity `json:"affinity"`
	Rails     []topology.Rail     `json:"rails"`
	NonRail   []topology.NonRail  `json:"non_rail"`
	Warnings  []nic.Warning       `json:"warnings"`
}

// InventoryOptions says where to read the inventory from.
type InventoryOptions struct {
	Node string
	FS   *nic.FS
	// Lister names the RDMA devices; nil uses nic.NewLister(FS).
	Lister nic.DeviceLister
	// NVML is asked for GPUs when set; nil means a sysfs PCI scan only.
	NVML nvml.Interface
	Pins []topology.RailPin
	// NetdevExists says whether a pinned netdev without an RDMA device
	// exists; nil checks /class/net of the tree. The daemon passes a
	// netlink lookup in the rails' namespace.
	NetdevExists func(string) bool
}

// DiscoverInventory reads the node inventory. Only a rail pin that names a
// device the host does not have is an error; unreadable or malformed
// attributes are warnings and the devices are still reported.
func DiscoverInventory(opts InventoryOptions) (*Inventory, error) {
	w := &nic.Warnings{}
	lister := opts.Lister
	if lister == nil {
		lister = nic.NewLister(opts.FS)
	}
	nics, err := nic.Discover(opts.FS, lister, w)
	if err != nil {
		return nil, fmt.Errorf("discover rdma nics: %w", err)
	}
	gpus, err := gpu.Discover(opts.FS, opts.NVML, w)
	if err != nil {
		return nil, fmt.Errorf("discover gpus: %w", err)
	}
	netdevExists := opts.NetdevExists
	if netdevExists == nil {
		netdevExists = func(name string) bool { return opts.FS.Exists(path.Join("/class/net", name)) }
	}
	rails, nonRail, err := topology.AssignRails(gpus.GPUs, nics, opts.Pins, netdevExists)
	if err != nil {
		return nil, err
	}
	inv := &Inventory{
		Schema:    InventorySchema,
		Node:      opts.Node,
		SysfsRoot: opts.FS.Root(),
		GPUSource: gpus.Source,
		NVML:      gpus.NVML,
		GPUs:      nonNil(gpus.GPUs),
		NICs:      nonNil(nics),
		Affinity:  nonNil(topology.AffinityMatrix(gpus.GPUs, nics)),
		Rails:     nonNil(rails),
		NonRail:   nonNil(nonRail),
	}
	inv.Warnings = nonNil(append(w.List(), inv.topologyWarnings()...))
	return inv, nil
}

func warn(code, format string, args ...any) nic.Warning {
	return nic.Warning{Code: code, Message: fmt.Sprintf(format, args...)}
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

// NIC returns the NIC with the given RDMA device name.
func (inv *Inventory) NIC(rdmaDevice string) *nic.NIC {
	for i := range inv.NICs {
		if inv.NICs[i].RDMADevice == rdmaDevice {
			return &inv.NICs[i]
		}
	}
	return nil
}

// topologyWarnings checks the rails: affinity worse than PXB, degraded
// PCIe links, ports not ACTIVE, and GPU and rail NIC counts that differ.
// GPU links are checked for width only: GPUs lower their link speed when
// idle to save power, which is not a fault.
func (inv *Inventory) topologyWarnings() []nic.Warning {
	var out []nic.Warning
	for _, r := range inv.Rails {
		name := railName(r)
		if r.Missing != "" {
			out = append(out, warn(nic.WarnRailMissing, "rail %d is pinned to a device the host does not have: %s; only this rail fails", r.Rail, r.Missing))
			continue
		}
		if len(r.GPUs) > 0 && r.Level > topology.LevelPXB {
			out = append(out, warn(nic.WarnRailAffinity, "rail %d (%s) is %s from GPU %s; want PIX or PXB", r.Rail, name, r.Level, joinInts(r.GPUs)))
		}
		n := inv.NIC(r.RDMADevice)
		if n == nil {
			if r.RDMADevice == "" {
				out = append(out, warn(nic.WarnRailNoRDMA, "rail %d (netdev %s) has no RDMA device; only the link engine can manage it", r.Rail, r.Netdev))
			}
			continue
		}
		if n.PCIe != nil && (n.PCIe.SpeedDegraded() || n.PCIe.WidthDegraded()) {
			out = append(out, warn(nic.WarnPCIeDegraded, "rail %d NIC %s (%s) trained at %.1f GT/s x%d, capable of %.1f GT/s x%d",
				r.Rail, n.RDMADevice, n.PCI, n.PCIe.CurrentSpeed, n.PCIe.CurrentWidth, n.PCIe.MaxSpeed, n.PCIe.MaxWidth))
		}
		for _, p := range n.Ports() {
			if !p.Active() {
				state := p.State
				if state == "" {
					state = "unknown"
				}
				out = append(out, warn(nic.WarnPortNotActive, "rail %d NIC %s port %d is %s (phys %s)", r.Rail, n.RDMADevice, p.Port, state, orDash(p.PhysState)))
			}
		}
	}
	for _, g := range inv.GPUs {
		if g.PCIe != nil && g.PCIe.WidthDegraded() {
			out = append(out, warn(nic.WarnPCIeDegraded, "GPU %d (%s) trained at x%d, capable of x%d", g.Index, g.PCI, g.PCIe.CurrentWidth, g.PCIe.MaxWidth))
		}
	}
	return append(out, inv.countWarnings()...)
}

// countWarnings compares the GPU count with the rails GPUs got (fewer NICs
// than GPUs means GPUs share rails) and flags non-rail NICs that share a
// PCIe switch with a GPU: the sign of a GPU that is missing, or of a second
// NIC per GPU that no rail uses.
func (inv *Inventory) countWarnings() []nic.Warning {
	g := len(inv.GPUs)
	if g == 0 {
		if len(inv.NonRail) == 0 {
			return nil
		}
		return []nic.Warning{warn(nic.WarnGPUNICCount, "no GPUs but %d RDMA NICs that are not rails; rails come only from pins (pins[] or rails[] in the config)", len(inv.NonRail))}
	}
	var out []nic.Warning
	gpuRails := 0
	for _, r := range inv.Rails {
		if len(r.GPUs) > 0 {
			gpuRails++
		}
	}
	switch {
	case gpuRails == 0:
		out = append(out, warn(nic.WarnGPUNICCount, "%d GPUs but no rail NIC serves any of them: the GPUs have no rail", g))
	case gpuRails < g:
		out = append(out, warn(nic.WarnGPUNICCount, "%d GPUs but %d rail NICs; GPUs share rails", g, gpuRails))
	}
	for _, n := range inv.NonRail {
		for _, a := range inv.Affinity {
			if a.RDMADevice == n.RDMADevice && a.Level == topology.LevelPIX {
				out = append(out, warn(nic.WarnGPUNICCount, "%d GPUs and %d rails, but non-rail NIC %s shares a PCIe switch with GPU %d", g, len(inv.Rails), n.RDMADevice, a.GPU))
				break
			}
		}
	}
	return out
}

func railName(r topology.Rail) string {
	if r.RDMADevice != "" {
		return r.RDMADevice
	}
	return r.Netdev
}

func joinInts(v []int) string {
	s := make([]string, len(v))
	for i, x := range v {
		s[i] = fmt.Sprint(x)
	}
	return strings.Join(s, ",")
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// sortedLevels lists the levels present, for the table legend.
func sortedLevels(aff []topology.Affinity) []topology.Level {
	seen := map[topology.Level]bool{}
	for _, a := range aff {
		seen[a.Level] = true
	}
	var out []topology.Level
	for l := range seen {
		out = append(out, l)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}
