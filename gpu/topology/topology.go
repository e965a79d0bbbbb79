// Package topology is the node's PCIe topology in one place: how a GPU and
// a NIC reach each other (PCIPath, in the nvidia-smi topo -m legend), the
// GPU x NIC affinity matrix, and the assignment of GPUs to NICs as rails
// (AssignRails, with the config's pins). It reads nothing itself: GPUs come
// from package gpu, NICs and PCI functions from package nic.
package topology

import (
	"fmt"
	"sort"

	"github.com/roce-agent/roce-agent/gpu"
	"github.com/roce-agent/roce-agent/nic"
)

// Level is a PCIe distance in the `nvidia-smi topo -m` legend. Lower is
// closer.
type Level int

// The legend, closest first. LevelUnknown is for a pair where one side has
// no PCI function (soft-RoCE on a virtual netdev) or is not in sysfs.
const (
	LevelPIX  Level = iota // traverses at most a single PCIe switch
	LevelPXB               // traverses multiple PCIe switches, no host bridge
	LevelPHB               // traverses a PCIe host bridge (the CPU)
	LevelNODE              // traverses host bridges within one NUMA node
	LevelSYS               // traverses the SMP interconnect between NUMA nodes
	LevelUnknown
)

var levelNames = [...]string{"PIX", "PXB", "PHB", "NODE", "SYS", "N/A"}

func (l Level) String() string {
	if l < 0 || int(l) >= len(levelNames) {
		return fmt.Sprintf("Level(%d)", int(l))
	}
	return levelNames[l]
}

// MarshalText writes the legend name, so JSON carries "PIX", not 0.
func (l Level) MarshalText() ([]byte, error) { return []byte(l.String()), nil }

// UnmarshalText reads a legend name.
func (l *Level) UnmarshalText(b []byte) error {
	for i, n := range levelNames {
		if n == string(b) {
			*l = Level(i)
			return nil
		}
	}
	return fmt.Errorf("unknown topology level %q", b)
}

// Path is how two PCI functions reach each other: the legend level and the
// raw facts it was computed from.
type Path struct {
	Level Level `json:"level"`
	// CommonAncestor is the deepest PCI function both sit below ("" when
	// they meet only at a host bridge or not at all); for a pair on one
	// host bridge with no common function, the host bridge ("pci0000:17").
	CommonAncestor string `json:"common_ancestor"`
	// Switches counts the PCIe switches the path traverses.
	Switches int `json:"switches"`
	// SameHostBridge and SameNUMA say which boundaries the path stays within.
	SameHostBridge bool `json:"same_host_bridge"`
	SameNUMA       bool `json:"same_numa"`
}

// PCIPath classifies the PCIe path between two functions the way NCCL and
// nvidia-smi do from sysfs. Below the host bridge, the first function of a
// chain is the root port and switches appear as (upstream port, downstream
// port) pairs, so upstream ports sit at odd depths. Two devices that meet
// inside a switch traverse that switch plus every switch below the meeting
// point on either side: one switch is PIX, more is PXB. Devices that meet
// at a root port or only at the host bridge are PHB; different host bridges
// are NODE within a NUMA node and SYS across nodes (an unknown node, -1,
// counts as the same node).
func PCIPath(a, b *nic.PCIDevice) Path {
	if a == nil || b == nil || a.Path == "" || b.Path == "" {
		return Path{Level: LevelUnknown}
	}
	hbA, chainA := a.Hierarchy()
	hbB, chainB := b.Hierarchy()
	p := Path{SameNUMA: a.NUMA == b.NUMA || a.NUMA < 0 || b.NUMA < 0}
	if hbA == "" || hbB == "" {
		p.Level = LevelUnknown
		return p
	}
	if hbA != hbB {
		if p.SameNUMA {
			p.Level = LevelNODE
		} else {
			p.Level = LevelSYS
		}
		return p
	}
	p.SameHostBridge = true
	common := 0
	for common < len(chainA) && common < len(chainB) && chainA[common] == chainB[common] {
		common++
	}
	if common == 0 {
		p.CommonAncestor = hbA
		p.Level = LevelPHB
		return p
	}
	p.CommonAncestor = chainA[common-1]
	meet := common - 1
	if meet == 0 {
		// Both below one root port but not behind a common switch port:
		// the path turns around in the root complex.
		p.Level = LevelPHB
		return p
	}
	p.Switches = 1 + upstreamPortsBelow(chainA, meet) + upstreamPortsBelow(chainB, meet)
	if p.Switches == 1 {
		p.Level = LevelPIX
	} else {
		p.Level = LevelPXB
	}
	return p
}

// upstreamPortsBelow counts the switch upstream ports (odd depths) strictly
// between the meeting point and the endpoint at the end of the chain.
func upstreamPortsBelow(chain []string, meet int) int {
	n := 0
	for i := meet + 1; i < len(chain)-1; i++ {
		if i%2 == 1 {
			n++
		}
	}
	return n
}

