package lldp

import (
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"

	v1 "github.com/roce-agent/roce-agent/api/v1"
)

// RailInput is one rail for CheckCabling: its number and netdev, the leaf
// and port the plan names for it ("" not planned; Port "" any port of
// Leaf), and what it reaches: Neighbor, or nil and Err saying why not
// (nil: no neighbour).
type RailInput struct {
	Rail     int
	Netdev   string
	Leaf     string
	Port     string
	Neighbor *Neighbor
	Err      error
}

// RailResult is a rail's verdict: Status True (cabled as planned, or,
// without a plan, to a port no other rail reaches), False (miscabled) or
// Unknown (no neighbour to judge by), with a CamelCase Reason and a
// Message naming what the rail reaches and what was expected.
type RailResult struct {
	Rail    int
	Netdev  string
	Status  v1.ConditionStatus
	Reason  string
	Message string
}

// CablingOK reasons.
const (
	// True.
	ReasonPlanned       = "Planned"
	ReasonDistinctPorts = "DistinctPorts"
	// False.
	ReasonSwapped           = "Swapped"
	ReasonWrongPort         = "WrongPort"
	ReasonWrongLeaf         = "WrongLeaf"
	ReasonSharedPort        = "SharedPort"
	ReasonMultipleNeighbors = "MultipleNeighbors"
	// Unknown.
	ReasonNoNeighbor = "NoNeighbor"
	ReasonLLDPError  = "LLDPError"
)

// CheckCabling cross-checks the rails' LLDP neighbours, one result per
// input in order:
//   - a rail without a neighbour is Unknown (LLDP off on the leaf port,
//     lldpd not running on the leaf, the link down), saying so when every
//     other rail has one;
//   - a rail that sees several neighbours is False;
//   - rails that reach one leaf port (chassis ID and port ID) are all
//     False;
//   - a rail with a planned leaf (and port) must reach exactly it; else
//     it is False, naming what it reaches and the rail that port is
//     planned for ("rails 0 and 1 look swapped" when each reaches the
//     other's);
//   - a rail without a plan is True when no other rail reaches its port
//     or a port planned for another rail, the message saying that its
//     leaf and port were not checked (rails of a host on one leaf are
//     fine).
func CheckCabling(rails []RailInput) []RailResult {
	out := make([]RailResult, len(rails))
	byPort := map[string][]int{}
	withNeighbor := 0
	for i, r := range rails {
		if r.Neighbor != nil {
			withNeighbor++
			k := r.Neighbor.ChassisID + "\x00" + r.Neighbor.PortID
			byPort[k] = append(byPort[k], i)
		}
	}
	for i, r := range rails {
		res := RailResult{Rail: r.Rail, Netdev: r.Netdev}
		res.Status, res.Reason, res.Message = judge(rails, i, byPort, withNeighbor)
		out[i] = res
	}
	return out
}

