package sysfstest

import (
	"fmt"
	"net"
	"strings"
)

// Hosts are the fixture hosts committed under testdata/sysfs/<name>/sys.
var Hosts = map[string]func(dir string) (*Tree, error){
	"dgx-h100":     DGXH100,
	"mixed-vendor": MixedVendor,
	"soft-roce":    SoftRoCE,
	"empty":        Empty,
}

// GID renders an IP address as a GID the way %pI6 prints it (IPv4 as an
// IPv4-mapped address).
func GID(ip string) string {
	a := net.ParseIP(ip).To16()
	if a == nil {
		panic("sysfstest: bad ip " + ip)
	}
	var parts []string
	for i := 0; i < 16; i += 2 {
		parts = append(parts, fmt.Sprintf("%02x%02x", a[i], a[i+1]))
	}
	return strings.Join(parts, ":")
}

// LinkLocalGID is the default GID of a netdev: fe80:: plus the EUI-64 of
// its MAC.
func LinkLocalGID(mac string) string {
	hw, err := net.ParseMAC(mac)
	if err != nil || len(hw) != 6 {
		panic("sysfstest: bad mac " + mac)
	}
	ip := net.IP{0xfe, 0x80, 0, 0, 0, 0, 0, 0, hw[0] ^ 2, hw[1], hw[2], 0xff, 0xfe, hw[3], hw[4], hw[5]}
	return GID(ip.String())
}

// GUIDFromMAC is the node GUID mlx5 derives from the port MAC.
func GUIDFromMAC(mac string) string {
	hw, _ := net.ParseMAC(mac)
	return fmt.Sprintf("%02x%02x:%02xff:fe%02x:%02x%02x", hw[0], hw[1], hw[2], hw[3], hw[4], hw[5])
}

// RoCEGIDs lists the GIDs a dual-mode (RoCE v1 and v2) NIC shows for a
// netdev with the given addresses: a v1 and a v2 entry per address,
// link-local first.
func RoCEGIDs(netdev, mac string, addrs ...string) []GIDEntry {
	gids := []string{LinkLocalGID(mac)}
	for _, a := range addrs {
		gids = append(gids, GID(a))
	}
	var out []GIDEntry
	for i, g := range gids {
		out = append(out,
			GIDEntry{Index: 2 * i, GID: g, Type: "IB/RoCE v1", Netdev: netdev},
			GIDEntry{Index: 2*i + 1, GID: g, Type: "RoCE v2", Netdev: netdev})
	}
	return out
}

// Counter files by driver: mlx5 (drivers/infiniband/hw/mlx5/counters.c,
// with congestion counters) and rxe (from the rxe capture,
// sysfs_rxe0_hw_counters_ls.txt). lifespan is an attribute, not a counter.
var (
	MLX5HWCounters = []string{"duplicate_request", "implied_nak_seq_err", "lifespan", "local_ack_timeout_err",
		"np_cnp_sent", "np_ecn_marked_roce_packets", "out_of_buffer", "out_of_sequence", "packet_seq_err",
		"req_cqe_error", "resp_cqe_error", "rnr_nak_retry_err", "rp_cnp_handled", "rp_cnp_ignored",
		"rx_atomic_requests", "rx_read_requests", "rx_write_requests"}
	PMACounters = []string{"excessive_buffer_overrun_errors", "link_downed", "link_error_recovery",
		"local_link_integrity_errors", "port_rcv_constraint_errors", "port_rcv_data", "port_rcv_errors",
		"port_rcv_packets", "port_rcv_remote_physical_errors", "port_rcv_switch_relay_errors",
		"port_xmit_constraint_errors", "port_xmit_data", "port_xmit_discards", "port_xmit_packets",
		"port_xmit_wait", "symbol_error", "VL15_dropped"}
	RXEHWCounters = []string{"ack_deferred", "completer_retry_err", "duplicate_request", "lifespan", "link_downed",
		"out_of_seq_request", "rcvd_pkts", "rcvd_rnr_err", "rcvd_seq_err", "rdma_recvs", "rdma_sends",
		"retry_exceeded_err", "retry_rnr_exceeded_err", "send_err", "send_rnr_err", "sent_pkts"}
)

