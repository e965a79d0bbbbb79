package diag

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strconv"
	"strings"

	"github.com/NVIDIA/go-nvml/pkg/nvml"

	"github.com/roce-agent/roce-agent/gpu"
	"github.com/roce-agent/roce-agent/gpu/topology"
	"github.com/roce-agent/roce-agent/nic"
)

// PCIe checks: the links of the rail GPUs and NICs, ACS and the IOMMU on
// the path GPUDirect RDMA takes between them, and how close they are.

func init() {
	register(
		Check{
			ID: "PCIE-WIDTH-001", Title: "PCIe link width at capability",
			Doc: "Each GPU and rail NIC must train its PCIe link on all its lanes (`current_link_width` equal to `max_link_width` under `/sys/bus/pci/devices/<bdf>/`). " +
				"A x16 device trained at x8 has half the bandwidth, and a rail NIC or GPU behind such a link caps every collective that crosses it.",
			Remedy: "reseat the card or the riser and check the slot's lane bifurcation in the BIOS; compare `lspci -vv -s <bdf>` LnkCap with LnkSta; " +
				"if it persists after a cold boot, move the card to another slot or have the riser, cable or card replaced",
			Run: checkPCIeWidth,
		},
		Check{
			ID: "PCIE-SPEED-001", Title: "PCIe link speed at capability",
			Doc: "Each rail NIC must train its PCIe link at its top speed (`current_link_speed` equal to `max_link_speed`). " +
				"GPUs train down to 2.5 GT/s when idle to save power, so a GPU below its top speed passes unless NVML says it is busy (P0 or utilisation above zero) and its link is still below its maximum.",
			Remedy: "check the slot's PCIe generation setting in the BIOS (Auto or the card's generation), reseat the card and its riser, and compare `lspci -vv -s <bdf>` LnkCap with LnkSta; " +
				"for a busy GPU, check `nvidia-smi -q -d PCIE` (current and max link generation) while a job runs",
			Run: checkPCIeSpeed,
		},
		Check{
			ID: "PCIE-ACS-001", Title: "no ACS redirect between a GPU and its rail NIC",
			Doc: "Reads the ACS Control register of every PCIe bridge between a rail's GPUs and its NIC below their common switch (the ACS extended capability in `/sys/bus/pci/devices/<bdf>/config`, root only). " +
				"P2P Request or Completion Redirect, or Egress Control, sends GPUDirect traffic up to the root complex instead of across the switch: bandwidth drops sharply, and with an IOMMU transfers can fail.",
			Remedy: "disable ACS on the switch ports: in the BIOS (ACS or \"PCIe ACS control\" off), or with `setpci -s <bdf> ECAP_ACS+0x6.w=0000` on each bridge at boot (NVIDIA's GPUDirect RDMA guide); " +
				"Linux enables ACS when an IOMMU is on, so also boot with `iommu=pt` or the IOMMU off",
			Run: checkPCIeACS,
		},
		Check{
			ID: "PCIE-IOMMU-001", Title: "IOMMU mode suits GPUDirect",
			Doc: "With an IOMMU on (`/sys/class/iommu` not empty), the IOMMU group of each rail GPU and NIC must be in passthrough (`/sys/kernel/iommu_groups/<n>/type` reads `identity`). " +
				"In translated mode (`DMA`, `DMA-FQ`) GPUDirect peer-to-peer traffic is translated and redirected through the root complex, which costs bandwidth and can break P2P.",
			Remedy: "boot with `iommu=pt` (with `intel_iommu=on` or `amd_iommu=on` as the platform needs) on the kernel command line, or disable the IOMMU (VT-d / AMD-Vi) in the BIOS on bare-metal GPU nodes; check `/proc/cmdline` after the reboot",
			Run:    checkPCIeIOMMU,
		},
		Check{
			ID: "PCIE-AFFINITY-001", Title: "each rail's GPUs close to its NIC",
			Doc: "Each rail's NIC should sit behind the same PCIe switch as its GPUs (PIX or PXB in the `nvidia-smi topo -m` legend, computed from the sysfs device paths). " +
				"Through the CPU's host bridge (PHB) GPUDirect RDMA loses bandwidth; across host bridges (NODE) or sockets (SYS) it is slow or unusable and NCCL falls back to staging through host memory.",
			Remedy: "move the NIC or the GPU to a slot behind the same PCIe switch (see the server's block diagram), or pin the rails so that each GPU uses the NIC nearest to it (`rails:` in the agent's config); check `nvidia-smi topo -m`",
			Run:    checkPCIeAffinity,
		},
		Check{
			ID: "NIC-FW-001", Title: "NIC firmware uniform across rails",
			Doc: "Rail NICs of the same model (PCI device, `hca_type`) should all run the same firmware (`/sys/class/infiniband/<dev>/fw_ver`): the expected version is the one most of them run. " +
				"Mixed firmware gives rails different congestion-control and PFC behaviour and different bugs.",
			Remedy: "update the odd NICs to the fleet's firmware (`mlxfwmanager --query` to list, `mlxfwmanager -u -i <image>` or `flint -d <bdf> -i <image> burn` to update, then `mlxfwreset -d <bdf> reset` or a cold reboot)",
			Run:    checkNICFirmware,
		},
	)
}

