package agent

import (
	"encoding/json"
	"fmt"
	"io"
	"sort"

	"github.com/roce-agent/roce-agent/nic/linkengine"
	"github.com/roce-agent/roce-agent/qos"
)

// PlanReport is what `roce-agent plan` prints.
type PlanReport struct {
	Rails       []linkengine.RailLink `json:"-"`
	Changes     []ChangeJSON          `json:"changes"`
	Conflicts   []ConflictJSON        `json:"conflicts"`
	Unsupported []UnsupportedJSON     `json:"unsupported"`
	Errors      []string              `json:"errors"`
	Unmanaged   []string              `json:"unmanaged"`
}

// UnsupportedJSON is a QoS group a rail NIC cannot do, and why.
type UnsupportedJSON struct {
	Rail   int    `json:"rail"`
	Netdev string `json:"netdev"`
	Group  string `json:"group"`
	Reason string `json:"reason"`
}

// AddQoS appends a QoS plan: its changes (kind qos-<group>), the groups a
// NIC does not support, and the NICs whose state could not be read.
func (r *PlanReport) AddQoS(plan qos.Plan) {
	for _, c := range plan.Changes {
		r.Changes = append(r.Changes, ChangeJSON{c.Rail, c.Netdev, "qos-" + string(c.Group), c.Command})
	}
	for _, u := range plan.Unsupported {
		r.Unsupported = append(r.Unsupported, UnsupportedJSON{u.Rail, u.Netdev, string(u.Group), u.Reason})
	}
	for _, e := range plan.Errs {
		r.Errors = append(r.Errors, e.Error())
	}
}

// ChangeJSON is one planned or applied change.
type ChangeJSON struct {
	Rail    int    `json:"rail"`
	Netdev  string `json:"netdev"`
	Kind    string `json:"kind"`
	Command string `json:"command"`
}

// ConflictJSON is foreign state that stops one change of a rail (or the
// whole rail, for a missing netdev).
type ConflictJSON struct {
	Rail   int    `json:"rail"`
	Netdev string `json:"netdev"`
	Object string `json:"object"`
	Owner  string `json:"owner"`
	Reason string `json:"reason"`
}

// NewPlanReport wraps a plan for output.
func NewPlanReport(rails []linkengine.RailLink, plan linkengine.LinkPlan, unmanaged []string) *PlanReport {
	r := &PlanReport{Rails: rails, Changes: []ChangeJSON{}, Conflicts: []ConflictJSON{}, Unsupported: []UnsupportedJSON{}, Errors: []string{}, Unmanaged: nonNil(unmanaged)}
	for _, c := range plan.Changes {
		r.Changes = append(r.Changes, ChangeJSON{c.Rail, c.Netdev, string(c.Kind), c.Command})
	}
	for _, c := range plan.Conflicts {
		r.Conflicts = append(r.Conflicts, ConflictJSON{c.Rail, c.Netdev, c.Object, c.Owner, c.Reason})
	}
	return r
}

