package diag

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock"

	"github.com/roce-agent/roce-agent/gpu/gputest"
	"github.com/roce-agent/roce-agent/nic/sysfstest"
)

// DGXH100 addresses: slot n's host bridge is b, its GPU at b+5, its NIC
// at b+6, both below the second switch's downstream ports b+4:00.0 and
// b+4:01.0.
var dgxBus = []int{0x15, 0x37, 0x48, 0x59, 0x95, 0xb7, 0xc8, 0xd9}

func dgxGPU(slot int) string { return fmt.Sprintf("0000:%02x:00.0", dgxBus[slot]+5) }
func dgxNIC(slot int) string { return fmt.Sprintf("0000:%02x:00.0", dgxBus[slot]+6) }
func dgxDSP(slot, port int) string {
	return fmt.Sprintf("0000:%02x:%02x.0", dgxBus[slot]+4, port)
}

// pcieAttr is a device attribute's path through /bus/pci/devices.
func pcieAttr(addr, name string) string { return "/bus/pci/devices/" + addr + "/" + name }

func TestPCIeWidth(t *testing.T) {
	rs := check(t, dgx(t, nil), "PCIE-WIDTH-001")
	all(t, rs, Pass)
	if len(rs) != 16 {
		t.Errorf("%d results, want 16 (8 GPUs, 8 rail NICs)", len(rs))
	}
	rs = check(t, dgx(t, func(tr *sysfstest.Tree) {
		tr.WriteFile(pcieAttr(dgxNIC(2), "current_link_width"), "8")
		tr.WriteFile(pcieAttr(dgxGPU(5), "current_link_width"), "4")
	}), "PCIE-WIDTH-001")
	r := want(t, rs, dgxNIC(2), Fail, "x8", "x16", "mlx5_4")
	if r.Rail == nil || *r.Rail != 2 {
		t.Errorf("NIC result on rail %v, want 2", r.Rail)
	}
	want(t, rs, dgxGPU(5), Fail, "x4", "x16", "GPU 5")
	want(t, rs, dgxNIC(0), Pass)
	// The mixed-vendor host's Broadcom NIC trained at x8.
	rs = check(t, fixture(t, sysfstest.MixedVendor, nil, nil), "PCIE-WIDTH-001")
	want(t, rs, "0000:3e:00.0", Fail, "x8", "x16")
}

func TestPCIeWidthGarbage(t *testing.T) {
	rs := check(t, dgx(t, func(tr *sysfstest.Tree) {
		tr.WriteFile(pcieAttr(dgxNIC(1), "current_link_width"), "\x00\xffwide")
		tr.WriteFile(pcieAttr(dgxGPU(3), "max_link_width"), "-1")
		tr.Remove(pcieAttr(dgxGPU(4), "max_link_width"))
		tr.WriteFile(pcieAttr(dgxGPU(6), "current_link_width"), "0")
	}), "PCIE-WIDTH-001")
	want(t, rs, dgxNIC(1), Unknown, "current_link_width", "wide")
	want(t, rs, dgxGPU(3), Unknown, "max_link_width", `"-1"`)
	want(t, rs, dgxGPU(4), Skip, "max_link_width")
	want(t, rs, dgxGPU(6), Unknown, "not trained")
}

// dgxNVML is NVML's view of the DGX fixture with each GPU's performance
// state, utilisation and link generations set by state.
func dgxNVML(t *testing.T, state func(i int, d *mock.Device)) *mock.Interface {
	t.Helper()
	lib := gputest.DGXH100()
	for i := 0; i < 8; i++ {
		d, ret := lib.DeviceGetHandleByIndex(i)
		if ret != nvml.SUCCESS {
			t.Fatal(ret)
		}
		md := d.(*mock.Device)
		md.GetPerformanceStateFunc = func() (nvml.Pstates, nvml.Return) { return nvml.PSTATE_8, nvml.SUCCESS }
		md.GetUtilizationRatesFunc = func() (nvml.Utilization, nvml.Return) { return nvml.Utilization{}, nvml.SUCCESS }
		md.GetCurrPcieLinkGenerationFunc = func() (int, nvml.Return) { return 1, nvml.SUCCESS }
		md.GetMaxPcieLinkGenerationFunc = func() (int, nvml.Return) { return 5, nvml.SUCCESS }
		if state != nil {
			state(i, md)
		}
	}
	return lib
}

