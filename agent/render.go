package agent

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/roce-agent/roce-agent/gpu/topology"
)

// WriteJSON writes the inventory as indented JSON: the v1 wire type.
func (inv *Inventory) WriteJSON(w io.Writer) error { return WriteJSON(w, inv.Wire()) }

var legend = map[topology.Level]string{
	topology.LevelPIX:     "traverses at most a single PCIe switch",
	topology.LevelPXB:     "traverses multiple PCIe switches (no host bridge)",
	topology.LevelPHB:     "traverses a PCIe host bridge (the CPU)",
	topology.LevelNODE:    "traverses host bridges within a NUMA node",
	topology.LevelSYS:     "traverses the interconnect between NUMA nodes",
	topology.LevelUnknown: "no PCIe path known (software device or missing from sysfs)",
}

// WriteTable writes the inventory for people: GPUs, NICs, a GPU x NIC
// matrix in the nvidia-smi topo -m legend, rails, other NICs, warnings.
func (inv *Inventory) WriteTable(out io.Writer) error {
	w := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	p := func(format string, args ...any) { fmt.Fprintf(w, format, args...) }

	p("GPUs (source: %s)\n", inv.GPUSource)
	if len(inv.GPUs) == 0 {
		p("  none\n")
	} else {
		p("  INDEX\tPCI\tNUMA\tMODEL\tUUID\tPCIe\n")
		for _, g := range inv.GPUs {
			link := "-"
			if g.PCIe != nil {
				link = g.PCIe.String()
			}
			p("  %d\t%s\t%d\t%s\t%s\t%s\n", g.Index, orDash(g.PCI), g.NUMA, orDash(g.Model), orDash(g.UUID), link)
		}
	}
	p("\nRDMA NICs\n")
	if len(inv.NICs) == 0 {
		p("  none\n")
	} else {
		p("  DEVICE\tNETDEV\tPCI\tNUMA\tDRIVER\tFIRMWARE\tPORT\tSTATE\tRATE\tLINK\tMTU\tGIDS\tPCIe\n")
		for _, n := range inv.NICs {
			link := "-"
			if n.PCIe != nil {
				link = n.PCIe.String()
			}
			for i, port := range n.Ports() {
				if i == 0 {
					p("  %s\t%s\t%s\t%d\t%s\t%s\t", n.RDMADevice, orDash(n.Netdev), orDash(n.PCI), n.NUMA, orDash(n.Driver), orDash(n.Firmware))
				} else {
					p("  \t\t\t\t\t\t")
					link = ""
				}
				mtu := "-"
				if n.MTU > 0 {
					mtu = fmt.Sprint(n.MTU)
				}
				p("%d\t%s/%s\t%s\t%s\t%s\t%d\t%s\n", port.Port, orDash(port.State), orDash(port.PhysState), rate(port.RateGbps), orDash(port.LinkLayer), mtu, len(port.GIDs), link)
			}
		}
	}

	if len(inv.GPUs) > 0 && len(inv.NICs) > 0 {
		p("\nGPU x NIC PCIe affinity\n")
		p("  ")
		for _, n := range inv.NICs {
			p("\t%s", n.RDMADevice)
		}
		p("\n")
		i := 0
		for _, g := range inv.GPUs {
			p("  GPU%d", g.Index)
			for range inv.NICs {
				p("\t%s", inv.Affinity[i].Level)
				i++
			}
			p("\n")
		}
		p("\n  Legend:\n")
		for _, l := range sortedLevels(inv.Affinity) {
			p("    %-4s = %s\n", l, legend[l])
		}
	}

	p("\nRails\n")
	if len(inv.Rails) == 0 {
		p("  none\n")
	} else {
		p("  RAIL\tDEVICE\tNETDEV\tPCI\tGPUS\tLEVEL\tPINNED\n")
		for _, r := range inv.Rails {
			gpus := "-"
			if len(r.GPUs) > 0 {
				gpus = joinInts(r.GPUs)
			}
			pinned := "no"
			if r.Pinned {
				pinned = "yes"
			}
			p("  %d\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Rail, orDash(r.RDMADevice), orDash(r.Netdev), orDash(r.PCI), gpus, r.Level, pinned)
		}
	}
	if len(inv.NonRail) > 0 {
		p("\nNon-rail NICs\n")
		p("  DEVICE\tNETDEV\tPCI\tREASON\n")
		for _, n := range inv.NonRail {
			p("  %s\t%s\t%s\t%s\n", n.RDMADevice, orDash(n.Netdev), orDash(n.PCI), n.Reason)
		}
	}
	p("\nWarnings\n")
	if len(inv.Warnings) == 0 {
		p("  none\n")
	}
	for _, msg := range inv.Warnings {
		p("  %s\n", strings.ReplaceAll(msg.String(), "\t", " "))
	}
	return w.Flush()
}

func rate(gbps float64) string {
	if gbps == 0 {
		return "-"
	}
	return fmt.Sprintf("%g Gb/s", gbps)
}