// Affinity is the path between one GPU and one NIC.
type Affinity struct {
	GPU        int    `json:"gpu"`
	RDMADevice string `json:"rdma_device"`
	Path
	GPUNUMA int `json:"gpu_numa"`
	NICNUMA int `json:"nic_numa"`
}

// AffinityMatrix computes one Affinity per GPU x NIC pair, GPUs in index
// order, NICs in the order given.
func AffinityMatrix(gpus []gpu.GPU, nics []nic.NIC) []Affinity {
	out := make([]Affinity, 0, len(gpus)*len(nics))
	for _, g := range gpus {
		for _, n := range nics {
			out = append(out, Affinity{
				GPU:        g.Index,
				RDMADevice: n.RDMADevice,
				Path:       PCIPath(g.Device, n.Device),
				GPUNUMA:    g.NUMA,
				NICNUMA:    n.NUMA,
			})
		}
	}
	return out
}

// RailPin fixes one rail to a NIC, by netdev or RDMA device name.
type RailPin struct {
	Rail       int
	Netdev     string
	RDMADevice string
}

// Rail is one rail: a NIC and the GPUs that use it.
type Rail struct {
	Rail       int    `json:"rail"`
	RDMADevice string `json:"rdma_device"`
	Netdev     string `json:"netdev"`
	PCI        string `json:"pci"`
	GPUs       []int  `json:"gpus"`
	// Level is the worst level between the rail's NIC and its GPUs
	// (N/A for a rail without GPUs).
	Level  Level `json:"level"`
	Pinned bool  `json:"pinned"`
	// Missing says why a pinned rail has no device on the host (its
	// netdev or RDMA device does not exist); empty when it has one. Such
	// a rail stays in the inventory so that only it fails.
	Missing string `json:"missing,omitempty"`
}

// NonRail is an RDMA NIC that no rail uses (storage, management, a port
// with no GPU near it).
type NonRail struct {
	RDMADevice string `json:"rdma_device"`
	Netdev     string `json:"netdev"`
	PCI        string `json:"pci"`
	Reason     string `json:"reason"`
}

// PinError says which rail pin could not be honoured.
type PinError struct {
	Rail   int
	Field  string
	Device string
	Reason string
}

func (e *PinError) Error() string {
	return fmt.Sprintf("rails: rail %d: %s %q %s", e.Rail, e.Field, e.Device, e.Reason)
}