func TestPCIeSpeed(t *testing.T) {
	// Idle GPUs at 2.5 GT/s are normal.
	rs := check(t, dgx(t, nil), "PCIE-SPEED-001")
	all(t, rs, Pass)
	want(t, rs, dgxGPU(0), Pass, "2.5 GT/s", "32.0 GT/s", "idle")
	rs = check(t, dgx(t, func(tr *sysfstest.Tree) {
		tr.WriteFile(pcieAttr(dgxNIC(4), "current_link_speed"), "16.0 GT/s PCIe")
	}), "PCIE-SPEED-001")
	want(t, rs, dgxNIC(4), Fail, "16.0 GT/s", "32.0 GT/s", "mlx5_6")
	want(t, rs, dgxGPU(4), Pass)

	// NVML says the GPUs are idle: PASS, saying so.
	e := fixture(t, sysfstest.DGXH100, nil, dgxNVML(t, nil))
	rs = check(t, e, "PCIE-SPEED-001")
	all(t, rs, Pass)
	want(t, rs, dgxGPU(1), Pass, "idle", "P8")

	// GPU 2 is busy and still at Gen1: WARN. GPU 3 is busy at Gen5 per
	// NVML (sysfs read before it trained up): PASS. GPU 5 is at P0 with
	// no link generation from NVML: WARN on sysfs's word.
	e = fixture(t, sysfstest.DGXH100, nil, dgxNVML(t, func(i int, d *mock.Device) {
		switch i {
		case 2:
			d.GetPerformanceStateFunc = func() (nvml.Pstates, nvml.Return) { return nvml.PSTATE_0, nvml.SUCCESS }
			d.GetUtilizationRatesFunc = func() (nvml.Utilization, nvml.Return) { return nvml.Utilization{Gpu: 87}, nvml.SUCCESS }
		case 3:
			d.GetUtilizationRatesFunc = func() (nvml.Utilization, nvml.Return) { return nvml.Utilization{Gpu: 40}, nvml.SUCCESS }
			d.GetCurrPcieLinkGenerationFunc = func() (int, nvml.Return) { return 5, nvml.SUCCESS }
		case 5:
			d.GetPerformanceStateFunc = func() (nvml.Pstates, nvml.Return) { return nvml.PSTATE_0, nvml.SUCCESS }
			d.GetCurrPcieLinkGenerationFunc = func() (int, nvml.Return) { return 0, nvml.ERROR_NOT_SUPPORTED }
		}
	}))
	rs = check(t, e, "PCIE-SPEED-001")
	want(t, rs, dgxGPU(2), Warn, "P0", "87% utilisation", "Gen1", "Gen5", "degraded under load")
	want(t, rs, dgxGPU(3), Pass, "Gen5 of Gen5")
	want(t, rs, dgxGPU(5), Warn, "2.5 GT/s", "32.0 GT/s", "P0")
	want(t, rs, dgxGPU(0), Pass, "idle")

	// An NVML mock without the activity functions: the GPU's load is
	// unknown, and it still passes.
	rs = check(t, fixture(t, sysfstest.DGXH100, nil, gputest.DGXH100()), "PCIE-SPEED-001")
	all(t, rs, Pass)
	want(t, rs, dgxGPU(0), Pass, "not known")
}

func TestPCIeSpeedGarbage(t *testing.T) {
	rs := check(t, dgx(t, func(tr *sysfstest.Tree) {
		tr.WriteFile(pcieAttr(dgxNIC(3), "current_link_speed"), "fast")
		tr.WriteFile(pcieAttr(dgxGPU(1), "max_link_speed"), "\xff\xfe GT/s")
		tr.WriteFile(pcieAttr(dgxNIC(6), "current_link_speed"), "Unknown")
	}), "PCIE-SPEED-001")
	want(t, rs, dgxNIC(3), Unknown, "current_link_speed", `"fast"`)
	want(t, rs, dgxGPU(1), Unknown, "max_link_speed")
	want(t, rs, dgxNIC(6), Unknown, "Unknown")
}

// configAll writes cfg as the config space of every bridge of the tree.
func configAll(t *testing.T, tr *sysfstest.Tree, cfg []byte) {
	dir := filepath.Join(tr.Root(), "bus/pci/devices")
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, ent := range ents {
		class, err := os.ReadFile(filepath.Join(dir, ent.Name(), "class"))
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasPrefix(string(class), "0x0604") {
			tr.PCIConfig(ent.Name(), cfg)
		}
	}
}

func acs(v uint16) *uint16 { return &v }