const (
	pcieGen5 = "32.0 GT/s PCIe"
	pcieGen4 = "16.0 GT/s PCIe"
	pcieGen1 = "2.5 GT/s PCIe"
)

func activePort(rate string, gids []GIDEntry) RDMAPort {
	return RDMAPort{State: "4: ACTIVE", PhysState: "5: LinkUp", Rate: rate, LinkLayer: "Ethernet", GIDs: gids, GIDTableSize: 16}
}

// DGXH100 is an 8-GPU / 8-NIC server like a DGX H100: two sockets, one host
// bridge per GPU tray slot, each slot a cascade of two PCIe switches with a
// GPU and its 400G ConnectX-7 behind the second switch. Two 200G storage
// NICs hang off the first switch of slots 1 and 5, so in PCI order they
// interleave with the compute NICs; four NVSwitches (NVIDIA functions that
// are not GPUs) and an Intel management NIC without RDMA complete it. RDMA
// device names do not follow PCI order. GPUs idle at 2.5 GT/s, as real ones
// do. Compute NICs carry a /31 and a /127 address in their GID tables.
func DGXH100(dir string) (*Tree, error) {
	h := DGXHost{Node: "gpu-017"}
	for slot := 0; slot < DGXRails; slot++ {
		h.Rails = append(h.Rails, DGXRail{IPs: []string{fmt.Sprintf("10.%d.0.35", slot), fmt.Sprintf("fc00:0:0:%d::23", slot+1)}})
	}
	return dgx(dir, h, true)
}

