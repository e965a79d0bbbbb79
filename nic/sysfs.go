// Package nic discovers RDMA NICs and the PCI devices they sit on by reading
// a sysfs tree. Every path is resolved under a root (default /sys), so the
// same code reads the live host or a fixture tree laid out as the kernel does.
package nic

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// DefaultRoot is where the kernel mounts sysfs.
const DefaultRoot = "/sys"

// maxSymlinkHops bounds symlink resolution, like the kernel's ELOOP limit.
const maxSymlinkHops = 40

// FS reads a sysfs tree rooted at Root. Paths given to its methods are
// sysfs-absolute ("/class/infiniband") or relative to the root; every method
// but Realpath first cleans the path lexically ("a/../b" is "b").
//
// What FS guarantees, for the live /sys and for any other tree:
//
//   - No read blocks. Files are opened O_NONBLOCK|O_CLOEXEC and directories
//     O_DIRECTORY|O_NONBLOCK, so a FIFO or a device cannot stall the agent.
//   - Every read is bounded: ReadFile and ReadString read at most
//     maxReadSize (64 KiB), readAttr and PortCounters at most the caller's
//     buffer. A longer file is an error naming the path and the bound
//     ("sysfs tree: /x/class/net/eth0/mtu is larger than 64 bytes"), never a
//     truncated value.
//
// For a tree that is not a sysfs mount (a fixture, a copy, a host directory
// given with --sysfs-root), in addition:
//
//   - Only regular files are read or written as files: a FIFO, a character
//     or block device, a socket or a directory is an error naming the path
//     and what it is ("sysfs tree: /x/class/net/eth0/mtu is a FIFO, not a
//     regular file"); ReadDir of anything but a directory is an error too.
//     The type is checked with fstat after the open (O_NONBLOCK), or before
//     it from the resolution or the directory listing where that is at
//     hand; writes always check before they open.
//   - No method reads, writes or lists anything outside the root. Symlinks
//     are followed inside the tree, as Realpath resolves them: relative
//     targets from the link's directory, absolute targets that start with
//     /sys or with the root itself onto the tree, any other absolute target
//     as if the root were "/" (as openat2's RESOLVE_IN_ROOT does), and ".."
//     never above the root. The kernel resolves the common case itself, with
//     openat2 RESOLVE_BENEATH relative to a descriptor of the root; a path
//     it refuses (an absolute link, ".." above the root) is resolved with
//     Realpath and the symlink-free result opened with RESOLVE_BENEATH and
//     RESOLVE_NO_SYMLINKS, so a link swapped in meanwhile fails the open
//     rather than leads out. Without openat2 (Linux < 5.6) every path takes
//     Realpath and the last component is opened O_NOFOLLOW.
//
// A root that is a sysfs mount (checked once, by NewFS, with statfs) is read
// on a fast path: sysfs links stay inside sysfs by construction and its files
// are kernel attributes, so paths are opened as given, with no system call
// per read beyond open, read and close (file systems mounted below it, such
// as debugfs and configfs, are trusted the same way). The two guarantees
// above hold there too.
//
// The root directory itself is opened once, at the first read that needs
// it, and may be given through symlinks.
type FS struct {
	root string
	// kernel is true when root is a sysfs mount (the fast path).
	kernel bool
	// rootFD is 1 + an O_PATH descriptor of root once rootDir opened it.
	rootFD atomic.Int32

	pciOnce  sync.Once
	pciPaths map[string]string // PCI address -> device path, see walkPCI
}

// maxReadSize bounds ReadFile and ReadString. Sysfs attributes are at most a
// page; the largest files the agent reads (debugfs cc_params) are far below.
const maxReadSize = 64 << 10

