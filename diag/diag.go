// Package diag is `roce-agent diag`: every known RoCE and GPUDirect failure
// checked on the host, each result PASS, WARN, FAIL, UNKNOWN or SKIP with
// what was observed, what was expected and the remedy, and a bundle of the
// host's state for a vendor's support team.
//
// A check is a small named unit with a stable ID (ROCE-MTU-001); the
// catalogue with every remedy is docs/diag.md. Checks read the host only
// through Env: the sysfs tree, the node pipeline (netlink, dcbnl), NVML and
// one command runner, so each is tested on fixture trees that carry its
// fault. Nothing here writes to the host.
package diag

import (
	"context"
	"fmt"
	"runtime/debug"
	"sort"
	"strings"
	"sync"
	"time"
)

// Schema names the JSON report's layout; it changes only with a new
// major version of the report.
const Schema = "roce-agent/diag/v1"

// Status is a check's verdict.
type Status string

// The verdicts, best first. UNKNOWN means the check could not tell (a
// missing tool, garbage in a file, a timeout); SKIP means it did not apply
// or needed a privilege diag does not have.
const (
	Pass    Status = "PASS"
	Skip    Status = "SKIP"
	Warn    Status = "WARN"
	Unknown Status = "UNKNOWN"
	Fail    Status = "FAIL"
)

// Rank orders statuses from best (0) to worst.
func (s Status) Rank() int {
	switch s {
	case Pass:
		return 0
	case Skip:
		return 1
	case Warn:
		return 2
	case Unknown:
		return 3
	case Fail:
		return 4
	}
	return 3
}

// ExitCode is the exit status of a report whose worst result is s: 0 for
// PASS or SKIP, 1 for WARN or UNKNOWN, 2 for FAIL.
func (s Status) ExitCode() int {
	switch s {
	case Pass, Skip:
		return 0
	case Fail:
		return 2
	}
	return 1
}

// Result is one verdict of one check on one subject (the node, a rail's
// NIC, a GPU, a PCIe port).
type Result struct {
	ID    string `json:"id"`
	Title string `json:"title"`
	// Rail is set for a result about one rail.
	Rail    *int   `json:"rail,omitempty"`
	Subject string `json:"subject"`
	Status  Status `json:"status"`
	// Observed and Expected are what was read and what should be there.
	Observed string `json:"observed,omitempty"`
	Expected string `json:"expected,omitempty"`
	// Reason says why a result is not PASS (or adds a detail to one).
	Reason string `json:"reason,omitempty"`
	// Remedy is what to do about a result that is not PASS.
	Remedy string `json:"remedy,omitempty"`
	// NeedsPrivilege marks a SKIP or UNKNOWN that root would have
	// answered.
	NeedsPrivilege bool `json:"needs_privilege,omitempty"`
}

// OnRail returns r about rail i.
func (r Result) OnRail(i int) Result {
	r.Rail = &i
	return r
}

// With returns r with its reason set.
func (r Result) With(reason string, args ...any) Result {
	r.Reason = fmt.Sprintf(reason, args...)
	return r
}

// Remedied returns r with a remedy for this result alone (the check's
// remedy otherwise).
func (r Result) Remedied(remedy string) Result {
	r.Remedy = remedy
	return r
}

// PassResult is a healthy subject; observed is what was read.
func PassResult(subject, observed string) Result {
	return Result{Subject: subject, Status: Pass, Observed: observed}
}

// WarnResult is a subject that works but is not as it should be.
func WarnResult(subject, observed, expected, reason string) Result {
	return Result{Subject: subject, Status: Warn, Observed: observed, Expected: expected, Reason: reason}
}

// FailResult is a subject that breaks RoCE or GPUDirect.
func FailResult(subject, observed, expected, reason string) Result {
	return Result{Subject: subject, Status: Fail, Observed: observed, Expected: expected, Reason: reason}
}

// UnknownResult is a subject the check could not read; reason says why.
func UnknownResult(subject, reason string) Result {
	return Result{Subject: subject, Status: Unknown, Reason: reason}
}

