package nettest

import (
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// Systemd is a fake service manager: a NOTIFY_SOCKET listener that records
// what a daemon tells it (READY=1, WATCHDOG=1, STATUS=..., STOPPING=1).
type Systemd struct {
	// Socket is the path to give the daemon as NOTIFY_SOCKET.
	Socket string
	mu     sync.Mutex
	msgs   []string // every datagram, whole
	next   int      // the first datagram Next has not returned
}

// NewSystemd listens on a socket in a temporary directory until the test
// ends.
func NewSystemd(t testing.TB) *Systemd {
	t.Helper()
	s := &Systemd{Socket: filepath.Join(t.TempDir(), "notify.sock")}
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: s.Socket, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				return
			}
			s.mu.Lock()
			s.msgs = append(s.msgs, string(buf[:n]))
			s.mu.Unlock()
		}
	}()
	t.Cleanup(func() { conn.Close() })
	return s
}

// Count is how many notification lines start with prefix ("READY=1").
func (s *Systemd) Count(prefix string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, m := range s.msgs {
		for _, line := range strings.Split(m, "\n") {
			if strings.HasPrefix(line, prefix) {
				n++
			}
		}
	}
	return n
}

// Next returns the lines of the next datagram Next has not returned yet,
// waiting up to 5 s for it: which lines share a message is what the
// notify-reload protocol is about.
func (s *Systemd) Next(t testing.TB) []string {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		s.mu.Lock()
		if s.next < len(s.msgs) {
			m := s.msgs[s.next]
			s.next++
			s.mu.Unlock()
			return strings.Split(strings.TrimSuffix(m, "\n"), "\n")
		}
		s.mu.Unlock()
		if time.Now().After(deadline) {
			t.Fatal("no notification within 5s")
			return nil
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Pending is the datagrams Next has not returned yet.
func (s *Systemd) Pending() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.msgs[s.next:]...)
}
