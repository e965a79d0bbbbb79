package agent

import (
	"encoding/json"
	"fmt"
	"io"

	"github.com/roce-agent/roce-agent/nic"
)

// LinkRange is the table and priority range the configuration gives the
// link engine.
func (c Config) LinkRange() nic.TableRange {
	return nic.TableRange{TableBase: c.Link.Routing.TableBase, PriorityBase: c.Link.Routing.RulePriorityBase, Size: RailTableSpan}
}

// PlanReport is what `roce-agent plan` prints.
type PlanReport struct {
	Rails     []nic.RailLink `json:"-"`
	Changes   []ChangeJSON   `json:"changes"`
	Conflicts []ConflictJSON `json:"conflicts"`
	Unmanaged []string       `json:"unmanaged"`
}

// ChangeJSON is one planned or applied change.
type ChangeJSON struct {
	Rail    int    `json:"rail"`
	Netdev  string `json:"netdev"`
	Kind    string `json:"kind"`
	Command string `json:"command"`
}

// ConflictJSON is foreign state that stops a rail.
type ConflictJSON struct {
	Rail   int    `json:"rail"`
	Netdev string `json:"netdev"`
	Reason string `json:"reason"`
}

// NewPlanReport wraps a plan for output.
func NewPlanReport(rails []nic.RailLink, plan nic.LinkPlan, unmanaged []string) *PlanReport {
	r := &PlanReport{Rails: rails, Changes: []ChangeJSON{}, Conflicts: []ConflictJSON{}, Unmanaged: nonNil(unmanaged)}
	for _, c := range plan.Changes {
		r.Changes = append(r.Changes, ChangeJSON{c.Rail, c.Netdev, string(c.Kind), c.Command})
	}
	for _, c := range plan.Conflicts {
		r.Conflicts = append(r.Conflicts, ConflictJSON{c.Rail, c.Netdev, c.Reason})
	}
	return r
}

// Write prints the plan as a table or JSON.
func (r *PlanReport) Write(w io.Writer, format string) error {
	if format == "json" {
		return writeJSON(w, r)
	}
	conflicts := map[int]string{}
	for _, c := range r.Conflicts {
		conflicts[c.Rail] = c.Reason
	}
	byRail := map[int][]ChangeJSON{}
	for _, c := range r.Changes {
		byRail[c.Rail] = append(byRail[c.Rail], c)
	}
	fmt.Fprintf(w, "%d changes, %d conflicts\n", len(r.Changes), len(r.Conflicts))
	for _, rail := range r.Rails {
		switch {
		case conflicts[rail.Rail] != "":
			fmt.Fprintf(w, "rail %d (%s): conflict: %s\n", rail.Rail, rail.Netdev, conflicts[rail.Rail])
		case len(byRail[rail.Rail]) == 0:
			fmt.Fprintf(w, "rail %d (%s): converged\n", rail.Rail, rail.Netdev)
		default:
			fmt.Fprintf(w, "rail %d (%s):\n", rail.Rail, rail.Netdev)
			for _, c := range byRail[rail.Rail] {
				fmt.Fprintf(w, "  %s\n", c.Command)
			}
		}
	}
	if cleanup := byRail[-1]; len(cleanup) > 0 {
		fmt.Fprintf(w, "owned objects no rail wants:\n")
		for _, c := range cleanup {
			fmt.Fprintf(w, "  %s\n", c.Command)
		}
	}
	for _, u := range r.Unmanaged {
		fmt.Fprintf(w, "not managed: %s\n", u)
	}
	return nil
}

// ApplyReport is what `roce-agent apply` prints.
type ApplyReport struct {
	Converged bool             `json:"converged"`
	Rails     []RailResultJSON `json:"rails"`
	Cleanup   []string         `json:"cleanup"`
	Errors    []string         `json:"errors"`
	Writes    int              `json:"writes"`
	Unmanaged []string         `json:"unmanaged"`
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
func NewApplyReport(res nic.ApplyResult, unmanaged []string) *ApplyReport {
	r := &ApplyReport{Converged: res.Converged(), Rails: []RailResultJSON{}, Cleanup: nonNil(res.Cleanup), Errors: []string{}, Writes: res.Writes, Unmanaged: nonNil(unmanaged)}
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

// Write prints the result as a table or JSON.
func (r *ApplyReport) Write(w io.Writer, format string) error {
	if format == "json" {
		return writeJSON(w, r)
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
	for _, c := range r.Cleanup {
		fmt.Fprintf(w, "removed: %s\n", c)
	}
	for _, e := range r.Errors {
		fmt.Fprintf(w, "error: %s\n", e)
	}
	for _, u := range r.Unmanaged {
		fmt.Fprintf(w, "not managed: %s\n", u)
	}
	fmt.Fprintf(w, "%d of %d rails converged, %d writes\n", ok, len(r.Rails), r.Writes)
	return nil
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
