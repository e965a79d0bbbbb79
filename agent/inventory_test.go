package agent

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/NVIDIA/go-nvml/pkg/nvml"

	"github.com/roce-agent/roce-agent/gpu/gputest"
	"github.com/roce-agent/roce-agent/gpu/topology"
	"github.com/roce-agent/roce-agent/nic"
	"github.com/roce-agent/roce-agent/nic/sysfstest"
)

var update = flag.Bool("update", false, "rewrite golden files")

const goldenDir = "../testdata/golden/inventory"

// RootPlaceholder stands for the sysfs root in golden files, which are
// shared by tests that reach the fixtures by different paths.
const RootPlaceholder = "@SYSFS_ROOT@"

type goldenCase struct {
	name string
	host string
	nvml nvml.Interface
	pins []topology.RailPin
}

var goldenCases = []goldenCase{
	{name: "dgx-h100", host: "dgx-h100"},
	{name: "dgx-h100-nvml", host: "dgx-h100", nvml: gputest.DGXH100()},
	{name: "dgx-h100-nvml-missing-gpu", host: "dgx-h100", nvml: gputest.DGXH100Missing()},
	{name: "dgx-h100-nvml-library-not-found", host: "dgx-h100", nvml: gputest.Failing(nvml.ERROR_LIBRARY_NOT_FOUND)},
	{name: "mixed-vendor", host: "mixed-vendor"},
	{name: "soft-roce", host: "soft-roce"},
	{name: "soft-roce-pinned", host: "soft-roce", pins: []topology.RailPin{{Rail: 0, Netdev: "vethA"}, {Rail: 1, RDMADevice: "rxe1"}}},
	{name: "empty", host: "empty"},
}

func fixtureFS(t testing.TB, host string) *nic.FS {
	t.Helper()
	s, err := nic.NewFS(filepath.Join("..", "testdata", "sysfs", host, "sys"))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestInventoryGolden(t *testing.T) {
	for _, tc := range goldenCases {
		t.Run(tc.name, func(t *testing.T) {
			fs := fixtureFS(t, tc.host)
			inv, err := DiscoverInventory(InventoryOptions{Node: "gpu-017", FS: fs, NVML: tc.nvml, Pins: tc.pins})
			if err != nil {
				t.Fatal(err)
			}
			var js, table bytes.Buffer
			if err := inv.WriteJSON(&js); err != nil {
				t.Fatal(err)
			}
			if err := inv.WriteTable(&table); err != nil {
				t.Fatal(err)
			}
			compareGolden(t, filepath.Join(goldenDir, tc.name+".json"), strings.ReplaceAll(js.String(), fs.Root(), RootPlaceholder))
			compareGolden(t, filepath.Join(goldenDir, tc.name+".txt"), strings.ReplaceAll(table.String(), fs.Root(), RootPlaceholder))
		})
	}
}

func compareGolden(t *testing.T, path, got string) {
	t.Helper()
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./agent -update)", err)
	}
	if got != string(want) {
		t.Errorf("%s differs (run go test ./agent -update and review the diff):\n--- got\n%s", path, got)
	}
}

// The JSON contract of docs/inventory.md: these keys must be present.
func TestInventoryJSONContract(t *testing.T) {
	inv, err := DiscoverInventory(InventoryOptions{FS: fixtureFS(t, "dgx-h100"), NVML: gputest.DGXH100()})
	if err != nil {
		t.Fatal(err)
	}
	var js bytes.Buffer
	if err := inv.WriteJSON(&js); err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := json.Unmarshal(js.Bytes(), &doc); err != nil {
		t.Fatal(err)
	}
	need := map[string][]string{
		"gpus":     {"index", "pci", "uuid", "model", "numa", "source"},
		"nics":     {"rdma_device", "netdev", "pci", "numa", "driver", "port_state", "rate", "mtu", "gids"},
		"affinity": {"gpu", "rdma_device", "level"},
		"rails":    {"rail", "rdma_device", "netdev", "gpus", "level"},
	}
	for list, keys := range need {
		items, ok := doc[list].([]any)
		if !ok || len(items) == 0 {
			t.Fatalf("%s missing or empty", list)
		}
		for _, k := range keys {
			if _, ok := items[0].(map[string]any)[k]; !ok {
				t.Errorf("%s[0] has no %q", list, k)
			}
		}
	}
	if _, ok := doc["warnings"].([]any); !ok {
		t.Error("warnings is not a list")
	}
	if n := len(doc["affinity"].([]any)); n != 8*10 {
		t.Errorf("affinity has %d entries, want one per GPU x NIC pair (80)", n)
	}
	gids := doc["nics"].([]any)[0].(map[string]any)["gids"].([]any)
	for _, k := range []string{"index", "gid", "type", "netdev"} {
		if _, ok := gids[0].(map[string]any)[k]; !ok {
			t.Errorf("gids[0] has no %q", k)
		}
	}
}

