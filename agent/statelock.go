package agent

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/roce-agent/roce-agent/nic"
)

// LockFile is the name of the state directory's lock under it.
const LockFile = "lock"

// StateLock is an exclusive flock(2) on the state directory: one daemon,
// apply or teardown at a time changes the host and writes the ownership
// record. The kernel drops the lock when the process dies, however it
// dies, so a stale lock cannot exist.
type StateLock struct {
	f *os.File
}

// LockedError says that another process holds the state directory.
type LockedError struct {
	Dir    string
	Holder string // what the holder wrote: pid, command, start time
}

func (e *LockedError) Error() string {
	holder := e.Holder
	if holder == "" {
		holder = "an unknown process"
	}
	return fmt.Sprintf("state_dir %s is locked by %s; nothing was changed (one roce-agent daemon, apply or teardown at a time)", e.Dir, holder)
}

// LockStateDir takes the exclusive lock of dir without waiting, creating
// dir if needed, and records who holds it (command is "run", "apply", ...).
// With the lock held it removes temporary files a killed writer left
// behind. A second caller gets a *LockedError naming the holder.
func LockStateDir(dir, command string) (*StateLock, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("state_dir %s: %w", dir, err)
	}
	path := filepath.Join(dir, LockFile)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|unix.O_NOFOLLOW, 0o600)
	if err != nil {
		return nil, fmt.Errorf("state_dir lock %s: %w", path, err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		defer f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			b, _ := io.ReadAll(io.LimitReader(f, 512))
			return nil, &LockedError{Dir: dir, Holder: strings.TrimSpace(string(b))}
		}
		return nil, fmt.Errorf("state_dir lock %s: %w", path, err)
	}
	holder := fmt.Sprintf("pid %d (roce-agent %s, since %s)\n", os.Getpid(), command, time.Now().UTC().Format(time.RFC3339))
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(holder), 0)
	}
	removeStaleTemps(dir)
	return &StateLock{f: f}, nil
}

// Unlock releases the lock.
func (l *StateLock) Unlock() {
	if l == nil || l.f == nil {
		return
	}
	_ = l.f.Truncate(0)
	_ = unix.Flock(int(l.f.Fd()), unix.LOCK_UN)
	l.f.Close()
	l.f = nil
}

// removeStaleTemps deletes the ".<name>.<random>" files an atomic write
// leaves when the process is killed between create and rename. Only the
// lock holder calls it, so no write is in flight.
func removeStaleTemps(dir string) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range entries {
		name := e.Name()
		if !e.Type().IsRegular() || !strings.HasPrefix(name, ".") {
			continue
		}
		for _, base := range []string{nic.OwnedFile, DesiredFile, NCCLEnvFile} {
			if strings.HasPrefix(name, "."+base+".") {
				_ = os.Remove(filepath.Join(dir, name))
			}
		}
	}
}
