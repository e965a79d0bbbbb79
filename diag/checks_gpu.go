package diag

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/NVIDIA/go-nvml/pkg/nvml"

	"github.com/roce-agent/roce-agent/nic"
)

// GPU checks: NVML and the GPUDirect RDMA path (nvidia_peermem or DMA-BUF).

func init() {
	register(
		Check{
			ID: "GPU-NVML-001", Title: "NVML present and GPUs visible",
			Doc: "NVML (libnvidia-ml) must initialise, report the driver version and see as many GPUs as the sysfs PCI scan finds NVIDIA GPUs. " +
				"A GPU in sysfs that NVML does not report fell off the bus, failed to initialise or is held by another driver (vfio-pci), and no job can use it.",
			Remedy: "install the NVIDIA driver with its user-space library (libnvidia-ml.so.1, e.g. the nvidia-utils or libnvidia-compute package of the driver's version) and check `nvidia-smi`; " +
				"for a missing GPU, check `dmesg` for Xid 79 (fallen off the bus) or RmInitAdapter errors, which driver holds it (`lspci -k -s <bdf>`), and reset or reboot the node",
			Run: checkNVML,
		},
		Check{
			ID: "GPU-PEERMEM-001", Title: "GPUDirect RDMA possible",
			Doc: "GPUDirect RDMA needs the nvidia_peermem module (or the legacy nv_peer_mem) live (`/sys/module/<m>/initstate`), or the DMA-BUF path: NVIDIA's open kernel module (`/proc/driver/nvidia/version`) of release 515 or later on a kernel 5.12 or later. " +
				"Without either, NCCL and other RDMA users stage GPU buffers through host memory, at a fraction of the bandwidth.",
			Remedy: "`modprobe nvidia-peermem` and load it at boot (`echo nvidia-peermem > /etc/modules-load.d/nvidia-peermem.conf`; with the GPU Operator set `driver.rdma.enabled=true`); " +
				"or install the open kernel modules (nvidia-open, R515 or later) on a 5.12+ kernel and use DMA-BUF (NCCL's `NCCL_DMABUF_ENABLE`, perftest `--use_cuda_dmabuf`)",
			Run: checkPeerMem,
		},
	)
}

// sysGPU is an NVIDIA GPU the sysfs PCI scan finds.
type sysGPU struct {
	addr, driver string
}

// sysfsNVIDIAGPUs scans the PCI functions for NVIDIA GPUs. garbled names
// the functions whose vendor or class could not be parsed, so whether
// they are GPUs is unknown.
func sysfsNVIDIAGPUs(e *Env) (gpus []sysGPU, garbled []string, err error) {
	addrs, err := e.FS.PCIAddresses()
	if err != nil {
		return nil, nil, err
	}
	for _, a := range addrs {
		dir, err := e.FS.ResolvePCIDevice(a)
		if err != nil {
			continue
		}
		vs, err := e.FS.ReadString(dir + "/vendor")
		if err != nil {
			continue
		}
		v, err := nic.ParseHex(vs)
		if err != nil {
			garbled = append(garbled, fmt.Sprintf("vendor of %s reads %q", a, vs))
			continue
		}
		if v != nic.VendorNVIDIA {
			continue
		}
		cs, err := e.FS.ReadString(dir + "/class")
		if err != nil {
			garbled = append(garbled, fmt.Sprintf("class of NVIDIA function %s is unreadable: %v", a, err))
			continue
		}
		c, err := nic.ParseHex(cs)
		if err != nil {
			garbled = append(garbled, fmt.Sprintf("class of NVIDIA function %s reads %q", a, cs))
			continue
		}
		d := nic.PCIDevice{Vendor: v, Class: c}
		if !d.IsGPU() {
			continue
		}
		drv, _ := e.FS.LinkBase(dir + "/driver")
		gpus = append(gpus, sysGPU{addr: a, driver: drv})
	}
	return gpus, garbled, nil
}

func (g sysGPU) String() string {
	if g.driver == "" {
		return g.addr + " (no driver bound)"
	}
	return fmt.Sprintf("%s (driver %s)", g.addr, g.driver)
}

