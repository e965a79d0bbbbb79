package nic

import (
	"errors"
	"fmt"
	"io/fs"
	"path"
	"regexp"
	"sort"
	"strings"
)

// PCI vendor IDs the inventory names.
const (
	VendorNVIDIA   = 0x10de
	VendorMellanox = 0x15b3
	VendorBroadcom = 0x14e4
	VendorIntel    = 0x8086
)

var vendorNames = map[uint32]string{
	VendorNVIDIA:   "NVIDIA",
	VendorMellanox: "Mellanox",
	VendorBroadcom: "Broadcom",
	VendorIntel:    "Intel",
	0x1077:         "QLogic",
	0x19e5:         "Huawei",
	0x1924:         "Solarflare",
	0x1dd8:         "AMD Pensando",
}

// VendorName names a PCI vendor ID, or returns it in hex.
func VendorName(id uint32) string {
	if n, ok := vendorNames[id]; ok {
		return n
	}
	return fmt.Sprintf("0x%04x", id)
}

// PCIeLink is the negotiated and the maximum link of a PCI function, from
// current_link_speed, current_link_width, max_link_speed and max_link_width.
// Speeds are in GT/s; zero means the kernel did not report it.
type PCIeLink struct {
	CurrentSpeed float64 `json:"current_speed_gts"`
	MaxSpeed     float64 `json:"max_speed_gts"`
	CurrentWidth int     `json:"current_width"`
	MaxWidth     int     `json:"max_width"`
}

// SpeedDegraded reports a link trained below the speed it is capable of.
func (l PCIeLink) SpeedDegraded() bool {
	return l.CurrentSpeed > 0 && l.MaxSpeed > 0 && l.CurrentSpeed < l.MaxSpeed
}

// WidthDegraded reports a link trained on fewer lanes than it has.
func (l PCIeLink) WidthDegraded() bool {
	return l.CurrentWidth > 0 && l.MaxWidth > 0 && l.CurrentWidth < l.MaxWidth
}

// String renders the link as "16.0 GT/s x16 (max 32.0 GT/s x16)".
func (l PCIeLink) String() string {
	if l == (PCIeLink{}) {
		return "-"
	}
	cur := fmt.Sprintf("%.1f GT/s x%d", l.CurrentSpeed, l.CurrentWidth)
	if l.SpeedDegraded() || l.WidthDegraded() {
		return fmt.Sprintf("%s (max %.1f GT/s x%d)", cur, l.MaxSpeed, l.MaxWidth)
	}
	return cur
}

// PCIDevice is one PCI function as sysfs shows it.
type PCIDevice struct {
	// Address is the bus address in sysfs form, "0000:1b:00.0".
	Address string
	// Path is the sysfs-absolute device directory with symlinks resolved,
	// "/devices/pci0000:17/0000:17:01.0/0000:18:00.0/0000:19:04.0/0000:1b:00.0".
	Path   string
	Vendor uint32 // vendor
	Device uint32 // device
	Class  uint32 // class
	// NUMA is numa_node, -1 when the kernel does not know it.
	NUMA   int
	Driver string // basename of the driver symlink; "" when unbound
	Link   PCIeLink
}

var bdfPattern = regexp.MustCompile(`^[0-9a-f]{4,8}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$`)

// IsPCIAddress reports whether s is a PCI address in sysfs form.
func IsPCIAddress(s string) bool { return bdfPattern.MatchString(s) }

// Hierarchy splits Path into the host bridge and the chain of PCI functions
// from the root port down to the device itself.
func (d *PCIDevice) Hierarchy() (hostBridge string, chain []string) {
	return SplitPCIPath(d.Path)
}

// SplitPCIPath splits a resolved device path into the host bridge component
// and the PCI functions below it, ignoring anything that is not a PCI
// address (a trailing "infiniband/mlx5_0", say).
func SplitPCIPath(p string) (hostBridge string, chain []string) {
	parts := strings.Split(strings.TrimPrefix(p, "/"), "/")
	if len(parts) < 2 || parts[0] != "devices" || !strings.HasPrefix(parts[1], "pci") {
		return "", nil
	}
	hostBridge = parts[1]
	for _, c := range parts[2:] {
		if !IsPCIAddress(c) {
			break
		}
		chain = append(chain, c)
	}
	return hostBridge, chain
}

// IsGPU reports an NVIDIA function whose class is a display controller of
// the VGA (0x0300xx) or 3D (0x0302xx) kind. NVSwitches (0x0680xx) and
// NVIDIA's audio and USB functions are not GPUs.
func (d *PCIDevice) IsGPU() bool {
	return d.Vendor == VendorNVIDIA && (d.Class>>8 == 0x0300 || d.Class>>8 == 0x0302)
}

