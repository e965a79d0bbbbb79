// Package gpu discovers GPUs through NVML, or from a sysfs PCI scan when
// NVML is unavailable. How they relate to NICs is package topology.
package gpu

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/NVIDIA/go-nvml/pkg/nvml"

	"github.com/roce-agent/roce-agent/nic"
)

// Where a GPU list came from.
const (
	SourceNVML  = "nvml"
	SourceSysfs = "sysfs"
)

// GPU is one GPU.
type GPU struct {
	// Index is NVML's index, or the position in PCI address order when the
	// list comes from sysfs.
	Index int    `json:"index"`
	PCI   string `json:"pci"` // sysfs form, "0000:1b:00.0"
	UUID  string `json:"uuid"`
	Model string `json:"model"`
	// NUMA is the GPU's NUMA node, -1 when unknown.
	NUMA   int           `json:"numa"`
	Source string        `json:"source"`
	PCIe   *nic.PCIeLink `json:"pcie"`

	// Device is the GPU's PCI function, nil when sysfs does not have it.
	Device *nic.PCIDevice `json:"-"`
}

// NVMLStatus says whether NVML was asked and what it answered.
type NVMLStatus struct {
	Queried       bool   `json:"queried"`
	Available     bool   `json:"available"`
	DriverVersion string `json:"driver_version,omitempty"`
	Error         string `json:"error,omitempty"`
}

// Result is the outcome of discovery.
type Result struct {
	GPUs   []GPU
	Source string
	NVML   NVMLStatus
}

// Discover lists the GPUs. With lib set it asks NVML first; when lib is nil
// or NVML fails (no library, no driver) it falls back to a sysfs PCI scan.
// Problems that do not stop discovery go to w.
func Discover(s *nic.FS, lib nvml.Interface, w *nic.Warnings) (Result, error) {
	var res Result
	if lib != nil {
		res.NVML.Queried = true
		gpus, driver, err := fromNVML(s, lib, w)
		if err == nil {
			res.NVML.Available = true
			res.NVML.DriverVersion = driver
			res.GPUs, res.Source = gpus, SourceNVML
			crossCheck(s, gpus, w)
			return res, nil
		}
		res.NVML.Error = err.Error()
	}
	gpus, err := fromSysfs(s, w)
	if err != nil {
		return res, err
	}
	res.GPUs, res.Source = gpus, SourceSysfs
	switch {
	case res.NVML.Queried:
		w.Add(nic.WarnNVMLUnavailable, "%s; GPUs come from a sysfs PCI scan, without UUID or model", res.NVML.Error)
	case len(gpus) > 0:
		w.Add(nic.WarnNVMLUnavailable, "not queried for a sysfs tree; GPUs come from a sysfs PCI scan, without UUID or model")
	}
	return res, nil
}

func fromNVML(s *nic.FS, lib nvml.Interface, w *nic.Warnings) ([]GPU, string, error) {
	if ret := lib.Init(); ret != nvml.SUCCESS {
		return nil, "", fmt.Errorf("nvml init: %w", ret)
	}
	defer lib.Shutdown()
	driver, ret := lib.SystemGetDriverVersion()
	if ret != nvml.SUCCESS {
		driver = ""
	}
	count, ret := lib.DeviceGetCount()
	if ret != nvml.SUCCESS {
		return nil, "", fmt.Errorf("nvml device count: %w", ret)
	}
	gpus := make([]GPU, 0, count)
	for i := 0; i < count; i++ {
		dev, ret := lib.DeviceGetHandleByIndex(i)
		if ret != nvml.SUCCESS {
			w.Add(nic.WarnNVML, "GPU %d: get handle: %v", i, ret)
			continue
		}
		g := GPU{Index: i, NUMA: -1, Source: SourceNVML}
		if uuid, ret := dev.GetUUID(); ret == nvml.SUCCESS {
			g.UUID = uuid
		} else {
			w.Add(nic.WarnNVML, "GPU %d: get UUID: %v", i, ret)
		}
		if name, ret := dev.GetName(); ret == nvml.SUCCESS {
			g.Model = name
		} else {
			w.Add(nic.WarnNVML, "GPU %d: get name: %v", i, ret)
		}
		if info, ret := dev.GetPciInfo(); ret == nvml.SUCCESS {
			addr, err := NormalizeBusID(busIDString(info))
			if err != nil {
				w.Add(nic.WarnNVML, "GPU %d: %v", i, err)
			}
			g.PCI = addr
		} else {
			w.Add(nic.WarnNVML, "GPU %d: get PCI info: %v", i, ret)
		}
		if g.PCI != "" {
			if d, err := s.ReadPCIDevice(g.PCI, w); err == nil {
				g.attach(d)
			} else {
				w.Add(nic.WarnSysfs, "GPU %d (%s) from NVML is not in the PCI tree: %v", i, g.PCI, err)
			}
		}
		if numa, ret := dev.GetNumaNodeId(); ret == nvml.SUCCESS && numa >= 0 {
			g.NUMA = numa
		}
		gpus = append(gpus, g)
	}
	return gpus, driver, nil
}