func TestPCIeACS(t *testing.T) {
	// A tree without config files: nothing to read, SKIP.
	all(t, check(t, dgx(t, nil), "PCIE-ACS-001"), Skip)

	// ACS present with no redirect: the two downstream ports below each
	// rail's switch pass.
	rs := check(t, dgx(t, func(tr *sysfstest.Tree) { configAll(t, tr, sysfstest.ConfigSpace(acs(0))) }), "PCIE-ACS-001")
	all(t, rs, Pass)
	if len(rs) != 16 {
		t.Errorf("%d results, want 16 (2 downstream ports per rail)", len(rs))
	}
	want(t, rs, dgxDSP(0, 0), Pass, "ReqRedir-")
	want(t, rs, dgxDSP(0, 1), Pass)

	// Linux's default when an IOMMU is on (SV RR CR UF) on rail 3's GPU
	// port, Egress Control on rail 6's NIC port.
	rs = check(t, dgx(t, func(tr *sysfstest.Tree) {
		configAll(t, tr, sysfstest.ConfigSpace(acs(0)))
		tr.PCIConfig(dgxDSP(3, 0), sysfstest.ConfigSpace(acs(sysfstest.ACSLinuxDefault)))
		tr.PCIConfig(dgxDSP(6, 1), sysfstest.ConfigSpace(acs(sysfstest.ACSEgressCtrl|sysfstest.ACSSrcValid)))
	}), "PCIE-ACS-001")
	r := want(t, rs, dgxDSP(3, 0), Fail, "ACSCtl 0x001d", "ReqRedir+", "CmpltRedir+", "P2P Request Redirect", "GPU 3 and mlx5_5")
	if r.Rail == nil || *r.Rail != 3 {
		t.Errorf("result on rail %v, want 3", r.Rail)
	}
	want(t, rs, dgxDSP(6, 1), Fail, "EgressCtrl+", "P2P Egress Control")
	want(t, rs, dgxDSP(3, 1), Pass)

	// Bridges without an ACS capability, or without extended config
	// space at all, pass.
	rs = check(t, dgx(t, func(tr *sysfstest.Tree) {
		configAll(t, tr, sysfstest.ConfigSpace(nil))
		tr.PCIConfig(dgxDSP(1, 0), sysfstest.ConfigSpace(nil)[:256])
	}), "PCIE-ACS-001")
	all(t, rs, Pass)
	want(t, rs, dgxDSP(0, 0), Pass, "no ACS capability")
	want(t, rs, dgxDSP(1, 0), Pass, "256-byte")

	// A rail whose GPU and NIC meet at the root complex: no switch port
	// to check.
	rs = check(t, fixture(t, sysfstest.MixedVendor, func(tr *sysfstest.Tree) { configAll(t, tr, sysfstest.ConfigSpace(acs(0))) }, nil), "PCIE-ACS-001")
	want(t, rs, "ens1f0np0", Skip, "root complex", "PHB")
	want(t, rs, "ens5f0", Skip, "NODE")
	want(t, rs, "0000:3c:00.0", Pass)
	want(t, rs, "0000:3c:01.0", Pass)
}

func TestPCIeACSPrivilege(t *testing.T) {
	e := dgx(t, func(tr *sysfstest.Tree) { configAll(t, tr, sysfstest.ConfigSpace(acs(0))[:64]) })
	e.Privileged = false
	rs := check(t, e, "PCIE-ACS-001")
	all(t, rs, Skip)
	for _, r := range rs {
		if !r.NeedsPrivilege {
			t.Errorf("%s: not marked as needing privilege", r.Subject)
		}
	}
	want(t, rs, dgxDSP(2, 0), Skip, "64 bytes", "root")
}

func TestPCIeACSGarbage(t *testing.T) {
	loop := sysfstest.ConfigSpace(acs(0))
	// AER's next pointer back to itself.
	loop[0x102], loop[0x103] = 0x01, 0x10
	outside := sysfstest.ConfigSpace(nil)
	outside[0x103] = 0xff // next pointer 0xff8: past a 0x200-byte read
	dead := make([]byte, 4096)
	for i := range dead {
		dead[i] = 0xff
	}
	rs := check(t, dgx(t, func(tr *sysfstest.Tree) {
		configAll(t, tr, sysfstest.ConfigSpace(acs(0)))
		tr.PCIConfig(dgxDSP(0, 0), loop)
		tr.PCIConfig(dgxDSP(1, 0), outside[:0x200])
		tr.PCIConfig(dgxDSP(2, 0), dead)
		tr.PCIConfig(dgxDSP(3, 0), []byte("garbage"))
		tr.PCIConfig(dgxDSP(4, 0), sysfstest.ConfigSpace(acs(0))[:0x14c])
	}), "PCIE-ACS-001")
	want(t, rs, dgxDSP(0, 0), Unknown, "loops")
	want(t, rs, dgxDSP(1, 0), Unknown, "outside")
	want(t, rs, dgxDSP(2, 0), Unknown, "all ones")
	want(t, rs, dgxDSP(3, 0), Unknown, "7 bytes")
	want(t, rs, dgxDSP(4, 0), Unknown, "cut short")
	want(t, rs, dgxDSP(5, 0), Pass)
}

