package nic

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/roce-agent/roce-agent/nic/sysfstest"
)

func discoverFixture(t *testing.T, host string) ([]NIC, []string) {
	t.Helper()
	s := mustFS(t, filepath.Join("..", "testdata", "sysfs", host, "sys"))
	w := &Warnings{}
	nics, err := Discover(s, SysfsLister{FS: s}, w)
	if err != nil {
		t.Fatal(err)
	}
	return nics, w.Strings()
}

// The soft-RoCE fixture carries the values captured from rxe on Debian's
// 6.1 kernel (shared/captures/rxe-debian-6.1: gid_table_rxe0.txt,
// sysfs_rxe0_attrs.txt, ip_addr.txt).
func TestDiscoverSoftRoCE(t *testing.T) {
	nics, warnings := discoverFixture(t, "soft-roce")
	if len(warnings) != 0 {
		t.Errorf("warnings: %v", warnings)
	}
	if len(nics) != 2 {
		t.Fatalf("got %d NICs, want rxe0 and rxe1", len(nics))
	}
	rxe0 := nics[0]
	if rxe0.RDMADevice != "rxe0" || rxe0.Netdev != "vethA" || rxe0.PCI != "" || !rxe0.Software || rxe0.Driver != "rxe" {
		t.Errorf("rxe0 = %+v", rxe0)
	}
	if rxe0.NodeGUID != "2cd6:ffff:fef2:7858" || rxe0.MAC != "2e:d6:ff:f2:78:58" || rxe0.MTU != 9000 {
		t.Errorf("rxe0 identity = guid %s mac %s mtu %d", rxe0.NodeGUID, rxe0.MAC, rxe0.MTU)
	}
	if rxe0.State != "ACTIVE" || rxe0.PhysState != "LinkUp" || rxe0.RateGbps != 10 || rxe0.LinkLayer != "Ethernet" {
		t.Errorf("rxe0 port = %+v", rxe0.Port)
	}
	want := []GID{
		{0, "fe80:0000:0000:0000:2cd6:ffff:fef2:7858", "fe80::2cd6:ffff:fef2:7858", "RoCE v2", "vethA"},
		{1, "0000:0000:0000:0000:0000:ffff:0a00:0000", "10.0.0.0", "RoCE v2", "vethA"},
		{2, "fd00:0000:0000:0000:0000:0000:0000:0000", "fd00::", "RoCE v2", "vethA"},
	}
	if len(rxe0.GIDs) != len(want) {
		t.Fatalf("rxe0 GIDs = %+v, want %+v (empty entries skipped)", rxe0.GIDs, want)
	}
	for i := range want {
		if rxe0.GIDs[i] != want[i] {
			t.Errorf("GID %d = %+v, want %+v", i, rxe0.GIDs[i], want[i])
		}
	}
}

func TestDiscoverMixedVendor(t *testing.T) {
	nics, warnings := discoverFixture(t, "mixed-vendor")
	if len(warnings) != 0 {
		t.Errorf("warnings: %v", warnings)
	}
	got := map[string]NIC{}
	var order []string
	for _, n := range nics {
		got[n.RDMADevice] = n
		order = append(order, n.RDMADevice)
	}
	if strings.Join(order, " ") != "mlx5_0 bnxt_re0 bnxt_re1 rocep152s0f0 mlx5_1" {
		t.Errorf("order = %v, want PCI address order", order)
	}
	b0 := got["bnxt_re0"]
	if b0.Driver != "bnxt_en" || b0.Vendor != "Broadcom" || b0.PCI != "0000:3e:00.0" || b0.Netdev != "ens3f0np0" || b0.NUMA != 0 {
		t.Errorf("bnxt_re0 = %+v", b0)
	}
	if b0.PCIe == nil || !b0.PCIe.WidthDegraded() || b0.PCIe.SpeedDegraded() {
		t.Errorf("bnxt_re0 PCIe = %+v, want width degraded only", b0.PCIe)
	}
	if b1 := got["bnxt_re1"]; b1.State != "DOWN" || b1.PhysState != "Disabled" || b1.Active() {
		t.Errorf("bnxt_re1 port = %+v", b1.Port)
	}
	m0 := got["mlx5_0"]
	if m0.Firmware != "22.36.1010" || m0.HCAType != "MT4125" || m0.Vendor != "Mellanox" || m0.RateGbps != 100 {
		t.Errorf("mlx5_0 = %+v", m0)
	}
	// Dual-mode NICs list a v1 and a v2 entry per address.
	if len(m0.GIDs) != 4 || m0.GIDs[3].IP != "10.0.0.3" || !m0.GIDs[3].IsRoCEv2() || m0.GIDs[2].Type != "IB/RoCE v1" {
		t.Errorf("mlx5_0 GIDs = %+v", m0.GIDs)
	}
}

