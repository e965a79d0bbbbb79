// Package gputest provides an NVML built on go-nvml's mocks, for tests of
// code that discovers GPUs.
package gputest

import (
	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock"
)

// GPU is what the fake NVML reports for one device.
type GPU struct {
	UUID  string
	Name  string
	BusID string // NVML form, "00000000:1A:00.0"
	NUMA  int
	// NUMARet is GetNumaNodeId's answer; zero means SUCCESS.
	NUMARet nvml.Return
}

// NVML returns an initialised-on-demand NVML that reports gpus in order and
// driver version driver.
func NVML(driver string, gpus ...GPU) *mock.Interface {
	devices := make([]nvml.Device, len(gpus))
	for i, g := range gpus {
		devices[i] = &mock.Device{
			GetUUIDFunc:       func() (string, nvml.Return) { return g.UUID, nvml.SUCCESS },
			GetNameFunc:       func() (string, nvml.Return) { return g.Name, nvml.SUCCESS },
			GetPciInfoFunc:    func() (nvml.PciInfo, nvml.Return) { return nvml.PciInfo{BusId: BusID(g.BusID)}, nvml.SUCCESS },
			GetNumaNodeIdFunc: func() (int, nvml.Return) { return g.NUMA, g.NUMARet },
		}
	}
	return &mock.Interface{
		InitFunc:                   func() nvml.Return { return nvml.SUCCESS },
		ShutdownFunc:               func() nvml.Return { return nvml.SUCCESS },
		SystemGetDriverVersionFunc: func() (string, nvml.Return) { return driver, nvml.SUCCESS },
		DeviceGetCountFunc:         func() (int, nvml.Return) { return len(devices), nvml.SUCCESS },
		DeviceGetHandleByIndexFunc: func(i int) (nvml.Device, nvml.Return) {
			if i < 0 || i >= len(devices) {
				return nil, nvml.ERROR_INVALID_ARGUMENT
			}
			return devices[i], nvml.SUCCESS
		},
	}
}

// Failing returns an NVML whose Init fails with ret, as a host without the
// library (ERROR_LIBRARY_NOT_FOUND) or the driver does.
func Failing(ret nvml.Return) *mock.Interface {
	return &mock.Interface{InitFunc: func() nvml.Return { return ret }}
}

// BusID packs a bus ID string into PciInfo.BusId.
func BusID(s string) [32]int8 {
	var b [32]int8
	for i := 0; i < len(s) && i < len(b)-1; i++ {
		b[i] = int8(s[i])
	}
	return b
}

// DGXH100 is NVML's view of the dgx-h100 fixture's eight GPUs.
func DGXH100() *mock.Interface {
	ids := []string{"00000000:1A:00.0", "00000000:3C:00.0", "00000000:4D:00.0", "00000000:5E:00.0",
		"00000000:9A:00.0", "00000000:BC:00.0", "00000000:CD:00.0", "00000000:DE:00.0"}
	return NVML("570.124.06", gpus(ids)...)
}

func gpus(ids []string) []GPU {
	out := make([]GPU, len(ids))
	for i, id := range ids {
		out[i] = GPU{
			UUID:  "GPU-" + []string{"0a1b2c3d", "1b2c3d4e", "2c3d4e5f", "3d4e5f60", "4e5f6071", "5f607182", "60718293", "718293a4"}[i%8] + "-7f3e-4c59-9b0e-5d2a1c0e8f61",
			Name:  "NVIDIA H100 80GB HBM3",
			BusID: id,
			NUMA:  i / 4,
		}
	}
	return out
}

// DGXH100Missing is DGXH100 with GPU 7 gone from NVML.
func DGXH100Missing() *mock.Interface {
	ids := []string{"00000000:1A:00.0", "00000000:3C:00.0", "00000000:4D:00.0", "00000000:5E:00.0",
		"00000000:9A:00.0", "00000000:BC:00.0", "00000000:CD:00.0"}
	return NVML("570.124.06", gpus(ids)...)
}
