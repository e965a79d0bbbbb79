package diag

import (
	"testing"

	"github.com/NVIDIA/go-nvml/pkg/nvml"

	"github.com/roce-agent/roce-agent/gpu/gputest"
	"github.com/roce-agent/roce-agent/nic/sysfstest"
)

func TestGPUNVML(t *testing.T) {
	// A tree read without NVML: not queried.
	want(t, check(t, dgx(t, nil), "GPU-NVML-001"), "node", Skip, "not queried", "8 NVIDIA GPU")

	e := fixture(t, sysfstest.DGXH100, nil, gputest.DGXH100())
	want(t, check(t, e, "GPU-NVML-001"), "node", Pass, "570.124.06", "8 GPU")

	// GPU 7 fell off the bus: sysfs has it, NVML does not.
	e = fixture(t, sysfstest.DGXH100, nil, gputest.DGXH100Missing())
	want(t, check(t, e, "GPU-NVML-001"), "node", Fail, "7 GPU", "8 NVIDIA GPU", "0000:de:00.0 (driver nvidia)")

	// GPU 7 is held by vfio-pci.
	e = fixture(t, sysfstest.DGXH100, func(tr *sysfstest.Tree) {
		tr.Symlink(realDevice(tr, "0000:de:00.0")+"/driver", "/bus/pci/drivers/vfio-pci")
	}, gputest.DGXH100Missing())
	want(t, check(t, e, "GPU-NVML-001"), "node", Fail, "0000:de:00.0 (driver vfio-pci)", "vfio")
}

func TestGPUNVMLMissingLibrary(t *testing.T) {
	e := fixture(t, sysfstest.DGXH100, nil, gputest.Failing(nvml.ERROR_LIBRARY_NOT_FOUND))
	want(t, check(t, e, "GPU-NVML-001"), "node", Fail, "libnvidia-ml", "8 NVIDIA GPU")
	e = fixture(t, sysfstest.DGXH100, nil, gputest.Failing(nvml.ERROR_DRIVER_NOT_LOADED))
	r := want(t, check(t, e, "GPU-NVML-001"), "node", Fail, "not loaded")
	if r.Remedy == "" {
		t.Error("no remedy")
	}
	// No GPU and no library: nothing to complain about.
	e = fixture(t, sysfstest.Empty, nil, gputest.Failing(nvml.ERROR_LIBRARY_NOT_FOUND))
	want(t, check(t, e, "GPU-NVML-001"), "node", Skip, "no NVIDIA GPU")
}

func TestGPUNVMLGarbage(t *testing.T) {
	e := fixture(t, sysfstest.DGXH100, func(tr *sysfstest.Tree) {
		tr.WriteFile("/bus/pci/devices/0000:4d:00.0/class", "\x00\xffzz")
	}, gputest.DGXH100())
	want(t, check(t, e, "GPU-NVML-001"), "node", Unknown, "0000:4d:00.0", "zz")
}

const (
	procOpen        = "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  570.124.06  Release Build  (dvs-builder@U16-I3-B03-4-3)  Tue Jan 28 19:53:24 UTC 2025\nGCC version:  gcc version 12.3.0 (Ubuntu 12.3.0-1ubuntu1~22.04)"
	procProprietary = "NVRM version: NVIDIA UNIX x86_64 Kernel Module  535.183.01  Sun May 12 19:39:15 UTC 2024\nGCC version:  gcc version 11.4.0 (Ubuntu 11.4.0-1ubuntu1~22.04)"
)

// nvidiaModule loads the nvidia module of the given version in the tree.
func nvidiaModule(version string) func(*sysfstest.Tree) {
	return func(tr *sysfstest.Tree) {
		tr.WriteFile("/module/nvidia/initstate", "live")
		tr.WriteFile("/module/nvidia/version", version)
	}
}