// NewFS returns an FS for the sysfs tree at root. The directory must exist.
// A directory that holds a kernel-style "sys" directory but no sysfs entries
// of its own (the parent of a fixture tree) is accepted and its "sys" used.
func NewFS(root string) (*FS, error) {
	if root == "" {
		root = DefaultRoot
	}
	root = filepath.Clean(root)
	st, err := os.Stat(root)
	if err != nil {
		return nil, fmt.Errorf("sysfs root %s: %w", root, err)
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("sysfs root %s: not a directory", root)
	}
	if !looksLikeSysfs(root) {
		if !looksLikeSysfs(filepath.Join(root, "sys")) {
			return nil, fmt.Errorf("sysfs root %s: not a sysfs tree (it has no class/, bus/ or devices/ directory, nor a sys/ that has one)", root)
		}
		root = filepath.Join(root, "sys")
	}
	return &FS{root: root, kernel: isSysfsMount(root)}, nil
}

// isSysfsMount reports whether dir is on a sysfs file system.
func isSysfsMount(dir string) bool {
	var st unix.Statfs_t
	return unix.Statfs(dir, &st) == nil && int64(st.Type) == unix.SYSFS_MAGIC
}

func looksLikeSysfs(dir string) bool {
	for _, sub := range []string{"class", "bus", "devices"} {
		if st, err := os.Stat(filepath.Join(dir, sub)); err == nil && st.IsDir() {
			return true
		}
	}
	return false
}

// Root is the directory the tree is read from.
func (s *FS) Root() string { return s.root }

// IsHost reports whether the tree is the live host's /sys.
func (s *FS) IsHost() bool { return s.root == DefaultRoot }

// HostPath is the on-disk path of a sysfs path, for messages and warnings.
func (s *FS) HostPath(p string) string {
	return filepath.Join(s.root, filepath.FromSlash(clean(p)))
}

// clean makes p sysfs-absolute and lexically clean ("/class/net/eth0").
func clean(p string) string {
	return path.Clean("/" + p)
}

// ReadFile returns the contents of a sysfs attribute, at most maxReadSize
// bytes; a larger file is an error.
func (s *FS) ReadFile(p string) ([]byte, error) {
	fd, size, err := s.openFile(p, unix.O_RDONLY)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	if size > maxReadSize {
		return nil, s.tooLarge(p, maxReadSize)
	}
	b, err := readLimited(fd, maxReadSize, size)
	switch {
	case errors.Is(err, errTooLarge):
		return nil, s.tooLarge(p, maxReadSize)
	case err != nil:
		return nil, &fs.PathError{Op: "read", Path: s.HostPath(p), Err: err}
	}
	return b, nil
}

// ReadString returns a sysfs attribute with surrounding white space trimmed.
func (s *FS) ReadString(p string) (string, error) {
	b, err := s.ReadFile(p)
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(b)), nil
}

// Exists reports whether p exists (following symlinks, inside the tree).
func (s *FS) Exists(p string) bool {
	if s.kernel {
		var st unix.Stat_t
		return unix.Stat(s.HostPath(p), &st) == nil
	}
	fd, err := s.openat2(clean(p), unix.O_PATH, unix.RESOLVE_BENEATH|unix.RESOLVE_NO_MAGICLINKS)
	if err == nil {
		unix.Close(fd)
		return true
	}
	if err == unix.ENOENT {
		return false
	}
	_, _, err = s.realpath(clean(p))
	return err == nil
}

// ReadDir lists the names in directory p, sorted.
func (s *FS) ReadDir(p string) ([]string, error) {
	fd, err := s.openDir(p)
	if err != nil {
		return nil, err
	}
	names, err := readDirNames(fd)
	unix.Close(fd)
	if err != nil {
		return nil, &fs.PathError{Op: "readdirent", Path: s.HostPath(p), Err: err}
	}
	sort.Strings(names)
	return names, nil
}

// Realpath resolves every symlink in p inside the tree and returns the
// sysfs-absolute result, as realpath(3) does on the live /sys. Relative
// targets ("../../devices/pci0000:17/...") are joined to the link's
// directory; absolute targets are taken as sysfs-absolute when they start
// with /sys or with the tree's own root, and any other absolute target is
// taken from the tree's root too. ".." never climbs above the root.
func (s *FS) Realpath(p string) (string, error) {
	resolved, _, err := s.realpath(p)
	return resolved, err
}

