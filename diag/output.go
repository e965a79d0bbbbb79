package diag

import (
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
)

// WriteJSON writes the report as one indented JSON document (Schema).
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// WriteTable writes the report grouped as an operator reads it: the
// node's results first, then each rail's, one line per result with its
// observed and expected values, and under every result that is not PASS
// its reason and remedy. It ends with the counts and the checks that
// needed root.
func (r *Report) WriteTable(w io.Writer) error {
	groups := map[string][]Result{}
	var railKeys []int
	seen := map[int]bool{}
	for _, res := range r.Results {
		key := "node"
		if res.Rail != nil {
			key = fmt.Sprintf("rail %d", *res.Rail)
			if !seen[*res.Rail] {
				seen[*res.Rail] = true
				railKeys = append(railKeys, *res.Rail)
			}
		}
		groups[key] = append(groups[key], res)
	}
	sort.Ints(railKeys)
	order := []string{"node"}
	for _, k := range railKeys {
		order = append(order, fmt.Sprintf("rail %d", k))
	}
	fmt.Fprintf(w, "roce-agent diag: node %s, %s (%s)\n", orDash(r.Node), r.Time.UTC().Format("2006-01-02 15:04:05Z"), privilegeWord(r.Privileged))
	for _, n := range r.Notes {
		fmt.Fprintf(w, "note: %s\n", n)
	}
	for _, key := range order {
		rs := groups[key]
		if len(rs) == 0 {
			continue
		}
		title := key
		if key != "node" {
			title = key + railSubjects(rs)
		}
		fmt.Fprintf(w, "\n== %s\n", title)
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		for _, res := range rs {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", res.Status, res.ID, res.Subject, res.Title, observedExpected(res))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		for _, res := range rs {
			if res.Status == Pass || res.Status == Skip || (res.Reason == "" && res.Remedy == "") {
				continue
			}
			fmt.Fprintf(w, "  %s %s %s:", res.Status, res.ID, res.Subject)
			if res.Reason != "" {
				fmt.Fprintf(w, " %s.", strings.TrimSuffix(res.Reason, "."))
			}
			if res.Remedy != "" && res.Status != Skip {
				fmt.Fprintf(w, " Remedy: %s", res.Remedy)
			}
			fmt.Fprintln(w)
		}
	}
	var counts []string
	for _, s := range []Status{Pass, Warn, Fail, Unknown, Skip} {
		if n := r.Counts[s]; n > 0 {
			counts = append(counts, fmt.Sprintf("%d %s", n, s))
		}
	}
	fmt.Fprintf(w, "\n%d results: %s; worst %s (exit %d)\n", len(r.Results), strings.Join(counts, ", "), r.Worst, r.ExitCode)
	if len(r.NeedPrivilege) > 0 {
		fmt.Fprintf(w, "skipped for lack of privilege (run as root to check): %s\n", strings.Join(r.NeedPrivilege, ", "))
	}
	return nil
}

func privilegeWord(root bool) string {
	if root {
		return "as root"
	}
	return "not root: some checks are skipped"
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// railSubjects names a rail's devices from its results' subjects.
func railSubjects(rs []Result) string {
	var names []string
	seen := map[string]bool{}
	for _, r := range rs {
		if r.Subject != "" && r.Subject != "node" && !seen[r.Subject] && !strings.Contains(r.Subject, ":") {
			seen[r.Subject] = true
			names = append(names, r.Subject)
		}
		if len(names) == 2 {
			break
		}
	}
	if len(names) == 0 {
		return ""
	}
	return " (" + strings.Join(names, ", ") + ")"
}

func observedExpected(r Result) string {
	switch {
	case r.Status == Skip:
		// A skip's reason is short and its whole story.
		return r.Reason
	case r.Observed != "" && r.Expected != "":
		return r.Observed + " (expected " + r.Expected + ")"
	case r.Observed != "":
		return r.Observed
	case r.Expected != "":
		return "expected " + r.Expected
	}
	return ""
}