// SkipResult is a check that does not apply; reason says why.
func SkipResult(subject, reason string) Result {
	return Result{Subject: subject, Status: Skip, Reason: reason}
}

// PrivilegeResult is a check skipped for lack of privilege; reason names
// what could not be read.
func PrivilegeResult(subject, reason string) Result {
	return Result{Subject: subject, Status: Skip, Reason: reason, NeedsPrivilege: true}
}

// Check is one named diagnostic.
type Check struct {
	// ID is stable: "ROCE-MTU-001". docs/diag.md has a section per ID.
	ID    string
	Title string
	// Doc says what the check reads and why the fault matters: one to
	// three sentences for docs/diag.md.
	Doc string
	// Remedy is the default remedy of a result that is not PASS.
	Remedy string
	// Timeout overrides Options.CheckTimeout for a check that waits on
	// purpose (sampling counters, listening for LLDP frames).
	Timeout time.Duration
	// Run returns one result per subject; none means the check had
	// nothing to look at (reported as one SKIP).
	Run func(ctx context.Context, e *Env) []Result
}

var (
	registryMu sync.Mutex
	registry   = map[string]Check{}
)

// register adds checks to the catalogue (from each check file's init).
func register(checks ...Check) {
	registryMu.Lock()
	defer registryMu.Unlock()
	for _, c := range checks {
		if c.ID == "" || c.Title == "" || c.Doc == "" || c.Remedy == "" || c.Run == nil {
			panic("diag: incomplete check " + c.ID)
		}
		if _, dup := registry[c.ID]; dup {
			panic("diag: duplicate check " + c.ID)
		}
		registry[c.ID] = c
	}
}

// areaOrder is the order of the ID prefixes in a report: the node's
// software first, then the PCIe fabric, the NICs, RoCE, QoS, the kernel's
// network settings, counters, cabling, and the agent's own services.
var areaOrder = []string{"GPU", "PCIE", "NIC", "ROCE", "QOS", "NET", "CNT", "LLDP", "CTRL", "AGENT"}

func areaRank(id string) int {
	area, _, _ := strings.Cut(id, "-")
	for i, a := range areaOrder {
		if a == area {
			return i
		}
	}
	return len(areaOrder)
}

// Checks returns the catalogue in report order.
func Checks() []Check {
	registryMu.Lock()
	out := make([]Check, 0, len(registry))
	for _, c := range registry {
		out = append(out, c)
	}
	registryMu.Unlock()
	sort.Slice(out, func(i, j int) bool {
		if ri, rj := areaRank(out[i].ID), areaRank(out[j].ID); ri != rj {
			return ri < rj
		}
		return out[i].ID < out[j].ID
	})
	return out
}

// Select returns the checks whose ID matches one of the patterns: an ID,
// or a prefix ending in "-" or "*" ("QOS-", "ROCE-MTU*"). No pattern
// selects everything; a pattern that matches nothing is an error.
func Select(patterns []string) ([]Check, error) {
	all := Checks()
	if len(patterns) == 0 {
		return all, nil
	}
	var out []Check
	seen := map[string]bool{}
	for _, p := range patterns {
		p = strings.ToUpper(strings.TrimSpace(p))
		prefix := strings.TrimSuffix(p, "*")
		matched := false
		for _, c := range all {
			if c.ID == p || (prefix != p || strings.HasSuffix(p, "-")) && strings.HasPrefix(c.ID, prefix) {
				matched = true
				if !seen[c.ID] {
					seen[c.ID] = true
					out = append(out, c)
				}
			}
		}
		if !matched {
			return nil, fmt.Errorf("--check: %q matches no check (IDs are in docs/diag.md)", p)
		}
	}
	sort.SliceStable(out, func(i, j int) bool {
		if ri, rj := areaRank(out[i].ID), areaRank(out[j].ID); ri != rj {
			return ri < rj
		}
		return out[i].ID < out[j].ID
	})
	return out, nil
}