// realpath is Realpath that also returns the file type (S_IFMT bits) of the
// result, as lstat saw it.
func (s *FS) realpath(p string) (string, uint32, error) {
	// Split without cleaning: ".." must apply after the symlink before it
	// is resolved, as in NCCL's /class/pci_bus/<bus>/../../<bdf>.
	pending := strings.Split(filepath.ToSlash(p), "/")
	resolved := "/"
	mode := uint32(unix.S_IFDIR) // the root; NewFS checked it
	hops := 0
	for len(pending) > 0 {
		comp := pending[0]
		pending = pending[1:]
		switch comp {
		case "", ".":
			continue
		case "..":
			resolved = path.Dir(resolved)
			mode = unix.S_IFDIR // walked through it on the way down
			continue
		}
		next := path.Join(resolved, comp)
		var st unix.Stat_t
		if err := unix.Lstat(s.HostPath(next), &st); err != nil {
			return "", 0, &fs.PathError{Op: "lstat", Path: s.HostPath(next), Err: err}
		}
		if st.Mode&unix.S_IFMT != unix.S_IFLNK {
			resolved = next
			mode = st.Mode & unix.S_IFMT
			continue
		}
		hops++
		if hops > maxSymlinkHops {
			return "", 0, fmt.Errorf("resolve %s: %w", p, errTooManyLinks)
		}
		target, err := os.Readlink(s.HostPath(next))
		if err != nil {
			return "", 0, err
		}
		target = filepath.ToSlash(target)
		if path.IsAbs(target) {
			target = s.sysfsAbsolute(target)
			resolved = "/"
			mode = unix.S_IFDIR
		}
		pending = append(strings.Split(target, "/"), pending...)
	}
	return resolved, mode, nil
}

var errTooManyLinks = errors.New("too many levels of symbolic links")

// sysfsAbsolute maps an absolute symlink target onto the tree.
func (s *FS) sysfsAbsolute(target string) string {
	rootSlash := filepath.ToSlash(s.root)
	switch {
	case rootSlash != "/" && (target == rootSlash || strings.HasPrefix(target, rootSlash+"/")):
		return strings.TrimPrefix(target, rootSlash)
	case target == "/sys" || strings.HasPrefix(target, "/sys/"):
		return strings.TrimPrefix(target, "/sys")
	}
	return target
}

// LinkBase returns the last element of the symlink target at p (a driver
// link "driver -> ../../../bus/pci/drivers/mlx5_core" gives "mlx5_core").
// The link itself is read, not followed; the directories above it are
// resolved inside the tree.
func (s *FS) LinkBase(p string) (string, error) {
	if s.kernel {
		target, err := os.Readlink(s.HostPath(p))
		if err != nil {
			return "", err
		}
		return path.Base(filepath.ToSlash(target)), nil
	}
	dfd, base, err := s.openParent("readlink", p)
	if err != nil {
		return "", err
	}
	target, err := readlinkat(dfd, base)
	unix.Close(dfd)
	if err != nil {
		return "", &fs.PathError{Op: "readlink", Path: s.HostPath(p), Err: err}
	}
	return path.Base(filepath.ToSlash(target)), nil
}