// ResolvePCIDevice returns the resolved sysfs path of PCI function bdf. It
// tries /bus/pci/devices/<bdf> and then NCCL's route through
// /class/pci_bus/<domain:bus>/../../<bdf>.
func (s *FS) ResolvePCIDevice(bdf string) (string, error) {
	bdf = strings.ToLower(bdf)
	if !IsPCIAddress(bdf) {
		return "", fmt.Errorf("pci address %q: want dddd:bb:dd.f", bdf)
	}
	p, err := s.Realpath(path.Join("/bus/pci/devices", bdf))
	if err == nil {
		return p, nil
	}
	bus, err2 := s.Realpath(path.Join("/class/pci_bus", bdf[:strings.LastIndex(bdf, ":")]))
	if err2 == nil {
		cand := path.Join(path.Dir(path.Dir(bus)), bdf)
		if s.Exists(cand) {
			return cand, nil
		}
	}
	if p, ok := s.walkPCI()[bdf]; ok {
		return p, nil
	}
	return "", fmt.Errorf("pci device %s: %w", bdf, err)
}

// ReadPCIDevice reads PCI function bdf. Malformed or unreadable attributes
// become warnings; only a device that is not in the tree is an error.
func (s *FS) ReadPCIDevice(bdf string, w *Warnings) (*PCIDevice, error) {
	p, err := s.ResolvePCIDevice(bdf)
	if err != nil {
		return nil, err
	}
	return s.ReadPCIDeviceAt(p, w), nil
}

// ReadPCIDeviceAt reads the PCI function whose resolved sysfs path is p.
func (s *FS) ReadPCIDeviceAt(p string, w *Warnings) *PCIDevice {
	d := &PCIDevice{Address: path.Base(p), Path: p, NUMA: -1}
	d.Vendor, _ = parsed(s, path.Join(p, "vendor"), true, w, ParseHex)
	d.Device, _ = parsed(s, path.Join(p, "device"), false, w, ParseHex)
	d.Class, _ = parsed(s, path.Join(p, "class"), true, w, ParseHex)
	if n, ok := parsed(s, path.Join(p, "numa_node"), false, w, ParseNUMANode); ok {
		d.NUMA = n
	}
	if drv, err := s.LinkBase(path.Join(p, "driver")); err == nil {
		d.Driver = drv
	} else if !errors.Is(err, fs.ErrNotExist) {
		w.Add(WarnSysfs, "unreadable %s: %v", s.HostPath(path.Join(p, "driver")), unwrapPathError(err))
	}
	d.Link.CurrentSpeed, _ = parsed(s, path.Join(p, "current_link_speed"), false, w, ParseLinkSpeed)
	d.Link.MaxSpeed, _ = parsed(s, path.Join(p, "max_link_speed"), false, w, ParseLinkSpeed)
	d.Link.CurrentWidth, _ = parsed(s, path.Join(p, "current_link_width"), false, w, ParseLinkWidth)
	d.Link.MaxWidth, _ = parsed(s, path.Join(p, "max_link_width"), false, w, ParseLinkWidth)
	return d
}

// PCIAddresses lists the PCI functions in the tree, in address order: the
// entries of /bus/pci/devices, or, when the tree has none, every PCI
// function found below /devices/pci*.
func (s *FS) PCIAddresses() ([]string, error) {
	names, err := s.ReadDir("/bus/pci/devices")
	if err == nil {
		var out []string
		for _, n := range names {
			if IsPCIAddress(n) {
				out = append(out, n)
			}
		}
		return out, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("list pci devices: %w", err)
	}
	seen := s.walkPCI()
	out := make([]string, 0, len(seen))
	for n := range seen {
		out = append(out, n)
	}
	sort.Strings(out)
	return out, nil
}

// walkPCI finds every PCI function below /devices/pci*, for trees without
// /bus/pci/devices and /class/pci_bus. The walk is done once per FS.
func (s *FS) walkPCI() map[string]string {
	s.pciOnce.Do(func() {
		s.pciPaths = map[string]string{}
		tops, err := s.ReadDir("/devices")
		if err != nil {
			return
		}
		var walk func(dir string, depth int)
		walk = func(dir string, depth int) {
			if depth > 16 {
				return
			}
			names, _ := s.ReadDir(dir)
			for _, n := range names {
				if IsPCIAddress(n) {
					p := path.Join(dir, n)
					s.pciPaths[n] = p
					walk(p, depth+1)
				}
			}
		}
		for _, t := range tops {
			if strings.HasPrefix(t, "pci") {
				walk(path.Join("/devices", t), 0)
			}
		}
	})
	return s.pciPaths
}