// pcieEnd is a GPU or NIC whose PCIe link the checks read.
type pcieEnd struct {
	addr string
	dir  string // the sysfs device directory
	what string // "GPU 3", "NIC mlx5_0 (enp27s0np0)"
	gpu  bool
	rail int // -1: on no rail
	dev  *nic.PCIDevice
}

// onRailIf returns r about rail i, or r itself for i < 0.
func onRailIf(r Result, i int) Result {
	if i < 0 {
		return r
	}
	return r.OnRail(i)
}

// pcieEnds lists each rail's NIC and GPUs, rail by rail, then the GPUs on
// no rail. Devices without a PCI function (soft-RoCE) are left out.
func pcieEnds(e *Env) []pcieEnd {
	var out []pcieEnd
	seen := map[string]bool{}
	add := func(p pcieEnd) {
		if p.addr == "" || seen[p.addr] {
			return
		}
		seen[p.addr] = true
		if p.dir == "" {
			p.dir = path.Join("/bus/pci/devices", p.addr)
		}
		out = append(out, p)
	}
	gpus := map[int]gpu.GPU{}
	if e.Inventory != nil {
		for _, g := range e.Inventory.GPUs {
			gpus[g.Index] = g
		}
	}
	gpuEnd := func(g gpu.GPU, rail int) pcieEnd {
		p := pcieEnd{addr: g.PCI, what: fmt.Sprintf("GPU %d", g.Index), gpu: true, rail: rail, dev: g.Device}
		if g.Device != nil {
			p.dir = g.Device.Path
		}
		return p
	}
	for _, r := range e.Rails() {
		if n := e.RailNIC(r); n != nil && r.Missing == "" && n.PCI != "" {
			p := pcieEnd{addr: n.PCI, what: nicName(n), rail: r.Rail, dev: n.Device}
			if n.Device != nil {
				p.dir = n.Device.Path
			}
			add(p)
		}
		for _, gi := range r.GPUs {
			if g, ok := gpus[gi]; ok {
				add(gpuEnd(g, r.Rail))
			}
		}
	}
	if e.Inventory != nil {
		for _, g := range e.Inventory.GPUs {
			add(gpuEnd(g, -1))
		}
	}
	return out
}

func nicName(n *nic.NIC) string {
	if n.Netdev != "" && n.RDMADevice != "" {
		return fmt.Sprintf("NIC %s (%s)", n.RDMADevice, n.Netdev)
	}
	return "NIC " + railSubject(n.Netdev, n.RDMADevice)
}

// noPCIeEnds is the result of a link check with nothing to look at.
func noPCIeEnds(e *Env) []Result {
	if e.Inventory == nil {
		return []Result{UnknownResult("node", fmt.Sprintf("no inventory: %v", e.InventoryErr))}
	}
	return []Result{SkipResult("node", "the host has no GPU and no rail NIC with a PCI function")}
}

// linkAttr reads and parses one link attribute of p. A missing attribute
// gives a SKIP, an unreadable or garbled one an UNKNOWN, both in res.
func linkAttr[T any](e *Env, p pcieEnd, name string, parse func(string) (T, error)) (v T, res *Result) {
	file := path.Join(p.dir, name)
	s, err := e.FS.ReadString(file)
	if err != nil {
		var r Result
		if errors.Is(err, fs.ErrNotExist) {
			r = SkipResult(p.addr, fmt.Sprintf("%s of %s has no %s (not a PCIe function, or a kernel that does not report its link)", p.addr, p.what, name))
		} else {
			r = UnknownResult(p.addr, fmt.Sprintf("cannot read %s of %s (%s): %v", name, p.addr, p.what, err))
		}
		r = onRailIf(r, p.rail)
		return v, &r
	}
	v, err = parse(s)
	if err != nil {
		r := onRailIf(UnknownResult(p.addr, fmt.Sprintf("%s of %s (%s) reads %q: %v", name, p.addr, p.what, s, err)), p.rail)
		return v, &r
	}
	return v, nil
}