// MixedVendor is a two-socket PCIe server with four L40S GPUs and RDMA NICs
// from three vendors: ConnectX-6 Dx (mlx5), BCM57508 (bnxt_re) and E810
// (irdma). GPU0 and its NIC sit on different root ports (PHB), GPU1 and
// GPU2 share a switch with a Broadcom NIC (PIX), GPU3 has no NIC on its
// host bridge (NODE). One Broadcom NIC trained at x8 of x16, the other's
// port is down.
func MixedVendor(dir string) (*Tree, error) {
	t := New(dir)
	gpuFn := PCIFunc{Vendor: 0x10de, Device: 0x26b9, Class: 0x030200, Driver: "nvidia", Speed: pcieGen1, MaxSpeed: pcieGen4, Width: 16, MaxWidth: 16}
	cx6 := PCIFunc{Vendor: 0x15b3, Device: 0x101d, Class: 0x020000, Driver: "mlx5_core", Speed: pcieGen4, MaxSpeed: pcieGen4, Width: 16, MaxWidth: 16}
	bcm := PCIFunc{Vendor: 0x14e4, Device: 0x1750, Class: 0x020000, Driver: "bnxt_en", Speed: pcieGen4, MaxSpeed: pcieGen4, Width: 16, MaxWidth: 16}

	hb0 := t.HostBridge("0000:17", 0)
	hb0.Bridge("0000:17:01.0", 0x8086, 0x347a).Function("0000:18:00.0", gpuFn)
	mlx0 := hb0.Bridge("0000:17:02.0", 0x8086, 0x347b).Function("0000:19:00.0", cx6)
	mlx0.AddNetdev("ens1f0np0", Netdev{MAC: "0c:42:a1:11:22:30", MTU: 9000})
	mlx0.AddRDMA("mlx5_0", RDMADevice{
		NodeGUID: GUIDFromMAC("0c:42:a1:11:22:30"), FWVer: "22.36.1010", HCAType: "MT4125", BoardID: "MT_0000000359", NodeDesc: "l40s-03 mlx5_0", HWCounters: MLX5HWCounters, Counters: PMACounters,
		Ports: []RDMAPort{activePort("100 Gb/sec (4X EDR)", RoCEGIDs("ens1f0np0", "0c:42:a1:11:22:30", "10.0.0.3"))},
	})

	hb1 := t.HostBridge("0000:3a", 0)
	usp := hb1.Bridge("0000:3a:01.0", 0x8086, 0x347a).Bridge("0000:3b:00.0", 0x1000, 0xc010)
	usp.Bridge("0000:3c:00.0", 0x1000, 0xc010).Function("0000:3d:00.0", gpuFn)
	degraded := bcm
	degraded.Width = 8
	b0 := usp.Bridge("0000:3c:01.0", 0x1000, 0xc010).Function("0000:3e:00.0", degraded)
	b0.AddNetdev("ens3f0np0", Netdev{MAC: "00:0a:f7:aa:bb:01", MTU: 9000})
	b0.AddRDMA("bnxt_re0", RDMADevice{
		NodeGUID: GUIDFromMAC("00:0a:f7:aa:bb:01"), FWVer: "227.1.111.0", NodeDesc: "l40s-03 bnxt_re0",
		Ports: []RDMAPort{activePort("200 Gb/sec (4X HDR)", RoCEGIDs("ens3f0np0", "00:0a:f7:aa:bb:01"))},
	})

	hb2 := t.HostBridge("0000:5d", 1)
	usp2 := hb2.Bridge("0000:5d:01.0", 0x8086, 0x347a).Bridge("0000:5e:00.0", 0x1000, 0xc010)
	usp2.Bridge("0000:5f:00.0", 0x1000, 0xc010).Function("0000:60:00.0", gpuFn)
	b1 := usp2.Bridge("0000:5f:01.0", 0x1000, 0xc010).Function("0000:61:00.0", bcm)
	b1.AddNetdev("ens4f0np0", Netdev{MAC: "00:0a:f7:aa:bb:02", MTU: 1500, Operstate: "down"})
	down := RDMAPort{State: "1: DOWN", PhysState: "3: Disabled", Rate: "10 Gb/sec (4X SDR)", LinkLayer: "Ethernet",
		GIDs: RoCEGIDs("ens4f0np0", "00:0a:f7:aa:bb:02"), GIDTableSize: 8}
	b1.AddRDMA("bnxt_re1", RDMADevice{NodeGUID: GUIDFromMAC("00:0a:f7:aa:bb:02"), FWVer: "227.1.111.0", NodeDesc: "l40s-03 bnxt_re1", Ports: []RDMAPort{down}})

	hb3 := t.HostBridge("0000:85", 1)
	hb3.Bridge("0000:85:01.0", 0x8086, 0x347a).Function("0000:86:00.0", gpuFn)

	hb4 := t.HostBridge("0000:97", 1)
	e810 := hb4.Bridge("0000:97:01.0", 0x8086, 0x347a).Function("0000:98:00.0", PCIFunc{
		Vendor: 0x8086, Device: 0x1593, Class: 0x020000, Driver: "ice", Speed: pcieGen4, MaxSpeed: pcieGen4, Width: 16, MaxWidth: 16,
	})
	e810.AddNetdev("ens5f0", Netdev{MAC: "b4:96:91:00:00:10", MTU: 9000})
	e810.AddRDMA("rocep152s0f0", RDMADevice{
		NodeGUID: GUIDFromMAC("b4:96:91:00:00:10"), FWVer: "1.7", HCAType: "E810", NodeDesc: "l40s-03 rocep152s0f0",
		Ports: []RDMAPort{activePort("100 Gb/sec (4X EDR)", RoCEGIDs("ens5f0", "b4:96:91:00:00:10"))},
	})

	hb5 := t.HostBridge("0000:ae", 1)
	mlx1 := hb5.Bridge("0000:ae:01.0", 0x8086, 0x347a).Function("0000:af:00.0", cx6)
	mlx1.AddNetdev("ens6f0np0", Netdev{MAC: "0c:42:a1:11:22:40", MTU: 9000})
	mlx1.AddRDMA("mlx5_1", RDMADevice{
		NodeGUID: GUIDFromMAC("0c:42:a1:11:22:40"), FWVer: "22.36.1010", HCAType: "MT4125", BoardID: "MT_0000000359", NodeDesc: "l40s-03 mlx5_1", HWCounters: MLX5HWCounters, Counters: PMACounters,
		Ports: []RDMAPort{activePort("100 Gb/sec (4X EDR)", RoCEGIDs("ens6f0np0", "0c:42:a1:11:22:40"))},
	})
	t.VirtualNetdev("lo", Netdev{MAC: "00:00:00:00:00:00", MTU: 65536, Operstate: "unknown"})
	return t, t.Err()
}

