package e2e

import (
	"bufio"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/roce-agent/roce-agent/lab"
	"github.com/roce-agent/roce-agent/nic/nettest"
)

// TestLabCommand runs what the README's run command runs (make lab:
// bin/roce-lab): it must bring the fabric up, report every tenant healthy,
// print the guide, and on Ctrl-C (SIGINT) remove every namespace and file.
func TestLabCommand(t *testing.T) {
	nettest.RequireRoot(t)
	nettest.RequireTools(t, "ip", "ping")
	bin := binaries(t)
	prefix := "e2l-"
	_ = lab.Cleanup(prefix)
	work := filepath.Join(t.TempDir(), "lab")
	cmd := exec.Command(filepath.Join(bin, "roce-lab"), "--prefix", prefix, "--workdir", work)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = lab.Cleanup(prefix) })
	lines := make(chan string, 1024)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	var seen []string
	healthy := 0
	deadline := time.After(2 * time.Minute)
wait:
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("roce-lab ended early:\n%s", strings.Join(seen, "\n"))
			}
			seen = append(seen, l)
			if strings.HasPrefix(l, "tenant ") && strings.Contains(l, "rails healthy") {
				f := strings.Fields(l)
				// tenant <id> (VNI n): <h> of <t> rails healthy; ...
				for i := 0; i+2 < len(f); i++ {
					if f[i+1] == "of" && f[i] == f[i+2] {
						healthy++
					}
				}
			}
			if strings.Contains(l, "Ctrl-C removes everything") {
				break wait
			}
		case <-deadline:
			cmd.Process.Kill()
			t.Fatalf("no guide after 2 minutes:\n%s", strings.Join(seen, "\n"))
		}
	}
	if healthy != 3 {
		t.Errorf("%d tenants fully healthy in the guide, want 3:\n%s", healthy, strings.Join(seen, "\n"))
	}
	guide := strings.Join(seen, "\n")
	for _, want := range []string{"/v1/tenants/tenant-a/health", ":9487/metrics", "inventory --sysfs-root", "/v1/moves", "Across tenants (fails)"} {
		if !strings.Contains(guide, want) {
			t.Errorf("the guide does not show %q", want)
		}
	}
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	for l := range lines {
		seen = append(seen, l)
	}
	if err := cmd.Wait(); err != nil {
		t.Errorf("roce-lab after Ctrl-C: %v\n%s", err, strings.Join(seen[max(0, len(seen)-10):], "\n"))
	}
	ns, _ := exec.Command("ip", "netns", "list").Output()
	for _, l := range strings.Split(string(ns), "\n") {
		if strings.HasPrefix(l, prefix) {
			t.Errorf("namespace left after Ctrl-C: %s", l)
		}
	}
	if _, err := exec.Command("test", "-e", work).Output(); err == nil {
		t.Errorf("work dir %s left after Ctrl-C", work)
	}
}
