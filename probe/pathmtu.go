package probe

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync/atomic"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"
)

// ErrPathMTU says full-size packets do not cross the path between two
// rail addresses while small ones do: a port or a hop with a smaller MTU.
// RoCE does not fragment, so such a path drops every full-size RDMA
// packet: bandwidth tests time out while rping and latency tests pass.
var ErrPathMTU = errors.New("path MTU below the rail MTU")

// ErrNoEcho says the peer answered no ping at all.
var ErrNoEcho = errors.New("no answer to ping")

// CheckPathMTU sends a don't-fragment ICMP echo of mtu bytes from local to
// peer and, when it gets no answer, a small one: nil when the full size
// crosses, ErrPathMTU when only the small one does, ErrNoEcho when neither
// does. It needs a raw socket (root or CAP_NET_RAW). The source address
// selects the rail's policy routing table, so the path is the rail's.
func CheckPathMTU(ctx context.Context, local, peer netip.Addr, mtu int, wait time.Duration) error {
	if local.Is4() != peer.Is4() {
		return fmt.Errorf("path mtu: %s and %s are not of one family", local, peer)
	}
	small := 1500
	if !peer.Is4() {
		small = 1280
	}
	if mtu < small {
		small = mtu
	}
	conn, err := openEcho(local)
	if err != nil {
		return err
	}
	defer conn.Close()
	full, err := echo(ctx, conn, peer, mtu, wait)
	if err != nil || full {
		return err
	}
	ok, err := echo(ctx, conn, peer, small, wait)
	switch {
	case err != nil:
		return err
	case ok:
		return fmt.Errorf("%w: a %d-byte don't-fragment ping from %s to %s got no answer, a %d-byte one did; check the MTU of the leaf port and of the fabric",
			ErrPathMTU, mtu, local, peer, small)
	default:
		return fmt.Errorf("%w: %s does not answer pings from %s", ErrNoEcho, peer, local)
	}
}

type echoConn struct {
	*net.IPConn
	v4 bool
	id uint16
}

// openEcho opens a raw ICMP socket bound to local that sets DF and
// ignores the cached path MTU (PMTUDISC_PROBE: the packet leaves at its
// size and the network, not the kernel's cache, says whether it fits).
func openEcho(local netip.Addr) (*echoConn, error) {
	network := "ip4:icmp"
	if !local.Is4() {
		network = "ip6:ipv6-icmp"
	}
	c, err := net.ListenIP(network, &net.IPAddr{IP: local.AsSlice(), Zone: local.Zone()})
	if err != nil {
		return nil, fmt.Errorf("path mtu: open icmp socket on %s: %w", local, err)
	}
	raw, err := c.SyscallConn()
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("path mtu: %w", err)
	}
	var serr error
	err = raw.Control(func(fd uintptr) {
		if local.Is4() {
			serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_MTU_DISCOVER, unix.IP_PMTUDISC_PROBE)
			return
		}
		serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_MTU_DISCOVER, unix.IPV6_PMTUDISC_PROBE)
		if serr == nil {
			serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_DONTFRAG, 1)
		}
	})
	if err == nil {
		err = serr
	}
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("path mtu: set don't-fragment on %s: %w", local, err)
	}
	var id [2]byte
	_, _ = rand.Read(id[:])
	return &echoConn{IPConn: c, v4: local.Is4(), id: binary.BigEndian.Uint16(id[:])}, nil
}

var echoSeq atomic.Uint32

// echo sends one echo of size bytes (IP header included) and waits for its
// reply; two tries.
func echo(ctx context.Context, c *echoConn, peer netip.Addr, size int, wait time.Duration) (bool, error) {
	hdr, typ, proto := 20, icmp.Type(ipv4.ICMPTypeEcho), 1
	if !c.v4 {
		hdr, typ, proto = 40, ipv6.ICMPTypeEchoRequest, 58
	}
	payload := size - hdr - 8
	if payload < 0 {
		payload = 0
	}
	dst := &net.IPAddr{IP: peer.AsSlice()}
	buf := make([]byte, size+64)
	for try := 0; try < 2; try++ {
		seq := int(uint16(echoSeq.Add(1)))
		msg := icmp.Message{Type: typ, Body: &icmp.Echo{ID: int(c.id), Seq: seq, Data: make([]byte, payload)}}
		b, err := msg.Marshal(nil)
		if err != nil {
			return false, err
		}
		if _, err := c.WriteTo(b, dst); err != nil {
			var errno unix.Errno
			if errors.As(err, &errno) && (errno == unix.EMSGSIZE || errno == unix.ENOBUFS) {
				// EMSGSIZE: the local interface's MTU is below size.
				// ENOBUFS: the device dropped it on transmit (a veth
				// whose peer's MTU is smaller reports so for IPv6):
				// it did not cross either way.
				return false, nil
			}
			return false, fmt.Errorf("path mtu: send to %s: %w", peer, err)
		}
		deadline := time.Now().Add(wait)
		if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
			deadline = d
		}
		_ = c.SetReadDeadline(deadline)
		for {
			n, from, err := c.ReadFrom(buf)
			if err != nil {
				break // timeout: try again
			}
			ip, ok := from.(*net.IPAddr)
			if !ok || !ip.IP.Equal(dst.IP) {
				continue
			}
			m, err := icmp.ParseMessage(proto, buf[:n])
			if err != nil {
				continue
			}
			if e, ok := m.Body.(*icmp.Echo); ok && e.ID == int(c.id) && e.Seq == seq &&
				(m.Type == ipv4.ICMPTypeEchoReply || m.Type == ipv6.ICMPTypeEchoReply) {
				return true, nil
			}
		}
		if ctx.Err() != nil {
			return false, ctx.Err()
		}
	}
	return false, nil
}
