package nettest

import (
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// Systemd is a fake service manager: a NOTIFY_SOCKET listener that records
// what a daemon tells it (READY=1, WATCHDOG=1, STATUS=..., STOPPING=1).
type Systemd struct {
	// Socket is the path to give the daemon as NOTIFY_SOCKET.
	Socket string
	mu     sync.Mutex
	msgs   []string
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
