package sysfstest

import (
	"fmt"
	"strings"
)

// DGXRails is the most compute rails DGX builds: one per GPU tray slot.
const DGXRails = 8

// DGX H100 layout: the host bridge of each GPU tray slot and the RDMA
// device name of its compute NIC (not in PCI order, as on the real server).
var (
	dgxHostBridges  = []int{0x15, 0x37, 0x48, 0x59, 0x95, 0xb7, 0xc8, 0xd9}
	dgxComputeNames = []string{"mlx5_0", "mlx5_3", "mlx5_4", "mlx5_5", "mlx5_6", "mlx5_9", "mlx5_7", "mlx5_8"}
)

// DGXHost describes a server laid out like DGXH100, for labs that need one
// tree per simulated host: its name, and for each rail the MAC and the
// addresses its GID table holds.
type DGXHost struct {
	// Node is the host name, the first word of each RDMA device's
	// node_desc.
	Node string
	// Rails are the compute NICs: rail n sits in GPU tray slot n, behind
	// the same PCIe switch as GPU n, so the inventory maps GPU n to rail
	// n. At most DGXRails; slots beyond the last rail stay empty (no GPU
	// either).
	Rails []DGXRail
	// MgmtNetdev names the management NIC (Intel, no RDMA); default
	// "eno1".
	MgmtNetdev string
	// MgmtMAC is the management NIC's MAC; default 3c:ec:ef:00:00:01.
	MgmtMAC string
}

// DGXRail is one compute NIC of a DGXHost.
type DGXRail struct {
	// MAC is the netdev's address; default DGXMAC(slot).
	MAC string
	// IPs are the addresses in the port's GID table after the link-local
	// GID, each as a RoCE v1 and a RoCE v2 entry (RoCEGIDs).
	IPs []string
}

// DGXNetdev is the netdev name of rail n's compute NIC in a DGX tree, as
// in DGXH100: enp27s0np0, enp61s0np0, enp78s0np0, enp95s0np0, enp155s0np0,
// enp189s0np0, enp206s0np0, enp223s0np0.
func DGXNetdev(rail int) string {
	return fmt.Sprintf("enp%ds0np0", dgxHostBridges[rail]+6)
}

// DGXRDMADevice is the RDMA device name of rail n's compute NIC in a DGX
// tree, as in DGXH100.
func DGXRDMADevice(rail int) string { return dgxComputeNames[rail] }

// DGXMAC is DGXH100's MAC of rail n's compute NIC.
func DGXMAC(rail int) string {
	return fmt.Sprintf("b8:3f:d2:34:%02x:%02x", rail, dgxHostBridges[rail]+6)
}

// DGX builds a tree laid out like DGXH100 (two sockets, each GPU and its
// 400G ConnectX-7 behind a cascade of two PCIe switches on the slot's host
// bridge, four NVSwitches, an Intel management NIC without RDMA) with the
// node name, rails, MACs and GID addresses of h. The two storage NICs of
// DGXH100 are left out: a lab host has no netdev for them.
func DGX(dir string, h DGXHost) (*Tree, error) {
	if len(h.Rails) < 1 || len(h.Rails) > DGXRails {
		return nil, fmt.Errorf("dgx tree for %s: %d rails, want 1-%d", h.Node, len(h.Rails), DGXRails)
	}
	if h.Node == "" || strings.ContainsAny(h.Node, " \n") {
		return nil, fmt.Errorf("dgx tree: node name %q is empty or has blanks", h.Node)
	}
	return dgx(dir, h, false)
}

// dgxStorage are DGXH100's two 200G storage NICs: the slot whose first
// switch they hang off, and their RDMA device name.
var dgxStorage = map[int]string{1: "mlx5_1", 5: "mlx5_2"}

