package nic

import (
	"bytes"
	"errors"
	"fmt"
	"path"
	"slices"
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

// CounterBuf holds what AppendPortCounters reuses from one call to the
// next: the directory listing buffer, the value buffer and the counter
// names already seen (so that a scrape allocates no name it had before).
// The zero value is ready; a CounterBuf must not be used by two calls at
// once.
type CounterBuf struct {
	dents []byte
	ents  []dirent
	val   []byte
	names map[string]string
	// oneShot skips interning, for a buffer used once.
	oneShot bool
}

// PortCounters reads ports/<port>/counters and hw_counters of an RDMA
// device at the moment of the call. A file that vanished or holds garbage
// is left out and reported in errs; the others are returned.
// hw_counters/lifespan is a rate-limit setting, not a counter, and is
// skipped.
func (s *FS) PortCounters(dev string, port int) (out []Counter, errs []error) {
	return s.AppendPortCounters(nil, dev, port, &CounterBuf{oneShot: true})
}

// AppendPortCounters is PortCounters appending to out, with the buffers
// of b: a scrape that reads many ports reuses one CounterBuf per goroutine.
func (s *FS) AppendPortCounters(out []Counter, dev string, port int, b *CounterBuf) ([]Counter, []error) {
	var errs []error
	if b.dents == nil {
		b.dents = make([]byte, 8192)
		b.val = make([]byte, 64)
		if !b.oneShot {
			b.names = map[string]string{}
		}
	}
	base := path.Join("/class/infiniband", dev, "ports", strconv.Itoa(port))
	for _, dir := range [...]struct {
		name string
		hw   bool
	}{{"/counters", false}, {"/hw_counters", true}} {
		// One directory descriptor, then openat per file: the path to a
		// counter runs through the class symlink and the PCI hierarchy,
		// which the kernel would otherwise walk for every file.
		dirName := base + dir.name
		dfd, err := s.openDir(dirName)
		if err != nil {
			continue // drivers without PMA (rxe) or hw stats have no directory
		}
		b.ents, err = b.readDir(dfd)
		if err != nil {
			unix.Close(dfd)
			errs = append(errs, fmt.Errorf("list %s: %w", s.HostPath(dirName), err))
			continue
		}
		slices.SortFunc(b.ents, func(x, y dirent) int { return strings.Compare(x.name, y.name) })
		for _, e := range b.ents {
			n := e.name
			if dir.hw && n == "lifespan" {
				continue
			}
			raw, err := s.readAtBytes(dfd, dirName, e, b.val)
			if err != nil {
				if !errors.Is(err, errNotRegular) && !errors.Is(err, errTooLarge) {
					err = fmt.Errorf("read %s/%s: %w", s.HostPath(dirName), n, unwrapPathError(err))
				}
				errs = append(errs, err) // the bound errors name the file
				continue
			}
			v, ok := parseCounter(raw)
			if !ok {
				errs = append(errs, fmt.Errorf("read %s/%s: %q is not a counter", s.HostPath(dirName), n, bytes.TrimSpace(raw)))
				continue
			}
			out = append(out, Counter{Name: n, Value: v, HW: dir.hw})
		}
		unix.Close(dfd)
	}
	return out, errs
}

// parseCounter parses a decimal counter with surrounding white space, as
// strconv.ParseUint(strings.TrimSpace(raw), 10, 64) does, without
// allocating.
func parseCounter(raw []byte) (uint64, bool) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		return 0, false
	}
	var v uint64
	for _, c := range raw {
		if c < '0' || c > '9' {
			return 0, false
		}
		d := uint64(c - '0')
		if v > (1<<64-1-d)/10 {
			return 0, false // overflow
		}
		v = v*10 + d
	}
	return v, true
}

// readDir lists a directory descriptor, without "." and "..", into b.ents
// (reused) with names interned in b.names.
func (b *CounterBuf) readDir(fd int) ([]dirent, error) {
	return appendDirEntries(b.ents[:0], fd, b.dents, b.intern)
}

func (b *CounterBuf) intern(name []byte) string {
	if b.names == nil {
		return string(name)
	}
	if s, ok := b.names[string(name)]; ok {
		return s
	}
	if len(b.names) >= 4096 { // not sysfs, whose names are few and fixed
		clear(b.names)
	}
	s := string(name)
	b.names[s] = s
	return s
}

// isDots reports whether a directory entry is "." or "..".
func isDots(name []byte) bool {
	return len(name) == 1 && name[0] == '.' || len(name) == 2 && name[0] == '.' && name[1] == '.'
}

// readAtBytes reads a small file, entry e of directory dfd (which is dir in the
// tree), bounded by buf. On the sysfs fast path that is openat, read and
// close. In any other tree the entry's type from the directory listing
// decides, at no extra system call: a regular file is opened
// O_NOFOLLOW|O_NONBLOCK, a symlink is read through readAttr, which
// resolves it inside the tree, and anything else is an error, without
// opening it. (An entry swapped for another kind in between can neither
// lead outside nor block, and the read stays within buf.)
//
// The bytes read are returned, a slice of buf, untrimmed.
func (s *FS) readAtBytes(dfd int, dir string, e dirent, buf []byte) ([]byte, error) {
	flags := unix.O_RDONLY | unix.O_CLOEXEC | unix.O_NONBLOCK
	if !s.kernel {
		mode := uint32(e.typ) << 12 // DT_* are the S_IFMT bits shifted down
		if e.typ == unix.DT_UNKNOWN {
			var st unix.Stat_t
			if err := unix.Fstatat(dfd, e.name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
				return nil, err
			}
			mode = st.Mode & unix.S_IFMT
		}
		if mode == unix.S_IFLNK {
			v, err := s.readAttr(path.Join(dir, e.name), buf)
			return []byte(v), err
		}
		if mode != unix.S_IFREG {
			return nil, s.checkKind(path.Join(dir, e.name), mode, unix.S_IFREG)
		}
		flags |= unix.O_NOFOLLOW
	}
	fd, err := unix.Openat(dfd, e.name, flags, 0)
	if err != nil {
		return nil, err
	}
	n, err := readInto(fd, buf)
	unix.Close(fd)
	if errors.Is(err, errTooLarge) {
		return nil, s.tooLarge(path.Join(dir, e.name), len(buf))
	}
	if err != nil {
		return nil, err
	}
	return buf[:n], nil
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
