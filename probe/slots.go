package probe

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Slots hold each NIC's one test slot: a NIC runs one probe at a time,
// as client or as server, so that a bandwidth figure is never halved by a
// concurrent test (and a latency figure never inflated by one). With Dir
// set the slot is also a lock file there, shared by every process on the
// host (the daemon and `roce-agent probe`).
type Slots struct {
	// Dir holds the lock files; "" keeps the slots in this process.
	Dir string

	mu   sync.Mutex
	busy map[string]slot
}

type slot struct {
	until time.Time // when the test is expected to end
	what  string
}

// Busy says a NIC's slot is taken: by what, and when it should be free.
type Busy struct {
	NIC        string
	What       string
	RetryAfter time.Duration
}

func (b *Busy) Error() string {
	return fmt.Sprintf("%s is busy with %s; retry in %s", b.NIC, b.What, b.RetryAfter.Round(time.Second))
}

// Acquire takes nic's slot for a test expected to last expect, or says
// how long it is busy for. The release function frees it; calling it
// twice is harmless.
func (s *Slots) Acquire(nic, what string, expect time.Duration) (func(), error) {
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.busy == nil {
		s.busy = map[string]slot{}
	}
	if cur, ok := s.busy[nic]; ok {
		wait := cur.until.Sub(now)
		if wait < time.Second {
			wait = time.Second
		}
		return nil, &Busy{NIC: nic, What: cur.what, RetryAfter: wait}
	}
	var lock *os.File
	if s.Dir != "" {
		f, err := lockFile(s.Dir, nic)
		if err != nil {
			return nil, err
		}
		if f == nil {
			return nil, &Busy{NIC: nic, What: "a probe of another process", RetryAfter: DefaultBusyHint}
		}
		lock = f
	}
	s.busy[nic] = slot{until: now.Add(expect), what: what}
	var once sync.Once
	return func() {
		once.Do(func() {
			s.mu.Lock()
			delete(s.busy, nic)
			s.mu.Unlock()
			if lock != nil {
				lock.Close() // closing drops the flock
			}
		})
	}, nil
}

// lockFile takes the NIC's lock file without waiting: nil when another
// process holds it.
func lockFile(dir, nic string) (*os.File, error) {
	name := "probe-" + strings.Map(func(r rune) rune {
		if r == '/' || r == 0 {
			return '_'
		}
		return r
	}, nic) + ".lock"
	f, err := os.OpenFile(filepath.Join(dir, name), os.O_CREATE|os.O_RDWR|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("probe slot of %s: %w", nic, err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if err == unix.EWOULDBLOCK {
			return nil, nil
		}
		return nil, fmt.Errorf("probe slot of %s: lock: %w", nic, err)
	}
	return f, nil
}