// dgx builds DGX and, with storage, DGXH100 (the storage NICs interleave
// with the compute NICs in PCI order).
func dgx(dir string, h DGXHost, storage bool) (*Tree, error) {
	t := New(dir)
	for slot, r := range h.Rails {
		b := dgxHostBridges[slot]
		hb := t.HostBridge(fmt.Sprintf("0000:%02x", b), slot/4)
		rp := hb.Bridge(fmt.Sprintf("0000:%02x:01.0", b), 0x8086, 0x352a)
		usp1 := rp.Bridge(fmt.Sprintf("0000:%02x:00.0", b+1), 0x1000, 0xc030)
		dsp1a := usp1.Bridge(fmt.Sprintf("0000:%02x:00.0", b+2), 0x1000, 0xc030)
		var dsp1b *Node
		if storage {
			dsp1b = usp1.Bridge(fmt.Sprintf("0000:%02x:01.0", b+2), 0x1000, 0xc030)
		}
		usp2 := dsp1a.Bridge(fmt.Sprintf("0000:%02x:00.0", b+3), 0x1000, 0xc030)
		dsp2a := usp2.Bridge(fmt.Sprintf("0000:%02x:00.0", b+4), 0x1000, 0xc030)
		dsp2b := usp2.Bridge(fmt.Sprintf("0000:%02x:01.0", b+4), 0x1000, 0xc030)
		dsp2a.Function(fmt.Sprintf("0000:%02x:00.0", b+5), PCIFunc{
			Vendor: 0x10de, Device: 0x2330, Class: 0x030200, Driver: "nvidia",
			Speed: pcieGen1, MaxSpeed: pcieGen5, Width: 16, MaxWidth: 16,
		})
		nicBus := b + 6
		netdev := DGXNetdev(slot)
		mac := r.MAC
		if mac == "" {
			mac = DGXMAC(slot)
		}
		nicFn := dsp2b.Function(fmt.Sprintf("0000:%02x:00.0", nicBus), PCIFunc{
			Vendor: 0x15b3, Device: 0x1021, Class: 0x020000, Driver: "mlx5_core",
			Speed: pcieGen5, MaxSpeed: pcieGen5, Width: 16, MaxWidth: 16,
		})
		nicFn.AddNetdev(netdev, Netdev{MAC: mac, MTU: 9000})
		nicFn.AddRDMA(dgxComputeNames[slot], RDMADevice{
			NodeGUID: GUIDFromMAC(mac), FWVer: "28.39.1002", HCAType: "MT4129", BoardID: "MT_0000000838",
			NodeDesc: h.Node + " " + dgxComputeNames[slot], HWCounters: MLX5HWCounters, Counters: PMACounters,
			Ports: []RDMAPort{activePort("400 Gb/sec (4X NDR)", RoCEGIDs(netdev, mac, r.IPs...))},
		})
		if name, ok := dgxStorage[slot]; ok && storage {
			sBus := b + 7
			sNetdev := fmt.Sprintf("enp%ds0np0", sBus)
			sMAC := fmt.Sprintf("b8:3f:d2:35:%02x:%02x", slot, sBus)
			sFn := dsp1b.Function(fmt.Sprintf("0000:%02x:00.0", sBus), PCIFunc{
				Vendor: 0x15b3, Device: 0x1021, Class: 0x020000, Driver: "mlx5_core",
				Speed: pcieGen5, MaxSpeed: pcieGen5, Width: 16, MaxWidth: 16,
			})
			sFn.AddNetdev(sNetdev, Netdev{MAC: sMAC, MTU: 9000})
			sFn.AddRDMA(name, RDMADevice{
				NodeGUID: GUIDFromMAC(sMAC), FWVer: "28.39.1002", HCAType: "MT4129", BoardID: "MT_0000000838",
				NodeDesc: h.Node + " " + name, HWCounters: MLX5HWCounters, Counters: PMACounters,
				Ports: []RDMAPort{activePort("200 Gb/sec (4X HDR)", RoCEGIDs(sNetdev, sMAC, fmt.Sprintf("172.16.%d.9", slot)))},
			})
		}
	}
	nvs := t.HostBridge("0000:05", 0)
	nvsRP := nvs.Bridge("0000:05:01.0", 0x8086, 0x352a)
	for i := 0; i < 4; i++ {
		nvsRP.Function(fmt.Sprintf("0000:06:%02x.0", i), PCIFunc{Vendor: 0x10de, Device: 0x22a3, Class: 0x068000, Driver: "nvidia-nvswitch"})
	}
	mgmtName, mgmtMAC := h.MgmtNetdev, h.MgmtMAC
	if mgmtName == "" {
		mgmtName = "eno1"
	}
	if mgmtMAC == "" {
		mgmtMAC = "3c:ec:ef:00:00:01"
	}
	x710 := t.HostBridge("0000:00", 0).Bridge("0000:00:1c.0", 0x8086, 0x7ab8).Function("0000:01:00.0", PCIFunc{
		Vendor: 0x8086, Device: 0x1572, Class: 0x020000, Driver: "i40e", Speed: "8.0 GT/s PCIe", MaxSpeed: "8.0 GT/s PCIe", Width: 8, MaxWidth: 8,
	})
	x710.AddNetdev(mgmtName, Netdev{MAC: mgmtMAC, MTU: 1500})
	t.VirtualNetdev("lo", Netdev{MAC: "00:00:00:00:00:00", MTU: 65536, Operstate: "unknown"})
	return t, t.Err()
}