func checkPCIeWidth(_ context.Context, e *Env) []Result {
	ends := pcieEnds(e)
	if len(ends) == 0 {
		return noPCIeEnds(e)
	}
	var out []Result
	for _, p := range ends {
		cur, res := linkAttr(e, p, "current_link_width", nic.ParseLinkWidth)
		if res != nil {
			out = append(out, *res)
			continue
		}
		maxW, res := linkAttr(e, p, "max_link_width", nic.ParseLinkWidth)
		if res != nil {
			out = append(out, *res)
			continue
		}
		switch {
		case cur == 0 || maxW == 0:
			out = append(out, onRailIf(UnknownResult(p.addr, fmt.Sprintf("%s (%s) reports link width x%d of x%d: the link is not trained (down, or the device is powered off)", p.addr, p.what, cur, maxW)), p.rail))
		case cur < maxW:
			out = append(out, onRailIf(FailResult(p.addr, fmt.Sprintf("x%d", cur), fmt.Sprintf("x%d", maxW),
				fmt.Sprintf("%s (%s) trained its PCIe link on %d of its %d lanes: %.0f%% of its bandwidth", p.addr, p.what, cur, maxW, 100*float64(cur)/float64(maxW))), p.rail))
		default:
			out = append(out, onRailIf(PassResult(p.addr, fmt.Sprintf("x%d", cur)), p.rail))
		}
	}
	return out
}

func gts(v float64) string { return fmt.Sprintf("%.1f GT/s", v) }

func checkPCIeSpeed(ctx context.Context, e *Env) []Result {
	ends := pcieEnds(e)
	if len(ends) == 0 {
		return noPCIeEnds(e)
	}
	var loads map[string]gpuLoad
	var nvmlWhy string
	var out []Result
	for _, p := range ends {
		cur, res := linkAttr(e, p, "current_link_speed", nic.ParseLinkSpeed)
		if res != nil {
			out = append(out, *res)
			continue
		}
		maxS, res := linkAttr(e, p, "max_link_speed", nic.ParseLinkSpeed)
		if res != nil {
			out = append(out, *res)
			continue
		}
		switch {
		case cur == 0 || maxS == 0:
			out = append(out, onRailIf(UnknownResult(p.addr, fmt.Sprintf("%s (%s) reports link speed %s of %s (\"Unknown\" is a link not trained)", p.addr, p.what, gts(cur), gts(maxS))), p.rail))
		case cur >= maxS:
			out = append(out, onRailIf(PassResult(p.addr, gts(cur)), p.rail))
		case !p.gpu:
			out = append(out, onRailIf(FailResult(p.addr, gts(cur), gts(maxS),
				fmt.Sprintf("%s (%s) trained its PCIe link at %s, below its %s", p.addr, p.what, gts(cur), gts(maxS))), p.rail))
		default:
			if loads == nil && nvmlWhy == "" {
				loads, nvmlWhy = gpuLoads(ctx, e)
			}
			out = append(out, onRailIf(gpuSpeed(p, cur, maxS, loads, nvmlWhy), p.rail))
		}
	}
	return out
}

// gpuSpeed judges a GPU whose link runs below its top speed: normal when
// idle, a WARN when NVML says it is busy.
func gpuSpeed(p pcieEnd, cur, maxS float64, loads map[string]gpuLoad, nvmlWhy string) Result {
	idle := fmt.Sprintf("%s (%s) runs its link at %s of %s: GPUs train down to save power when idle and back up under load", p.addr, p.what, gts(cur), gts(maxS))
	l, ok := loads[p.addr]
	switch {
	case !ok && nvmlWhy != "":
		return PassResult(p.addr, gts(cur)+" of "+gts(maxS)+" (a GPU idles low)").With("%s; %s, so whether it is busy is not known", idle, nvmlWhy)
	case !ok:
		return PassResult(p.addr, gts(cur)+" of "+gts(maxS)+" (a GPU idles low)").With("%s; NVML does not report this GPU, so whether it is busy is not known", idle)
	case !l.busy:
		return PassResult(p.addr, gts(cur)+" of "+gts(maxS)+" (idle)").With("%s; NVML says it is idle (%s)", idle, l.desc)
	case l.maxGen > 0 && l.curGen > 0 && l.curGen >= l.maxGen:
		return PassResult(p.addr, gts(cur)).With("%s (%s) read %s in sysfs, but NVML reports link Gen%d of Gen%d under load (%s)", p.addr, p.what, gts(cur), l.curGen, l.maxGen, l.desc)
	case l.maxGen > 0 && l.curGen > 0:
		return WarnResult(p.addr, fmt.Sprintf("%s (Gen%d)", gts(cur), l.curGen), fmt.Sprintf("%s (Gen%d)", gts(maxS), l.maxGen),
			fmt.Sprintf("%s (%s) is busy (%s) and its link still runs at Gen%d of Gen%d: the link is degraded under load", p.addr, p.what, l.desc, l.curGen, l.maxGen))
	default:
		return WarnResult(p.addr, gts(cur), gts(maxS),
			fmt.Sprintf("%s (%s) is busy (%s) and its link still runs at %s of %s: the link is degraded under load", p.addr, p.what, l.desc, gts(cur), gts(maxS)))
	}
}

// gpuLoad is what NVML says about a GPU's activity and link.
type gpuLoad struct {
	busy           bool
	desc           string // "P0, 87% utilisation"
	curGen, maxGen int
}

