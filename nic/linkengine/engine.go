package linkengine

import (
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"strings"
	"sync"
)

// LiveHost reads and changes one network namespace; *Host is the real one.
type LiveHost interface {
	ReadLive(desired []RailLink, owned Owned, tr TableRange) (LiveState, error)
	// Apply makes the changes in order, stops at the first failure and
	// returns how many were made.
	Apply(cs []Change) (int, error)
}

// LinkState is a netdev's state as netlink reports it.
type LinkState struct {
	Up  bool
	MTU int
}

// RailHost is everything the agent asks of the rails' namespace: the link
// engine's reads and writes, whether a netdev exists and its state, and a
// way to run code inside the namespace. *Host is the real one; tests use
// a recording fake (nic/linktest).
type RailHost interface {
	LiveHost
	LinkExists(name string) bool
	LinkState(name string) (LinkState, error)
	// Do runs fn inside the namespace (for sockets that must be opened
	// there).
	Do(fn func() error) error
	Close()
}

var _ RailHost = (*Host)(nil)

// ValidationError lists every reason the desired state cannot be applied
// to this host; nothing was changed.
type ValidationError struct{ Errs []error }

func (e *ValidationError) Error() string {
	msgs := make([]string, len(e.Errs))
	for i, err := range e.Errs {
		msgs[i] = err.Error()
	}
	return "rejected before any change:\n" + strings.Join(msgs, "\n")
}

// Unwrap returns the individual problems.
func (e *ValidationError) Unwrap() []error { return e.Errs }

// RailResult is how one rail fared.
type RailResult struct {
	Rail      int
	Netdev    string
	Converged bool
	Applied   []string // commands that were run
	Conflict  string   // foreign state that stopped the rail
	Err       error    // the change that failed
}

// ApplyResult is the outcome of one reconcile.
type ApplyResult struct {
	Rails []RailResult
	// Cleanup holds the changes that removed owned objects no rail wants
	// (and their failures).
	Cleanup []string
	Errs    []error
	// Drift counts, by kind, changes that repaired a rail that had already
	// converged.
	Drift map[ChangeKind]int
	// Writes counts the write requests sent.
	Writes int
	// Made lists every change made to the host, in order, for the log.
	Made []Made
}

// Made is one change made to the host.
type Made struct {
	Rail   int // -1 for an owned object of no configured rail
	Netdev string
	Kind   ChangeKind
	// Object is the change as the command it equals.
	Object string
	// Drift is true when the change repaired a rail that had converged.
	Drift bool
}

// Converged reports whether every rail converged and cleanup succeeded.
func (r ApplyResult) Converged() bool {
	for _, rr := range r.Rails {
		if !rr.Converged {
			return false
		}
	}
	return len(r.Errs) == 0
}

// Engine reconciles rail links towards the desired state. It is safe
// for one caller at a time per namespace; the daemon calls Reconcile on
// every netlink event and on a timer.
type Engine struct {
	Host     LiveHost
	StateDir string
	Range    TableRange

	mu        sync.Mutex
	converged map[int]bool
	// owned caches the ownership record: the engine is its only writer, so
	// it is read from disk once and written through on every change.
	owned *Owned
}

// loadOwned returns the cached ownership record, reading it the first time.
func (e *Engine) loadOwned() (Owned, error) {
	if e.owned == nil {
		o, err := LoadOwned(e.StateDir)
		if err != nil {
			return o, err
		}
		e.owned = &o
	}
	return e.owned.clone(), nil
}

// saveOwned writes the record and updates the cache.
func (e *Engine) saveOwned(o Owned) error {
	if err := SaveOwned(e.StateDir, o); err != nil {
		e.owned = nil // unknown state on disk: read it again next time
		return err
	}
	c := o.clone()
	e.owned = &c
	return nil
}

// EmptyDesiredError refuses a desired state with no rails while the agent
// owns objects on the host: an empty desired state never removes anything;
// only Teardown does.
type EmptyDesiredError struct{ Owned []string }

func (e *EmptyDesiredError) Error() string {
	list := e.Owned
	if len(list) > 3 {
		list = append(list[:3:3], fmt.Sprintf("and %d more", len(e.Owned)-3))
	}
	return fmt.Sprintf("refused: the desired state has no rails while roce-agent owns %d objects on this host (%s); nothing was changed. An empty desired state never removes anything: run 'roce-agent teardown' to remove them",
		len(e.Owned), strings.Join(list, "; "))
}

// Plan reads the live state and returns what Apply would do, changing
// nothing. A *ValidationError says why the desired state cannot apply; an
// *EmptyDesiredError refuses no rails while the agent owns state.
func (e *Engine) Plan(desired []RailLink) (LinkPlan, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	_, _, plan, err := e.plan(desired)
	return plan, err
}