// WriteFile writes a sysfs, debugfs or configfs attribute (no trailing
// newline is added; the kernel parsers accept the bare value).
func (s *FS) WriteFile(p, value string) error {
	if s.kernel {
		f, err := os.OpenFile(s.HostPath(p), os.O_WRONLY|os.O_TRUNC, 0)
		if err != nil {
			return err
		}
		if _, err := f.WriteString(value); err != nil {
			f.Close()
			return err
		}
		return f.Close()
	}
	// No fast path: the file type is checked before an open that truncates.
	fd, _, err := s.openInTree("open", p, unix.O_WRONLY|unix.O_TRUNC|unix.O_NONBLOCK|unix.O_CLOEXEC, unix.S_IFREG, false)
	if err != nil {
		return err
	}
	for b := []byte(value); len(b) > 0; {
		n, err := unix.Write(fd, b)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			unix.Close(fd)
			return &fs.PathError{Op: "write", Path: s.HostPath(p), Err: err}
		}
		b = b[n:]
	}
	if err := unix.Close(fd); err != nil {
		return &fs.PathError{Op: "close", Path: s.HostPath(p), Err: err}
	}
	return nil
}

// Mkdir creates a directory, as configfs groups are created
// (mkdir /sys/kernel/config/rdma_cm/mlx5_0).
func (s *FS) Mkdir(p string) error {
	if s.kernel {
		return os.Mkdir(s.HostPath(p), 0o755)
	}
	dfd, base, err := s.openParent("mkdir", p)
	if err != nil {
		return err
	}
	err = unix.Mkdirat(dfd, base, 0o755)
	unix.Close(dfd)
	if err != nil {
		return &fs.PathError{Op: "mkdir", Path: s.HostPath(p), Err: err}
	}
	return nil
}

// readAttr reads a small sysfs attribute with bare open/read/close calls:
// os.ReadFile's stat, poller registration and buffer growth cost more than
// the read itself when a scrape reads hundreds of counters. buf bounds the
// read: an attribute that does not fit is an error naming the path and
// len(buf) (counters and state files are short).
func (s *FS) readAttr(p string, buf []byte) (string, error) {
	fd, size, err := s.openFile(p, unix.O_RDONLY)
	if err != nil {
		return "", err
	}
	if size > int64(len(buf)) {
		unix.Close(fd)
		return "", s.tooLarge(p, len(buf))
	}
	n, err := readInto(fd, buf)
	unix.Close(fd)
	switch {
	case errors.Is(err, errTooLarge):
		return "", s.tooLarge(p, len(buf))
	case err != nil:
		return "", &fs.PathError{Op: "read", Path: s.HostPath(p), Err: err}
	}
	return strings.TrimSpace(string(buf[:n])), nil
}

// Bounded, in-tree opening.

var (
	// errNotRegular is wrapped by the error for a FIFO, device, socket or
	// directory read or written as a file.
	errNotRegular = errors.New("not a regular file")
	// errTooLarge is matched by the error for a file over its read bound.
	errTooLarge = errors.New("file too large")
)

// sizeError is a file larger than the bound it was read with.
type sizeError struct {
	path  string
	limit int
}

func (e *sizeError) Error() string {
	return fmt.Sprintf("sysfs tree: %s is larger than %d bytes", e.path, e.limit)
}

func (e *sizeError) Is(target error) bool { return target == errTooLarge }

func (s *FS) tooLarge(p string, limit int) error {
	return &sizeError{path: s.HostPath(p), limit: limit}
}

// kindName names a file type (S_IFMT bits) for messages.
func kindName(mode uint32) string {
	switch mode & unix.S_IFMT {
	case unix.S_IFIFO:
		return "FIFO"
	case unix.S_IFCHR:
		return "character device"
	case unix.S_IFBLK:
		return "block device"
	case unix.S_IFSOCK:
		return "socket"
	case unix.S_IFDIR:
		return "directory"
	case unix.S_IFLNK:
		return "symlink"
	case unix.S_IFREG:
		return "regular file"
	}
	return "special file"
}

// checkKind returns an error naming p and its type unless mode is want
// (S_IFREG or S_IFDIR).
func (s *FS) checkKind(p string, mode, want uint32) error {
	if mode&unix.S_IFMT == want {
		return nil
	}
	if want == unix.S_IFDIR {
		return fmt.Errorf("sysfs tree: %s is a %s, %w", s.HostPath(p), kindName(mode), unix.ENOTDIR)
	}
	return fmt.Errorf("sysfs tree: %s is a %s, %w", s.HostPath(p), kindName(mode), errNotRegular)
}