func checkNVML(ctx context.Context, e *Env) []Result {
	if e.Inventory == nil {
		return []Result{UnknownResult("node", fmt.Sprintf("no inventory: %v", e.InventoryErr))}
	}
	sys, garbled, err := sysfsNVIDIAGPUs(e)
	if err != nil {
		return []Result{UnknownResult("node", fmt.Sprintf("cannot scan the PCI devices: %v", err))}
	}
	scan := fmt.Sprintf("the sysfs PCI scan finds %d NVIDIA GPU(s)", len(sys))
	if e.NVML == nil {
		return []Result{SkipResult("node", fmt.Sprintf("NVML was not queried: the inventory came from a sysfs tree, or gpu.nvml is off; %s", scan))}
	}
	lib := e.NVML
	ret := nvml.ERROR_UNKNOWN
	if !nvmlSafe(func() { ret = lib.Init() }) {
		return []Result{UnknownResult("node", "NVML init panicked")}
	}
	if ret != nvml.SUCCESS {
		if len(sys) == 0 && len(garbled) == 0 {
			return []Result{SkipResult("node", fmt.Sprintf("no NVIDIA GPU on the host and NVML does not initialise (%v)", ret))}
		}
		switch ret {
		case nvml.ERROR_LIBRARY_NOT_FOUND:
			return []Result{FailResult("node", "libnvidia-ml not found", "NVML initialised",
				fmt.Sprintf("%s but libnvidia-ml.so.1 cannot be loaded (%v): the NVIDIA driver's user-space library is not installed", scan, ret))}
		case nvml.ERROR_DRIVER_NOT_LOADED:
			return []Result{FailResult("node", "driver not loaded", "NVML initialised",
				fmt.Sprintf("%s but the NVIDIA kernel driver is not loaded (%v)", scan, ret)).
				Remedied("load the driver (`modprobe nvidia`) and check `dmesg` for why it failed (a kernel update without a rebuilt module, Secure Boot refusing the module, a version mismatch with libnvidia-ml)")}
		}
		return []Result{FailResult("node", ret.Error(), "NVML initialised", fmt.Sprintf("%s but NVML init fails: %v", scan, ret))}
	}
	defer nvmlSafe(func() { lib.Shutdown() })
	driver := ""
	dret := nvml.ERROR_UNKNOWN
	if !nvmlSafe(func() { driver, dret = lib.SystemGetDriverVersion() }) || dret != nvml.SUCCESS {
		driver = ""
	}
	count := 0
	cret := nvml.ERROR_UNKNOWN
	if !nvmlSafe(func() { count, cret = lib.DeviceGetCount() }) || cret != nvml.SUCCESS {
		return []Result{FailResult("node", fmt.Sprintf("device count: %v", cret), fmt.Sprintf("%d GPUs", len(sys)),
			fmt.Sprintf("NVML initialises (driver %s) but cannot count the GPUs: %v", orUnknown(driver), cret))}
	}
	seen := map[string]bool{}
	var extra []string
	for i := 0; i < count && ctx.Err() == nil; i++ {
		var d nvml.Device
		hret := nvml.ERROR_UNKNOWN
		if !nvmlSafe(func() { d, hret = lib.DeviceGetHandleByIndex(i) }) || hret != nvml.SUCCESS || d == nil {
			continue
		}
		if a, err := nvmlBusID(d); err == nil {
			seen[a] = true
			if !sysHas(sys, a) {
				extra = append(extra, a)
			}
		}
	}
	var missing []string
	for _, g := range sys {
		if len(seen) > 0 && !seen[g.addr] {
			missing = append(missing, g.String())
		}
	}
	obs := fmt.Sprintf("driver %s, %d GPU(s)", orUnknown(driver), count)
	want := fmt.Sprintf("%d GPU(s)", len(sys))
	if len(garbled) > 0 {
		return []Result{UnknownResult("node", fmt.Sprintf("NVML sees %d GPU(s) (driver %s), but the PCI scan cannot tell every function's kind: %s", count, orUnknown(driver), strings.Join(garbled, "; ")))}
	}
	if count != len(sys) || len(missing) > 0 {
		reason := fmt.Sprintf("NVML sees %d GPU(s), %s", count, scan)
		if len(missing) > 0 {
			reason += fmt.Sprintf("; not reported by NVML: %s (fallen off the bus, failed to initialise, or held by another driver such as vfio-pci)", strings.Join(missing, ", "))
		}
		if len(extra) > 0 {
			sort.Strings(extra)
			reason += fmt.Sprintf("; NVML reports GPUs sysfs does not have: %s (is the sysfs tree this host's?)", strings.Join(extra, ", "))
		}
		return []Result{FailResult("node", obs, want, reason)}
	}
	if driver == "" {
		return []Result{WarnResult("node", obs, "a driver version", fmt.Sprintf("NVML sees all %d GPU(s) but does not report the driver version (%v)", count, dret))}
	}
	return []Result{PassResult("node", obs)}
}

