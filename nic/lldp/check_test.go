package lldp

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	v1 "github.com/roce-agent/roce-agent/api/v1"
)

func nb(leaf, port string) *Neighbor {
	return &Neighbor{ChassisID: "chassis-" + leaf, ChassisIDType: "local", SysName: leaf, PortID: port, PortIDType: "ifname"}
}

func rail(n int, leaf, port string, got *Neighbor) RailInput {
	return RailInput{Rail: n, Netdev: fmt.Sprintf("rail%d", n), Leaf: leaf, Port: port, Neighbor: got}
}

type want struct {
	status v1.ConditionStatus
	reason string
	msg    string // a substring of the message
}

func TestCheckCabling(t *testing.T) {
	T, F, U := v1.StatusTrue, v1.StatusFalse, v1.StatusUnknown
	for _, tc := range []struct {
		name  string
		rails []RailInput
		want  []want
	}{
		{"as planned", []RailInput{rail(0, "leaf0", "swp1", nb("leaf0", "swp1")), rail(1, "leaf1", "swp1", nb("leaf1", "swp1"))},
			[]want{{T, "Planned", "rail 0 reaches leaf0 port swp1, as planned"}, {T, "Planned", "rail 1 reaches leaf1 port swp1, as planned"}}},
		{"swapped", []RailInput{rail(0, "leaf0", "swp1", nb("leaf0", "swp2")), rail(1, "leaf0", "swp2", nb("leaf0", "swp1")), rail(2, "leaf0", "swp3", nb("leaf0", "swp3"))},
			[]want{
				{F, "Swapped", "rail 0 reaches leaf0 port swp2, the port planned for rail 1: rails 0 and 1 look swapped (rail 0 should reach leaf0 port swp1)"},
				{F, "Swapped", "rail 1 reaches leaf0 port swp1, the port planned for rail 0: rails 1 and 0 look swapped"},
				{T, "Planned", ""}}},
		{"swapped across leaves, leaf only plan", []RailInput{rail(0, "leaf0", "", nb("leaf1", "swp1")), rail(1, "leaf1", "", nb("leaf0", "swp1"))},
			[]want{{F, "Swapped", "rail 0 reaches leaf1 port swp1, the leaf planned for rail 1: rails 0 and 1 look swapped (rail 0 should reach leaf leaf0)"}, {F, "Swapped", ""}}},
		{"leaf only plan met", []RailInput{rail(0, "leaf0", "", nb("leaf0", "swp9"))},
			[]want{{T, "Planned", "rail 0 reaches leaf0 port swp9; leaf0 is the planned leaf (no port is planned)"}}},
		{"wrong port", []RailInput{rail(0, "leaf0", "swp1", nb("leaf0", "swp9"))},
			[]want{{F, "WrongPort", "rail 0 reaches leaf0 port swp9, not the planned port swp1 of leaf0"}}},
		{"wrong leaf", []RailInput{rail(0, "leaf0", "swp1", nb("leaf7", "swp1"))},
			[]want{{F, "WrongLeaf", "rail 0 reaches leaf7 port swp1, not the planned leaf leaf0 (want leaf0 port swp1)"}}},
		{"another rail's port, not swapped", []RailInput{rail(0, "leaf0", "swp1", nb("leaf0", "swp2")), rail(1, "leaf0", "swp2", nil)},
			[]want{{F, "WrongPort", "rail 0 reaches leaf0 port swp2, the port planned for rail 1; it should reach leaf0 port swp1"},
				{U, "NoNeighbor", "no LLDP neighbour on rail 1 (rail1); every other rail has one"}}},
		{"another leaf's port", []RailInput{rail(0, "leaf0", "swp1", nb("leaf1", "swp1")), rail(1, "leaf1", "swp1", nb("leaf1", "swp2"))},
			[]want{{F, "WrongLeaf", "the port planned for rail 1"}, {F, "WrongPort", "not the planned port swp1 of leaf1"}}},
		{"one port twice", []RailInput{rail(0, "leaf0", "swp1", nb("leaf0", "swp1")), rail(3, "", "", nb("leaf0", "swp1")), rail(4, "", "", nb("leaf0", "swp2"))},
			[]want{{F, "SharedPort", "rails 0 and 3 both reach leaf0 port swp1: two rails cannot be cabled to one leaf port"}, {F, "SharedPort", "rails 0 and 3 both"}, {T, "DistinctPorts", ""}}},
		{"one port three times", []RailInput{rail(0, "", "", nb("leaf0", "swp1")), rail(1, "", "", nb("leaf0", "swp1")), rail(2, "", "", nb("leaf0", "swp1"))},
			[]want{{F, "SharedPort", "rails 0, 1 and 2 all reach"}, {F, "SharedPort", ""}, {F, "SharedPort", ""}}},
		{"no plan, one leaf", []RailInput{rail(0, "", "", nb("leaf0", "swp1")), rail(1, "", "", nb("leaf0", "swp2"))},
			[]want{{T, "DistinctPorts", "rail 0 reaches leaf0 port swp1, which no other rail reaches; no leaf is planned for rail 0 (rails[].leaf), so which leaf and port it should reach was not checked (all 2 rails with a neighbour reach leaf0)"},
				{T, "DistinctPorts", ""}}},
		{"no plan, two leaves", []RailInput{rail(0, "", "", nb("leaf0", "swp1")), rail(1, "", "", nb("leaf0", "swp2")), rail(2, "", "", nb("leaf1", "swp1"))},
			[]want{{T, "DistinctPorts", "(the rails reach 2 leaves: leaf0 (rails 0 and 1), leaf1 (rail 2))"}, {T, "DistinctPorts", ""}, {T, "DistinctPorts", ""}}},
		{"no plan, alone", []RailInput{rail(0, "", "", nb("leaf0", "swp1"))},
			[]want{{T, "DistinctPorts", "was not checked"}}},
		{"unplanned rail on a planned port", []RailInput{rail(0, "leaf0", "swp1", nil), rail(1, "", "", nb("leaf0", "swp1"))},
			[]want{{U, "NoNeighbor", "every other rail has one"}, {F, "WrongPort", "rail 1 reaches leaf0 port swp1, the port planned for rail 0"}}},
		{"nobody has a neighbour", []RailInput{rail(0, "leaf0", "swp1", nil), {Rail: 1, Netdev: "rail1", Err: fmt.Errorf("lldp listen rail1: %w: no LLDPDU in 35s", ErrNoNeighbor)}},
			[]want{{U, "NoNeighbor", "no LLDP neighbour on rail 0 (rail0); is LLDP off on the leaf port, or lldpd not running on the leaf?"},
				{U, "NoNeighbor", "no LLDP neighbour on rail 1 (rail1): lldp listen rail1: no LLDP neighbour: no LLDPDU in 35s; is LLDP off"}}},
		{"read error", []RailInput{{Rail: 0, Netdev: "rail0", Err: errors.New("lldpctl: exit 1")}, rail(1, "", "", nb("leaf0", "swp1")), rail(2, "", "", nil)},
			[]want{{U, "LLDPError", "cannot read the LLDP neighbour of rail 0 (rail0): lldpctl: exit 1"}, {T, "DistinctPorts", ""}, {U, "NoNeighbor", "is LLDP off"}}},
		{"several neighbours", []RailInput{rail(0, "leaf0", "swp1", &Neighbor{ChassisID: "c0", SysName: "leaf0", PortID: "swp1", Others: []Neighbor{*nb("leaf9", "Ethernet7")}})},
			[]want{{F, "MultipleNeighbors", "rail 0 sees 2 LLDP neighbours, leaf0 port swp1 and leaf9 port Ethernet7"}}},
		{"matched by chassis id and port description", []RailInput{rail(0, "0c:42:a1:00:00:01", "gpu-00 rail0", &Neighbor{ChassisID: "0c:42:a1:00:00:01", PortID: "aa:bb:cc:dd:ee:ff", PortIDType: "mac", PortDescr: "gpu-00 rail0"})},
			[]want{{T, "Planned", "rail 0 reaches 0c:42:a1:00:00:01 port gpu-00 rail0, as planned"}}},
		{"empty", nil, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := CheckCabling(tc.rails)
			if len(got) != len(tc.want) {
				t.Fatalf("%d results, want %d", len(got), len(tc.want))
			}
			for i, w := range tc.want {
				g := got[i]
				if g.Rail != tc.rails[i].Rail || g.Netdev != tc.rails[i].Netdev || g.Status != w.status || g.Reason != w.reason || !strings.Contains(g.Message, w.msg) {
					t.Errorf("rail %d: %s %s %q\nwant %s %s containing %q", tc.rails[i].Rail, g.Status, g.Reason, g.Message, w.status, w.reason, w.msg)
				}
			}
		})
	}
}

// The captured swapped host: rails planned on swp4 and swp5 reach them
// the other way round.
func TestCheckCablingCaptured(t *testing.T) {
	got, err := ParseLldpctlJSON(readFixture(t, "lldpctl-swapped.json"))
	if err != nil {
		t.Fatal(err)
	}
	n0, n1 := got["rail0"], got["rail1"]
	res := CheckCabling([]RailInput{rail(0, "leaf0", "swp4", &n0), rail(1, "leaf0", "swp5", &n1)})
	if res[0].Reason != "Swapped" || res[0].Message != "rail 0 reaches leaf0 port swp5, the port planned for rail 1: rails 0 and 1 look swapped (rail 0 should reach leaf0 port swp4)" {
		t.Errorf("%+v", res[0])
	}
	// Planned by port description (the leaf's alias) instead.
	res = CheckCabling([]RailInput{rail(0, "leaf0", "gpu-02 rail1", &n0), rail(1, "leaf0", "gpu-02 rail0", &n1)})
	if res[0].Status != v1.StatusTrue || res[1].Status != v1.StatusTrue {
		t.Errorf("%+v", res)
	}
}
