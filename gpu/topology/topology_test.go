package topology

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/roce-agent/roce-agent/gpu"
	"github.com/roce-agent/roce-agent/nic"
)

func dev(numa int, path string) *nic.PCIDevice {
	parts := strings.Split(path, "/")
	return &nic.PCIDevice{Address: parts[len(parts)-1], Path: path, NUMA: numa}
}

func TestPCIPath(t *testing.T) {
	const (
		rp   = "/devices/pci0000:15/0000:15:01.0"
		sw1  = rp + "/0000:16:00.0"                            // first switch, upstream port
		sw2  = sw1 + "/0000:17:00.0/0000:18:00.0"              // second switch below downstream port 17:00.0
		sw2b = sw1 + "/0000:17:01.0/0000:1c:00.0"              // another second-level switch
		gpu  = sw2 + "/0000:19:00.0/0000:1a:00.0"              // behind sw2
		nicA = sw2 + "/0000:19:01.0/0000:1b:00.0"              // behind sw2 too
		nicB = sw1 + "/0000:17:02.0/0000:1e:00.0"              // behind sw1 only
		nicC = sw2b + "/0000:1d:00.0/0000:1f:00.0"             // behind a sibling second-level switch
		nicD = "/devices/pci0000:15/0000:15:02.0/0000:20:00.0" // another root port
		nicE = "/devices/pci0000:37/0000:37:01.0/0000:38:00.0" // another host bridge
		flat = "/devices/pci0000:15/0000:15:03.0"              // directly on the host bridge bus
		fnB  = sw2 + "/0000:19:00.0/0000:1a:00.1"              // second function of the GPU's device
	)
	for _, tc := range []struct {
		name     string
		a, b     *nic.PCIDevice
		level    Level
		switches int
		ancestor string
	}{
		{"same switch", dev(0, gpu), dev(0, nicA), LevelPIX, 1, "0000:18:00.0"},
		{"cascade: GPU one switch deeper", dev(0, gpu), dev(0, nicB), LevelPXB, 2, "0000:16:00.0"},
		{"sibling switches under one switch", dev(0, gpu), dev(0, nicC), LevelPXB, 3, "0000:16:00.0"},
		{"root ports of one host bridge", dev(0, gpu), dev(0, nicD), LevelPHB, 0, "pci0000:15"},
		{"host bridges, one NUMA node", dev(0, gpu), dev(0, nicE), LevelNODE, 0, ""},
		{"host bridges, two NUMA nodes", dev(0, gpu), dev(1, nicE), LevelSYS, 0, ""},
		{"unknown NUMA counts as same node", dev(-1, gpu), dev(1, nicE), LevelNODE, 0, ""},
		{"device on the root bus", dev(0, flat), dev(0, gpu), LevelPHB, 0, "pci0000:15"},
		{"functions of one device", dev(0, gpu), dev(0, fnB), LevelPIX, 1, "0000:19:00.0"},
		{"no PCI device", dev(0, gpu), nil, LevelUnknown, 0, ""},
		{"virtual device", dev(0, gpu), dev(-1, "/devices/virtual/net/veth0"), LevelUnknown, 0, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := PCIPath(tc.a, tc.b)
			if p.Level != tc.level || p.Switches != tc.switches || p.CommonAncestor != tc.ancestor {
				t.Errorf("PCIPath = %+v; want level %s, %d switches, ancestor %q", p, tc.level, tc.switches, tc.ancestor)
			}
			if tc.b != nil && PCIPath(tc.b, tc.a) != p {
				t.Errorf("PCIPath is not symmetric: %+v vs %+v", PCIPath(tc.b, tc.a), p)
			}
		})
	}
}

// server builds GPUs and NICs where GPU i and NIC i share slot i's switch;
// slots 0-3 sit on NUMA node 0 and 4-7 on node 1.
func server(nGPU, nNIC int) ([]gpu.GPU, []nic.NIC) {
	slot := func(i int) string {
		return fmt.Sprintf("/devices/pci0000:%02x/0000:%02x:01.0/0000:%02x:00.0", 0x10*(i+1), 0x10*(i+1), 0x10*(i+1)+1)
	}
	var gpus []gpu.GPU
	for i := 0; i < nGPU; i++ {
		gpus = append(gpus, gpu.GPU{Index: i, Device: dev(i/4, slot(i)+fmt.Sprintf("/0000:%02x:00.0/0000:%02x:00.0", 0x10*(i+1)+2, 0x10*(i+1)+3))})
	}
	var nics []nic.NIC
	for i := 0; i < nNIC; i++ {
		d := dev(i/4, slot(i)+fmt.Sprintf("/0000:%02x:01.0/0000:%02x:00.0", 0x10*(i+1)+2, 0x10*(i+1)+4))
		nics = append(nics, nic.NIC{RDMADevice: fmt.Sprintf("mlx5_%d", i), Netdev: fmt.Sprintf("eth%d", i), PCI: d.Address, Device: d, Port: nic.Port{LinkLayer: "Ethernet"}})
	}
	return gpus, nics
}

func railsString(rails []Rail) string {
	var b strings.Builder
	for _, r := range rails {
		fmt.Fprintf(&b, "%d:%s%v:%s ", r.Rail, r.RDMADevice+r.Netdev, r.GPUs, r.Level)
	}
	return strings.TrimSpace(b.String())
}