// AssignRails maps GPUs to NICs. Each GPU, in index order, takes its
// closest free NIC (ties: lowest PCI address); once every candidate NIC is
// taken, further GPUs join the rail of their closest NIC (ties: the rail
// with fewer GPUs, then the lowest PCI address). Pinned NICs are
// candidates like any other, keep their pinned rail number, and are rails
// even when no GPU chooses them; unpinned rails are numbered in the order
// GPUs chose them, skipping pinned numbers. NICs whose link layer is
// InfiniBand are not RoCE rails. netdevExists says whether a pinned netdev
// that has no RDMA device exists on the host (it becomes a rail without an
// RDMA device, as a lab veth does). A pinned netdev or RDMA device the host
// does not have is still a rail, with Missing saying so: it fails alone
// instead of failing the inventory.
func AssignRails(gpus []gpu.GPU, nics []nic.NIC, pins []RailPin, netdevExists func(string) bool) ([]Rail, []NonRail, error) {
	byName := map[string]int{}
	byNetdev := map[string]int{}
	for i, n := range nics {
		byName[n.RDMADevice] = i
		if n.Netdev != "" {
			byNetdev[n.Netdev] = i
		}
	}

	pinnedRail := map[int]int{} // nic index -> rail
	var extra []Rail            // pinned netdevs without an RDMA device
	usedRail := map[int]bool{}
	for _, p := range pins {
		idx := -1
		switch {
		case p.RDMADevice != "":
			i, ok := byName[p.RDMADevice]
			if !ok {
				usedRail[p.Rail] = true
				extra = append(extra, Rail{Rail: p.Rail, RDMADevice: p.RDMADevice, Netdev: p.Netdev, GPUs: []int{}, Level: LevelUnknown, Pinned: true,
					Missing: fmt.Sprintf("rdma_device %q does not exist", p.RDMADevice)})
				continue
			}
			if p.Netdev != "" && nics[i].Netdev != p.Netdev {
				return nil, nil, &PinError{p.Rail, "netdev", p.Netdev, fmt.Sprintf("is not the netdev of rdma_device %q (%q)", p.RDMADevice, nics[i].Netdev)}
			}
			idx = i
		case p.Netdev != "":
			if i, ok := byNetdev[p.Netdev]; ok {
				idx = i
			}
		}
		usedRail[p.Rail] = true
		if idx < 0 {
			r := Rail{Rail: p.Rail, Netdev: p.Netdev, GPUs: []int{}, Level: LevelUnknown, Pinned: true}
			if netdevExists == nil || !netdevExists(p.Netdev) {
				r.Missing = fmt.Sprintf("netdev %q does not exist", p.Netdev)
			}
			extra = append(extra, r)
			continue
		}
		if r, dup := pinnedRail[idx]; dup {
			return nil, nil, &PinError{p.Rail, "rdma_device", nics[idx].RDMADevice, fmt.Sprintf("is already pinned to rail %d", r)}
		}
		pinnedRail[idx] = p.Rail
	}

	candidates := make([]int, 0, len(nics))
	for i, n := range nics {
		if n.LinkLayer != "InfiniBand" {
			candidates = append(candidates, i)
		}
	}

	paths := make(map[[2]int]Path)
	pathOf := func(g, n int) Path {
		k := [2]int{g, n}
		if p, ok := paths[k]; ok {
			return p
		}
		p := PCIPath(gpus[g].Device, nics[n].Device)
		paths[k] = p
		return p
	}
	taken := map[int]bool{}
	var order []int            // nic indexes in the order GPUs took them
	members := map[int][]int{} // nic index -> GPU indexes
	// closest picks the NIC nearest to GPU g. When GPUs must share rails,
	// equally near rails are balanced: the one with fewer GPUs wins.
	closest := func(g int, pool []int, sharing bool) int {
		best := -1
		for _, n := range pool {
			if best < 0 {
				best = n
				continue
			}
			ln, lb := pathOf(g, n).Level, pathOf(g, best).Level
			if sharing && ln == lb && len(members[n]) != len(members[best]) {
				if len(members[n]) < len(members[best]) {
					best = n
				}
				continue
			}
			if closer(ln, nics[n], lb, nics[best]) {
				best = n
			}
		}
		return best
	}
	for g := range gpus {
		var free []int
		for _, n := range candidates {
			if !taken[n] {
				free = append(free, n)
			}
		}
		pool, sharing := free, false
		if len(pool) == 0 {
			pool, sharing = order, true
		}
		n := closest(g, pool, sharing)
		if n < 0 {
			continue
		}
		if !taken[n] {
			taken[n] = true
			order = append(order, n)
		}
		members[n] = append(members[n], gpus[g].Index)
	}
	// Pinned NICs no GPU chose are rails too.
	for _, n := range candidates {
		if _, pinned := pinnedRail[n]; pinned && !taken[n] {
			taken[n] = true
			order = append(order, n)
		}
	}
	for i := range nics {
		if _, pinned := pinnedRail[i]; pinned && !taken[i] {
			taken[i] = true
			order = append(order, i) // a pinned InfiniBand NIC: the operator asked for it
		}
	}

	next := 0
	rails := make([]Rail, 0, len(order)+len(extra))
	for _, n := range order {
		r, pinned := pinnedRail[n]
		if !pinned {
			for usedRail[next] {
				next++
			}
			r = next
			usedRail[r] = true
		}
		rail := Rail{
			Rail:       r,
			RDMADevice: nics[n].RDMADevice,
			Netdev:     nics[n].Netdev,
			PCI:        nics[n].PCI,
			GPUs:       append([]int{}, members[n]...),
			Level:      LevelUnknown,
			Pinned:     pinned,
		}
		for i, gi := range rail.GPUs {
			lvl := pathOf(gpuPos(gpus, gi), n).Level
			if i == 0 || lvl > rail.Level {
				rail.Level = lvl
			}
		}
		rails = append(rails, rail)
	}
	rails = append(rails, extra...)
	sort.Slice(rails, func(i, j int) bool { return rails[i].Rail < rails[j].Rail })

	var non []NonRail
	for i, n := range nics {
		if taken[i] {
			continue
		}
		reason := "not the closest free NIC of any GPU"
		switch {
		case n.LinkLayer == "InfiniBand":
			reason = "link layer InfiniBand, not RoCE"
		case len(gpus) == 0:
			reason = "no GPUs on this host and not pinned"
		}
		non = append(non, NonRail{RDMADevice: n.RDMADevice, Netdev: n.Netdev, PCI: n.PCI, Reason: reason})
	}
	return rails, non, nil
}

// closer orders candidate NICs for a GPU: by level, then PCI address
// (software devices, with none, last), then name.
func closer(la Level, a nic.NIC, lb Level, b nic.NIC) bool {
	if la != lb {
		return la < lb
	}
	if (a.PCI == "") != (b.PCI == "") {
		return a.PCI != ""
	}
	if a.PCI != b.PCI {
		return a.PCI < b.PCI
	}
	return nic.NaturalLess(a.RDMADevice, b.RDMADevice)
}

func gpuPos(gpus []gpu.GPU, index int) int {
	for i, g := range gpus {
		if g.Index == index {
			return i
		}
	}
	return -1
}