func TestACSControlParse(t *testing.T) {
	ctrl, off, found, err := acsControl(sysfstest.ConfigSpace(acs(0x5d)))
	if err != nil || !found || ctrl != 0x5d || off != sysfstest.ConfigACSOffset {
		t.Errorf("acsControl = 0x%x at 0x%x found %v err %v", ctrl, off, found, err)
	}
	if _, _, found, err := acsControl(make([]byte, 4096)); found || err != nil {
		t.Errorf("empty extended space: found %v err %v", found, err)
	}
	if got := acsString(0x1d); got != "ACSCtl 0x001d: SrcValid+ TransBlk- ReqRedir+ CmpltRedir+ UpstreamFwd+ EgressCtrl- DirectTrans-" {
		t.Errorf("acsString = %q", got)
	}
}

// iommuOn gives the tree an IOMMU and puts each rail device of the DGX
// fixture in its own group of type typ.
func iommuOn(typ string) func(*sysfstest.Tree) {
	return func(tr *sysfstest.Tree) {
		tr.WriteFile("/devices/virtual/iommu/dmar0/uevent", "")
		tr.Symlink("/class/iommu/dmar0", "/devices/virtual/iommu/dmar0")
		for slot := 0; slot < 8; slot++ {
			for i, addr := range []string{dgxGPU(slot), dgxNIC(slot)} {
				g := fmt.Sprint(2*slot + i + 10)
				tr.WriteFile("/kernel/iommu_groups/"+g+"/type", typ)
				tr.Symlink(realDevice(tr, addr)+"/iommu_group", "/kernel/iommu_groups/"+g)
			}
		}
	}
}

// realDevice is the sysfs path of a PCI function of the tree.
func realDevice(tr *sysfstest.Tree, addr string) string {
	p, err := filepath.EvalSymlinks(filepath.Join(tr.Root(), "bus/pci/devices", addr))
	if err != nil {
		return "/missing/" + addr
	}
	root, _ := filepath.EvalSymlinks(tr.Root())
	return "/" + filepath.ToSlash(strings.TrimPrefix(p, root+"/"))
}

func TestPCIeIOMMU(t *testing.T) {
	want(t, check(t, dgx(t, nil), "PCIE-IOMMU-001"), "node", Pass, "IOMMU off")

	rs := check(t, dgx(t, iommuOn("identity")), "PCIE-IOMMU-001")
	all(t, rs, Pass)
	if len(rs) != 16 {
		t.Errorf("%d results, want 16", len(rs))
	}
	want(t, rs, dgxGPU(0), Pass, "identity")

	e := dgx(t, func(tr *sysfstest.Tree) {
		iommuOn("identity")(tr)
		tr.WriteFile("/kernel/iommu_groups/14/type", "DMA-FQ") // GPU 2
		tr.WriteFile("/kernel/iommu_groups/21/type", "DMA")    // NIC 5
	})
	writeProc(t, e, "cmdline", "BOOT_IMAGE=/vmlinuz-6.8.0 root=/dev/sda1 ro intel_iommu=on quiet")
	rs = check(t, e, "PCIE-IOMMU-001")
	r := want(t, rs, dgxGPU(2), Warn, "DMA-FQ", "identity", "group 14", "intel_iommu=on")
	if r.Rail == nil || *r.Rail != 2 {
		t.Errorf("result on rail %v, want 2", r.Rail)
	}
	want(t, rs, dgxNIC(5), Warn, "DMA", "mlx5_9")
	want(t, rs, dgxNIC(2), Pass)

	// A device in no group while the IOMMU is on is not translated.
	rs = check(t, dgx(t, func(tr *sysfstest.Tree) {
		iommuOn("identity")(tr)
		tr.Remove(realDevice(tr, dgxNIC(7)) + "/iommu_group")
	}), "PCIE-IOMMU-001")
	want(t, rs, dgxNIC(7), Pass, "no IOMMU group")
}