// Write prints the plan as a table or JSON. The table's first line counts
// exactly the change and conflict lines that follow: each rail's
// conflicts, then its changes; owned objects of no rail last.
func (r *PlanReport) Write(w io.Writer, format string) error {
	if format == "json" {
		return WriteJSON(w, r)
	}
	type railLines struct {
		netdev    string
		conflicts []string
		changes   []string
	}
	lines := map[int]*railLines{}
	var order []int
	line := func(rail int, netdev string) *railLines {
		l, ok := lines[rail]
		if !ok {
			l = &railLines{netdev: netdev}
			lines[rail] = l
			order = append(order, rail)
		}
		return l
	}
	for _, rail := range r.Rails {
		line(rail.Rail, rail.Netdev)
	}
	var cleanupConflicts []string
	for _, c := range r.Conflicts {
		if c.Rail < 0 {
			cleanupConflicts = append(cleanupConflicts, c.Reason)
			continue
		}
		l := line(c.Rail, c.Netdev)
		l.conflicts = append(l.conflicts, c.Reason)
	}
	for _, c := range r.Changes {
		if c.Rail < 0 {
			continue
		}
		l := line(c.Rail, c.Netdev)
		l.changes = append(l.changes, c.Command)
	}
	sort.SliceStable(order, func(i, j int) bool { return order[i] < order[j] })
	fmt.Fprintf(w, "%d changes, %d conflicts\n", len(r.Changes), len(r.Conflicts))
	if len(r.Rails) == 0 {
		fmt.Fprintln(w, noRails)
	}
	for _, rail := range order {
		l := lines[rail]
		if len(l.conflicts) == 0 && len(l.changes) == 0 {
			fmt.Fprintf(w, "rail %d (%s): converged\n", rail, l.netdev)
			continue
		}
		fmt.Fprintf(w, "rail %d (%s):\n", rail, l.netdev)
		for _, c := range l.conflicts {
			fmt.Fprintf(w, "  conflict: %s\n", c)
		}
		for _, c := range l.changes {
			fmt.Fprintf(w, "  %s\n", c)
		}
	}
	var cleanup []string
	for _, c := range r.Changes {
		if c.Rail < 0 {
			cleanup = append(cleanup, c.Command)
		}
	}
	if len(cleanup)+len(cleanupConflicts) > 0 {
		fmt.Fprintf(w, "owned objects no rail wants:\n")
		for _, c := range cleanupConflicts {
			fmt.Fprintf(w, "  conflict: %s\n", c)
		}
		for _, c := range cleanup {
			fmt.Fprintf(w, "  %s\n", c)
		}
	}
	for _, u := range r.Unsupported {
		fmt.Fprintf(w, "rail %d (%s): qos %s unsupported: %s\n", u.Rail, u.Netdev, u.Group, u.Reason)
	}
	for _, e := range r.Errors {
		fmt.Fprintf(w, "error: %s\n", e)
	}
	for _, u := range r.Unmanaged {
		fmt.Fprintf(w, "not managed: %s\n", u)
	}
	return nil
}

// TeardownReport is what `roce-agent teardown` prints.
type TeardownReport struct {
	DryRun  bool     `json:"dry_run"`
	Planned []string `json:"planned"`
	Removed []string `json:"removed"`
	Errors  []string `json:"errors"`
}

// NewTeardownReport wraps a teardown result for output.
func NewTeardownReport(res linkengine.TeardownResult, dryRun bool) *TeardownReport {
	r := &TeardownReport{DryRun: dryRun, Planned: nonNil(res.Planned), Removed: []string{}, Errors: []string{}}
	for _, m := range res.Removed {
		r.Removed = append(r.Removed, m.Object)
	}
	for _, e := range res.Errs {
		r.Errors = append(r.Errors, e.Error())
	}
	return r
}

// Write prints the teardown plan, then what was removed.
func (r *TeardownReport) Write(w io.Writer, format string) error {
	if format == "json" {
		return WriteJSON(w, r)
	}
	fmt.Fprintf(w, "%d objects owned by roce-agent\n", len(r.Planned))
	for _, c := range r.Planned {
		fmt.Fprintf(w, "  %s\n", c)
	}
	if r.DryRun {
		for _, e := range r.Errors {
			fmt.Fprintf(w, "error: %s\n", e)
		}
		fmt.Fprintf(w, "dry run: nothing removed\n")
		return nil
	}
	for _, c := range r.Removed {
		fmt.Fprintf(w, "removed: %s\n", c)
	}
	for _, e := range r.Errors {
		fmt.Fprintf(w, "error: %s\n", e)
	}
	fmt.Fprintf(w, "%d of %d removed\n", len(r.Removed), len(r.Planned))
	return nil
}

// noRails is what plan and apply say when there is no rail to manage.
const noRails = "no rails to manage: the inventory has no rail NIC with an address (check --sysfs-root, rails[] pins and the addressing pools)"

// ApplyReport is what `roce-agent apply` prints.
type ApplyReport struct {
	Converged   bool              `json:"converged"`
	Rails       []RailResultJSON  `json:"rails"`
	Unsupported []UnsupportedJSON `json:"unsupported"`
	Cleanup     []string          `json:"cleanup"`
	Errors      []string          `json:"errors"`
	Writes      int               `json:"writes"`
	Unmanaged   []string          `json:"unmanaged"`
}