// Diagnose is Plan for a reader that only looks (roce-agent diag): it
// also returns the live state, and when the ownership record cannot be
// read (diag as a user other than root) it plans without it and says so
// in note. Without the record only addresses on kernels before 5.18
// (which do not mark them) lose their owner: such an address shows as a
// conflict instead of as the agent's.
func (e *Engine) Diagnose(desired []RailLink) (live LiveState, plan LinkPlan, note string, err error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	owned, err := e.loadOwned()
	if err != nil {
		if !errors.Is(err, fs.ErrPermission) {
			return LiveState{}, LinkPlan{}, "", err
		}
		note = fmt.Sprintf("%v: planned without the ownership record", err)
		owned = Owned{Addrs: map[string][]netip.Prefix{}}
	}
	live, plan, err = e.planWith(owned, desired)
	return live, plan, note, err
}

// plan reads the record and the live state, validates and plans.
func (e *Engine) plan(desired []RailLink) (Owned, LiveState, LinkPlan, error) {
	owned, err := e.loadOwned()
	if err != nil {
		return owned, LiveState{}, LinkPlan{}, err
	}
	live, plan, err := e.planWith(owned, desired)
	return owned, live, plan, err
}

// planWith reads the live state, validates and plans against a record.
func (e *Engine) planWith(owned Owned, desired []RailLink) (LiveState, LinkPlan, error) {
	live, err := e.Host.ReadLive(desired, owned, e.Range)
	if err != nil {
		return live, LinkPlan{}, fmt.Errorf("read live state: %w", err)
	}
	if len(desired) == 0 {
		if objs := ownedObjects(live, owned, e.Range); len(objs) > 0 {
			names := make([]string, len(objs))
			for i, c := range objs {
				names[i] = c.Command
			}
			return live, LinkPlan{}, &EmptyDesiredError{names}
		}
	}
	if errs := CheckLive(desired, live, e.Range); len(errs) > 0 {
		return live, LinkPlan{}, &ValidationError{errs}
	}
	return live, PlanLinks(desired, live, owned, e.Range), nil
}

// TeardownResult is what Teardown removed.
type TeardownResult struct {
	// Planned lists every removal, as commands.
	Planned []string
	// Removed is every removal made; Errs what failed.
	Removed []Made
	Errs    []error
}

// Teardown removes everything the agent owns in the namespace (routes,
// rules, then addresses; see PlanTeardown), or with dryRun only lists it.
// It is the only path that removes state without a desired rail.
func (e *Engine) Teardown(dryRun bool) (TeardownResult, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	var res TeardownResult
	owned, err := e.loadOwned()
	if err != nil {
		return res, err
	}
	live, err := e.Host.ReadLive(nil, owned, e.Range)
	if err != nil {
		return res, fmt.Errorf("read live state: %w", err)
	}
	changes, held := PlanTeardown(live, owned, e.Range)
	for _, c := range changes {
		res.Planned = append(res.Planned, c.Command)
	}
	for _, h := range held {
		res.Errs = append(res.Errs, errors.New(h))
	}
	if dryRun {
		return res, nil
	}
	var errs []error
	_, res.Removed, errs, _ = e.removeEach(changes, &owned)
	res.Errs = append(res.Errs, errs...)
	// Forget recorded addresses that are gone from the host.
	for nd, addrs := range owned.Addrs {
		link, ok := live.Links[nd]
		for _, a := range addrs {
			if !ok || !hasPrefix(link.Addrs, a) {
				owned.remove(nd, a)
			}
		}
	}
	if err := e.saveOwned(owned); err != nil {
		res.Errs = append(res.Errs, err)
	}
	e.converged = nil
	return res, nil
}