func TestGPUPeerMem(t *testing.T) {
	// No nvidia module at all.
	want(t, check(t, dgx(t, nil), "GPU-PEERMEM-001"), "node", Fail, "nvidia_peermem is not loaded", "not loaded")

	e := dgx(t, func(tr *sysfstest.Tree) {
		nvidiaModule("570.124.06")(tr)
		tr.WriteFile("/module/nvidia_peermem/initstate", "live")
	})
	want(t, check(t, e, "GPU-PEERMEM-001"), "node", Pass, "nvidia_peermem live")
	e = dgx(t, func(tr *sysfstest.Tree) { tr.WriteFile("/module/nv_peer_mem/initstate", "live") })
	want(t, check(t, e, "GPU-PEERMEM-001"), "node", Pass, "nv_peer_mem live")

	// The open module on a recent kernel: DMA-BUF.
	e = dgx(t, nvidiaModule("570.124.06"))
	writeProc(t, e, "driver/nvidia/version", procOpen)
	writeProc(t, e, "sys/kernel/osrelease", "6.8.0-45-generic")
	want(t, check(t, e, "GPU-PEERMEM-001"), "node", Pass, "DMA-BUF", "open nvidia module", "570.124.06", "6.8.0-45-generic")

	// The open module told by its taint (no P) when procfs says nothing.
	e = dgx(t, func(tr *sysfstest.Tree) {
		nvidiaModule("570.124.06")(tr)
		tr.WriteFile("/module/nvidia/taint", "OE")
	})
	writeProc(t, e, "sys/kernel/osrelease", "5.15.0-119-generic")
	want(t, check(t, e, "GPU-PEERMEM-001"), "node", Pass, "DMA-BUF", "taint")

	// The proprietary module: no DMA-BUF, and peermem is not loaded.
	e = dgx(t, nvidiaModule("535.183.01"))
	writeProc(t, e, "driver/nvidia/version", procProprietary)
	writeProc(t, e, "sys/kernel/osrelease", "6.8.0-45-generic")
	want(t, check(t, e, "GPU-PEERMEM-001"), "node", Fail, "proprietary", "nvidia_peermem is not loaded")

	// The open module on a kernel before 5.12.
	e = dgx(t, nvidiaModule("570.124.06"))
	writeProc(t, e, "driver/nvidia/version", procOpen)
	writeProc(t, e, "sys/kernel/osrelease", "5.4.0-200-generic")
	want(t, check(t, e, "GPU-PEERMEM-001"), "node", Fail, "5.4.0-200-generic", "5.12")

	// The open module before R515.
	e = dgx(t, nvidiaModule("510.108.03"))
	writeProc(t, e, "driver/nvidia/version", "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  510.108.03  Release Build")
	writeProc(t, e, "sys/kernel/osrelease", "6.1.0-18-amd64")
	want(t, check(t, e, "GPU-PEERMEM-001"), "node", Fail, "510.108.03", "515")

	// peermem loading but not live yet.
	e = dgx(t, func(tr *sysfstest.Tree) {
		nvidiaModule("535.183.01")(tr)
		tr.WriteFile("/module/nvidia_peermem/initstate", "coming")
	})
	writeProc(t, e, "driver/nvidia/version", procProprietary)
	writeProc(t, e, "sys/kernel/osrelease", "6.8.0-45-generic")
	want(t, check(t, e, "GPU-PEERMEM-001"), "node", Fail, "nvidia_peermem is coming")

	// No GPUs: nothing to do.
	want(t, check(t, fixture(t, sysfstest.Empty, nil, nil), "GPU-PEERMEM-001"), "node", Skip, "no GPUs")
}

func TestGPUPeerMemGarbage(t *testing.T) {
	e := dgx(t, func(tr *sysfstest.Tree) {
		nvidiaModule("535.183.01")(tr)
		tr.WriteFile("/module/nvidia_peermem/initstate", "\x00\xffbroken")
	})
	writeProc(t, e, "driver/nvidia/version", procProprietary)
	writeProc(t, e, "sys/kernel/osrelease", "6.8.0-45-generic")
	want(t, check(t, e, "GPU-PEERMEM-001"), "node", Unknown, "initstate", "broken")

	e = dgx(t, nvidiaModule("570.124.06"))
	writeProc(t, e, "driver/nvidia/version", procOpen)
	writeProc(t, e, "sys/kernel/osrelease", "\x00garbage")
	want(t, check(t, e, "GPU-PEERMEM-001"), "node", Unknown, "kernel release", "garbage")

	e = dgx(t, nvidiaModule("\xff\xfe"))
	writeProc(t, e, "driver/nvidia/version", procOpen)
	writeProc(t, e, "sys/kernel/osrelease", "6.8.0")
	want(t, check(t, e, "GPU-PEERMEM-001"), "node", Unknown, "/sys/module/nvidia/version")

	e = dgx(t, nvidiaModule("570.124.06"))
	writeProc(t, e, "driver/nvidia/version", "\x00\x01???")
	writeProc(t, e, "sys/kernel/osrelease", "6.8.0")
	want(t, check(t, e, "GPU-PEERMEM-001"), "node", Unknown, "cannot tell the open nvidia module")
}

func TestKernelRelease(t *testing.T) {
	for in, want := range map[string][2]int{"6.8.0-45-generic": {6, 8}, "5.12": {5, 12}, "4.18.0-553.el8_10.x86_64": {4, 18}, "6.1.0-18-amd64": {6, 1}} {
		maj, mnr, err := kernelRelease(in)
		if err != nil || maj != want[0] || mnr != want[1] {
			t.Errorf("kernelRelease(%q) = %d.%d, %v", in, maj, mnr, err)
		}
	}
	for _, in := range []string{"", "six", "6", "x.8", "-1.2"} {
		if _, _, err := kernelRelease(in); err == nil {
			t.Errorf("kernelRelease(%q): no error", in)
		}
	}
}
