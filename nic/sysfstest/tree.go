// Package sysfstest builds sysfs trees laid out as the kernel lays them out:
// devices under /devices/pciDDDD:BB/..., and symlinks to them from
// /bus/pci/devices, /class/infiniband, /class/net and /class/pci_bus. Tests
// and the committed fixtures under testdata/sysfs use it.
package sysfstest

import (
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strings"
)

// Tree is a sysfs tree being built under Root.
type Tree struct {
	root string
	err  error
}

// New starts a tree at dir/sys.
func New(dir string) *Tree {
	t := &Tree{root: filepath.Join(dir, "sys")}
	for _, d := range []string{"devices", "bus/pci/devices", "bus/pci/drivers", "class/net", "class/infiniband", "class/pci_bus"} {
		t.mkdir("/" + d)
	}
	return t
}

// Root is the directory to pass as --sysfs-root.
func (t *Tree) Root() string { return t.root }

// Err returns the first error met while building.
func (t *Tree) Err() error { return t.err }

func (t *Tree) host(p string) string { return filepath.Join(t.root, filepath.FromSlash(p)) }

func (t *Tree) mkdir(p string) {
	if t.err == nil {
		t.err = os.MkdirAll(t.host(p), 0o755)
	}
}

// WriteFile writes a sysfs attribute (a trailing newline is added, as the
// kernel prints one), creating its directory.
func (t *Tree) WriteFile(p, content string) {
	t.mkdir(path.Dir(p))
	if t.err == nil {
		t.err = os.WriteFile(t.host(p), []byte(content+"\n"), 0o644)
	}
}

// WriteRaw writes a file with exactly the bytes given.
func (t *Tree) WriteRaw(p string, content []byte) {
	t.mkdir(path.Dir(p))
	if t.err == nil {
		t.err = os.WriteFile(t.host(p), content, 0o644)
	}
}

// Remove deletes a file or directory of the tree.
func (t *Tree) Remove(p string) {
	if t.err == nil {
		t.err = os.RemoveAll(t.host(p))
	}
}

// Symlink makes link point at target with a relative path, as sysfs does.
func (t *Tree) Symlink(link, target string) {
	t.mkdir(path.Dir(link))
	if t.err != nil {
		return
	}
	rel, err := filepath.Rel(t.host(path.Dir(link)), t.host(target))
	if err != nil {
		t.err = err
		return
	}
	_ = os.Remove(t.host(link))
	t.err = os.Symlink(rel, t.host(link))
}

// Node is a device directory in the tree.
type Node struct {
	t    *Tree
	Path string // sysfs-absolute, "/devices/pci0000:17/0000:17:01.0"
	Addr string // PCI address, "" for a host bridge or virtual device
	NUMA int
}

// HostBridge adds /devices/pci<domainBus> (domainBus "0000:17") on a NUMA
// node.
func (t *Tree) HostBridge(domainBus string, numa int) *Node {
	n := &Node{t: t, Path: "/devices/pci" + domainBus, NUMA: numa}
	t.mkdir(n.Path)
	t.pciBus(n.Path, domainBus)
	return n
}

// pciBus records bus domainBus as a child of the device at dir.
func (t *Tree) pciBus(dir, domainBus string) {
	bus := path.Join(dir, "pci_bus", domainBus)
	t.WriteFile(bus+"/cpulistaffinity", "0-63")
	t.Symlink(path.Join("/class/pci_bus", domainBus), bus)
}

// PCIFunc describes a PCI function's attributes.
type PCIFunc struct {
	Vendor, Device, Class uint32
	Driver                string
	// Link speeds as the kernel prints them ("32.0 GT/s PCIe"); widths in
	// lanes. Empty or zero leaves the attribute out.
	Speed, MaxSpeed string
	Width, MaxWidth int
}

// Bridge adds a PCI-to-PCI bridge (a root port or switch port) below n.
func (n *Node) Bridge(addr string, vendor, device uint32) *Node {
	return n.Function(addr, PCIFunc{Vendor: vendor, Device: device, Class: 0x060400, Driver: "pcieport", Speed: "32.0 GT/s PCIe", MaxSpeed: "32.0 GT/s PCIe", Width: 16, MaxWidth: 16})
}

// Function adds PCI function addr below n.
func (n *Node) Function(addr string, f PCIFunc) *Node {
	t := n.t
	c := &Node{t: t, Path: path.Join(n.Path, addr), Addr: addr, NUMA: n.NUMA}
	t.mkdir(c.Path)
	t.pciBus(n.Path, addr[:strings.LastIndex(addr, ":")])
	t.WriteFile(c.Path+"/vendor", fmt.Sprintf("0x%04x", f.Vendor))
	t.WriteFile(c.Path+"/device", fmt.Sprintf("0x%04x", f.Device))
	t.WriteFile(c.Path+"/class", fmt.Sprintf("0x%06x", f.Class))
	t.WriteFile(c.Path+"/numa_node", fmt.Sprint(n.NUMA))
	if f.Speed != "" {
		t.WriteFile(c.Path+"/current_link_speed", f.Speed)
		t.WriteFile(c.Path+"/max_link_speed", f.MaxSpeed)
	}
	if f.Width > 0 {
		t.WriteFile(c.Path+"/current_link_width", fmt.Sprint(f.Width))
		t.WriteFile(c.Path+"/max_link_width", fmt.Sprint(f.MaxWidth))
	}
	if f.Driver != "" {
		drv := "/bus/pci/drivers/" + f.Driver
		t.mkdir(drv)
		t.Symlink(c.Path+"/driver", drv)
		t.Symlink(path.Join(drv, addr), c.Path)
	}
	t.Symlink("/bus/pci/devices/"+addr, c.Path)
	return c
}

