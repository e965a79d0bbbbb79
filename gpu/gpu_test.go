package gpu

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock"

	"github.com/roce-agent/roce-agent/gpu/gputest"
	"github.com/roce-agent/roce-agent/nic"
)

func fixtureFS(t *testing.T, host string) *nic.FS {
	t.Helper()
	s, err := nic.NewFS(filepath.Join("..", "testdata", "sysfs", host, "sys"))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestDiscoverNVML(t *testing.T) {
	for _, numaRet := range []nvml.Return{nvml.SUCCESS, nvml.ERROR_NOT_SUPPORTED} {
		t.Run(numaRet.Error(), func(t *testing.T) {
			lib := gputest.DGXH100()
			if numaRet != nvml.SUCCESS {
				// NUMA then comes from sysfs numa_node.
				for i := 0; i < 8; i++ {
					d, _ := lib.DeviceGetHandleByIndex(i)
					d.(*mock.Device).GetNumaNodeIdFunc = func() (int, nvml.Return) { return -1, numaRet }
				}
			}
			w := &nic.Warnings{}
			res, err := Discover(fixtureFS(t, "dgx-h100"), lib, w)
			if err != nil {
				t.Fatal(err)
			}
			if res.Source != SourceNVML || !res.NVML.Available || res.NVML.DriverVersion != "570.124.06" {
				t.Errorf("result = %+v", res)
			}
			if len(res.GPUs) != 8 || len(w.Strings()) != 0 {
				t.Fatalf("GPUs %d, warnings %v", len(res.GPUs), w.Strings())
			}
			g := res.GPUs[5]
			if g.Index != 5 || g.PCI != "0000:bc:00.0" || g.UUID != "GPU-5f607182-7f3e-4c59-9b0e-5d2a1c0e8f61" || g.Model != "NVIDIA H100 80GB HBM3" || g.NUMA != 1 || g.Source != SourceNVML {
				t.Errorf("GPU 5 = %+v", g)
			}
			if g.Device == nil || !strings.HasPrefix(g.Device.Path, "/devices/pci0000:b7/") {
				t.Errorf("GPU 5 not tied to its sysfs device: %+v", g.Device)
			}
			if len(lib.ShutdownCalls()) != 1 {
				t.Errorf("Shutdown called %d times", len(lib.ShutdownCalls()))
			}
		})
	}
}

func TestDiscoverNVMLFailures(t *testing.T) {
	for _, tc := range []struct {
		name string
		lib  nvml.Interface
		want string
	}{
		{"library not found", gputest.Failing(nvml.ERROR_LIBRARY_NOT_FOUND),
			"nvml-unavailable: nvml init: ERROR_LIBRARY_NOT_FOUND"},
		{"driver not loaded", gputest.Failing(nvml.ERROR_DRIVER_NOT_LOADED),
			"nvml-unavailable: nvml init: ERROR_DRIVER_NOT_LOADED"},
		{"device count fails", &mock.Interface{
			InitFunc:                   func() nvml.Return { return nvml.SUCCESS },
			ShutdownFunc:               func() nvml.Return { return nvml.SUCCESS },
			SystemGetDriverVersionFunc: func() (string, nvml.Return) { return "", nvml.ERROR_UNKNOWN },
			DeviceGetCountFunc:         func() (int, nvml.Return) { return 0, nvml.ERROR_UNKNOWN },
		}, "nvml-unavailable: nvml device count: ERROR_UNKNOWN"},
		{"not queried", nil, "nvml-unavailable: not queried for a sysfs tree"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := &nic.Warnings{}
			res, err := Discover(fixtureFS(t, "dgx-h100"), tc.lib, w)
			if err != nil {
				t.Fatal(err)
			}
			if res.Source != SourceSysfs || res.NVML.Available || res.NVML.Queried != (tc.lib != nil) {
				t.Errorf("result = %+v", res)
			}
			// Four NVSwitches are NVIDIA functions too; only the 8 GPUs count.
			if len(res.GPUs) != 8 {
				t.Fatalf("fallback found %d GPUs, want 8", len(res.GPUs))
			}
			g := res.GPUs[3]
			if g.Index != 3 || g.PCI != "0000:5e:00.0" || g.NUMA != 0 || g.Source != SourceSysfs || g.Model != "NVIDIA H100 80GB HBM3" || g.UUID != "" {
				t.Errorf("GPU 3 = %+v", g)
			}
			if len(w.Strings()) != 1 || !strings.HasPrefix(w.Strings()[0], tc.want) {
				t.Errorf("warnings = %q, want one starting %q", w.Strings(), tc.want)
			}
		})
	}
}