func judge(rails []RailInput, i int, byPort map[string][]int, withNeighbor int) (v1.ConditionStatus, string, string) {
	r := rails[i]
	name := "rail " + strconv.Itoa(r.Rail)
	n := r.Neighbor
	if n == nil {
		reason := ReasonNoNeighbor
		msg := fmt.Sprintf("no LLDP neighbour on %s (%s)", name, r.Netdev)
		if r.Err != nil && !errors.Is(r.Err, ErrNoNeighbor) {
			reason = ReasonLLDPError
			msg = fmt.Sprintf("cannot read the LLDP neighbour of %s (%s): %v", name, r.Netdev, r.Err)
		} else if r.Err != nil {
			msg += ": " + r.Err.Error()
		}
		if withNeighbor > 0 && withNeighbor == len(rails)-1 {
			msg += "; every other rail has one: check this rail's link and cable, and LLDP on its leaf port"
		} else if reason == ReasonNoNeighbor {
			msg += "; is LLDP off on the leaf port, or lldpd not running on the leaf?"
		}
		return v1.StatusUnknown, reason, msg
	}
	if len(n.Others) > 0 {
		var others []string
		for _, o := range n.Others {
			others = append(others, o.String())
		}
		return v1.StatusFalse, ReasonMultipleNeighbors, fmt.Sprintf("%s sees %d LLDP neighbours, %s and %s: something between the NIC and the leaf forwards LLDP",
			name, len(n.Others)+1, n, strings.Join(others, ", "))
	}
	if same := byPort[n.ChassisID+"\x00"+n.PortID]; len(same) > 1 {
		var nums []string
		for _, j := range same {
			nums = append(nums, strconv.Itoa(rails[j].Rail))
		}
		all := "all"
		if len(nums) == 2 {
			all = "both"
		}
		return v1.StatusFalse, ReasonSharedPort, fmt.Sprintf("rails %s %s reach %s: two rails cannot be cabled to one leaf port", joinAnd(nums), all, n)
	}
	// The rail whose plan this rail's neighbour matches, if another's.
	other := -1
	for j, o := range rails {
		if j != i && planned(o, *n) && (other < 0 || (o.Neighbor != nil && planned(r, *o.Neighbor))) {
			other = j
		}
	}
	if r.Leaf == "" {
		if other >= 0 {
			return v1.StatusFalse, ReasonWrongPort, fmt.Sprintf("%s reaches %s, the %s planned for rail %d", name, n, what(rails[other]), rails[other].Rail)
		}
		return v1.StatusTrue, ReasonDistinctPorts, fmt.Sprintf("%s reaches %s, which no other rail reaches; no leaf is planned for %s (rails[].leaf), so which leaf and port it should reach was not checked%s",
			name, n, name, leafSummary(rails))
	}
	if planned(r, *n) {
		if r.Port == "" {
			return v1.StatusTrue, ReasonPlanned, fmt.Sprintf("%s reaches %s; %s is the planned leaf (no port is planned)", name, n, r.Leaf)
		}
		return v1.StatusTrue, ReasonPlanned, fmt.Sprintf("%s reaches %s, as planned", name, n)
	}
	want := plannedText(r)
	if other >= 0 {
		o := rails[other]
		if o.Neighbor != nil && planned(r, *o.Neighbor) {
			return v1.StatusFalse, ReasonSwapped, fmt.Sprintf("%s reaches %s, the %s planned for rail %d: rails %d and %d look swapped (rail %d should reach %s)",
				name, n, what(o), o.Rail, r.Rail, o.Rail, r.Rail, want)
		}
		reason := ReasonWrongPort
		if !n.IsLeaf(r.Leaf) {
			reason = ReasonWrongLeaf
		}
		return v1.StatusFalse, reason, fmt.Sprintf("%s reaches %s, the %s planned for rail %d; it should reach %s", name, n, what(o), o.Rail, want)
	}
	if !n.IsLeaf(r.Leaf) {
		return v1.StatusFalse, ReasonWrongLeaf, fmt.Sprintf("%s reaches %s, not the planned leaf %s (want %s)", name, n, r.Leaf, want)
	}
	return v1.StatusFalse, ReasonWrongPort, fmt.Sprintf("%s reaches %s, not the planned port %s of %s", name, n, r.Port, r.Leaf)
}

// planned reports whether n is where the plan of r says r goes (false
// without a plan).
func planned(r RailInput, n Neighbor) bool {
	return r.Leaf != "" && n.IsLeaf(r.Leaf) && (r.Port == "" || n.HasPort(r.Port))
}

func what(r RailInput) string {
	if r.Port == "" {
		return "leaf"
	}
	return "port"
}

func plannedText(r RailInput) string {
	if r.Port == "" {
		return "leaf " + r.Leaf
	}
	return r.Leaf + " port " + r.Port
}

// leafSummary says which leaves the rails reach: " (all 4 rails reach
// leaf0)" or " (rails reach 2 leaves: leaf0 (rails 0 and 1), leaf1
// (rail 2))".
func leafSummary(rails []RailInput) string {
	byLeaf := map[string][]string{}
	for _, r := range rails {
		if r.Neighbor != nil {
			l := r.Neighbor.Leaf()
			byLeaf[l] = append(byLeaf[l], strconv.Itoa(r.Rail))
		}
	}
	switch len(byLeaf) {
	case 0:
		return ""
	case 1:
		for l, rs := range byLeaf {
			if len(rs) == 1 {
				return ""
			}
			return fmt.Sprintf(" (all %d rails with a neighbour reach %s)", len(rs), l)
		}
	}
	leaves := make([]string, 0, len(byLeaf))
	for l := range byLeaf {
		leaves = append(leaves, l)
	}
	sort.Strings(leaves)
	var parts []string
	for _, l := range leaves {
		rs := byLeaf[l]
		word := "rail "
		if len(rs) > 1 {
			word = "rails "
		}
		parts = append(parts, fmt.Sprintf("%s (%s%s)", l, word, joinAnd(rs)))
	}
	return fmt.Sprintf(" (the rails reach %d leaves: %s)", len(leaves), strings.Join(parts, ", "))
}

// joinAnd is "0", "0 and 1", "0, 1 and 2".
func joinAnd(s []string) string {
	if len(s) <= 1 {
		return strings.Join(s, "")
	}
	return strings.Join(s[:len(s)-1], ", ") + " and " + s[len(s)-1]
}
