package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/roce-agent/roce-agent/nic/nettest"
)

// TestREADMELab runs the README's lab block as written: the same commands
// through bash, with only the binary's path, the namespace names and the
// temporary file names made unique to this run.
func TestREADMELab(t *testing.T) {
	nettest.RequireRoot(t)
	b, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	readme := string(b)
	start := strings.Index(readme, "To try the link engine and the daemon on a throwaway lab")
	if start < 0 {
		t.Fatal("the README has no lab section")
	}
	block := readme[start:]
	open := strings.Index(block, "```sh\n")
	end := strings.Index(block[open+6:], "```")
	if open < 0 || end < 0 {
		t.Fatal("the README's lab section has no sh block")
	}
	script := block[open+6 : open+6+end]
	dir := t.TempDir()
	id := fmt.Sprint(os.Getpid() % 100000)
	script = strings.NewReplacer(
		"bin/roce-agent", binary(t),
		"lab-host", "rdm"+id+"-host", "lab-leaf", "rdm"+id+"-leaf",
		"/tmp/lab.yaml", filepath.Join(dir, "lab.yaml"),
		"/tmp/roce-agent-lab", filepath.Join(dir, "state"),
	).Replace(script)
	t.Cleanup(func() {
		_ = exec.Command("ip", "netns", "del", "rdm"+id+"-host").Run()
		_ = exec.Command("ip", "netns", "del", "rdm"+id+"-leaf").Run()
	})
	cmd := exec.Command("bash", "-euo", "pipefail", "-c", "set -m\n"+script)
	cmd.Env = cleanEnv()
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("the README lab failed: %v\n%s", err, out)
	}
	for _, want := range []string{
		"14 changes, 0 conflicts", // plan
		"1 of 1 rails converged",  // apply
		"msg=changed rail=0 netdev=rail0 kind=addr-add object=\"ip address add 10.0.0.1/31 dev rail0\" drift=true", // the daemon repaired the drift
		"10.0.0.1/31",                 // ... and the address is back
		"objects owned by roce-agent", // teardown
		"7 of 7 removed",
	} {
		if !strings.Contains(string(out), want) {
			t.Errorf("the README lab's output lacks %q:\n%s", want, out)
		}
	}
}
