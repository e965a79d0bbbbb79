package nic

import (
	"fmt"
	"os"
	"path"
	"sort"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Counter is one RDMA port counter file.
type Counter struct {
	Name  string
	Value uint64
	// HW is true for hw_counters (driver statistics), false for the PMA
	// counters/ directory.
	HW bool
}

// PortCounters reads ports/<port>/counters and hw_counters of an RDMA
// device at the moment of the call. A file that vanished or holds garbage
// is left out and reported in errs; the others are returned.
// hw_counters/lifespan is a rate-limit setting, not a counter, and is
// skipped.
func (s *FS) PortCounters(dev string, port int) (out []Counter, errs []error) {
	base := path.Join("/class/infiniband", dev, "ports", strconv.Itoa(port))
	buf := make([]byte, 64)
	for _, dir := range []struct {
		name string
		hw   bool
	}{{"counters", false}, {"hw_counters", true}} {
		// One directory descriptor, then openat per file: the path to a
		// counter runs through the class symlink and the PCI hierarchy,
		// which the kernel would otherwise walk for every file.
		dirPath := s.HostPath(path.Join(base, dir.name))
		d, err := os.Open(dirPath)
		if err != nil {
			continue // drivers without PMA (rxe) or hw stats have no directory
		}
		names, err := d.Readdirnames(-1)
		if err != nil {
			d.Close()
			errs = append(errs, fmt.Errorf("list %s: %w", dirPath, unwrapPathError(err)))
			continue
		}
		sort.Strings(names)
		dfd := int(d.Fd())
		for _, n := range names {
			if dir.hw && n == "lifespan" {
				continue
			}
			raw, err := readAt(dfd, n, buf)
			if err != nil {
				errs = append(errs, fmt.Errorf("read %s/%s: %w", dirPath, n, err))
				continue
			}
			v, err := strconv.ParseUint(raw, 10, 64)
			if err != nil {
				errs = append(errs, fmt.Errorf("read %s/%s: %q is not a counter", dirPath, n, raw))
				continue
			}
			out = append(out, Counter{Name: n, Value: v, HW: dir.hw})
		}
		d.Close()
	}
	return out, errs
}

// readAt reads a small file relative to a directory descriptor.
func readAt(dfd int, name string, buf []byte) (string, error) {
	fd, err := unix.Openat(dfd, name, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", err
	}
	n, err := unix.Read(fd, buf)
	unix.Close(fd)
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(buf[:n])), nil
}

// NetdevState is a netdev's state from sysfs: operstate, MTU and speed.
type NetdevState struct {
	Up       bool
	MTU      int
	SpeedMbs int // -1 when the driver does not know (no carrier, veth)
}

// ReadNetdev reads /class/net/<name>/{operstate,mtu,speed}.
func (s *FS) ReadNetdev(name string) (NetdevState, error) {
	dir := path.Join("/class/net", name)
	st := NetdevState{SpeedMbs: -1}
	buf := make([]byte, 64)
	op, err := s.readAttr(path.Join(dir, "operstate"), buf)
	if err != nil {
		return st, fmt.Errorf("read %s: %w", s.HostPath(path.Join(dir, "operstate")), unwrapPathError(err))
	}
	st.Up = op == "up"
	if v, err := s.readAttr(path.Join(dir, "mtu"), buf); err == nil {
		st.MTU, _ = strconv.Atoi(v)
	}
	if v, err := s.readAttr(path.Join(dir, "speed"), buf); err == nil {
		if n, err := strconv.Atoi(v); err == nil && n >= 0 {
			st.SpeedMbs = n
		}
	}
	return st, nil
}