// nvmlSafe runs f, turning a panic (an NVML mock without the function)
// into false.
func nvmlSafe(f func()) (ok bool) {
	defer func() {
		if recover() != nil {
			ok = false
		}
	}()
	f()
	return true
}

// nvmlBusID returns the sysfs form of an NVML device's bus ID.
func nvmlBusID(d nvml.Device) (string, error) {
	var info nvml.PciInfo
	ret := nvml.ERROR_NOT_SUPPORTED
	if !nvmlSafe(func() { info, ret = d.GetPciInfo() }) || ret != nvml.SUCCESS {
		return "", fmt.Errorf("get pci info: %w", ret)
	}
	var b strings.Builder
	for _, c := range info.BusId {
		if c == 0 {
			break
		}
		b.WriteByte(byte(c))
	}
	return gpu.NormalizeBusID(b.String())
}

// gpuLoads asks NVML for each GPU's performance state, utilisation and
// link generation, keyed by PCI address; why says why there are none.
func gpuLoads(ctx context.Context, e *Env) (loads map[string]gpuLoad, why string) {
	if e.NVML == nil {
		return nil, "NVML was not queried"
	}
	lib := e.NVML
	ret := nvml.ERROR_UNKNOWN
	if !nvmlSafe(func() { ret = lib.Init() }) || ret != nvml.SUCCESS {
		return nil, fmt.Sprintf("NVML is unavailable (%v)", ret)
	}
	defer nvmlSafe(func() { lib.Shutdown() })
	count := 0
	ret = nvml.ERROR_UNKNOWN
	if !nvmlSafe(func() { count, ret = lib.DeviceGetCount() }) || ret != nvml.SUCCESS {
		return nil, fmt.Sprintf("NVML cannot count the GPUs (%v)", ret)
	}
	loads = map[string]gpuLoad{}
	for i := 0; i < count && ctx.Err() == nil; i++ {
		var d nvml.Device
		ret := nvml.ERROR_UNKNOWN
		if !nvmlSafe(func() { d, ret = lib.DeviceGetHandleByIndex(i) }) || ret != nvml.SUCCESS || d == nil {
			continue
		}
		addr, err := nvmlBusID(d)
		if err != nil {
			continue
		}
		var l gpuLoad
		var parts []string
		ps, pret := nvml.PSTATE_UNKNOWN, nvml.ERROR_NOT_SUPPORTED
		if nvmlSafe(func() { ps, pret = d.GetPerformanceState() }) && pret == nvml.SUCCESS && ps != nvml.PSTATE_UNKNOWN {
			parts = append(parts, fmt.Sprintf("P%d", int(ps)))
			if ps == nvml.PSTATE_0 {
				l.busy = true
			}
		}
		var u nvml.Utilization
		uret := nvml.ERROR_NOT_SUPPORTED
		if nvmlSafe(func() { u, uret = d.GetUtilizationRates() }) && uret == nvml.SUCCESS {
			parts = append(parts, fmt.Sprintf("%d%% utilisation", u.Gpu))
			if u.Gpu > 0 {
				l.busy = true
			}
		}
		gret := nvml.ERROR_NOT_SUPPORTED
		if !nvmlSafe(func() { l.curGen, gret = d.GetCurrPcieLinkGeneration() }) || gret != nvml.SUCCESS {
			l.curGen = 0
		}
		gret = nvml.ERROR_NOT_SUPPORTED
		if !nvmlSafe(func() { l.maxGen, gret = d.GetMaxPcieLinkGeneration() }) || gret != nvml.SUCCESS {
			l.maxGen = 0
		}
		if len(parts) == 0 {
			// Nothing says whether it is busy: treat it as unknown.
			continue
		}
		l.desc = strings.Join(parts, ", ")
		loads[addr] = l
	}
	return loads, ""
}

// ACS.

// The ACS extended capability and its Control register's bits.
const (
	extCapACS  = 0x000d
	acsCtrlRR  = 1 << 2 // P2P Request Redirect
	acsCtrlCR  = 1 << 3 // P2P Completion Redirect
	acsCtrlEC  = 1 << 5 // P2P Egress Control
	acsBadBits = acsCtrlRR | acsCtrlCR | acsCtrlEC
)

