package agent

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	v1 "github.com/roce-agent/roce-agent/api/v1"
	"github.com/roce-agent/roce-agent/gpu"
	"github.com/roce-agent/roce-agent/gpu/topology"
	"github.com/roce-agent/roce-agent/nic"
)

// sameJSON fails unless a and b marshal to the same bytes.
func sameJSON(t *testing.T, what string, a, b any) {
	t.Helper()
	ja, err := json.Marshal(a)
	if err != nil {
		t.Fatal(err)
	}
	jb, err := json.Marshal(b)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(ja, jb) {
		t.Errorf("%s: wire JSON differs\nagent: %s\nwire:  %s", what, ja, jb)
	}
}

// The wire inventory marshals byte for byte as the agent's, for every
// fixture host, and its indented form is the golden file.
func TestWireInventory(t *testing.T) {
	cases := append(slices.Clone(goldenCases),
		goldenCase{name: "soft-roce-missing-pin", host: "soft-roce", pins: []topology.RailPin{{Rail: 3, Netdev: "vethZ"}, {Rail: 0, RDMADevice: "rxe0"}}})
	hosts := map[string]bool{}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			hosts[tc.host] = true
			fs := fixtureFS(t, tc.host)
			inv, err := DiscoverInventory(InventoryOptions{Node: "gpu-017", FS: fs, NVML: tc.nvml, Pins: tc.pins})
			if err != nil {
				t.Fatal(err)
			}
			w := inv.Wire()
			sameJSON(t, tc.name, inv, w)
			if tc.name == "soft-roce-missing-pin" {
				if !slices.ContainsFunc(w.Rails, func(r v1.Rail) bool { return r.Missing != "" }) {
					t.Errorf("no rail with missing in %+v", w.Rails)
				}
				return
			}
			var js bytes.Buffer
			if err := WriteJSON(&js, w); err != nil {
				t.Fatal(err)
			}
			want, err := os.ReadFile(filepath.Join(goldenDir, tc.name+".json"))
			if err != nil {
				t.Fatal(err)
			}
			if got := strings.ReplaceAll(js.String(), fs.Root(), RootPlaceholder); got != string(want) {
				t.Errorf("wire JSON differs from %s.json:\n%s", tc.name, got)
			}
		})
	}
	for _, h := range []string{"dgx-h100", "mixed-vendor", "soft-roce", "empty"} {
		if !hosts[h] {
			t.Errorf("fixture host %s not covered", h)
		}
	}

	// Shapes no fixture has: a multi-port NIC, nil lists, levels beyond
	// the fixtures'.
	inv, err := DiscoverInventory(InventoryOptions{Node: "n", FS: fixtureFS(t, "soft-roce")})
	if err != nil {
		t.Fatal(err)
	}
	inv.NICs[0].OtherPorts = []nic.Port{{Port: 2, State: "DOWN", GIDs: []nic.GID{{Index: 0, GID: "fe80::1", IP: "fe80::1", Type: "IB/RoCE v1", Netdev: "x"}}}, {Port: 3}}
	inv.NICs[1].Port.GIDs = nil
	inv.Rails = append(inv.Rails, topology.Rail{Rail: 9, GPUs: nil, Level: topology.LevelSYS}, topology.Rail{Rail: 10, GPUs: []int{}, Level: topology.LevelNODE})
	inv.Affinity = []topology.Affinity{{GPU: 1, Path: topology.Path{Level: topology.LevelPHB, CommonAncestor: "pci0000:17", SameHostBridge: true}}}
	inv.NVML = gpu.NVMLStatus{Queried: true, Available: true, DriverVersion: "550.54.15", Error: "x"}
	inv.Warnings = nil
	sameJSON(t, "edge shapes", inv, inv.Wire())
	sameJSON(t, "zero inventory", &Inventory{}, (&Inventory{}).Wire())
	if (*Inventory)(nil).Wire() != nil {
		t.Error("nil inventory should give nil")
	}
	for l := topology.LevelPIX; l <= topology.LevelUnknown; l++ {
		sameJSON(t, l.String(), l, wireLevel(l))
		if !slices.Contains(v1.Levels, wireLevel(l)) {
			t.Errorf("level %s is not in v1.Levels", l)
		}
	}
}

// The wire status marshals byte for byte as the agent's.
func TestWireNodeStatus(t *testing.T) {
	inv, err := DiscoverInventory(InventoryOptions{Node: "gpu-017", FS: fixtureFS(t, "dgx-h100")})
	if err != nil {
		t.Fatal(err)
	}
	since := time.Date(2025, 3, 4, 5, 6, 7, 891011121, time.FixedZone("CET", 3600))
	st := &NodeStatus{
		Node:              "gpu-017",
		Version:           "v0.3.0",
		AppliedGeneration: 42,
		Inventory:         inv,
		Rails: []RailStatus{
			{Rail: 0, Netdev: "enp27s0np0", RDMADevice: "mlx5_0", Tenant: &TenantConfig{ID: "tenant-a", VRF: "TENANT-A", VNI: 10001},
				IPv4: "10.0.0.1/31", IPv6: "fc00:0:0:1::1/127", GIDIndexIPv4: 3, GIDIndexIPv6: 1,
				Conditions: []Condition{
					{Type: "LinkUp", Status: StatusTrue, Reason: "OperUp", Since: since},
					{Type: "AddressesReady", Status: StatusFalse, Reason: "Conflict", Message: "10.0.0.1/31 is on eth9 \"quoted\" <b>", Since: since},
					{Type: "QoSReady", Status: StatusUnsupported, Reason: "Unsupported", Message: "dcb: no dcbnl", Since: since.UTC()},
					{Type: "GPUAffinityOK", Status: StatusUnknown, Reason: "NoGPU"},
				}},
			{Rail: 1, Netdev: "rail1", GIDIndexIPv4: -1, GIDIndexIPv6: -1, Conditions: []Condition{}},
			{Rail: 2, Netdev: "rail2", GIDIndexIPv4: -1, GIDIndexIPv6: -1},
		},
		Conditions:    []Condition{{Type: "NVMLReady", Status: StatusUnknown, Reason: "NotQueried", Since: since}},
		LastReconcile: since,
		LastError:     "link: rail 1: boom",
	}
	w := st.Wire()
	sameJSON(t, "status", st, w)
	sameJSON(t, "zero status", &NodeStatus{}, (&NodeStatus{}).Wire())
	sameJSON(t, "status without inventory", &NodeStatus{Node: "x", Rails: []RailStatus{}}, (&NodeStatus{Node: "x", Rails: []RailStatus{}}).Wire())
	if (*NodeStatus)(nil).Wire() != nil {
		t.Error("nil status should give nil")
	}

	// A status decoded from the wire is the same JSON again.
	b, _ := json.Marshal(w)
	var back v1.NodeStatus
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	sameJSON(t, "round trip", w, &back)
}
