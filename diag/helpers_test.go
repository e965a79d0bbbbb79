package diag

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"

	"github.com/roce-agent/roce-agent/agent"
	"github.com/roce-agent/roce-agent/nic"
	"github.com/roce-agent/roce-agent/nic/sysfstest"
)

// fixture builds a sysfs tree with build, lets fault change it (nil for
// the healthy host), and returns an Env over it: no live kernel, root,
// no desired state, the inventory read from the tree (with lib as NVML
// when set).
func fixture(t *testing.T, build func(dir string) (*sysfstest.Tree, error), fault func(*sysfstest.Tree), lib nvml.Interface) *Env {
	t.Helper()
	dir := t.TempDir()
	tree, err := build(dir)
	if err != nil {
		t.Fatal(err)
	}
	if fault != nil {
		fault(tree)
	}
	if err := tree.Err(); err != nil {
		t.Fatal(err)
	}
	fs, err := nic.NewFS(tree.Root())
	if err != nil {
		t.Fatal(err)
	}
	cfg := agent.DefaultConfig()
	cfg.SysfsRoot = tree.Root()
	e := &Env{Config: cfg, FS: fs, ProcRoot: t.TempDir(), Privileged: true, NVML: lib, Sample: time.Millisecond}
	e.Inventory, e.InventoryErr = agent.DiscoverInventory(agent.InventoryOptions{Node: "gpu-017", FS: fs, NVML: lib})
	if e.InventoryErr != nil {
		t.Fatalf("inventory: %v", e.InventoryErr)
	}
	e.defaults()
	return e
}

// dgx is the DGX H100 fixture with a fault.
func dgx(t *testing.T, fault func(*sysfstest.Tree)) *Env {
	return fixture(t, sysfstest.DGXH100, fault, nil)
}

// check runs one check by ID through Run (so panics and timeouts are
// handled as in diag) and returns its results.
func check(t *testing.T, e *Env, id string) []Result {
	t.Helper()
	cs, err := Select([]string{id})
	if err != nil {
		t.Fatal(err)
	}
	rep := Run(context.Background(), e, cs, Options{CheckTimeout: 10 * time.Second})
	for _, r := range rep.Results {
		if r.ID != id {
			t.Fatalf("result of %s from check %s", r.ID, id)
		}
		if r.Status != Pass && r.Status != Skip && r.Reason == "" {
			t.Errorf("%s %s %s: no reason", r.ID, r.Subject, r.Status)
		}
	}
	return rep.Results
}

// only returns the results about subject (a netdev, a PCI address,
// "node").
func only(rs []Result, subject string) []Result {
	var out []Result
	for _, r := range rs {
		if r.Subject == subject {
			out = append(out, r)
		}
	}
	return out
}

// want fails unless the results about subject are exactly one with
// status st whose reason, observed or expected value contains each of
// words.
func want(t *testing.T, rs []Result, subject string, st Status, words ...string) Result {
	t.Helper()
	got := only(rs, subject)
	if len(got) != 1 {
		t.Fatalf("%d results about %s, want 1: %+v", len(got), subject, rs)
	}
	r := got[0]
	if r.Status != st {
		t.Fatalf("%s %s: %s (%s; observed %q expected %q), want %s", r.ID, subject, r.Status, r.Reason, r.Observed, r.Expected, st)
	}
	text := r.Reason + " | " + r.Observed + " | " + r.Expected
	for _, w := range words {
		if !strings.Contains(text, w) {
			t.Errorf("%s %s: %q lacks %q", r.ID, subject, text, w)
		}
	}
	return r
}

// all fails unless every result has status st.
func all(t *testing.T, rs []Result, st Status) {
	t.Helper()
	if len(rs) == 0 {
		t.Fatal("no results")
	}
	for _, r := range rs {
		if r.Status != st {
			t.Errorf("%s %s: %s (%s; observed %q expected %q), want %s", r.ID, r.Subject, r.Status, r.Reason, r.Observed, r.Expected, st)
		}
	}
}

// writeProc writes a file under the Env's procfs tree.
func writeProc(t *testing.T, e *Env, p, content string) {
	t.Helper()
	full := filepath.Join(e.ProcRoot, filepath.FromSlash(p))
	if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(full, []byte(content+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
}