func TestDiscoverNVMLMissesAGPU(t *testing.T) {
	w := &nic.Warnings{}
	res, err := Discover(fixtureFS(t, "dgx-h100"), gputest.DGXH100Missing(), w)
	if err != nil || len(res.GPUs) != 7 {
		t.Fatalf("%v %d", err, len(res.GPUs))
	}
	want := "gpu-missing: sysfs shows an NVIDIA GPU at 0000:de:00.0 that NVML does not report"
	if strings.Join(w.Strings(), "|") != want {
		t.Errorf("warnings = %q, want %q", w.Strings(), want)
	}
}

func TestDiscoverNoGPUs(t *testing.T) {
	w := &nic.Warnings{}
	res, err := Discover(fixtureFS(t, "soft-roce"), nil, w)
	if err != nil || len(res.GPUs) != 0 || len(w.Strings()) != 0 {
		t.Errorf("soft-roce host: %+v %v %v", res, err, w.Strings())
	}
}

func TestNormalizeBusID(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"00000000:9B:00.0", "0000:9b:00.0"},
		{"0000:9b:00.0", "0000:9b:00.0"},
		{"00000001:1A:1F.7", "0001:1a:1f.7"},
		{"00010000:01:00.0", "10000:01:00.0"},
	} {
		if got, err := NormalizeBusID(tc.in); err != nil || got != tc.want {
			t.Errorf("NormalizeBusID(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
	for _, bad := range []string{"", "9B:00.0", "00000000:9B:00", "0000:zz:00.0", "0000:9b:20.0", "0000:9b:00.8"} {
		if _, err := NormalizeBusID(bad); err == nil {
			t.Errorf("NormalizeBusID(%q): want error", bad)
		}
	}
	// NVML's numeric fields, when BusId is empty.
	if got := busIDString(nvml.PciInfo{Domain: 0, Bus: 0x9b, Device: 0}); got != "00000000:9B:00.0" {
		t.Errorf("busIDString = %q", got)
	}
}

func FuzzNormalizeBusID(f *testing.F) {
	for _, s := range []string{"00000000:9B:00.0", "0000:9b:00.0", "1:2:3.4", "::."} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, err := NormalizeBusID(s)
		if err != nil {
			return
		}
		if !nic.IsPCIAddress(got) {
			t.Fatalf("NormalizeBusID(%q) = %q, not a sysfs PCI address", s, got)
		}
	})
}

// A tree with only /devices (no /bus/pci/devices, no /class/pci_bus) still
// yields its GPUs and their PCI paths.
func TestSysfsScanWithoutBusLinks(t *testing.T) {
	dir := t.TempDir()
	if err := os.CopyFS(dir, os.DirFS(filepath.Join("..", "testdata", "sysfs", "dgx-h100", "sys"))); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"bus", "class/pci_bus"} {
		if err := os.RemoveAll(filepath.Join(dir, p)); err != nil {
			t.Fatal(err)
		}
	}
	s, err := nic.NewFS(dir)
	if err != nil {
		t.Fatal(err)
	}
	res, err := Discover(s, nil, &nic.Warnings{})
	if err != nil || len(res.GPUs) != 8 || res.GPUs[7].PCI != "0000:de:00.0" || res.GPUs[7].Device == nil || res.GPUs[7].NUMA != 1 {
		t.Fatalf("%+v %v", res.GPUs, err)
	}
}