func sysHas(gpus []sysGPU, addr string) bool {
	for _, g := range gpus {
		if g.addr == addr {
			return true
		}
	}
	return false
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}

// GPUDirect RDMA.

// The DMA-BUF path needs NVIDIA's open kernel module from R515 and the
// kernel's RDMA DMA-BUF support (ib_umem_dmabuf, Linux 5.12).
const (
	dmabufMinDriver = 515
	dmabufMinMajor  = 5
	dmabufMinMinor  = 12
	openModMarker   = "Open Kernel Module"
)

var driverVersionRE = regexp.MustCompile(`\b([0-9]{3,4})\.[0-9]+(\.[0-9]+)?\b`)

// kernelRelease parses the major and minor version of a kernel release
// ("6.8.0-45-generic").
func kernelRelease(s string) (major, minor int, err error) {
	parts := strings.SplitN(s, ".", 3)
	if len(parts) < 2 {
		return 0, 0, fmt.Errorf("want <major>.<minor>, got %q", s)
	}
	major, err1 := strconv.Atoi(parts[0])
	m := parts[1]
	if i := strings.IndexFunc(m, func(r rune) bool { return r < '0' || r > '9' }); i >= 0 {
		m = m[:i]
	}
	minor, err2 := strconv.Atoi(m)
	if err1 != nil || err2 != nil || major <= 0 || major > 99 || minor < 0 || minor > 999 {
		return 0, 0, fmt.Errorf("want <major>.<minor>, got %q", s)
	}
	return major, minor, nil
}

// dmabuf says whether the DMA-BUF path is possible: ok with what was
// found, or not with why (unknown when a file could not be read or
// parsed).
type dmabuf struct {
	ok      bool
	unknown bool
	found   string // "open nvidia module 570.124.06, kernel 6.8.0-45-generic"
	why     string
}

func dmabufPath(e *Env) dmabuf {
	var d dmabuf
	var facts []string
	// Open or proprietary module: /proc/driver/nvidia/version names it;
	// else the module's taint (the proprietary one taints P).
	open, kindKnown := false, false
	kind := ""
	procVer, procErr := e.ReadProc("driver/nvidia/version")
	if procErr == nil {
		switch {
		case strings.Contains(procVer, openModMarker):
			open, kindKnown, kind = true, true, "open nvidia module (/proc/driver/nvidia/version)"
		case strings.Contains(procVer, "NVRM version"):
			kindKnown, kind = true, "proprietary nvidia module (/proc/driver/nvidia/version)"
		}
	}
	if !kindKnown {
		if t, err := e.FS.ReadString("/module/nvidia/taint"); err == nil && t != "" && strings.Trim(t, "ABCDEFGIKLMNOPRSTUWX") == "" {
			kindKnown = true
			open = !strings.Contains(t, "P")
			if open {
				kind = fmt.Sprintf("open nvidia module (taint %q)", t)
			} else {
				kind = fmt.Sprintf("proprietary nvidia module (taint %q)", t)
			}
		}
	}
	if !e.FS.Exists("/module/nvidia") && procErr != nil {
		d.why = "the nvidia kernel module is not loaded (no /sys/module/nvidia)"
		d.found = "no nvidia module"
		return d
	}
	if !kindKnown {
		d.unknown = true
		if procErr != nil {
			d.why = fmt.Sprintf("cannot tell the open nvidia module from the proprietary one: %v, and /sys/module/nvidia/taint says nothing", procErr)
		} else {
			d.why = fmt.Sprintf("cannot tell the open nvidia module from the proprietary one: /proc/driver/nvidia/version reads %q", firstLine(procVer))
		}
	}
	facts = append(facts, kind)
	// The driver's version.
	ver := ""
	if v, err := e.FS.ReadString("/module/nvidia/version"); err == nil {
		if !driverVersionRE.MatchString(v) {
			d.unknown = true
			d.why = joinWhy(d.why, fmt.Sprintf("/sys/module/nvidia/version reads %q", v))
		} else {
			ver = v
		}
	} else if m := driverVersionRE.FindString(procVer); m != "" {
		ver = m
	} else if e.Inventory != nil {
		ver = e.Inventory.NVML.DriverVersion
	}
	major := 0
	if m := driverVersionRE.FindStringSubmatch(ver); m != nil {
		major, _ = strconv.Atoi(m[1])
		facts = append(facts, "release "+ver)
	} else if !d.unknown {
		d.unknown = true
		d.why = joinWhy(d.why, "the nvidia module's version is unknown (no /sys/module/nvidia/version)")
	}
	// The kernel.
	rel, err := e.ReadProc("sys/kernel/osrelease")
	kmaj, kmin := 0, 0
	if err == nil {
		kmaj, kmin, err = kernelRelease(rel)
	}
	if err != nil {
		d.unknown = true
		d.why = joinWhy(d.why, fmt.Sprintf("kernel release (sys/kernel/osrelease): %v", err))
	} else {
		facts = append(facts, "kernel "+rel)
	}
	d.found = strings.Join(nonEmpty(facts), ", ")
	if d.unknown {
		return d
	}
	switch {
	case !open:
		d.why = "the nvidia module is the proprietary one, which has no DMA-BUF export for RDMA"
	case major < dmabufMinDriver:
		d.why = fmt.Sprintf("the open nvidia module %s predates release %d", ver, dmabufMinDriver)
	case kmaj < dmabufMinMajor || kmaj == dmabufMinMajor && kmin < dmabufMinMinor:
		d.why = fmt.Sprintf("kernel %s predates 5.12, the first with RDMA DMA-BUF support", rel)
	default:
		d.ok = true
	}
	return d
}

