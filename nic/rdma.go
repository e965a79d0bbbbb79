package nic

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"path"
	"sort"
	"strconv"
	"strings"
)

// GID is one populated entry of a port's GID table
// (ports/<n>/gids/<i>, gid_attrs/types/<i>, gid_attrs/ndevs/<i>).
type GID struct {
	Index int    `json:"index"`
	GID   string `json:"gid"`
	// IP is the address the GID carries: dotted IPv4 for an IPv4-mapped
	// RoCE GID, IPv6 otherwise.
	IP     string `json:"ip"`
	Type   string `json:"type"` // "RoCE v2" or "IB/RoCE v1"
	Netdev string `json:"netdev"`
}

// IsRoCEv2 reports a RoCE v2 (UDP-encapsulated) GID.
func (g GID) IsRoCEv2() bool { return g.Type == "RoCE v2" }

// Port is one port of an RDMA device (ports/<n>/...).
type Port struct {
	Port      int     `json:"port"`
	State     string  `json:"port_state"` // state: "ACTIVE", "DOWN", ...
	PhysState string  `json:"phys_state"` // phys_state: "LinkUp", "Disabled", ...
	Rate      string  `json:"rate"`       // rate as printed, "400 Gb/sec (4X NDR)"
	RateGbps  float64 `json:"rate_gbps"`  // rate in Gb/s
	LinkLayer string  `json:"link_layer"` // "Ethernet" (RoCE) or "InfiniBand"
	GIDs      []GID   `json:"gids"`
}

// Active reports a port in the ACTIVE state.
func (p Port) Active() bool { return p.State == "ACTIVE" }

// NIC is an RDMA device with its netdev and PCI function. The first port's
// facts are inline (RoCE functions have one port each); any further ports
// are in OtherPorts.
type NIC struct {
	RDMADevice string `json:"rdma_device"`
	Netdev     string `json:"netdev"`
	// PCI is the PCI function, "" for a software device (rxe) whose parent
	// netdev has no PCI device either.
	PCI      string `json:"pci"`
	NUMA     int    `json:"numa"`
	Driver   string `json:"driver"`
	Vendor   string `json:"vendor"`
	Firmware string `json:"firmware"`  // fw_ver
	NodeGUID string `json:"node_guid"` // node_guid
	HCAType  string `json:"hca_type"`  // hca_type
	BoardID  string `json:"board_id"`  // board_id
	// Software is true for soft-RoCE (rxe) and soft-iWARP (siw) devices.
	Software bool      `json:"software"`
	MAC      string    `json:"mac"`
	MTU      int       `json:"mtu"`
	PCIe     *PCIeLink `json:"pcie"`
	Port
	OtherPorts []Port `json:"other_ports,omitempty"`

	// Device is the PCI function, nil when there is none.
	Device *PCIDevice `json:"-"`
}

// Ports returns every port, the inline one first.
func (n *NIC) Ports() []Port {
	return append([]Port{n.Port}, n.OtherPorts...)
}

// DeviceLister names the RDMA devices on a host.
type DeviceLister interface {
	RDMADeviceNames() ([]string, error)
}

// SysfsLister lists the RDMA devices under /class/infiniband of a tree.
type SysfsLister struct{ FS *FS }

// RDMADeviceNames lists /class/infiniband. A tree without it has none.
func (l SysfsLister) RDMADeviceNames() ([]string, error) {
	names, err := l.FS.ReadDir("/class/infiniband")
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list rdma devices: %w", err)
	}
	return names, nil
}

// Discover reads every RDMA device the lister names. Devices whose
// attributes are missing or malformed are still returned; the problems go
// to w. The result is in PCI address order, software devices last.
func Discover(s *FS, lister DeviceLister, w *Warnings) ([]NIC, error) {
	names, err := lister.RDMADeviceNames()
	if err != nil {
		return nil, err
	}
	nics := make([]NIC, 0, len(names))
	for _, name := range names {
		nics = append(nics, s.readNIC(name, w))
	}
	sort.SliceStable(nics, func(i, j int) bool {
		a, b := nics[i], nics[j]
		if (a.PCI == "") != (b.PCI == "") {
			return a.PCI != ""
		}
		if a.PCI != b.PCI {
			return a.PCI < b.PCI
		}
		return NaturalLess(a.RDMADevice, b.RDMADevice)
	})
	return nics, nil
}