func TestInventoryPinErrors(t *testing.T) {
	// A pinned device the host does not have fails only its rail: the
	// inventory keeps every NIC and says which rail is missing.
	for _, tc := range []struct {
		pins []topology.RailPin
		want string
	}{
		{[]topology.RailPin{{Rail: 2, Netdev: "vethZ"}}, `rail-missing: rail 2 is pinned to a device the host does not have: netdev "vethZ" does not exist; only this rail fails`},
		{[]topology.RailPin{{Rail: 0, RDMADevice: "mlx5_0"}}, `rail-missing: rail 0 is pinned to a device the host does not have: rdma_device "mlx5_0" does not exist; only this rail fails`},
	} {
		inv, err := DiscoverInventory(InventoryOptions{FS: fixtureFS(t, "soft-roce"), Pins: tc.pins})
		if err != nil {
			t.Fatalf("pins %+v: %v", tc.pins, err)
		}
		if len(inv.NICs) != 2 || !strings.Contains(strings.Join(nic.WarningStrings(inv.Warnings), "\n"), tc.want) {
			t.Errorf("pins %+v: nics %d, warnings %q, want %q", tc.pins, len(inv.NICs), inv.Warnings, tc.want)
		}
	}
	// A pinned netdev that exists but has no RDMA device is a rail (a lab
	// veth), with a warning.
	tree := sysfstest.New(t.TempDir())
	tree.VirtualNetdev("veth0", sysfstest.Netdev{MAC: "02:00:00:00:00:01", MTU: 1500})
	fs, _ := nic.NewFS(tree.Root())
	inv, err := DiscoverInventory(InventoryOptions{FS: fs, Pins: []topology.RailPin{{Rail: 0, Netdev: "veth0"}}})
	if err != nil || len(inv.Rails) != 1 || inv.Rails[0].Netdev != "veth0" {
		t.Fatalf("veth rail: %+v %v", inv, err)
	}
	if !strings.Contains(strings.Join(nic.WarningStrings(inv.Warnings), "\n"), "rail-no-rdma: rail 0 (netdev veth0)") {
		t.Errorf("warnings = %q", inv.Warnings)
	}
}