// Report is the outcome of a diag run.
type Report struct {
	Schema     string    `json:"schema"`
	Node       string    `json:"node"`
	Version    string    `json:"version"`
	Time       time.Time `json:"time"`
	SysfsRoot  string    `json:"sysfs_root"`
	Privileged bool      `json:"privileged"`
	// Worst is the worst status; ExitCode follows from it.
	Worst    Status         `json:"worst"`
	ExitCode int            `json:"exit_code"`
	Counts   map[Status]int `json:"counts"`
	// NeedPrivilege lists the checks that root would have answered.
	NeedPrivilege []string `json:"need_privilege,omitempty"`
	// Notes are facts about the run itself (no desired state, a tree
	// instead of the live host).
	Notes   []string `json:"notes,omitempty"`
	Results []Result `json:"results"`
}

// Options bound a run.
type Options struct {
	// CheckTimeout bounds each check; one that passes it is UNKNOWN and
	// the run goes on. Zero means 20 s.
	CheckTimeout time.Duration
	// Parallel is how many checks run at once; zero means 4.
	Parallel int
}

// Run runs the checks against e. It never fails: a check that panics or
// passes its timeout is an UNKNOWN result, and ctx's end makes every check
// not yet finished UNKNOWN.
func Run(ctx context.Context, e *Env, checks []Check, opts Options) *Report {
	if opts.CheckTimeout <= 0 {
		opts.CheckTimeout = 20 * time.Second
	}
	if opts.Parallel <= 0 {
		opts.Parallel = 4
	}
	results := make([][]Result, len(checks))
	sem := make(chan struct{}, opts.Parallel)
	var wg sync.WaitGroup
	for i, c := range checks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				results[i] = []Result{UnknownResult("node", "not run: "+ctx.Err().Error())}
				return
			}
			defer func() { <-sem }()
			timeout := opts.CheckTimeout
			if c.Timeout > 0 {
				timeout = c.Timeout
			}
			results[i] = runOne(ctx, e, c, timeout)
		}()
	}
	wg.Wait()
	rep := &Report{Schema: Schema, Node: e.NodeName(), Time: e.now(), SysfsRoot: e.sysfsRoot(), Privileged: e.Privileged, Counts: map[Status]int{}, Worst: Pass, Notes: e.Notes()}
	needPriv := map[string]bool{}
	for i, c := range checks {
		rs := results[i]
		for _, r := range rs {
			r.ID, r.Title = c.ID, c.Title
			if r.Status == "" {
				r.Status = Unknown
			}
			if r.Status != Pass && r.Remedy == "" {
				r.Remedy = c.Remedy
			}
			if r.Subject == "" {
				r.Subject = "node"
			}
			if r.NeedsPrivilege && !needPriv[c.ID] {
				needPriv[c.ID] = true
				rep.NeedPrivilege = append(rep.NeedPrivilege, c.ID)
			}
			rep.Counts[r.Status]++
			if r.Status.Rank() > rep.Worst.Rank() {
				rep.Worst = r.Status
			}
			rep.Results = append(rep.Results, r)
		}
	}
	rep.ExitCode = rep.Worst.ExitCode()
	return rep
}

// runOne runs a check under its own deadline. The check runs in its own
// goroutine so that one stuck in a read that ignores its context (a hung
// sysfs attribute, say) is abandoned at the deadline.
func runOne(ctx context.Context, e *Env, c Check, timeout time.Duration) []Result {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	done := make(chan []Result, 1)
	go func() {
		defer func() {
			if p := recover(); p != nil {
				e.logf("check panicked", "check", c.ID, "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
				done <- []Result{UnknownResult("node", fmt.Sprintf("the check failed: %v (a bug in roce-agent; the stack is in the debug log)", p))}
			}
		}()
		rs := c.Run(ctx, e)
		if len(rs) == 0 {
			rs = []Result{SkipResult("node", "nothing to check on this host")}
		}
		done <- rs
	}()
	select {
	case rs := <-done:
		return rs
	case <-ctx.Done():
		return []Result{UnknownResult("node", fmt.Sprintf("did not finish within %s: %v", timeout, ctx.Err()))}
	}
}