// Reconcile plans and applies, rail by rail in dependency order. A rail
// whose change fails stops there; the other rails go on. Addresses are
// entered in the ownership record before they are added, so a crash never
// leaves an address the agent added but does not know it owns.
func (e *Engine) Reconcile(desired []RailLink) (ApplyResult, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	res := ApplyResult{Drift: map[ChangeKind]int{}}
	owned, live, plan, err := e.plan(desired)
	if err != nil {
		return res, err
	}
	// Forget recorded addresses that are gone from a link that is there
	// and that this reconcile does not add back: a stale entry would
	// otherwise claim whoever adds that address next. (One it adds back,
	// the drift repair of a deleted address, stays: no record write.)
	readd := map[string]map[netip.Prefix]bool{}
	for _, c := range plan.Changes {
		if c.Kind == AddrAdd {
			if readd[c.Netdev] == nil {
				readd[c.Netdev] = map[netip.Prefix]bool{}
			}
			readd[c.Netdev][c.Addr] = true
		}
	}
	recordChanged := false
	for nd, addrs := range owned.Addrs {
		link, ok := live.Links[nd]
		if !ok {
			continue // hot-unplugged: it may come back with its addresses
		}
		for _, a := range addrs {
			if !hasPrefix(link.Addrs, a) && !readd[nd][a] {
				owned.remove(nd, a)
				recordChanged = true
			}
		}
	}
	if e.converged == nil {
		e.converged = map[int]bool{}
	}

	// Write-ahead ownership for every address about to be added.
	for _, c := range plan.Changes {
		if c.Kind == AddrAdd && owned.add(c.Netdev, c.Addr) {
			recordChanged = true
		}
	}
	if recordChanged {
		if err := e.saveOwned(owned); err != nil {
			return res, err
		}
	}

	conflicts := map[int][]string{}
	for _, c := range plan.Conflicts {
		conflicts[c.Rail] = append(conflicts[c.Rail], c.Reason)
	}
	byRail := map[int][]Change{}
	for _, c := range plan.Changes {
		byRail[c.Rail] = append(byRail[c.Rail], c)
	}
	recordChanged = false
	for _, r := range desired {
		rr := RailResult{Rail: r.Rail, Netdev: r.Netdev, Conflict: strings.Join(conflicts[r.Rail], "; ")}
		changes := byRail[r.Rail]
		n, err := e.Host.Apply(changes)
		res.Writes += n
		for _, c := range changes[:n] {
			rr.Applied = append(rr.Applied, c.Command)
			if c.Kind == AddrDel {
				owned.remove(c.Netdev, c.Addr)
				recordChanged = true
			}
			if e.converged[r.Rail] {
				res.Drift[c.Kind]++
			}
			res.Made = append(res.Made, Made{Rail: r.Rail, Netdev: c.Netdev, Kind: c.Kind, Object: c.Command, Drift: e.converged[r.Rail]})
		}
		if err != nil {
			res.Writes++
			failed := changes[n]
			rr.Err = fmt.Errorf("%s: %w", failed.Command, err)
			// Addresses never added are not the agent's.
			for _, c := range changes[n:] {
				if c.Kind == AddrAdd {
					owned.remove(c.Netdev, c.Addr)
					recordChanged = true
				}
			}
		}
		rr.Converged = rr.Err == nil && rr.Conflict == ""
		e.converged[r.Rail] = rr.Converged
		res.Rails = append(res.Rails, rr)
	}
	// Owned objects of no configured rail.
	cleanup, made, errs, forgot := e.removeEach(byRail[-1], &owned)
	res.Writes += len(byRail[-1])
	res.Cleanup, res.Made, res.Errs = cleanup, append(res.Made, made...), append(res.Errs, errs...)
	recordChanged = recordChanged || forgot
	if recordChanged {
		if err := e.saveOwned(owned); err != nil {
			res.Errs = append(res.Errs, err)
		}
	}
	return res, nil
}

// removeEach makes owned-object removals one by one, a failure stopping
// none of the others, and forgets removed addresses in owned. It returns
// what was removed (as commands and for the log), the failures, and
// whether owned changed.
func (e *Engine) removeEach(cs []Change, owned *Owned) (removed []string, made []Made, errs []error, forgot bool) {
	for _, c := range cs {
		if _, err := e.Host.Apply([]Change{c}); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", c.Command, err))
			continue
		}
		removed = append(removed, c.Command)
		made = append(made, Made{Rail: e.Range.railOf(c), Netdev: c.Netdev, Kind: c.Kind, Object: c.Command})
		if c.Kind == AddrDel {
			owned.remove(c.Netdev, c.Addr)
			forgot = true
		}
	}
	return removed, made, errs, forgot
}

// errNotConverged is returned by callers that need an error for a result
// that did not converge.
var errNotConverged = errors.New("not converged")

// Err summarises a result that did not converge, naming each rail and why.
func (r ApplyResult) Err() error {
	var errs []error
	for _, rr := range r.Rails {
		switch {
		case rr.Conflict != "":
			errs = append(errs, fmt.Errorf("rail %d (%s): conflict: %s", rr.Rail, rr.Netdev, rr.Conflict))
		case rr.Err != nil:
			errs = append(errs, fmt.Errorf("rail %d (%s): %w", rr.Rail, rr.Netdev, rr.Err))
		}
	}
	errs = append(errs, r.Errs...)
	if len(errs) == 0 {
		return nil
	}
	return fmt.Errorf("%w: %w", errNotConverged, errors.Join(errs...))
}