// pathError names the path the caller asked for, with the cause of a
// failure that may have happened on a resolved path.
func (s *FS) pathError(op, p string, err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		err = pe.Err
	}
	return &fs.PathError{Op: op, Path: s.HostPath(p), Err: err}
}

// openFile opens the file at p for reading (O_RDONLY) with O_NONBLOCK and
// O_CLOEXEC added. On the sysfs fast path that is all, and size is -1.
// Otherwise p is opened inside the tree (see openInTree), must be a
// regular file, and size is its size.
func (s *FS) openFile(p string, flags int) (fd int, size int64, err error) {
	flags |= unix.O_NONBLOCK | unix.O_CLOEXEC
	if s.kernel {
		name := s.HostPath(p)
		fd, err := unix.Open(name, flags, 0)
		if err != nil {
			return -1, -1, &fs.PathError{Op: "open", Path: name, Err: err}
		}
		return fd, -1, nil
	}
	return s.openInTree("open", p, flags, unix.S_IFREG, true)
}

// openDir opens directory p for listing, O_DIRECTORY|O_NONBLOCK, inside the
// tree unless it is a sysfs mount.
func (s *FS) openDir(p string) (int, error) {
	flags := unix.O_RDONLY | unix.O_DIRECTORY | unix.O_NONBLOCK | unix.O_CLOEXEC
	if s.kernel {
		name := s.HostPath(p)
		fd, err := unix.Open(name, flags, 0)
		if err != nil {
			return -1, &fs.PathError{Op: "open", Path: name, Err: err}
		}
		return fd, nil
	}
	fd, _, err := s.openInTree("open", p, flags, unix.S_IFDIR, true)
	return fd, err
}

// openInTree opens p, lexically cleaned, in a tree that is not a sysfs
// mount; want is S_IFREG (checked with fstat after the open, whose size is
// returned) or S_IFDIR (flags hold O_DIRECTORY).
//
// With fast set, the kernel first resolves p itself with openat2
// RESOLVE_BENEATH: relative symlinks are followed as Realpath follows them,
// and anything that would need Realpath's mapping (an absolute symlink, ".."
// above the root) fails with EXDEV instead of leaving the tree. Those
// paths, the errors that deserve a better message (a FIFO or socket opened
// for writing, a FIFO where a directory belongs), lookups that concurrent
// renames kept failing (EAGAIN) and every open without fast take the slow
// path: Realpath, a check of the file type before the
// open (so that there a device is never opened), then openResolved.
func (s *FS) openInTree(op, p string, flags int, want uint32, fast bool) (int, int64, error) {
	cp := clean(p)
	if fast {
		fd, err := s.openat2(cp, flags, unix.RESOLVE_BENEATH|unix.RESOLVE_NO_MAGICLINKS)
		switch err {
		case nil:
			if want != unix.S_IFREG {
				return fd, -1, nil // O_DIRECTORY saw to it
			}
			size, err := s.fstatKind(fd, p, want)
			if err != nil {
				unix.Close(fd)
				return -1, -1, err
			}
			return fd, size, nil
		case unix.EXDEV, unix.ENOTDIR, unix.ENXIO, unix.ELOOP, unix.EAGAIN, unix.ENOSYS, unix.EPERM:
		default:
			return -1, -1, &fs.PathError{Op: op, Path: s.HostPath(p), Err: err}
		}
	}
	resolved, mode, err := s.realpath(cp)
	if err != nil {
		return -1, -1, s.pathError(op, p, err)
	}
	if err := s.checkKind(p, mode, want); err != nil {
		return -1, -1, err
	}
	fd, err := s.openResolved(resolved, flags)
	if err != nil {
		return -1, -1, s.pathError(op, p, err)
	}
	size, err := s.fstatKind(fd, p, want)
	if err != nil {
		unix.Close(fd)
		return -1, -1, err
	}
	return fd, size, nil
}