// acsControl finds the ACS capability in a config space. found is false
// for a config space without one; err says why the chain cannot be
// walked.
func acsControl(cfg []byte) (ctrl uint16, offset int, found bool, err error) {
	if len(cfg) < 0x104 {
		return 0, 0, false, fmt.Errorf("config space is %d bytes, without the extended space", len(cfg))
	}
	le := binary.LittleEndian
	seen := map[int]bool{}
	for off := 0x100; off != 0; {
		if off < 0x100 || off&3 != 0 || off+4 > len(cfg) {
			return 0, 0, false, fmt.Errorf("extended capability pointer 0x%x is outside the %d-byte config space", off, len(cfg))
		}
		if seen[off] {
			return 0, 0, false, fmt.Errorf("extended capability list loops at 0x%x", off)
		}
		seen[off] = true
		hdr := le.Uint32(cfg[off:])
		if off == 0x100 && (hdr == 0 || hdr == 0xffffffff) {
			return 0, 0, false, nil // no extended capabilities
		}
		if hdr&0xffff == extCapACS {
			if off+8 > len(cfg) {
				return 0, 0, false, fmt.Errorf("ACS capability at 0x%x is cut short", off)
			}
			return le.Uint16(cfg[off+6:]), off, true, nil
		}
		off = int(hdr>>20) & 0xffc
	}
	return 0, 0, false, nil
}

// acsString renders an ACS Control register as lspci -vv does.
func acsString(ctrl uint16) string {
	names := []string{"SrcValid", "TransBlk", "ReqRedir", "CmpltRedir", "UpstreamFwd", "EgressCtrl", "DirectTrans"}
	parts := []string{fmt.Sprintf("ACSCtl 0x%04x:", ctrl)}
	for i, n := range names {
		sign := "-"
		if ctrl&(1<<i) != 0 {
			sign = "+"
		}
		parts = append(parts, n+sign)
	}
	return strings.Join(parts, " ")
}

// acsBridge is a bridge on a rail's GPU-NIC path.
type acsBridge struct {
	addr, dir string
	between   string // "GPU 0 and mlx5_0"
}

func checkPCIeACS(_ context.Context, e *Env) []Result {
	rails := e.Rails()
	if len(rails) == 0 {
		return noRails(e)
	}
	gpus := map[int]gpu.GPU{}
	for _, g := range e.Inventory.GPUs {
		gpus[g.Index] = g
	}
	var out []Result
	for _, r := range rails {
		n := e.RailNIC(r)
		subject := railSubject(r.Netdev, r.RDMADevice)
		switch {
		case n == nil || r.Missing != "":
			out = append(out, SkipResult(subject, "the rail has no NIC (NIC-PORT-001)").OnRail(r.Rail))
			continue
		case n.Device == nil:
			out = append(out, SkipResult(subject, fmt.Sprintf("%s has no PCI function: no PCIe path to check", nicName(n))).OnRail(r.Rail))
			continue
		case len(r.GPUs) == 0:
			out = append(out, SkipResult(subject, "the rail has no GPUs").OnRail(r.Rail))
			continue
		}
		hb, nicChain := nic.SplitPCIPath(n.Device.Path)
		var bridges []acsBridge
		var far []string
		seen := map[string]bool{}
		for _, gi := range r.GPUs {
			g, ok := gpus[gi]
			if !ok || g.Device == nil {
				far = append(far, fmt.Sprintf("GPU %d has no PCI function in sysfs", gi))
				continue
			}
			p := topology.PCIPath(g.Device, n.Device)
			if p.Level >= topology.LevelPHB {
				far = append(far, fmt.Sprintf("GPU %d meets %s only at the root complex or beyond (%s)", gi, n.RDMADevice, p.Level))
				continue
			}
			_, gpuChain := nic.SplitPCIPath(g.Device.Path)
			common := 0
			for common < len(gpuChain) && common < len(nicChain) && gpuChain[common] == nicChain[common] {
				common++
			}
			between := fmt.Sprintf("GPU %d and %s", gi, n.RDMADevice)
			for _, chain := range [][]string{gpuChain, nicChain} {
				for i := common; i < len(chain)-1; i++ {
					if seen[chain[i]] {
						continue
					}
					seen[chain[i]] = true
					dir := "/devices/" + hb + "/" + strings.Join(chain[:i+1], "/")
					bridges = append(bridges, acsBridge{addr: chain[i], dir: dir, between: between})
				}
			}
		}
		if len(bridges) == 0 {
			out = append(out, SkipResult(subject, fmt.Sprintf("no PCIe switch port between the rail's GPUs and its NIC: %s; ACS on switch ports does not apply (see PCIE-AFFINITY-001)", strings.Join(far, "; "))).OnRail(r.Rail))
			continue
		}
		for _, b := range bridges {
			out = append(out, acsResult(e, b).OnRail(r.Rail))
		}
	}
	return out
}