// Netdev describes a network interface.
type Netdev struct {
	MAC     string
	MTU     int
	DevPort int
	// Operstate is "up" unless set.
	Operstate string
}

// AddNetdev adds net/<name> below the device n (and /class/net/<name>).
func (n *Node) AddNetdev(name string, nd Netdev) {
	n.t.netdev(path.Join(n.Path, "net", name), name, nd, n.Path)
}

// VirtualNetdev adds /devices/virtual/net/<name> (a veth, a bridge).
func (t *Tree) VirtualNetdev(name string, nd Netdev) {
	t.netdev(path.Join("/devices/virtual/net", name), name, nd, "")
}

func (t *Tree) netdev(dir, name string, nd Netdev, device string) {
	t.mkdir(dir)
	t.WriteFile(dir+"/address", nd.MAC)
	t.WriteFile(dir+"/mtu", fmt.Sprint(nd.MTU))
	t.WriteFile(dir+"/dev_port", fmt.Sprint(nd.DevPort))
	op := nd.Operstate
	if op == "" {
		op = "up"
	}
	t.WriteFile(dir+"/operstate", op)
	if device != "" {
		t.Symlink(dir+"/device", device)
	}
	t.Symlink("/class/net/"+name, dir)
}

// RDMADevice describes an RDMA device.
type RDMADevice struct {
	NodeGUID, FWVer, HCAType, BoardID, NodeDesc string
	Ports                                       []RDMAPort
	// HWCounters and Counters name the files of each port's hw_counters/
	// and counters/ (PMA) directories, all reading 0; nil leaves the
	// directory out, as rxe has no counters/.
	HWCounters, Counters []string
}

// RDMAPort describes one port; State and PhysState as the kernel prints
// them ("4: ACTIVE", "5: LinkUp").
type RDMAPort struct {
	State, PhysState, Rate, LinkLayer string
	GIDs                              []GIDEntry
	// GIDTableSize pads the table with empty (all-zero) entries.
	GIDTableSize int
}

// GIDEntry is one populated GID table entry.
type GIDEntry struct {
	Index  int
	GID    string // as %pI6 prints it
	Type   string // "RoCE v2", "IB/RoCE v1"
	Netdev string
}

// AddRDMA adds infiniband/<name> below the PCI function n.
func (n *Node) AddRDMA(name string, d RDMADevice) {
	dir := path.Join(n.Path, "infiniband", name)
	n.t.rdma(dir, name, d)
	n.t.Symlink(dir+"/device", n.Path)
}

// SoftRDMA adds a software RDMA device (rxe) on netdev parent, at
// /devices/virtual/infiniband/<name>.
func (t *Tree) SoftRDMA(name, parent string, d RDMADevice) {
	dir := path.Join("/devices/virtual/infiniband", name)
	t.rdma(dir, name, d)
	t.WriteFile(dir+"/parent", parent)
}

const zeroGID = "0000:0000:0000:0000:0000:0000:0000:0000"

func (t *Tree) rdma(dir, name string, d RDMADevice) {
	t.mkdir(dir)
	t.WriteFile(dir+"/node_guid", d.NodeGUID)
	t.WriteFile(dir+"/sys_image_guid", d.NodeGUID)
	t.WriteFile(dir+"/node_type", "1: CA")
	t.WriteFile(dir+"/fw_ver", d.FWVer)
	t.WriteFile(dir+"/node_desc", d.NodeDesc)
	if d.HCAType != "" {
		t.WriteFile(dir+"/hca_type", d.HCAType)
	}
	if d.BoardID != "" {
		t.WriteFile(dir+"/board_id", d.BoardID)
	}
	for i, p := range d.Ports {
		pd := fmt.Sprintf("%s/ports/%d", dir, i+1)
		t.WriteFile(pd+"/state", p.State)
		t.WriteFile(pd+"/phys_state", p.PhysState)
		t.WriteFile(pd+"/rate", p.Rate)
		t.WriteFile(pd+"/link_layer", p.LinkLayer)
		t.WriteFile(pd+"/lid", "0x0")
		size := p.GIDTableSize
		used := map[int]GIDEntry{}
		for _, g := range p.GIDs {
			used[g.Index] = g
			if g.Index >= size {
				size = g.Index + 1
			}
		}
		t.mkdir(pd + "/gid_attrs/types")
		t.mkdir(pd + "/gid_attrs/ndevs")
		for i := 0; i < size; i++ {
			g, ok := used[i]
			if !ok {
				// Empty entries read as zeros; their type and ndev files
				// fail with EINVAL on a live host and are absent here.
				t.WriteFile(fmt.Sprintf("%s/gids/%d", pd, i), zeroGID)
				continue
			}
			t.WriteFile(fmt.Sprintf("%s/gids/%d", pd, i), g.GID)
			t.WriteFile(fmt.Sprintf("%s/gid_attrs/types/%d", pd, i), g.Type)
			t.WriteFile(fmt.Sprintf("%s/gid_attrs/ndevs/%d", pd, i), g.Netdev)
		}
		for _, c := range d.HWCounters {
			v := "0"
			if c == "lifespan" {
				v = "10"
			}
			t.WriteFile(pd+"/hw_counters/"+c, v)
		}
		for _, c := range d.Counters {
			t.WriteFile(pd+"/counters/"+c, "0")
		}
	}
	t.Symlink("/class/infiniband/"+name, dir)
}
