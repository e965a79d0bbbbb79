package agent

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/roce-agent/roce-agent/nic/linkengine"
	"golang.org/x/sys/unix"
)

// LockFile is the name of the state directory's lock under it.
const LockFile = "lock"

// StateLock is an exclusive flock(2) on the state directory: one daemon,
// apply or teardown at a time changes the host and writes the ownership
// record. The kernel drops the lock when the process dies, however it
// dies, so a stale lock cannot exist.
type StateLock struct {
	dir, command string
	f            *os.File
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
// behind. A second caller gets a *LockedError naming the holder. The lock
// file must be a regular file: a FIFO or a device there is refused, never
// opened for a blocking read.
func LockStateDir(dir, command string) (*StateLock, error) {
	l := &StateLock{dir: dir, command: command}
	f, err := l.acquire()
	if err != nil {
		return nil, err
	}
	l.f = f
	removeStaleTemps(dir)
	return l, nil
}

func (l *StateLock) acquire() (*os.File, error) {
	if err := os.MkdirAll(l.dir, 0o700); err != nil {
		return nil, fmt.Errorf("state_dir %s: %w", l.dir, err)
	}
	path := filepath.Join(l.dir, LockFile)
	fd, err := unix.Open(path, unix.O_RDWR|unix.O_CREAT|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("state_dir lock %s: %w", path, err)
	}
	f := os.NewFile(uintptr(fd), path)
	if st, err := f.Stat(); err != nil || !st.Mode().IsRegular() {
		f.Close()
		if err == nil {
			err = fmt.Errorf("not a regular file (%s)", st.Mode().Type())
		}
		return nil, fmt.Errorf("state_dir lock %s: %w", path, err)
	}
	if err := unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB); err != nil {
		defer f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			b := make([]byte, 512)
			n, _ := unix.Pread(fd, b, 0)
			return nil, &LockedError{Dir: l.dir, Holder: strings.TrimSpace(string(b[:max(n, 0)]))}
		}
		return nil, fmt.Errorf("state_dir lock %s: %w", path, err)
	}
	holder := fmt.Sprintf("pid %d (roce-agent %s, since %s)\n", os.Getpid(), l.command, time.Now().UTC().Format(time.RFC3339))
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(holder), 0)
	}
	return f, nil
}

// Verify checks that the lock still guards state_dir: a state directory
// wiped (or its lock file removed) under a running daemon leaves the
// daemon holding a lock on a file nobody else can find. Then it takes the
// lock again on a new file; when another process got there first, Verify
// returns its *LockedError and the caller must not change the host until
// a later Verify succeeds.
func (l *StateLock) Verify() error {
	if l == nil {
		return nil
	}
	if l.f != nil {
		var held, now unix.Stat_t
		if unix.Fstat(int(l.f.Fd()), &held) == nil && unix.Stat(filepath.Join(l.dir, LockFile), &now) == nil &&
			held.Dev == now.Dev && held.Ino == now.Ino {
			return nil
		}
	}
	f, err := l.acquire()
	if err != nil {
		return err
	}
	if l.f != nil {
		l.f.Close()
	}
	l.f = f
	return nil
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
		for _, base := range []string{linkengine.OwnedFile, DesiredFile, NCCLEnvFile, WebConfigSnapshot} {
			if strings.HasPrefix(name, "."+base+".") {
				_ = os.Remove(filepath.Join(dir, name))
			}
		}
	}
}