func acsResult(e *Env, b acsBridge) Result {
	file := path.Join(b.dir, "config")
	cfg, err := e.FS.ReadFile(file)
	switch {
	case err != nil && errors.Is(err, fs.ErrNotExist) && !e.Live:
		return SkipResult(b.addr, fmt.Sprintf("the tree has no config file for bridge %s (between %s): a tree captured without PCI config space", b.addr, b.between))
	case err != nil:
		return UnknownResult(b.addr, fmt.Sprintf("cannot read the config space of bridge %s (between %s): %v", b.addr, b.between, err))
	case len(cfg) <= 256 && !e.Privileged:
		return PrivilegeResult(b.addr, fmt.Sprintf("config of bridge %s reads only %d bytes: its extended config space (ACS) is readable by root only", b.addr, len(cfg)))
	case len(cfg) >= 4 && binary.LittleEndian.Uint32(cfg) == 0xffffffff:
		return UnknownResult(b.addr, fmt.Sprintf("config of bridge %s reads all ones: the device does not respond", b.addr))
	case len(cfg) <= 256:
		if len(cfg) == 256 {
			return PassResult(b.addr, "no extended config space").With("bridge %s has a 256-byte config space: no extended capabilities, so no ACS", b.addr)
		}
		return UnknownResult(b.addr, fmt.Sprintf("config of bridge %s reads only %d bytes even as root", b.addr, len(cfg)))
	}
	ctrl, off, found, err := acsControl(cfg)
	switch {
	case err != nil:
		return UnknownResult(b.addr, fmt.Sprintf("config of bridge %s (between %s): %v", b.addr, b.between, err))
	case !found:
		return PassResult(b.addr, "no ACS capability").With("bridge %s has no ACS capability: nothing redirects P2P traffic", b.addr)
	case ctrl&acsBadBits != 0:
		var on []string
		for bit, n := range map[uint16]string{acsCtrlRR: "P2P Request Redirect", acsCtrlCR: "P2P Completion Redirect", acsCtrlEC: "P2P Egress Control"} {
			if ctrl&bit != 0 {
				on = append(on, n)
			}
		}
		sort.Strings(on)
		return FailResult(b.addr, acsString(ctrl), "ReqRedir- CmpltRedir- EgressCtrl-",
			fmt.Sprintf("bridge %s (between %s) has %s enabled (ACS at 0x%x): GPUDirect traffic is sent up to the root complex instead of across the switch", b.addr, b.between, strings.Join(on, ", "), off))
	}
	return PassResult(b.addr, acsString(ctrl))
}

// IOMMU.

// iommuArgs returns the IOMMU parameters of the kernel command line.
func iommuArgs(e *Env) (args []string, err error) {
	cmdline, err := e.ReadProc("cmdline")
	if err != nil {
		return nil, err
	}
	for _, f := range strings.Fields(cmdline) {
		k, _, _ := strings.Cut(f, "=")
		switch k {
		case "iommu", "intel_iommu", "amd_iommu", "iommu.passthrough", "iommu.strict":
			args = append(args, f)
		}
	}
	return args, nil
}

// cmdlineNote says what the command line sets about the IOMMU.
func cmdlineNote(e *Env) (note string, passthrough bool) {
	args, err := iommuArgs(e)
	if err != nil {
		return fmt.Sprintf("the kernel command line is unreadable (%v)", err), false
	}
	if len(args) == 0 {
		return "the kernel command line sets no IOMMU parameter", false
	}
	for _, a := range args {
		if a == "iommu=pt" || a == "iommu.passthrough=1" || a == "iommu.passthrough=on" || a == "iommu.passthrough=y" {
			passthrough = true
		}
	}
	return "the kernel command line has " + strings.Join(args, " "), passthrough
}

func checkPCIeIOMMU(_ context.Context, e *Env) []Result {
	if e.Inventory == nil {
		return noRails(e)
	}
	units, err := e.FS.ReadDir("/class/iommu")
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return []Result{UnknownResult("node", fmt.Sprintf("cannot list /class/iommu: %v", err))}
	}
	note, pt := cmdlineNote(e)
	if len(units) == 0 {
		r := PassResult("node", "IOMMU off").With("no IOMMU is active (/sys/class/iommu is empty): DMA is not translated")
		if args, err := iommuArgs(e); err == nil && len(args) > 0 {
			r.Reason += "; the kernel command line has " + strings.Join(args, " ")
		}
		return []Result{r}
	}
	var ends []pcieEnd
	for _, p := range pcieEnds(e) {
		if p.rail >= 0 {
			ends = append(ends, p)
		}
	}
	if len(ends) == 0 {
		return []Result{SkipResult("node", "no rail GPU or NIC with a PCI function")}
	}
	var out []Result
	for _, p := range ends {
		out = append(out, iommuResult(e, p, note, pt).OnRail(p.rail))
	}
	return out
}