// fstatKind checks that fd is of type want and returns its size.
func (s *FS) fstatKind(fd int, p string, want uint32) (int64, error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return -1, &fs.PathError{Op: "stat", Path: s.HostPath(p), Err: err}
	}
	if err := s.checkKind(p, st.Mode, want); err != nil {
		return -1, err
	}
	return st.Size, nil
}

// openParent resolves the directory holding p inside the tree and opens it
// O_PATH, for the *at calls that act on p's last element without following
// it. It returns that element.
func (s *FS) openParent(op, p string) (int, string, error) {
	dir, base := path.Split(clean(p))
	if base == "" { // the root itself
		err := unix.EINVAL
		if op == "mkdir" {
			err = unix.EEXIST
		}
		return -1, "", &fs.PathError{Op: op, Path: s.HostPath(p), Err: err}
	}
	fd, _, err := s.openInTree(op, dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, unix.S_IFDIR, false)
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = &fs.PathError{Op: op, Path: s.HostPath(p), Err: pe.Err}
		}
		return -1, "", err
	}
	return fd, base, nil
}

// noOpenat2 is set once openat2(2) turned out to be missing (Linux < 5.6).
var noOpenat2 atomic.Bool

// openat2 opens the sysfs-absolute path p relative to a descriptor of the
// root, with O_CLOEXEC added and the RESOLVE_* flags in resolve. ENOSYS
// (remembered) means there is no openat2.
func (s *FS) openat2(p string, flags int, resolve uint64) (int, error) {
	if noOpenat2.Load() {
		return -1, unix.ENOSYS
	}
	rel := strings.TrimPrefix(path.Clean("/"+p), "/")
	if rel == "" {
		rel = "."
	}
	rfd, err := s.rootDir()
	if err != nil {
		return -1, err
	}
	var fd int
	how := &unix.OpenHow{Flags: uint64(flags | unix.O_CLOEXEC), Resolve: resolve}
	for try := 0; ; try++ {
		fd, err = unix.Openat2(rfd, rel, how)
		// EAGAIN: a rename or mount anywhere on the system raced with a
		// ".." of the lookup, which the kernel then cannot vouch for.
		if (err != unix.EAGAIN && err != unix.EINTR) || try == openat2Tries {
			break
		}
	}
	runtime.KeepAlive(s) // the cleanup that closes rfd must not run before
	if err == unix.ENOSYS {
		noOpenat2.Store(true)
	}
	return fd, err
}

// openat2Tries bounds the retries of an openat2 that a concurrent rename
// interrupted; after them the caller takes the Realpath path, whose lookups
// have no "..".
const openat2Tries = 4