func (s *FS) readNIC(name string, w *Warnings) NIC {
	dev := path.Join("/class/infiniband", name)
	n := NIC{RDMADevice: name, NUMA: -1}

	// The device link leads to the PCI function (mlx5/bnxt PF) or to an
	// auxiliary device below it (mlx5 SF). Software devices have none and
	// name their netdev in "parent" instead.
	devicePath, err := s.Realpath(path.Join(dev, "device"))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		w.Add(WarnSysfs, "unreadable %s: %v", s.HostPath(path.Join(dev, "device")), unwrapPathError(err))
	}
	if parent, ok := s.attr(path.Join(dev, "parent"), false, w); ok && devicePath == "" {
		n.Software = true
		n.Netdev = parent
		n.Driver = softDriver(s, dev, w)
	}
	if devicePath == "" && !n.Software {
		// No device link: the device directory itself sits below its
		// parent, /devices/.../0000:1b:00.0/infiniband/mlx5_0.
		if self, err := s.Realpath(dev); err == nil && path.Base(path.Dir(self)) == "infiniband" {
			if _, chain := SplitPCIPath(self); len(chain) > 0 {
				devicePath = path.Dir(path.Dir(self))
			}
		}
	}

	n.Firmware, _ = s.attr(path.Join(dev, "fw_ver"), false, w)
	n.NodeGUID, _ = parsed(s, path.Join(dev, "node_guid"), false, w, ParseGUID)
	n.HCAType, _ = s.attr(path.Join(dev, "hca_type"), false, w)
	n.BoardID, _ = s.attr(path.Join(dev, "board_id"), false, w)

	ports := s.readPorts(dev, w)
	if len(ports) == 0 {
		w.Add(WarnSysfs, "%s has no ports", s.HostPath(path.Join(dev, "ports")))
		ports = []Port{{}}
	}
	n.Port, n.OtherPorts = ports[0], ports[1:]

	if devicePath != "" && n.Netdev == "" {
		n.Netdev = s.netdevBelow(devicePath, n.Port.Port)
	}
	if n.Netdev == "" {
		n.Netdev = s.netdevFromGIDs(n.Port)
	}
	if n.Netdev != "" {
		netdev := path.Join("/class/net", n.Netdev)
		if s.Exists(netdev) {
			n.MTU, _ = parsed(s, path.Join(netdev, "mtu"), true, w, ParseMTU)
			n.MAC, _ = parsed(s, path.Join(netdev, "address"), false, w, ParseMAC)
			if devicePath == "" {
				// rxe on a physical NIC: the netdev's PCI function is the
				// one whose PCIe path the traffic takes.
				devicePath, _ = s.Realpath(path.Join(netdev, "device"))
			}
		} else {
			w.Add(WarnSysfs, "%s names netdev %s, which %s does not have", name, n.Netdev, s.HostPath("/class/net"))
		}
	}

	if _, chain := SplitPCIPath(devicePath); len(chain) > 0 {
		pciPath := devicePath
		for path.Base(pciPath) != chain[len(chain)-1] {
			pciPath = path.Dir(pciPath)
		}
		n.Device = s.ReadPCIDeviceAt(pciPath, w)
		n.PCI = n.Device.Address
		n.NUMA = n.Device.NUMA
		n.Vendor = VendorName(n.Device.Vendor)
		if !n.Software {
			n.Driver = n.Device.Driver
		}
		if n.Device.Link != (PCIeLink{}) {
			link := n.Device.Link
			n.PCIe = &link
		}
	}
	return n
}

// softDriver names the driver of a software RDMA device from node_desc
// ("rxe" for soft-RoCE, "siw" for soft-iWARP).
func softDriver(s *FS, dev string, w *Warnings) string {
	desc, _ := s.attr(path.Join(dev, "node_desc"), false, w)
	switch {
	case strings.HasPrefix(desc, "rxe"):
		return "rxe"
	case strings.HasPrefix(desc, "siw"):
		return "siw"
	}
	return "software"
}

// netdevBelow finds the netdev of port on the device at devicePath: the one
// entry of <device>/net (or of /class/net entries that resolve below the
// device), or the entry whose dev_port is port-1.
func (s *FS) netdevBelow(devicePath string, port int) string {
	names, err := s.ReadDir(path.Join(devicePath, "net"))
	if err != nil || len(names) == 0 {
		names = s.classNetBelow(devicePath)
	}
	if len(names) == 0 {
		return ""
	}
	if len(names) == 1 {
		return names[0]
	}
	for _, nd := range names {
		v, err := s.ReadString(path.Join(devicePath, "net", nd, "dev_port"))
		if err == nil && v == strconv.Itoa(port-1) {
			return nd
		}
	}
	return names[0]
}

// classNetBelow lists the /class/net entries whose device is devicePath.
func (s *FS) classNetBelow(devicePath string) []string {
	all, err := s.ReadDir("/class/net")
	if err != nil {
		return nil
	}
	var out []string
	for _, nd := range all {
		if dev, err := s.Realpath(path.Join("/class/net", nd, "device")); err == nil && dev == devicePath {
			out = append(out, nd)
			continue
		}
		// No device link: the netdev directory itself sits at
		// <device>/net/<name>.
		if self, err := s.Realpath(path.Join("/class/net", nd)); err == nil && path.Dir(path.Dir(self)) == devicePath {
			out = append(out, nd)
		}
	}
	return out
}