func iommuResult(e *Env, p pcieEnd, note string, pt bool) Result {
	link := path.Join(p.dir, "iommu_group")
	group, err := e.FS.LinkBase(link)
	switch {
	case err != nil && errors.Is(err, fs.ErrNotExist):
		return PassResult(p.addr, "no IOMMU group").With("%s (%s) is in no IOMMU group: its DMA is not translated", p.addr, p.what)
	case err != nil:
		return UnknownResult(p.addr, fmt.Sprintf("cannot read the iommu_group link of %s (%s): %v", p.addr, p.what, err))
	}
	if _, err := strconv.ParseUint(group, 10, 32); err != nil {
		return UnknownResult(p.addr, fmt.Sprintf("the iommu_group link of %s (%s) names %q, not a group number", p.addr, p.what, group))
	}
	file := "/kernel/iommu_groups/" + group + "/type"
	typ, err := e.FS.ReadString(file)
	switch {
	case err != nil && errors.Is(err, fs.ErrNotExist) && pt:
		return PassResult(p.addr, "passthrough (command line)").With("IOMMU group %s of %s has no type file (a kernel before 5.11); %s", group, p.addr, note)
	case err != nil && errors.Is(err, fs.ErrNotExist):
		return UnknownResult(p.addr, fmt.Sprintf("IOMMU group %s of %s (%s) has no type file (a kernel before 5.11) and %s", group, p.addr, p.what, note))
	case err != nil:
		return UnknownResult(p.addr, fmt.Sprintf("cannot read %s for %s (%s): %v", file, p.addr, p.what, err))
	}
	obs := fmt.Sprintf("group %s: %s", group, typ)
	switch typ {
	case "identity":
		return PassResult(p.addr, obs)
	case "DMA", "DMA-FQ":
		return WarnResult(p.addr, obs, "identity (passthrough)",
			fmt.Sprintf("%s (%s) is in IOMMU group %s with type %s: its DMA is translated, and GPUDirect P2P traffic goes through the IOMMU and the root complex; %s", p.addr, p.what, group, typ, note))
	case "unmanaged":
		return WarnResult(p.addr, obs, "identity (passthrough)",
			fmt.Sprintf("%s (%s) is in IOMMU group %s owned by a user-space driver (vfio): the host's drivers do not use it", p.addr, p.what, group))
	case "blocked":
		return FailResult(p.addr, obs, "identity (passthrough)",
			fmt.Sprintf("%s (%s) is in IOMMU group %s whose DMA is blocked", p.addr, p.what, group))
	}
	return UnknownResult(p.addr, fmt.Sprintf("%s for %s (%s) reads %q, not an IOMMU domain type", file, p.addr, p.what, typ))
}

// Affinity.

func checkPCIeAffinity(_ context.Context, e *Env) []Result {
	rails := e.Rails()
	if len(rails) == 0 {
		return noRails(e)
	}
	var out []Result
	for _, r := range rails {
		n := e.RailNIC(r)
		subject := railSubject(r.Netdev, r.RDMADevice)
		switch {
		case n == nil || r.Missing != "":
			out = append(out, SkipResult(subject, "the rail has no NIC (NIC-PORT-001)").OnRail(r.Rail))
			continue
		case len(r.GPUs) == 0:
			out = append(out, SkipResult(subject, fmt.Sprintf("rail %d has no GPUs", r.Rail)).OnRail(r.Rail))
			continue
		case n.Device == nil:
			out = append(out, SkipResult(subject, fmt.Sprintf("%s has no PCI function (a software device): no PCIe path to its GPUs", nicName(n))).OnRail(r.Rail))
			continue
		}
		// Each GPU's level, from the inventory's matrix.
		var per []string
		for _, gi := range r.GPUs {
			lvl := topology.LevelUnknown
			for _, a := range e.Inventory.Affinity {
				if a.GPU == gi && a.RDMADevice == n.RDMADevice {
					lvl = a.Level
				}
			}
			per = append(per, fmt.Sprintf("GPU %d %s", gi, lvl))
		}
		detail := fmt.Sprintf("%s to %s", strings.Join(per, ", "), n.RDMADevice)
		lvl := r.Level.String()
		switch r.Level {
		case topology.LevelPIX, topology.LevelPXB:
			out = append(out, PassResult(subject, lvl).With("%s", detail).OnRail(r.Rail))
		case topology.LevelPHB:
			out = append(out, WarnResult(subject, lvl, "PIX or PXB",
				fmt.Sprintf("%s: the rail's GPUs reach their NIC through the CPU's host bridge, which costs GPUDirect RDMA bandwidth", detail)).OnRail(r.Rail))
		case topology.LevelNODE, topology.LevelSYS:
			where := "across PCIe host bridges"
			if r.Level == topology.LevelSYS {
				where = "across CPU sockets"
			}
			out = append(out, FailResult(subject, lvl, "PIX or PXB",
				fmt.Sprintf("%s: the rail's GPUs reach their NIC %s; NCCL does not use GPUDirect RDMA at this distance unless NCCL_NET_GDR_LEVEL allows it", detail, where)).OnRail(r.Rail))
		default:
			out = append(out, UnknownResult(subject, fmt.Sprintf("the PCIe distance between the rail's GPUs and %s is unknown (%s): a device path is missing from sysfs", n.RDMADevice, detail)).OnRail(r.Rail))
		}
	}
	return out
}

// NIC firmware.

