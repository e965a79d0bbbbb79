package main

import (
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/roce-agent/roce-agent/diag"
	"github.com/roce-agent/roce-agent/nic/nettest"
)

// TestDiagReadOnlyAsUser runs the built binary's diag in a host
// namespace whose 8 veth rails apply converged, as the user nobody: it
// finds the faults made by hand (an address deleted, an MTU lowered), says
// which checks needed root, passes the healthy rails, and changes nothing
// (no netlink event, no file in state_dir).
func TestDiagReadOnlyAsUser(t *testing.T) {
	nettest.RequireRoot(t)
	nettest.RequireTools(t, "setpriv")
	lab := nettest.NewLab(t, 8)
	// Everything nobody must read: the binary, the config (state_dir stays
	// root's, 0700, as the packages make it).
	shared, err := os.MkdirTemp("", "roce-diag")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(shared) })
	if err := os.Chmod(shared, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(shared, "roce-agent")
	copyFile(t, binary(t), bin, 0o755)
	state := t.TempDir()
	if err := os.Chmod(state, 0o700); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(shared, "config.yaml")
	copyFile(t, labConfig(t, state, "", nil), cfg, 0o644)
	if code, out := apply(t, lab, cfg); code != 0 {
		t.Fatalf("apply: exit %d\n%s", code, out)
	}
	lab.Host.MustExec(t, "ip", "addr", "del", nettest.HostIPv4(1), "dev", "rail1")
	lab.Host.MustExec(t, "ip", "link", "set", "rail2", "mtu", "1500")
	before := snapshotDir(t, state)

	w := nettest.Watch(t, lab.Host)
	cmd := exec.Command("ip", "netns", "exec", lab.Host.Name, "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
		bin, "--config", cfg, "diag", "-o", "json", "--sample", "200ms")
	cmd.Dir = shared
	out, err := cmd.Output()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
		t.Logf("stderr: %s", ee.Stderr)
	} else if err != nil {
		t.Fatal(err)
	}
	w.Stop()
	if n, kinds := w.Count(); n != 0 {
		t.Errorf("diag caused %d netlink events: %v", n, kinds)
	}
	if after := snapshotDir(t, state); after != before {
		t.Errorf("state_dir changed:\n%s\nwas:\n%s", after, before)
	}
	var rep diag.Report
	if err := json.Unmarshal(out, &rep); err != nil {
		t.Fatalf("json: %v\n%s", err, out)
	}
	if code != 2 || rep.Privileged || rep.Worst != diag.Fail {
		t.Errorf("exit %d, privileged %v, worst %s; want 2, false, FAIL", code, rep.Privileged, rep.Worst)
	}
	status := map[string]diag.Status{}
	for _, r := range rep.Results {
		if r.Rail != nil {
			status[r.ID+"/"+r.Subject] = r.Status
		}
	}
	for key, want := range map[string]diag.Status{
		"ROCE-ADDR-001/rail1": diag.Fail, "ROCE-ADDR-001/rail0": diag.Pass,
		"ROCE-MTU-001/rail2": diag.Fail, "ROCE-MTU-001/rail3": diag.Pass,
		"NET-ROUTE-001/rail5": diag.Pass, "NET-SYSCTL-001/rail7": diag.Pass, "NET-LINK-001/rail4": diag.Pass,
	} {
		if status[key] != want {
			t.Errorf("%s: %s, want %s", key, status[key], want)
		}
	}
	// The ownership record in the root-only state_dir could not be read:
	// the report says the plan was made without it.
	if !strings.Contains(strings.Join(rep.Notes, " "), "without the ownership record") {
		t.Errorf("notes: %q", rep.Notes)
	}
}

func copyFile(t *testing.T, from, to string, mode os.FileMode) {
	t.Helper()
	in, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, mode)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}

// snapshotDir lists a directory's files with their sizes and times.
func snapshotDir(t *testing.T, dir string) string {
	t.Helper()
	var b strings.Builder
	err := filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		b.WriteString(p + " " + info.ModTime().String() + " " + info.Mode().String() + "\n")
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return b.String()
}