// crossCheck warns about GPUs that sysfs shows but NVML does not report:
// a GPU that fell off the bus or whose driver failed to attach.
func crossCheck(s *nic.FS, gpus []GPU, w *nic.Warnings) {
	seen := map[string]bool{}
	for _, g := range gpus {
		seen[g.PCI] = true
	}
	addrs, err := sysfsGPUAddresses(s)
	if err != nil {
		return
	}
	for _, a := range addrs {
		if !seen[a] {
			w.Add(nic.WarnGPUMissing, "sysfs shows an NVIDIA GPU at %s that NVML does not report", a)
		}
	}
}

func (g *GPU) attach(d *nic.PCIDevice) {
	g.Device = d
	g.NUMA = d.NUMA
	if d.Link != (nic.PCIeLink{}) {
		link := d.Link
		g.PCIe = &link
	}
}

func fromSysfs(s *nic.FS, w *nic.Warnings) ([]GPU, error) {
	addrs, err := sysfsGPUAddresses(s)
	if err != nil {
		return nil, err
	}
	gpus := make([]GPU, 0, len(addrs))
	for i, a := range addrs {
		d, err := s.ReadPCIDevice(a, w)
		if err != nil {
			return nil, fmt.Errorf("read gpu %s: %w", a, err)
		}
		g := GPU{Index: i, PCI: a, NUMA: -1, Source: SourceSysfs, Model: ModelName(d.Device)}
		g.attach(d)
		gpus = append(gpus, g)
	}
	return gpus, nil
}

// sysfsGPUAddresses lists NVIDIA display functions (VGA or 3D class) in PCI
// address order. Attributes are read quietly here: a device whose vendor or
// class cannot be read is not a GPU candidate.
func sysfsGPUAddresses(s *nic.FS) ([]string, error) {
	addrs, err := s.PCIAddresses()
	if err != nil {
		return nil, err
	}
	var out []string
	for _, a := range addrs {
		p, err := s.ResolvePCIDevice(a)
		if err != nil {
			continue
		}
		vendor, err1 := s.ReadString(p + "/vendor")
		class, err2 := s.ReadString(p + "/class")
		if err1 != nil || err2 != nil {
			continue
		}
		v, err1 := nic.ParseHex(vendor)
		c, err2 := nic.ParseHex(class)
		if err1 != nil || err2 != nil {
			continue
		}
		d := nic.PCIDevice{Vendor: v, Class: c}
		if d.IsGPU() {
			out = append(out, a)
		}
	}
	return out, nil
}

// busIDString returns NVML's bus ID, from BusId, or from the numeric fields
// when the string is empty.
func busIDString(info nvml.PciInfo) string {
	var b strings.Builder
	for _, c := range info.BusId {
		if c == 0 {
			break
		}
		b.WriteByte(byte(c))
	}
	if b.Len() > 0 {
		return b.String()
	}
	if info.Domain == 0 && info.Bus == 0 && info.Device == 0 {
		return ""
	}
	return fmt.Sprintf("%08X:%02X:%02X.0", info.Domain, info.Bus, info.Device)
}

// NormalizeBusID turns NVML's "%08X:%02X:%02X.0" bus ID ("00000000:9B:00.0")
// into the sysfs form ("0000:9b:00.0").
func NormalizeBusID(id string) (string, error) {
	id = strings.TrimSpace(id)
	parts := strings.Split(id, ":")
	if len(parts) != 3 {
		return "", fmt.Errorf("bad PCI bus id %q", id)
	}
	devfn := strings.Split(parts[2], ".")
	if len(devfn) != 2 {
		return "", fmt.Errorf("bad PCI bus id %q", id)
	}
	dom, err1 := strconv.ParseUint(parts[0], 16, 32)
	bus, err2 := strconv.ParseUint(parts[1], 16, 8)
	dev, err3 := strconv.ParseUint(devfn[0], 16, 5)
	fn, err4 := strconv.ParseUint(devfn[1], 16, 3)
	if err1 != nil || err2 != nil || err3 != nil || err4 != nil || len(parts[0]) == 0 {
		return "", fmt.Errorf("bad PCI bus id %q", id)
	}
	return fmt.Sprintf("%04x:%02x:%02x.%x", dom, bus, dev, fn), nil
}

// modelNames names common data-center GPUs by PCI device ID, as NVML does,
// for inventories taken without NVML.
var modelNames = map[uint32]string{
	0x20b0: "NVIDIA A100-SXM4-40GB",
	0x20b2: "NVIDIA A100-SXM4-80GB",
	0x20b5: "NVIDIA A100 80GB PCIe",
	0x20f1: "NVIDIA A100-PCIE-40GB",
	0x2321: "NVIDIA H100 NVL",
	0x2330: "NVIDIA H100 80GB HBM3",
	0x2331: "NVIDIA H100 PCIe",
	0x2335: "NVIDIA H200",
	0x26b9: "NVIDIA L40S",
	0x27b8: "NVIDIA L4",
	0x2901: "NVIDIA B200",
}

// ModelName names an NVIDIA GPU by PCI device ID, or gives the ID.
func ModelName(device uint32) string {
	if n, ok := modelNames[device]; ok {
		return n
	}
	return fmt.Sprintf("NVIDIA [10de:%04x]", device)
}