// netdevFromGIDs takes the netdev of the port's first GID (the default,
// link-local one), as a last resort.
func (s *FS) netdevFromGIDs(p Port) string {
	for _, g := range p.GIDs {
		if g.Netdev != "" {
			return g.Netdev
		}
	}
	return ""
}

func (s *FS) readPorts(dev string, w *Warnings) []Port {
	names, err := s.ReadDir(path.Join(dev, "ports"))
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			w.Add(WarnSysfs, "unreadable %s: %v", s.HostPath(path.Join(dev, "ports")), unwrapPathError(err))
		}
		return nil
	}
	var ports []Port
	for _, name := range names {
		num, err := strconv.Atoi(name)
		if err != nil || num < 1 {
			continue
		}
		ports = append(ports, s.readPort(path.Join(dev, "ports", name), num, w))
	}
	sort.Slice(ports, func(i, j int) bool { return ports[i].Port < ports[j].Port })
	return ports
}

func (s *FS) readPort(dir string, num int, w *Warnings) Port {
	p := Port{Port: num}
	if st, ok := parsed(s, path.Join(dir, "state"), true, w, parseStateName); ok {
		p.State = st
	}
	if st, ok := parsed(s, path.Join(dir, "phys_state"), true, w, parseStateName); ok {
		p.PhysState = st
	}
	if raw, ok := s.attr(path.Join(dir, "rate"), true, w); ok {
		if g, err := ParseRate(raw); err != nil {
			w.Add(WarnSysfs, "malformed %s: %v", s.HostPath(path.Join(dir, "rate")), err)
		} else {
			p.Rate, p.RateGbps = raw, g
		}
	}
	p.LinkLayer, _ = s.attr(path.Join(dir, "link_layer"), true, w)
	p.GIDs = s.readGIDs(dir, w)
	return p
}

func parseStateName(s string) (string, error) {
	_, name, err := ParsePortState(s)
	return name, err
}

// readGIDs reads the populated entries of a port's GID table. Empty entries
// read as all zeros (and their type and ndev files fail with EINVAL on a
// live host); they are skipped.
func (s *FS) readGIDs(port string, w *Warnings) []GID {
	names, err := s.ReadDir(path.Join(port, "gids"))
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			w.Add(WarnSysfs, "unreadable %s: %v", s.HostPath(path.Join(port, "gids")), unwrapPathError(err))
		}
		return []GID{}
	}
	idx := make([]int, 0, len(names))
	for _, name := range names {
		if i, err := strconv.Atoi(name); err == nil && i >= 0 {
			idx = append(idx, i)
		}
	}
	sort.Ints(idx)
	gids := []GID{}
	for _, i := range idx {
		file := path.Join(port, "gids", strconv.Itoa(i))
		ip, ok := parsed(s, file, true, w, ParseGID)
		if !ok || ip.IsUnspecified() {
			continue
		}
		g := GID{Index: i, GID: formatGID(ip), IP: gidIP(ip)}
		g.Type, _ = s.attr(path.Join(port, "gid_attrs", "types", strconv.Itoa(i)), true, w)
		g.Netdev, _ = s.attr(path.Join(port, "gid_attrs", "ndevs", strconv.Itoa(i)), false, w)
		gids = append(gids, g)
	}
	return gids
}

// formatGID prints a GID the way the kernel does (%pI6).
func formatGID(ip net.IP) string {
	var b strings.Builder
	for i := 0; i < net.IPv6len; i += 2 {
		if i > 0 {
			b.WriteByte(':')
		}
		fmt.Fprintf(&b, "%02x%02x", ip[i], ip[i+1])
	}
	return b.String()
}

func gidIP(ip net.IP) string {
	if v4 := ip.To4(); v4 != nil {
		return v4.String()
	}
	return ip.String()
}

// NaturalLess orders names with numeric suffixes by number, so mlx5_2 comes
// before mlx5_10.
func NaturalLess(a, b string) bool {
	pa, na := splitNumericSuffix(a)
	pb, nb := splitNumericSuffix(b)
	if pa != pb || na < 0 || nb < 0 {
		return a < b
	}
	return na < nb
}

func splitNumericSuffix(s string) (string, int) {
	i := len(s)
	for i > 0 && s[i-1] >= '0' && s[i-1] <= '9' {
		i--
	}
	if i == len(s) || len(s)-i > 9 {
		return s, -1
	}
	n, _ := strconv.Atoi(s[i:])
	return s[:i], n
}