// A damaged attribute must never hide the device: it is reported with the
// field left empty and a warning naming the file.
func TestDiscoverBadAttributes(t *testing.T) {
	for _, tc := range []struct {
		name    string
		damage  func(tree *sysfstest.Tree, dev string)
		check   func(n NIC) bool
		warning string
	}{
		{"malformed state", func(tr *sysfstest.Tree, dev string) { tr.WriteFile(dev+"/ports/1/state", "ACTIVE") },
			func(n NIC) bool { return n.State == "" && n.PhysState == "LinkUp" }, "malformed %ROOT%/class/infiniband/mlx5_0/ports/1/state"},
		{"missing rate", func(tr *sysfstest.Tree, dev string) { tr.Remove(dev + "/ports/1/rate") },
			func(n NIC) bool { return n.Rate == "" && n.State == "ACTIVE" }, "missing"},
		{"garbage numa", func(tr *sysfstest.Tree, _ string) {
			tr.WriteFile("/devices/pci0000:17/0000:17:01.0/0000:18:00.0/numa_node", "zero")
		}, func(n NIC) bool { return n.NUMA == -1 && n.PCI == "0000:18:00.0" }, "numa_node"},
		{"unreadable mtu", func(tr *sysfstest.Tree, _ string) {
			dir := "/devices/pci0000:17/0000:17:01.0/0000:18:00.0/net/eth0/mtu"
			tr.Remove(dir)
			tr.WriteFile(dir+"/x", "") // a directory where a file should be: read fails
		}, func(n NIC) bool { return n.MTU == 0 && n.Netdev == "eth0" }, "unreadable"},
		{"binary gid", func(tr *sysfstest.Tree, dev string) { tr.WriteRaw(dev+"/ports/1/gids/1", []byte{0xff, 0, 0x80}) },
			func(n NIC) bool { return len(n.GIDs) == 0 }, "gids/1"},
		{"no ports", func(tr *sysfstest.Tree, dev string) { tr.Remove(dev + "/ports") },
			func(n NIC) bool { return n.RDMADevice == "mlx5_0" }, "has no ports"},
		{"bad guid", func(tr *sysfstest.Tree, dev string) { tr.WriteFile(dev+"/node_guid", "not-a-guid") },
			func(n NIC) bool { return n.NodeGUID == "" && n.State == "ACTIVE" }, "node_guid"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tree := sysfstest.New(t.TempDir())
			fn := tree.HostBridge("0000:17", 0).Bridge("0000:17:01.0", 0x8086, 1).Function("0000:18:00.0",
				sysfstest.PCIFunc{Vendor: 0x15b3, Device: 0x1021, Class: 0x020000, Driver: "mlx5_core"})
			fn.AddNetdev("eth0", sysfstest.Netdev{MAC: "02:00:00:00:00:01", MTU: 9000})
			fn.AddRDMA("mlx5_0", sysfstest.RDMADevice{NodeGUID: "0200:00ff:fe00:0001", Ports: []sysfstest.RDMAPort{{
				State: "4: ACTIVE", PhysState: "5: LinkUp", Rate: "400 Gb/sec (4X NDR)", LinkLayer: "Ethernet",
				GIDs: sysfstest.RoCEGIDs("eth0", "02:00:00:00:00:01")[1:2],
			}}})
			tc.damage(tree, "/devices/pci0000:17/0000:17:01.0/0000:18:00.0/infiniband/mlx5_0")
			if tree.Err() != nil {
				t.Fatal(tree.Err())
			}
			s := mustFS(t, tree.Root())
			w := &Warnings{}
			nics, err := Discover(s, SysfsLister{FS: s}, w)
			if err != nil {
				t.Fatal(err)
			}
			if len(nics) != 1 || !tc.check(nics[0]) {
				t.Fatalf("device not reported as expected: %+v", nics)
			}
			want := strings.ReplaceAll(tc.warning, "%ROOT%", tree.Root())
			joined := strings.Join(w.Strings(), "\n")
			if !strings.Contains(joined, want) {
				t.Errorf("warnings %q do not name %q", w.Strings(), want)
			}
		})
	}
}

