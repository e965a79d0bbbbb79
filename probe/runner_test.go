package probe

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// tool writes an executable script named name into dir.
func tool(t *testing.T, dir, name, body string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, name), []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
}

func TestExecRunnerKillsTheGroupAtTimeout(t *testing.T) {
	dir := t.TempDir()
	pidFile := filepath.Join(dir, "child.pid")
	// A tool that hangs and leaves a child behind: both must die.
	tool(t, dir, "ib_write_bw", "sleep 300 & echo $! > "+pidFile+"\necho started\nsleep 300")
	start := time.Now()
	out, err := Run(context.Background(), ExecRunner{Dir: dir}, Command{Name: "ib_write_bw", Args: []string{"-d", "x"}, Timeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if !out.TimedOut || out.ExitCode != -1 || !strings.Contains(out.Stdout, "started") {
		t.Fatalf("out %+v", out)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("took %s", d)
	}
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	deadline := time.Now().Add(3 * time.Second)
	for syscall.Kill(pid, 0) == nil {
		if time.Now().After(deadline) {
			t.Fatalf("the tool's child %d survived", pid)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// The parser says what happened.
	c := &Client{}
	res := Result{}
	if err := c.read(&res, Test{Tool: "ib_write_bw"}, out); err == nil || !strings.Contains(err.Error(), "timed out") {
		t.Fatalf("read: %v", err)
	}
}

func TestExecRunnerOutputAndExit(t *testing.T) {
	dir := t.TempDir()
	tool(t, dir, "rping", `echo "cma event RDMA_CM_EVENT_REJECTED, error 8" >&2; exit 255`)
	tool(t, dir, "ib_write_lat", `head -c 3000000 /dev/zero | tr '\0' x`)
	out, err := Run(context.Background(), ExecRunner{Dir: dir}, Command{Name: "rping", Timeout: 5 * time.Second})
	if err != nil || out.ExitCode != 255 || out.TimedOut || !strings.Contains(out.Stderr, "REJECTED") {
		t.Fatalf("rping: %+v %v", out, err)
	}
	// A flood is clipped just past MaxOutput, which the parsers refuse.
	out, err = Run(context.Background(), ExecRunner{Dir: dir}, Command{Name: "ib_write_lat", Timeout: 5 * time.Second})
	if err != nil || len(out.Stdout) != MaxOutput+1 {
		t.Fatalf("flood: %d bytes, %v", len(out.Stdout), err)
	}
	if _, err := ParseLatency(out.Stdout, out.Stderr); err == nil {
		t.Fatal("an oversized output parsed")
	}
	// A missing tool starts nothing and says so.
	if _, err := (ExecRunner{Dir: dir}).Start(context.Background(), Command{Name: "ib_write_bw", Timeout: time.Second}); !errors.Is(err, ErrToolMissing) {
		t.Fatalf("missing: %v", err)
	}
	// No timeout, no run.
	if _, err := (ExecRunner{Dir: dir}).Start(context.Background(), Command{Name: "rping"}); err == nil {
		t.Fatal("a run without a timeout started")
	}
}