// fwVersionOK reports a plausible fw_ver: printable, without blanks,
// starting with a digit ("28.39.1002", "227.1.111.0", "1.7").
func fwVersionOK(s string) bool {
	if s == "" || len(s) > 64 || s[0] < '0' || s[0] > '9' {
		return false
	}
	for _, c := range s {
		if c <= ' ' || c > '~' {
			return false
		}
	}
	return true
}

// fwLess orders firmware versions numerically field by field.
func fwLess(a, b string) bool {
	fa, fb := strings.FieldsFunc(a, func(r rune) bool { return r == '.' || r == '-' || r == '_' }), strings.FieldsFunc(b, func(r rune) bool { return r == '.' || r == '-' || r == '_' })
	for i := 0; i < len(fa) && i < len(fb); i++ {
		na, ea := strconv.Atoi(fa[i])
		nb, eb := strconv.Atoi(fb[i])
		if ea == nil && eb == nil {
			if na != nb {
				return na < nb
			}
			continue
		}
		if fa[i] != fb[i] {
			return fa[i] < fb[i]
		}
	}
	return len(fa) < len(fb)
}

// railsRun renders rail numbers and a version as "rail 3 runs v" or
// "rails 0, 1, 2 run v".
func railsRun(rails []int, v string) string {
	sort.Ints(rails)
	s := make([]string, len(rails))
	for i, r := range rails {
		s[i] = strconv.Itoa(r)
	}
	if len(rails) == 1 {
		return "rail " + s[0] + " runs " + v
	}
	return "rails " + strings.Join(s, ", ") + " run " + v
}

func checkNICFirmware(_ context.Context, e *Env) []Result {
	rails := e.Rails()
	if len(rails) == 0 {
		return noRails(e)
	}
	type fwNIC struct {
		rail    int
		subject string
		model   string
		fw      string
	}
	var nics []fwNIC
	var out []Result
	for _, r := range rails {
		n := e.RailNIC(r)
		subject := railSubject(r.Netdev, r.RDMADevice)
		switch {
		case n == nil || r.Missing != "" || n.RDMADevice == "":
			out = append(out, SkipResult(subject, "the rail has no RDMA NIC (NIC-PORT-001)").OnRail(r.Rail))
			continue
		case n.Software:
			out = append(out, SkipResult(subject, fmt.Sprintf("%s is a software RDMA device: it has no firmware", n.RDMADevice)).OnRail(r.Rail))
			continue
		}
		file := "/class/infiniband/" + n.RDMADevice + "/fw_ver"
		fw, err := e.FS.ReadString(file)
		switch {
		case err != nil:
			out = append(out, UnknownResult(subject, fmt.Sprintf("cannot read %s: %v", file, err)).OnRail(r.Rail))
			continue
		case !fwVersionOK(fw):
			out = append(out, UnknownResult(subject, fmt.Sprintf("%s reads %q, not a firmware version", file, fw)).OnRail(r.Rail))
			continue
		}
		model := n.HCAType
		if n.Device != nil {
			model = fmt.Sprintf("%s [%04x:%04x] %s", n.Vendor, n.Device.Vendor, n.Device.Device, n.HCAType)
		} else if model == "" {
			model = n.Driver
		}
		nics = append(nics, fwNIC{rail: r.Rail, subject: subject, model: strings.TrimSpace(model), fw: fw})
	}
	byModel := map[string]map[string][]int{} // model -> fw -> rails
	for _, n := range nics {
		if byModel[n.model] == nil {
			byModel[n.model] = map[string][]int{}
		}
		byModel[n.model][n.fw] = append(byModel[n.model][n.fw], n.rail)
	}
	expected := map[string]string{}
	summary := map[string]string{}
	for model, fws := range byModel {
		var vs []string
		for v := range fws {
			vs = append(vs, v)
		}
		// Most rails first; on a tie the newer version.
		sort.Slice(vs, func(i, j int) bool {
			if len(fws[vs[i]]) != len(fws[vs[j]]) {
				return len(fws[vs[i]]) > len(fws[vs[j]])
			}
			return fwLess(vs[j], vs[i])
		})
		expected[model] = vs[0]
		var parts []string
		for _, v := range vs {
			parts = append(parts, railsRun(append([]int(nil), fws[v]...), v))
		}
		summary[model] = strings.Join(parts, "; ")
	}
	for _, n := range nics {
		want := expected[n.model]
		if len(byModel[n.model]) == 1 || n.fw == want {
			out = append(out, PassResult(n.subject, n.fw).OnRail(n.rail))
			continue
		}
		out = append(out, WarnResult(n.subject, n.fw, want,
			fmt.Sprintf("the %s rail NICs run different firmware (%s); this one differs from the majority", n.model, summary[n.model])).OnRail(n.rail))
	}
	sort.SliceStable(out, func(i, j int) bool {
		ri, rj := -1, -1
		if out[i].Rail != nil {
			ri = *out[i].Rail
		}
		if out[j].Rail != nil {
			rj = *out[j].Rail
		}
		return ri < rj
	})
	return out
}