func TestAssignRails(t *testing.T) {
	for _, tc := range []struct {
		name     string
		nGPU     int
		nNIC     int
		mutate   func([]gpu.GPU, []nic.NIC) ([]gpu.GPU, []nic.NIC)
		pins     []RailPin
		want     string
		nonRails int
	}{
		{name: "8x8 aligned", nGPU: 8, nNIC: 8,
			want: "0:mlx5_0eth0[0]:PIX 1:mlx5_1eth1[1]:PIX 2:mlx5_2eth2[2]:PIX 3:mlx5_3eth3[3]:PIX 4:mlx5_4eth4[4]:PIX 5:mlx5_5eth5[5]:PIX 6:mlx5_6eth6[6]:PIX 7:mlx5_7eth7[7]:PIX"},
		{name: "fewer NICs: GPUs share rails", nGPU: 4, nNIC: 2,
			want: "0:mlx5_0eth0[0 2]:NODE 1:mlx5_1eth1[1 3]:NODE"},
		{name: "more NICs than GPUs", nGPU: 2, nNIC: 4,
			want: "0:mlx5_0eth0[0]:PIX 1:mlx5_1eth1[1]:PIX", nonRails: 2},
		{name: "pins renumber rails", nGPU: 2, nNIC: 2,
			pins: []RailPin{{Rail: 5, RDMADevice: "mlx5_0"}, {Rail: 0, Netdev: "eth1"}},
			want: "0:mlx5_1eth1[1]:PIX 5:mlx5_0eth0[0]:PIX"},
		{name: "unpinned rails skip pinned numbers", nGPU: 3, nNIC: 3,
			pins: []RailPin{{Rail: 0, RDMADevice: "mlx5_2"}},
			want: "0:mlx5_2eth2[2]:PIX 1:mlx5_0eth0[0]:PIX 2:mlx5_1eth1[1]:PIX"},
		{name: "pinned NIC with no GPU is still a rail", nGPU: 0, nNIC: 2,
			pins: []RailPin{{Rail: 3, Netdev: "eth1"}},
			want: "3:mlx5_1eth1[]:N/A", nonRails: 1},
		{name: "pinned netdev without RDMA", nGPU: 1, nNIC: 1,
			pins: []RailPin{{Rail: 1, Netdev: "veth1"}},
			want: "0:mlx5_0eth0[0]:PIX 1:veth1[]:N/A"},
		{name: "InfiniBand ports are not RoCE rails", nGPU: 2, nNIC: 2,
			mutate: func(g []gpu.GPU, n []nic.NIC) ([]gpu.GPU, []nic.NIC) { n[0].LinkLayer = "InfiniBand"; return g, n },
			want:   "0:mlx5_1eth1[0 1]:NODE", nonRails: 1},
		{name: "ties go to the lowest PCI address", nGPU: 1, nNIC: 2,
			mutate: func(g []gpu.GPU, n []nic.NIC) ([]gpu.GPU, []nic.NIC) {
				g[0].Device = dev(0, "/devices/pci0000:99/0000:99:01.0/0000:9a:00.0")
				n[0], n[1] = n[1], n[0]
				return g, n
			},
			want: "0:mlx5_0eth0[0]:NODE", nonRails: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			gpus, nics := server(tc.nGPU, tc.nNIC)
			if tc.mutate != nil {
				gpus, nics = tc.mutate(gpus, nics)
			}
			exists := func(n string) bool { return n == "veth1" }
			rails, non, err := AssignRails(gpus, nics, tc.pins, exists)
			if err != nil {
				t.Fatal(err)
			}
			if got := railsString(rails); got != tc.want {
				t.Errorf("rails = %s\nwant    %s", got, tc.want)
			}
			if len(non) != tc.nonRails {
				t.Errorf("non-rail NICs = %+v, want %d", non, tc.nonRails)
			}
		})
	}
}

func TestAssignRailsPinErrors(t *testing.T) {
	gpus, nics := server(2, 2)
	for _, tc := range []struct {
		pins []RailPin
		want string
	}{
		{[]RailPin{{Rail: 0, RDMADevice: "mlx5_0", Netdev: "eth1"}}, `rails: rail 0: netdev "eth1" is not the netdev of rdma_device "mlx5_0"`},
		{[]RailPin{{Rail: 0, RDMADevice: "mlx5_0"}, {Rail: 1, Netdev: "eth0"}}, `rails: rail 1: rdma_device "mlx5_0" is already pinned to rail 0`},
	} {
		_, _, err := AssignRails(gpus, nics, tc.pins, func(string) bool { return false })
		var pe *PinError
		if err == nil || !errors.As(err, &pe) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("pins %+v: error %v, want %q", tc.pins, err, tc.want)
		}
	}
}

// TestAssignRailsMissingPins: a pinned device the host does not have is a
// rail that says so, and the other rails are assigned as usual.
func TestAssignRailsMissingPins(t *testing.T) {
	gpus, nics := server(2, 2)
	rails, _, err := AssignRails(gpus, nics, []RailPin{{Rail: 4, RDMADevice: "mlx5_9"}, {Rail: 2, Netdev: "eth9"}}, func(string) bool { return false })
	if err != nil {
		t.Fatal(err)
	}
	missing := map[int]string{}
	for _, r := range rails {
		missing[r.Rail] = r.Missing
	}
	want := map[int]string{0: "", 1: "", 2: `netdev "eth9" does not exist`, 4: `rdma_device "mlx5_9" does not exist`}
	if fmt.Sprint(missing) != fmt.Sprint(want) {
		t.Errorf("rails missing = %v, want %v", missing, want)
	}
}

func TestLevelText(t *testing.T) {
	for l := LevelPIX; l <= LevelUnknown; l++ {
		b, _ := l.MarshalText()
		var back Level
		if err := back.UnmarshalText(b); err != nil || back != l {
			t.Errorf("level %d round trip: %s %v", l, b, err)
		}
	}
	var l Level
	if err := l.UnmarshalText([]byte("NV4")); err == nil {
		t.Error("unknown level accepted")
	}
}
