package agent

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestStateLockExclusive(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	l, err := LockStateDir(dir, "run")
	if err != nil {
		t.Fatal(err)
	}
	_, err = LockStateDir(dir, "apply")
	var le *LockedError
	if !errors.As(err, &le) || !strings.Contains(le.Holder, "(roce-agent run, since ") {
		t.Fatalf("second lock: %v", err)
	}
	l.Unlock()
	l2, err := LockStateDir(dir, "apply")
	if err != nil {
		t.Fatalf("after unlock: %v", err)
	}
	l2.Unlock()
}

// A FIFO in place of the lock file is refused at once, never read.
func TestStateLockRefusesFIFO(t *testing.T) {
	dir := t.TempDir()
	if err := unix.Mkfifo(filepath.Join(dir, LockFile), 0o600); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { _, err := LockStateDir(dir, "apply"); done <- err }()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "not a regular file") {
			t.Errorf("lock on a FIFO: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("lock on a FIFO blocked")
	}
}

// A state directory wiped under the holder: Verify takes the lock again on
// the new file, or reports the process that took it first; the holder
// gets it back once that one is gone.
func TestStateLockSurvivesAWipe(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	daemon, err := LockStateDir(dir, "run")
	if err != nil {
		t.Fatal(err)
	}
	defer daemon.Unlock()
	if err := daemon.Verify(); err != nil {
		t.Fatalf("verify while held: %v", err)
	}
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	apply, err := LockStateDir(dir, "apply")
	if err != nil {
		t.Fatalf("apply after the wipe: %v", err)
	}
	var le *LockedError
	if err := daemon.Verify(); !errors.As(err, &le) || !strings.Contains(le.Holder, "roce-agent apply") {
		t.Fatalf("verify while apply holds the new lock: %v", err)
	}
	apply.Unlock()
	if err := daemon.Verify(); err != nil {
		t.Fatalf("verify after apply let go: %v", err)
	}
	if _, err := LockStateDir(dir, "apply"); !errors.As(err, &le) || !strings.Contains(le.Holder, "roce-agent run") {
		t.Fatalf("the daemon does not hold the lock again: %v", err)
	}
}
