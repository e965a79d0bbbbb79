// Package nic discovers RDMA NICs and the PCI devices they sit on by reading
// a sysfs tree. Every path is resolved under a root (default /sys), so the
// same code reads the live host or a fixture tree laid out as the kernel does.
package nic

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// DefaultRoot is where the kernel mounts sysfs.
const DefaultRoot = "/sys"

// maxSymlinkHops bounds symlink resolution, like the kernel's ELOOP limit.
const maxSymlinkHops = 40

// FS reads a sysfs tree rooted at Root. Paths given to its methods are
// sysfs-absolute ("/class/infiniband") or relative to the root; symlinks are
// resolved inside the root, so a fixture tree can never lead reads outside it.
type FS struct {
	root string

	pciOnce  sync.Once
	pciPaths map[string]string // PCI address -> device path, see walkPCI
}

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
	if !looksLikeSysfs(root) && looksLikeSysfs(filepath.Join(root, "sys")) {
		root = filepath.Join(root, "sys")
	}
	return &FS{root: root}, nil
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

// ReadFile returns the contents of a sysfs attribute.
func (s *FS) ReadFile(p string) ([]byte, error) {
	return os.ReadFile(s.HostPath(p))
}

// ReadString returns a sysfs attribute with surrounding white space trimmed.
func (s *FS) ReadString(p string) (string, error) {
	b, err := s.ReadFile(p)
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(b)), nil
}

// Exists reports whether p exists (following symlinks).
func (s *FS) Exists(p string) bool {
	_, err := os.Stat(s.HostPath(p))
	return err == nil
}

// ReadDir lists the names in directory p, sorted.
func (s *FS) ReadDir(p string) ([]string, error) {
	entries, err := os.ReadDir(s.HostPath(p))
	if err != nil {
		return nil, err
	}
	names := make([]string, 0, len(entries))
	for _, e := range entries {
		names = append(names, e.Name())
	}
	sort.Strings(names)
	return names, nil
}

// Realpath resolves every symlink in p inside the tree and returns the
// sysfs-absolute result, as realpath(3) does on the live /sys. Relative
// targets ("../../devices/pci0000:17/...") are joined to the link's
// directory; absolute targets are taken as sysfs-absolute when they start
// with /sys or with the tree's own root. ".." never climbs above the root.
func (s *FS) Realpath(p string) (string, error) {
	// Split without cleaning: ".." must apply after the symlink before it
	// is resolved, as in NCCL's /class/pci_bus/<bus>/../../<bdf>.
	pending := strings.Split(filepath.ToSlash(p), "/")
	resolved := "/"
	hops := 0
	for len(pending) > 0 {
		comp := pending[0]
		pending = pending[1:]
		switch comp {
		case "", ".":
			continue
		case "..":
			resolved = path.Dir(resolved)
			continue
		}
		next := path.Join(resolved, comp)
		fi, err := os.Lstat(s.HostPath(next))
		if err != nil {
			return "", err
		}
		if fi.Mode()&fs.ModeSymlink == 0 {
			resolved = next
			continue
		}
		hops++
		if hops > maxSymlinkHops {
			return "", fmt.Errorf("resolve %s: %w", p, errTooManyLinks)
		}
		target, err := os.Readlink(s.HostPath(next))
		if err != nil {
			return "", err
		}
		target = filepath.ToSlash(target)
		if path.IsAbs(target) {
			target = s.sysfsAbsolute(target)
			resolved = "/"
		}
		pending = append(strings.Split(target, "/"), pending...)
	}
	return resolved, nil
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
func (s *FS) LinkBase(p string) (string, error) {
	target, err := os.Readlink(s.HostPath(p))
	if err != nil {
		return "", err
	}
	return path.Base(filepath.ToSlash(target)), nil
}

// WriteFile writes a sysfs, debugfs or configfs attribute (no trailing
// newline is added; the kernel parsers accept the bare value).
func (s *FS) WriteFile(p, value string) error {
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

// Mkdir creates a directory, as configfs groups are created
// (mkdir /sys/kernel/config/rdma_cm/mlx5_0).
func (s *FS) Mkdir(p string) error {
	return os.Mkdir(s.HostPath(p), 0o755)
}

// readAttr reads a small sysfs attribute with bare open/read/close calls:
// os.ReadFile's stat, poller registration and buffer growth cost more than
// the read itself when a scrape reads hundreds of counters. buf must be
// large enough for the attribute (counters and state files are short).
func (s *FS) readAttr(p string, buf []byte) (string, error) {
	name := s.HostPath(p)
	fd, err := unix.Open(name, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", &fs.PathError{Op: "open", Path: name, Err: err}
	}
	n, err := unix.Read(fd, buf)
	unix.Close(fd)
	if err != nil {
		return "", &fs.PathError{Op: "read", Path: name, Err: err}
	}
	return strings.TrimSpace(string(buf[:n])), nil
}
