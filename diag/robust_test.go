package diag

import (
	"context"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/roce-agent/roce-agent/nic/sysfstest"
	"github.com/roce-agent/roce-agent/probe"
)

// hangingRunner starts tools that never end, whatever the context says.
type hangingRunner struct{}

type hungProcess struct{}

func (hungProcess) Wait() (probe.Output, error) { select {} }

func (hangingRunner) Start(context.Context, probe.Command) (probe.Process, error) {
	return hungProcess{}, nil
}

// Garbage in every file of the tree: every check still returns results
// with a valid status, none panics, and the run ends.
func TestEveryCheckOnGarbage(t *testing.T) {
	for seed := int64(1); seed <= 3; seed++ {
		e := dgx(t, func(tr *sysfstest.Tree) {
			rng := rand.New(rand.NewSource(seed))
			_ = filepath.Walk(tr.Root(), func(p string, info os.FileInfo, err error) error {
				if err != nil || !info.Mode().IsRegular() {
					return nil
				}
				b := make([]byte, rng.Intn(64))
				rng.Read(b)
				return os.WriteFile(p, b, 0o644)
			})
		})
		e.Desired = true
		e.Runner = toolRunner{"ibv_devinfo": {Stdout: "\x00garbage\xff"}, "lldpctl": {Stdout: "{not json"}}
		rep := Run(context.Background(), e, Checks(), Options{CheckTimeout: 20 * time.Second})
		if len(rep.Results) < len(Checks()) {
			t.Fatalf("seed %d: %d results for %d checks", seed, len(rep.Results), len(Checks()))
		}
		for _, r := range rep.Results {
			switch r.Status {
			case Pass, Warn, Fail, Unknown, Skip:
			default:
				t.Errorf("seed %d: %s %s: status %q", seed, r.ID, r.Subject, r.Status)
			}
			if strings.Contains(r.Reason, "the check failed:") {
				t.Errorf("seed %d: %s panicked: %s", seed, r.ID, r.Reason)
			}
		}
	}
}

// A check that ignores its context is abandoned at its timeout, and the
// run's end makes the checks not yet started UNKNOWN.
func TestRunBoundsChecks(t *testing.T) {
	e := dgx(t, nil)
	hang := Check{ID: "X-HANG-001", Title: "hangs", Doc: "d", Remedy: "r", Run: func(ctx context.Context, e *Env) []Result {
		out, _ := e.RunTool(ctx, time.Hour, "anything")
		return []Result{PassResult("node", out.Stdout)}
	}}
	e.Runner = hangingRunner{}
	start := time.Now()
	rep := Run(context.Background(), e, []Check{hang, hang, hang}, Options{CheckTimeout: 200 * time.Millisecond, Parallel: 1})
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("run took %s", d)
	}
	for _, r := range rep.Results {
		if r.Status != Unknown || !strings.Contains(r.Reason, "did not finish within 200ms") {
			t.Errorf("hung check: %+v", r)
		}
	}
	if rep.ExitCode != 1 || rep.Worst != Unknown {
		t.Errorf("worst %s exit %d", rep.Worst, rep.ExitCode)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	rep = Run(ctx, e, []Check{hang, hang, hang, hang}, Options{CheckTimeout: time.Hour, Parallel: 1})
	if len(rep.Results) != 4 {
		t.Fatalf("%d results", len(rep.Results))
	}
	for _, r := range rep.Results {
		if r.Status != Unknown {
			t.Errorf("after the run's end: %+v", r)
		}
	}

	boom := Check{ID: "X-BOOM-001", Title: "panics", Doc: "d", Remedy: "r", Run: func(context.Context, *Env) []Result { panic("boom") }}
	rep = Run(context.Background(), e, []Check{boom}, Options{})
	if r := rep.Results[0]; r.Status != Unknown || !strings.Contains(r.Reason, "boom") {
		t.Errorf("panic: %+v", r)
	}
}