func TestDiscoverEmptyHost(t *testing.T) {
	nics, warnings := discoverFixture(t, "empty")
	if len(nics) != 0 || len(warnings) != 0 {
		t.Errorf("empty host: %v %v", nics, warnings)
	}
	// A tree with no /class/infiniband at all is a host without RDMA.
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "class", "net"), 0o755); err != nil {
		t.Fatal(err)
	}
	s := mustFS(t, dir)
	nics, err := Discover(s, SysfsLister{FS: s}, &Warnings{})
	if err != nil || len(nics) != 0 {
		t.Errorf("no infiniband class: %v %v", nics, err)
	}
}

func TestNaturalLess(t *testing.T) {
	if !NaturalLess("mlx5_2", "mlx5_10") || NaturalLess("mlx5_10", "mlx5_2") || !NaturalLess("bnxt_re0", "mlx5_0") {
		t.Error("NaturalLess order wrong")
	}
}

// Trees made by other tools may lack the links the kernel adds inside a
// device directory; the PCI function and netdev are still found.
func TestDiscoverWithoutDeviceLinks(t *testing.T) {
	tree := sysfstest.New(t.TempDir())
	fn := tree.HostBridge("0000:17", 1).Bridge("0000:17:01.0", 0x8086, 1).Function("0000:18:00.0",
		sysfstest.PCIFunc{Vendor: 0x15b3, Device: 0x1021, Class: 0x020000, Driver: "mlx5_core"})
	fn.AddNetdev("eth0", sysfstest.Netdev{MAC: "02:00:00:00:00:01", MTU: 9000})
	fn.AddRDMA("mlx5_0", sysfstest.RDMADevice{Ports: []sysfstest.RDMAPort{{State: "4: ACTIVE", PhysState: "5: LinkUp", Rate: "400 Gb/sec (4X NDR)", LinkLayer: "Ethernet"}}})
	dev := "/devices/pci0000:17/0000:17:01.0/0000:18:00.0"
	// No infiniband/mlx5_0/device link, and the netdev only in /class/net
	// (its directory moved out of the PCI function's net/).
	tree.Remove(dev + "/infiniband/mlx5_0/device")
	tree.Remove("/class/net/eth0")
	tree.Remove(dev + "/net")
	tree.VirtualNetdev("eth0", sysfstest.Netdev{MAC: "02:00:00:00:00:01", MTU: 9000})
	tree.Symlink("/devices/virtual/net/eth0/device", dev)
	if tree.Err() != nil {
		t.Fatal(tree.Err())
	}
	s := mustFS(t, tree.Root())
	w := &Warnings{}
	nics, err := Discover(s, SysfsLister{FS: s}, w)
	if err != nil || len(nics) != 1 {
		t.Fatalf("%v %v", nics, err)
	}
	if n := nics[0]; n.PCI != "0000:18:00.0" || n.NUMA != 1 || n.Netdev != "eth0" || n.MTU != 9000 || n.Driver != "mlx5_core" {
		t.Errorf("NIC = %+v (warnings %v)", n, w.Strings())
	}
}

// A netdev found only through /class/net, whose directory has no device
// link but sits below the PCI function (<pci>/net/<name>), still belongs to
// the NIC.
func TestDiscoverNetdevByClassNetPath(t *testing.T) {
	tree := sysfstest.New(t.TempDir())
	fn := tree.HostBridge("0000:17", 0).Bridge("0000:17:01.0", 0x8086, 1).Function("0000:18:00.0",
		sysfstest.PCIFunc{Vendor: 0x15b3, Device: 0x1021, Class: 0x020000, Driver: "mlx5_core"})
	fn.AddNetdev("eth7", sysfstest.Netdev{MAC: "02:00:00:00:00:07", MTU: 4200})
	fn.AddRDMA("mlx5_0", sysfstest.RDMADevice{Ports: []sysfstest.RDMAPort{{State: "4: ACTIVE", PhysState: "5: LinkUp", Rate: "400 Gb/sec (4X NDR)", LinkLayer: "Ethernet"}}})
	dev := "/devices/pci0000:17/0000:17:01.0/0000:18:00.0"
	tree.Remove(dev + "/net/eth7/device")
	if tree.Err() != nil {
		t.Fatal(tree.Err())
	}
	s := mustFS(t, tree.Root())
	if got := s.classNetBelow(dev); len(got) != 1 || got[0] != "eth7" {
		t.Errorf("classNetBelow = %v", got)
	}
}
