package lldp

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// Socket is an AF_PACKET socket bound to one interface, receiving LLDP
// frames (ethertype 0x88cc), those sent to the LLDP group address
// included.
type Socket struct {
	f      *os.File
	netdev string
	// own is the interface's MAC: a frame from it is this host's own
	// LLDPDU come back (a loop, or a bridge between the NIC and the leaf
	// reflecting it), never the neighbour.
	own net.HardwareAddr
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// OpenSocket opens a Socket on netdev, in the calling thread's network
// namespace (run it there; reading can happen anywhere). It needs
// CAP_NET_RAW: without it the error wraps ErrPermission and EPERM.
func OpenSocket(netdev string) (*Socket, error) {
	ifi, err := net.InterfaceByName(netdev)
	if err != nil {
		return nil, fmt.Errorf("lldp listen %s: %w", netdev, err)
	}
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, int(htons(EtherType)))
	if err != nil {
		if errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES) {
			return nil, fmt.Errorf("lldp listen %s: %w: %w", netdev, ErrPermission, err)
		}
		return nil, fmt.Errorf("lldp listen %s: socket: %w", netdev, err)
	}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(EtherType), Ifindex: ifi.Index}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("lldp listen %s: bind: %w", netdev, err)
	}
	mreq := unix.PacketMreq{Ifindex: int32(ifi.Index), Type: unix.PACKET_MR_MULTICAST, Alen: 6}
	copy(mreq.Address[:], MulticastAddr)
	if err := unix.SetsockoptPacketMreq(fd, unix.SOL_PACKET, unix.PACKET_ADD_MEMBERSHIP, &mreq); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("lldp listen %s: join %s: %w", netdev, MulticastAddr, err)
	}
	// The runtime's poller waits for it: deadlines and Close work.
	return &Socket{f: os.NewFile(uintptr(fd), "lldp-"+netdev), netdev: netdev, own: ifi.HardwareAddr}, nil
}

// Next returns the next LLDPDU that decodes (with Seen set; frames that
// do not decode are skipped), waiting until the deadline (zero: none) or
// the context ends: then the error wraps ErrNoNeighbor, or is the
// context's.
func (s *Socket) Next(ctx context.Context, deadline time.Time) (Neighbor, error) {
	if err := s.f.SetReadDeadline(deadline); err != nil {
		return Neighbor{}, err
	}
	stop := context.AfterFunc(ctx, func() { _ = s.f.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()
	buf := make([]byte, 9216)
	for {
		n, err := s.f.Read(buf)
		if err != nil {
			if ctx.Err() != nil {
				return Neighbor{}, ctx.Err()
			}
			if errors.Is(err, os.ErrDeadlineExceeded) {
				return Neighbor{}, ErrNoNeighbor
			}
			return Neighbor{}, fmt.Errorf("lldp listen %s: %w", s.netdev, err)
		}
		if n >= 12 && len(s.own) == 6 && bytes.Equal(buf[6:12], s.own) {
			continue // this host's own LLDPDU, reflected
		}
		nb, err := DecodeFrame(buf[:n])
		if err != nil {
			continue // not ours to report: wait for a good one
		}
		nb.Seen = time.Now()
		return nb, nil
	}
}

// Close closes the socket.
func (s *Socket) Close() error { return s.f.Close() }

// Listen waits up to wait for an LLDPDU on netdev and returns its
// neighbour (Seen set; a shutdown LLDPDU, TTL 0, is skipped). It needs
// CAP_NET_RAW (else an error wrapping ErrPermission and EPERM); no
// LLDPDU in time is an error wrapping ErrNoNeighbor.
func Listen(ctx context.Context, netdev string, wait time.Duration) (Neighbor, error) {
	s, err := OpenSocket(netdev)
	if err != nil {
		return Neighbor{}, err
	}
	defer s.Close()
	deadline := time.Now().Add(wait)
	for {
		n, err := s.Next(ctx, deadline)
		switch {
		case errors.Is(err, ErrNoNeighbor):
			return n, fmt.Errorf("lldp listen %s: %w: no LLDPDU in %s", netdev, ErrNoNeighbor, wait)
		case err != nil:
			return n, err
		case n.TTL > 0:
			return n, nil
		}
	}
}

// Watch receives LLDPDUs on netdev until the context ends, calling fn
// with each neighbour (a TTL 0 one says the neighbour is gone). It
// returns the context's error, or why it could not listen.
func Watch(ctx context.Context, netdev string, fn func(Neighbor)) error {
	s, err := OpenSocket(netdev)
	if err != nil {
		return err
	}
	defer s.Close()
	for {
		n, err := s.Next(ctx, time.Time{})
		if err != nil {
			return err
		}
		fn(n)
	}
}