// FuzzInventoryAttribute writes arbitrary bytes into one attribute of a
// one-GPU, one-NIC host: the inventory must not fail or panic, and both
// devices must still be reported.
func FuzzInventoryAttribute(f *testing.F) {
	attrs := []string{
		"/class/infiniband/mlx5_0/ports/1/state",
		"/class/infiniband/mlx5_0/ports/1/phys_state",
		"/class/infiniband/mlx5_0/ports/1/rate",
		"/class/infiniband/mlx5_0/ports/1/link_layer",
		"/class/infiniband/mlx5_0/ports/1/gids/1",
		"/class/infiniband/mlx5_0/ports/1/gid_attrs/types/1",
		"/class/infiniband/mlx5_0/node_guid",
		"/class/infiniband/mlx5_0/fw_ver",
		"/class/net/eth0/mtu",
		"/class/net/eth0/address",
		"/bus/pci/devices/0000:18:00.0/numa_node",
		"/bus/pci/devices/0000:18:00.0/current_link_speed",
		"/bus/pci/devices/0000:18:00.0/max_link_width",
		"/bus/pci/devices/0000:19:00.0/numa_node",
		"/bus/pci/devices/0000:19:00.0/class",
	}
	seeds := []string{"4: ACTIVE\n", "400 Gb/sec (4X NDR)\n", "fe80:0000:0000:0000:0000:00ff:fe00:0001\n", "0x030200\n", "-1\n", "\x00\xff", ""}
	for i := range attrs {
		f.Add(uint8(i), []byte(seeds[i%len(seeds)]))
	}
	f.Fuzz(func(t *testing.T, which uint8, content []byte) {
		tree := sysfstest.New(t.TempDir())
		hb := tree.HostBridge("0000:17", 0)
		sw := hb.Bridge("0000:17:01.0", 0x8086, 1)
		fn := sw.Function("0000:18:00.0", sysfstest.PCIFunc{Vendor: 0x15b3, Device: 0x1021, Class: 0x020000, Driver: "mlx5_core", Speed: "32.0 GT/s PCIe", MaxSpeed: "32.0 GT/s PCIe", Width: 16, MaxWidth: 16})
		fn.AddNetdev("eth0", sysfstest.Netdev{MAC: "02:00:00:00:00:01", MTU: 9000})
		fn.AddRDMA("mlx5_0", sysfstest.RDMADevice{NodeGUID: "0200:00ff:fe00:0001", FWVer: "28.39.1002", Ports: []sysfstest.RDMAPort{{
			State: "4: ACTIVE", PhysState: "5: LinkUp", Rate: "400 Gb/sec (4X NDR)", LinkLayer: "Ethernet",
			GIDs: sysfstest.RoCEGIDs("eth0", "02:00:00:00:00:01"),
		}}})
		hb.Bridge("0000:17:02.0", 0x8086, 1).Function("0000:19:00.0", sysfstest.PCIFunc{Vendor: 0x10de, Device: 0x2330, Class: 0x030200, Driver: "nvidia"})
		if tree.Err() != nil {
			t.Fatal(tree.Err())
		}
		attr := attrs[int(which)%len(attrs)]
		fs, err := nic.NewFS(tree.Root())
		if err != nil {
			t.Fatal(err)
		}
		real, err := fs.Realpath(attr)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(fs.HostPath(real), content, 0o644); err != nil {
			t.Fatal(err)
		}
		inv, err := DiscoverInventory(InventoryOptions{FS: fs})
		if err != nil {
			t.Fatalf("inventory failed on %s = %q: %v", attr, content, err)
		}
		wantGPUs := 1
		if strings.HasSuffix(attr, "0000:19:00.0/class") {
			wantGPUs = len(inv.GPUs) // the GPU's class itself is the fuzzed value
		}
		if len(inv.NICs) != 1 || len(inv.GPUs) != wantGPUs || len(inv.Affinity) != len(inv.GPUs) {
			t.Fatalf("%s = %q: %d NICs, %d GPUs, %d affinity entries", attr, content, len(inv.NICs), len(inv.GPUs), len(inv.Affinity))
		}
	})
}

// Warnings are typed: a known code and a message; their text form (the
// JSON contract) is "code: message".
func TestInventoryWarningsAreTyped(t *testing.T) {
	known := map[string]bool{nic.WarnSysfs: true, nic.WarnNVML: true, nic.WarnNVMLUnavailable: true, nic.WarnGPUMissing: true,
		nic.WarnRailAffinity: true, nic.WarnRailNoRDMA: true, nic.WarnRailMissing: true, nic.WarnPCIeDegraded: true,
		nic.WarnPortNotActive: true, nic.WarnGPUNICCount: true}
	seen := map[string]bool{}
	for _, host := range []string{"dgx-h100", "mixed-vendor", "soft-roce", "empty"} {
		inv, err := DiscoverInventory(InventoryOptions{FS: fixtureFS(t, host)})
		if err != nil {
			t.Fatal(err)
		}
		for _, w := range inv.Warnings {
			seen[w.Code] = true
			if !known[w.Code] || w.Message == "" || strings.HasPrefix(w.Message, w.Code) {
				t.Errorf("%s: warning %+v", host, w)
			}
		}
	}
	if len(seen) < 4 {
		t.Errorf("fixtures gave only the codes %v", seen)
	}
}