// RailResultJSON is how one rail fared.
type RailResultJSON struct {
	Rail      int      `json:"rail"`
	Netdev    string   `json:"netdev"`
	Converged bool     `json:"converged"`
	Applied   []string `json:"applied"`
	Conflict  string   `json:"conflict,omitempty"`
	Error     string   `json:"error,omitempty"`
}

// NewApplyReport wraps an apply result for output.
func NewApplyReport(res linkengine.ApplyResult, unmanaged []string) *ApplyReport {
	r := &ApplyReport{Converged: res.Converged(), Rails: []RailResultJSON{}, Unsupported: []UnsupportedJSON{}, Cleanup: nonNil(res.Cleanup), Errors: []string{}, Writes: res.Writes, Unmanaged: nonNil(unmanaged)}
	for _, rr := range res.Rails {
		j := RailResultJSON{Rail: rr.Rail, Netdev: rr.Netdev, Converged: rr.Converged, Applied: nonNil(rr.Applied), Conflict: rr.Conflict}
		if rr.Err != nil {
			j.Error = rr.Err.Error()
		}
		r.Rails = append(r.Rails, j)
	}
	for _, e := range res.Errs {
		r.Errors = append(r.Errors, e.Error())
	}
	return r
}

// AddQoS merges the QoS results: applied commands and failures per rail
// (a failure makes the rail not converged), unsupported groups, and NICs
// whose QoS state could not be read.
func (r *ApplyReport) AddQoS(plan qos.Plan, results []qos.Result) {
	rail := func(n int, netdev string) *RailResultJSON {
		for i := range r.Rails {
			if r.Rails[i].Rail == n {
				return &r.Rails[i]
			}
		}
		r.Rails = append(r.Rails, RailResultJSON{Rail: n, Netdev: netdev, Converged: true, Applied: []string{}})
		return &r.Rails[len(r.Rails)-1]
	}
	for _, res := range results {
		rr := rail(res.Rail, res.Netdev)
		rr.Applied = append(rr.Applied, res.Applied...)
		r.Writes += len(res.Applied)
		if res.Err != nil {
			r.Writes++
			rr.Converged, r.Converged = false, false
			rr.Error = res.Err.Error()
		}
	}
	for _, e := range plan.Errs {
		rr := rail(e.Rail, e.Netdev)
		rr.Converged, r.Converged = false, false
		rr.Error = e.Err.Error()
	}
	for _, u := range plan.Unsupported {
		r.Unsupported = append(r.Unsupported, UnsupportedJSON{u.Rail, u.Netdev, string(u.Group), u.Reason})
	}
}

// Write prints the result as a table or JSON.
func (r *ApplyReport) Write(w io.Writer, format string) error {
	if format == "json" {
		return WriteJSON(w, r)
	}
	ok := 0
	for _, rr := range r.Rails {
		switch {
		case rr.Conflict != "":
			fmt.Fprintf(w, "rail %d (%s): NOT CONVERGED: conflict: %s\n", rr.Rail, rr.Netdev, rr.Conflict)
		case rr.Error != "":
			fmt.Fprintf(w, "rail %d (%s): NOT CONVERGED after %d changes: %s\n", rr.Rail, rr.Netdev, len(rr.Applied), rr.Error)
		default:
			ok++
			fmt.Fprintf(w, "rail %d (%s): converged, %d changes\n", rr.Rail, rr.Netdev, len(rr.Applied))
		}
	}
	for _, u := range r.Unsupported {
		fmt.Fprintf(w, "rail %d (%s): qos %s unsupported: %s\n", u.Rail, u.Netdev, u.Group, u.Reason)
	}
	for _, c := range r.Cleanup {
		fmt.Fprintf(w, "removed: %s\n", c)
	}
	for _, e := range r.Errors {
		fmt.Fprintf(w, "error: %s\n", e)
	}
	for _, u := range r.Unmanaged {
		fmt.Fprintf(w, "not managed: %s\n", u)
	}
	if len(r.Rails) == 0 {
		fmt.Fprintln(w, noRails)
	}
	fmt.Fprintf(w, "%d of %d rails converged, %d writes\n", ok, len(r.Rails), r.Writes)
	return nil
}

// WriteJSON writes v as indented JSON, as every command's --output json does.
func WriteJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
