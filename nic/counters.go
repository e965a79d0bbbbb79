package nic

import (
	"errors"
	"fmt"
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
		dirName := path.Join(base, dir.name)
		dirPath := s.HostPath(dirName)
		dfd, err := s.openDir(dirName)
		if err != nil {
			continue // drivers without PMA (rxe) or hw stats have no directory
		}
		ents, err := readDirEntries(dfd)
		if err != nil {
			unix.Close(dfd)
			errs = append(errs, fmt.Errorf("list %s: %w", dirPath, err))
			continue
		}
		sort.Slice(ents, func(i, j int) bool { return ents[i].name < ents[j].name })
		for _, e := range ents {
			n := e.name
			if dir.hw && n == "lifespan" {
				continue
			}
			raw, err := s.readAt(dfd, dirName, e, buf)
			if err != nil {
				if !errors.Is(err, errNotRegular) && !errors.Is(err, errTooLarge) {
					err = fmt.Errorf("read %s/%s: %w", dirPath, n, unwrapPathError(err))
				}
				errs = append(errs, err) // the bound errors name the file
				continue
			}
			v, err := strconv.ParseUint(raw, 10, 64)
			if err != nil {
				errs = append(errs, fmt.Errorf("read %s/%s: %q is not a counter", dirPath, n, raw))
				continue
			}
			out = append(out, Counter{Name: n, Value: v, HW: dir.hw})
		}
		unix.Close(dfd)
	}
	return out, errs
}

// readAt reads a small file, entry e of directory dfd (which is dir in the
// tree), bounded by buf. On the sysfs fast path that is openat, read and
// close. In any other tree the entry's type from the directory listing
// decides, at no extra system call: a regular file is opened
// O_NOFOLLOW|O_NONBLOCK, a symlink is read through readAttr, which
// resolves it inside the tree, and anything else is an error, without
// opening it. (An entry swapped for another kind in between can neither
// lead outside nor block, and the read stays within buf.)
func (s *FS) readAt(dfd int, dir string, e dirent, buf []byte) (string, error) {
	flags := unix.O_RDONLY | unix.O_CLOEXEC | unix.O_NONBLOCK
	if !s.kernel {
		mode := uint32(e.typ) << 12 // DT_* are the S_IFMT bits shifted down
		if e.typ == unix.DT_UNKNOWN {
			var st unix.Stat_t
			if err := unix.Fstatat(dfd, e.name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
				return "", err
			}
			mode = st.Mode & unix.S_IFMT
		}
		if mode == unix.S_IFLNK {
			return s.readAttr(path.Join(dir, e.name), buf)
		}
		if err := s.checkKind(path.Join(dir, e.name), mode, unix.S_IFREG); err != nil {
			return "", err
		}
		flags |= unix.O_NOFOLLOW
	}
	fd, err := unix.Openat(dfd, e.name, flags, 0)
	if err != nil {
		return "", err
	}
	n, err := readInto(fd, buf)
	unix.Close(fd)
	if errors.Is(err, errTooLarge) {
		return "", s.tooLarge(path.Join(dir, e.name), len(buf))
	}
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