func TestPCIeIOMMUGarbage(t *testing.T) {
	rs := check(t, dgx(t, func(tr *sysfstest.Tree) {
		iommuOn("identity")(tr)
		tr.WriteFile("/kernel/iommu_groups/10/type", "\x00\xffDMA?")
		tr.Remove("/kernel/iommu_groups/12/type")
		tr.Symlink(realDevice(tr, dgxGPU(3))+"/iommu_group", "/kernel/iommu_groups/not-a-number")
	}), "PCIE-IOMMU-001")
	want(t, rs, dgxGPU(0), Unknown, "not an IOMMU domain type")
	want(t, rs, dgxGPU(1), Unknown, "no type file")
	want(t, rs, dgxGPU(3), Unknown, "not-a-number")
	want(t, rs, dgxGPU(2), Pass)

	// The old kernel without a type file, booted with iommu=pt.
	e := dgx(t, func(tr *sysfstest.Tree) {
		iommuOn("identity")(tr)
		tr.Remove("/kernel/iommu_groups/12/type")
	})
	writeProc(t, e, "cmdline", "ro iommu=pt intel_iommu=on")
	want(t, check(t, e, "PCIE-IOMMU-001"), dgxGPU(1), Pass, "iommu=pt")
}

func TestPCIeAffinity(t *testing.T) {
	rs := check(t, dgx(t, nil), "PCIE-AFFINITY-001")
	all(t, rs, Pass)
	want(t, rs, sysfstest.DGXNetdev(0), Pass, "PIX", "GPU 0")

	rs = check(t, fixture(t, sysfstest.MixedVendor, nil, nil), "PCIE-AFFINITY-001")
	want(t, rs, "ens1f0np0", Warn, "PHB", "PIX or PXB", "GPU 0")
	want(t, rs, "ens3f0np0", Pass, "PIX")
	want(t, rs, "ens5f0", Fail, "NODE", "GPU 3", "host bridges")

	// A rail without GPUs (a pinned NIC no GPU chose) is skipped.
	e := dgx(t, nil)
	e.Inventory.Rails[4].GPUs = nil
	want(t, check(t, e, "PCIE-AFFINITY-001"), sysfstest.DGXNetdev(4), Skip, "no GPUs")
}

func TestNICFirmware(t *testing.T) {
	rs := check(t, dgx(t, nil), "NIC-FW-001")
	all(t, rs, Pass)
	want(t, rs, sysfstest.DGXNetdev(0), Pass, "28.39.1002")

	rs = check(t, dgx(t, func(tr *sysfstest.Tree) {
		tr.WriteFile("/class/infiniband/mlx5_9/fw_ver", "28.38.1900") // rail 5
		tr.WriteFile("/class/infiniband/mlx5_8/fw_ver", "28.38.1900") // rail 7
	}), "NIC-FW-001")
	r := want(t, rs, sysfstest.DGXNetdev(5), Warn, "28.38.1900", "28.39.1002", "rails 0, 1, 2, 3, 4, 6 run 28.39.1002", "rails 5, 7 run 28.38.1900")
	if r.Rail == nil || *r.Rail != 5 {
		t.Errorf("result on rail %v, want 5", r.Rail)
	}
	want(t, rs, sysfstest.DGXNetdev(7), Warn)
	want(t, rs, sysfstest.DGXNetdev(0), Pass)

	// Different models may run different firmware.
	all(t, check(t, fixture(t, sysfstest.MixedVendor, nil, nil), "NIC-FW-001"), Pass)
}

func TestNICFirmwareGarbage(t *testing.T) {
	rs := check(t, dgx(t, func(tr *sysfstest.Tree) {
		tr.WriteFile("/class/infiniband/mlx5_3/fw_ver", "\x00\xff")
		tr.WriteFile("/class/infiniband/mlx5_4/fw_ver", "")
		tr.Remove("/class/infiniband/mlx5_5/fw_ver")
	}), "NIC-FW-001")
	want(t, rs, sysfstest.DGXNetdev(1), Unknown, "fw_ver", "not a firmware version")
	want(t, rs, sysfstest.DGXNetdev(2), Unknown, `""`)
	want(t, rs, sysfstest.DGXNetdev(3), Unknown, "cannot read")
	want(t, rs, sysfstest.DGXNetdev(0), Pass)
}