// hostBridgeFunction adds the CPU's host bridge function 0000:00:00.0, which
// every PC-architecture host has.
func hostBridgeFunction(hb *Node) {
	hb.Function("0000:00:00.0", PCIFunc{Vendor: 0x8086, Device: 0x1237, Class: 0x060000})
}

// SoftRoCE is the soft-RoCE lab of shared/captures/rxe-debian-6.1: rxe0 on
// vethA and rxe1 on vethB, a veth pair with a /31 and a /127, no PCI NICs
// and no GPUs. Attribute values are the captured ones.
func SoftRoCE(dir string) (*Tree, error) {
	t := New(dir)
	hostBridgeFunction(t.HostBridge("0000:00", -1))
	t.VirtualNetdev("lo", Netdev{MAC: "00:00:00:00:00:00", MTU: 65536, Operstate: "unknown"})
	t.VirtualNetdev("vethA", Netdev{MAC: "2e:d6:ff:f2:78:58", MTU: 9000})
	t.VirtualNetdev("vethB", Netdev{MAC: "3a:69:db:2e:8a:09", MTU: 9000})
	rxePort := func(netdev string, gids ...string) RDMAPort {
		p := RDMAPort{State: "4: ACTIVE", PhysState: "5: LinkUp", Rate: "10 Gb/sec (1X FDR10)", LinkLayer: "Ethernet", GIDTableSize: 8}
		for i, g := range gids {
			p.GIDs = append(p.GIDs, GIDEntry{Index: i, GID: g, Type: "RoCE v2", Netdev: netdev})
		}
		return p
	}
	t.SoftRDMA("rxe0", "vethA", RDMADevice{NodeGUID: "2cd6:ffff:fef2:7858", NodeDesc: "rxe", HWCounters: RXEHWCounters, Ports: []RDMAPort{rxePort("vethA",
		"fe80:0000:0000:0000:2cd6:ffff:fef2:7858", "0000:0000:0000:0000:0000:ffff:0a00:0000", "fd00:0000:0000:0000:0000:0000:0000:0000")}})
	t.SoftRDMA("rxe1", "vethB", RDMADevice{NodeGUID: "3869:dbff:fe2e:8a09", NodeDesc: "rxe", HWCounters: RXEHWCounters, Ports: []RDMAPort{rxePort("vethB",
		"fe80:0000:0000:0000:3869:dbff:fe2e:8a09", "0000:0000:0000:0000:0000:ffff:0a00:0001", "fd00:0000:0000:0000:0000:0000:0000:0001")}})
	return t, t.Err()
}

// Empty is a host with no GPUs and no RDMA devices: a loopback interface
// and the CPU's host bridge function.
func Empty(dir string) (*Tree, error) {
	t := New(dir)
	hostBridgeFunction(t.HostBridge("0000:00", -1))
	t.VirtualNetdev("lo", Netdev{MAC: "00:00:00:00:00:00", MTU: 65536, Operstate: "unknown"})
	return t, t.Err()
}
