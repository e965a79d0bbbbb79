package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/roce-agent/roce-agent/diag"
	"github.com/roce-agent/roce-agent/nic/sysfstest"
)

var dgxTree = filepath.Join("..", "..", "testdata", "sysfs", "dgx-h100", "sys")

func runDiagCLI(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(append([]string{"--config", filepath.Join(t.TempDir(), "none.yaml")}, args...), &out, &errb)
	return code, out.String(), errb.String()
}

// The exit status is the worst result: 0 for PASS and SKIP, 2 for a FAIL.
func TestDiagExitCodes(t *testing.T) {
	code, out, stderr := runDiagCLI(t, "diag", "--sysfs-root", dgxTree, "--check", "NIC-,ROCE-MTU-002", "--sample", "10ms")
	if code != 0 {
		t.Fatalf("healthy NICs: exit %d\n%s\n%s", code, out, stderr)
	}
	for _, w := range []string{"== rail 0 (enp27s0np0)", "PASS  NIC-PORT-001", "== rail 7", "results:", "(exit 0)"} {
		if !strings.Contains(out, w) {
			t.Errorf("table lacks %q:\n%s", w, out)
		}
	}

	// A tree whose rail 3 port is down: FAIL, exit 2.
	dir := t.TempDir()
	tree, err := sysfstest.DGXH100(dir)
	if err != nil {
		t.Fatal(err)
	}
	tree.WriteFile("/class/infiniband/mlx5_5/ports/1/state", "1: DOWN")
	code, out, _ = runDiagCLI(t, "diag", "--sysfs-root", tree.Root(), "--check", "NIC-PORT-001", "-o", "json")
	if code != 2 {
		t.Fatalf("port down: exit %d, want 2\n%s", code, out)
	}
	var rep diag.Report
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("json: %v\n%s", err, out)
	}
	if rep.Schema != diag.Schema || rep.Worst != diag.Fail || rep.ExitCode != 2 || rep.Counts[diag.Fail] != 1 || rep.Counts[diag.Pass] != 7 {
		t.Errorf("report: schema %s worst %s exit %d counts %v", rep.Schema, rep.Worst, rep.ExitCode, rep.Counts)
	}
	for _, r := range rep.Results {
		if r.Status == diag.Fail && (r.Rail == nil || *r.Rail != 3 || r.Subject != "enp95s0np0" || r.Remedy == "" || r.Observed == "" || r.Expected == "") {
			t.Errorf("fail result: %+v", r)
		}
	}
}

func TestDiagUsage(t *testing.T) {
	code, _, stderr := runDiagCLI(t, "diag", "--check", "NOPE-001")
	if code != 2 || !strings.Contains(stderr, `--check: "NOPE-001" matches no check`) {
		t.Errorf("unknown check: exit %d: %s", code, stderr)
	}
	code, _, stderr = runDiagCLI(t, "diag", "--sample", "0s")
	if code != 2 || !strings.Contains(stderr, "--sample") {
		t.Errorf("bad sample: exit %d: %s", code, stderr)
	}
}

// A config diag cannot use does not stop it: the host's facts are still
// checked, and the report says why nothing was compared.
func TestDiagBadConfig(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "bad.yaml")
	if err := os.WriteFile(cfg, []byte("rails: [ {rail: 0, ipv4: not-an-address} ]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	code := run([]string{"--config", cfg, "diag", "--sysfs-root", dgxTree, "--check", "NIC-PORT-001,ROCE-ADDR-001", "-o", "json"}, &out, &errb)
	if code != 0 {
		t.Fatalf("exit %d\n%s\n%s", code, out.String(), errb.String())
	}
	var rep diag.Report
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatal(err)
	}
	if len(rep.Notes) == 0 || !strings.Contains(strings.Join(rep.Notes, " "), "the config could not be used") || !strings.Contains(strings.Join(rep.Notes, " "), "rails[0].ipv4") {
		t.Errorf("notes: %q", rep.Notes)
	}
	for _, r := range rep.Results {
		if r.ID == "ROCE-ADDR-001" && (r.Status != diag.Skip || !strings.Contains(r.Reason, "could not be used")) {
			t.Errorf("ROCE-ADDR-001 without a usable config: %+v", r)
		}
	}
}
