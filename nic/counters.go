package nic

import (
	"fmt"
	"path"
	"strconv"
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
	for _, dir := range []struct {
		name string
		hw   bool
	}{{"counters", false}, {"hw_counters", true}} {
		names, err := s.ReadDir(path.Join(base, dir.name))
		if err != nil {
			continue // drivers without PMA (rxe) or hw stats have no directory
		}
		for _, n := range names {
			if dir.hw && n == "lifespan" {
				continue
			}
			file := path.Join(base, dir.name, n)
			raw, err := s.ReadString(file)
			if err != nil {
				errs = append(errs, fmt.Errorf("read %s: %w", s.HostPath(file), unwrapPathError(err)))
				continue
			}
			v, err := strconv.ParseUint(raw, 10, 64)
			if err != nil {
				errs = append(errs, fmt.Errorf("read %s: %q is not a counter", s.HostPath(file), raw))
				continue
			}
			out = append(out, Counter{Name: n, Value: v, HW: dir.hw})
		}
	}
	return out, errs
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
	op, err := s.ReadString(path.Join(dir, "operstate"))
	if err != nil {
		return st, fmt.Errorf("read %s: %w", s.HostPath(path.Join(dir, "operstate")), unwrapPathError(err))
	}
	st.Up = op == "up"
	if v, err := s.ReadString(path.Join(dir, "mtu")); err == nil {
		st.MTU, _ = strconv.Atoi(v)
	}
	if v, err := s.ReadString(path.Join(dir, "speed")); err == nil {
		if n, err := strconv.Atoi(v); err == nil && n >= 0 {
			st.SpeedMbs = n
		}
	}
	return st, nil
}
