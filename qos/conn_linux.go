package qos

import (
	"encoding/binary"
	"fmt"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Socket is an rtnetlink socket for dcbnl, bound in the network namespace
// of the thread that opened it.
type Socket struct {
	mu sync.Mutex // one exchange at a time: replies are matched by order
	fd int
}

// OpenSocket opens the socket; call it on a thread inside the namespace
// the requests are for.
func OpenSocket() (*Socket, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("open rtnetlink socket: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("bind rtnetlink socket: %w", err)
	}
	tv := unix.NsecToTimeval(int64(2 * time.Second))
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("set receive timeout: %w", err)
	}
	return &Socket{fd: fd}, nil
}

// Close closes the socket.
func (s *Socket) Close() error { return unix.Close(s.fd) }

// Exchange sends req (no NLM_F_ACK is needed on top of what the encoders
// set) and reads until the NLMSG_ERROR of req's sequence number arrives.
func (s *Socket) Exchange(req []byte) ([][]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(req) < nlmsgHdrLen {
		return nil, fmt.Errorf("short request")
	}
	seq := binary.NativeEndian.Uint32(req[8:])
	if err := unix.Sendto(s.fd, req, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return nil, fmt.Errorf("send: %w", err)
	}
	var out [][]byte
	buf := make([]byte, 1<<16)
	for {
		n, _, err := unix.Recvfrom(s.fd, buf, 0)
		if err != nil {
			return out, fmt.Errorf("receive: %w", err)
		}
		gram := append([]byte(nil), buf[:n]...)
		out = append(out, gram)
		msgs, err := parseMessages(gram)
		if err != nil {
			return out, err
		}
		for _, m := range msgs {
			if m.seq == seq && m.typ == nlmsgError {
				return out, nil
			}
		}
		// A late reply to an earlier, timed-out request is skipped.
	}
}