func joinWhy(a, b string) string {
	if a == "" {
		return b
	}
	return a + "; " + b
}

func nonEmpty(ss []string) []string {
	var out []string
	for _, s := range ss {
		if s != "" {
			out = append(out, s)
		}
	}
	return out
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	if len(s) > 120 {
		s = s[:120] + "..."
	}
	return s
}

func checkPeerMem(_ context.Context, e *Env) []Result {
	if e.Inventory == nil {
		return []Result{UnknownResult("node", fmt.Sprintf("no inventory: %v", e.InventoryErr))}
	}
	if len(e.Inventory.GPUs) == 0 {
		return []Result{SkipResult("node", "the host has no GPUs")}
	}
	var states []string
	peerUnknown := ""
	for _, m := range []string{"nvidia_peermem", "nv_peer_mem"} {
		file := path.Join("/module", m, "initstate")
		s, err := e.FS.ReadString(file)
		switch {
		case err != nil && errors.Is(err, fs.ErrNotExist):
			continue
		case err != nil:
			peerUnknown = joinWhy(peerUnknown, fmt.Sprintf("cannot read /sys%s: %v", file, err))
		case s == "live":
			return []Result{PassResult("node", m+" live").With("GPUDirect RDMA through %s", m)}
		case s == "coming" || s == "going":
			states = append(states, fmt.Sprintf("%s is %s", m, s))
		default:
			peerUnknown = joinWhy(peerUnknown, fmt.Sprintf("/sys%s reads %q", file, s))
		}
	}
	peer := "nvidia_peermem is not loaded"
	if len(states) > 0 {
		peer = strings.Join(states, ", ") + " (not live)"
	}
	d := dmabufPath(e)
	if d.ok {
		return []Result{PassResult("node", "DMA-BUF: "+d.found).With("%s; GPUDirect RDMA can use DMA-BUF (the open nvidia module on a kernel with RDMA DMA-BUF support): applications use it where they support it (NCCL's NCCL_DMABUF_ENABLE, perftest --use_cuda_dmabuf)", peer)}
	}
	if peerUnknown != "" || d.unknown {
		return []Result{UnknownResult("node", joinWhy(joinWhy(peerUnknown, peer), "DMA-BUF: "+d.why))}
	}
	obs := peer
	if d.found != "" {
		obs += "; " + d.found
	}
	return []Result{FailResult("node", obs, fmt.Sprintf("nvidia_peermem live, or DMA-BUF (the open nvidia module %d+ on kernel 5.12+)", dmabufMinDriver),
		fmt.Sprintf("%d GPU(s) and no GPUDirect RDMA path: %s, and DMA-BUF is not possible: %s", len(e.Inventory.GPUs), peer, d.why))}
}
