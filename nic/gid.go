package nic

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"path"
	"strconv"
	"time"
)

// ErrGIDNotFound says the GID table has no RoCE v2 entry for an address.
var ErrGIDNotFound = errors.New("no RoCE v2 GID for the address")

// GIDIndex returns the index of the RoCE v2 GID that carries addr on netdev
// in the GID table of rdmaDevice's port: the value to give NCCL
// (NCCL_IB_GID_INDEX) or perftest (-x). IPv4 addresses appear IPv4-mapped.
// An empty netdev matches any.
func (s *FS) GIDIndex(rdmaDevice string, port int, addr netip.Addr, netdev string) (int, error) {
	dir := path.Join("/class/infiniband", rdmaDevice, "ports", strconv.Itoa(port))
	names, err := s.ReadDir(path.Join(dir, "gids"))
	if err != nil {
		return -1, fmt.Errorf("read gid table of %s port %d: %w", rdmaDevice, port, err)
	}
	// As16 maps an IPv4 address to ::ffff:a.b.c.d, as RoCE GIDs carry it.
	want := netip.AddrFrom16(addr.As16())
	best := -1
	for _, name := range names {
		i, err := strconv.Atoi(name)
		if err != nil {
			continue
		}
		raw, err := s.ReadString(path.Join(dir, "gids", name))
		if err != nil {
			continue
		}
		ip, err := ParseGID(raw)
		if err != nil {
			continue
		}
		got, _ := netip.AddrFromSlice(ip)
		if got != want {
			continue
		}
		typ, err := s.ReadString(path.Join(dir, "gid_attrs", "types", name))
		if err != nil || typ != "RoCE v2" {
			continue
		}
		if netdev != "" {
			nd, err := s.ReadString(path.Join(dir, "gid_attrs", "ndevs", name))
			if err != nil || nd != netdev {
				continue
			}
		}
		if best < 0 || i < best {
			best = i
		}
	}
	if best < 0 {
		return -1, fmt.Errorf("%s port %d, %s on %s: %w", rdmaDevice, port, addr, netdev, ErrGIDNotFound)
	}
	return best, nil
}

// WaitGIDIndex polls GIDIndex until the entry appears or ctx ends: the
// kernel adds RoCE GIDs asynchronously after an address is added.
func (s *FS) WaitGIDIndex(ctx context.Context, rdmaDevice string, port int, addr netip.Addr, netdev string, every time.Duration) (int, error) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		i, err := s.GIDIndex(rdmaDevice, port, addr, netdev)
		if err == nil || !errors.Is(err, ErrGIDNotFound) {
			return i, err
		}
		select {
		case <-ctx.Done():
			return -1, fmt.Errorf("wait for gid: %w (%w)", err, ctx.Err())
		case <-t.C:
		}
	}
}