// rootDir returns an O_PATH descriptor of the root, opened at the first
// call that needs it and closed when s is garbage. Callers keep s alive
// while they use it.
func (s *FS) rootDir() (int, error) {
	if fd := s.rootFD.Load(); fd > 0 {
		return int(fd - 1), nil
	}
	fd, err := unix.Open(s.root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	if !s.rootFD.CompareAndSwap(0, int32(fd)+1) {
		unix.Close(fd) // another goroutine was first
		return int(s.rootFD.Load() - 1), nil
	}
	runtime.AddCleanup(s, func(fd int) { unix.Close(fd) }, fd)
	return fd, nil
}

// openResolved opens a path that Realpath returned, relative to the root,
// with O_CLOEXEC|O_NOFOLLOW added. openat2 with RESOLVE_BENEATH and
// RESOLVE_NO_SYMLINKS makes the kernel refuse any symlink or ".." on the way,
// so a tree changed since the resolution cannot lead outside the root.
func (s *FS) openResolved(resolved string, flags int) (int, error) {
	flags |= unix.O_CLOEXEC | unix.O_NOFOLLOW
	fd, err := s.openat2(resolved, flags, unix.RESOLVE_BENEATH|unix.RESOLVE_NO_SYMLINKS|unix.RESOLVE_NO_MAGICLINKS)
	switch err {
	case unix.ENOSYS:
	case unix.EPERM:
		// Possibly a seccomp filter that refuses openat2; a real EPERM
		// comes back again from open below.
	default:
		return fd, err
	}
	return unix.Open(s.HostPath(resolved), flags, 0)
}

// readLimited reads fd to the end, at most limit bytes; more is
// errTooLarge. size is the file's size from fstat, or -1.
func readLimited(fd, limit int, size int64) ([]byte, error) {
	n := 4096 // a sysfs attribute is at most a page
	if size >= 0 {
		n = int(size) + 1 // one more byte to see the end
	}
	buf := make([]byte, 0, min(n, limit+1))
	for {
		if len(buf) == cap(buf) {
			if len(buf) > limit {
				return nil, errTooLarge
			}
			grown := make([]byte, len(buf), min(2*cap(buf), limit+1))
			copy(grown, buf)
			buf = grown
		}
		m, err := unix.Read(fd, buf[len(buf):cap(buf)])
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, err
		}
		if m == 0 {
			return buf, nil
		}
		buf = buf[:len(buf)+m]
	}
}

// readInto reads a file into buf with one read, then makes sure the file
// ended there: a file that fills buf is read one byte further, and any more
// data is errTooLarge.
func readInto(fd int, buf []byte) (int, error) {
	n, err := unix.Read(fd, buf)
	if err != nil {
		return 0, err
	}
	if n == len(buf) {
		var more [1]byte
		if m, err := unix.Read(fd, more[:]); err == nil && m > 0 {
			return 0, errTooLarge
		}
	}
	return n, nil
}

// dirent is a directory entry: its name and type (a DT_* value, DT_UNKNOWN
// where the file system does not say).
type dirent struct {
	name string
	typ  uint8
}

// readDirEntries lists a directory descriptor, without "." and "..".
func readDirEntries(fd int) ([]dirent, error) {
	return appendDirEntries(nil, fd, make([]byte, 8192), func(b []byte) string { return string(b) })
}

// appendDirEntries appends the entries of a directory descriptor, without
// "." and "..", to out, reading with getdents64 into buf and making each
// name a string with name (which may intern it). It is the one parser of
// struct linux_dirent64 in the package.
func appendDirEntries(out []dirent, fd int, buf []byte, name func([]byte) string) ([]dirent, error) {
	for {
		n, err := unix.Getdents(fd, buf)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return out, err
		}
		if n <= 0 {
			return out, nil
		}
		// struct linux_dirent64: d_ino u64, d_off s64, d_reclen u16,
		// d_type u8, d_name (NUL-terminated).
		for b := buf[:n]; len(b) >= 19; {
			reclen := int(binary.NativeEndian.Uint16(b[16:18]))
			if reclen < 19 || reclen > len(b) {
				return out, unix.EIO
			}
			raw := b[19:reclen]
			if i := bytes.IndexByte(raw, 0); i >= 0 {
				raw = raw[:i]
			}
			if !isDots(raw) {
				out = append(out, dirent{name: name(raw), typ: b[18]})
			}
			b = b[reclen:]
		}
	}
}

// readDirNames lists a directory descriptor, without "." and "..".
func readDirNames(fd int) ([]string, error) {
	ents, err := readDirEntries(fd)
	if err != nil {
		return nil, err
	}
	names := make([]string, len(ents))
	for i, e := range ents {
		names[i] = e.name
	}
	return names, nil
}

// readlinkat reads the symlink name in directory dfd.
func readlinkat(dfd int, name string) (string, error) {
	for size := 256; ; size *= 2 {
		buf := make([]byte, size)
		n, err := unix.Readlinkat(dfd, name, buf)
		if err != nil {
			return "", err
		}
		if n < size {
			return string(buf[:n]), nil
		}
	}
}
