package nic

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Bounded, in-tree reads: an attacker-made tree (FIFOs, devices, huge
// files, symlinks out of the root) must neither hang, exhaust memory nor
// read outside the root.

// boundTree is a small sysfs tree in a temporary directory: a virtual
// netdev eth0 reached through a relative class link, and an RDMA device
// with one port of counters.
func boundTree(t *testing.T) (root string) {
	t.Helper()
	root = filepath.Join(t.TempDir(), "sys")
	put(t, root, "devices/virtual/net/eth0/mtu", "1500\n")
	put(t, root, "devices/virtual/net/eth0/operstate", "up\n")
	put(t, root, "devices/virtual/net/eth0/speed", "100000\n")
	link(t, root, "class/net/eth0", "../../devices/virtual/net/eth0")
	dev := "devices/pci0000:17/0000:17:00.0/infiniband/mlx5_0"
	put(t, root, dev+"/ports/1/counters/port_rcv_packets", "7\n")
	put(t, root, dev+"/ports/1/counters/port_xmit_packets", "9\n")
	put(t, root, dev+"/ports/1/hw_counters/out_of_buffer", "3\n")
	put(t, root, "devices/pci0000:17/0000:17:00.0/vendor", "0x15b3\n")
	put(t, root, "bus/pci/drivers/mlx5_core/bind", "")
	link(t, root, "devices/pci0000:17/0000:17:00.0/driver", "../../../bus/pci/drivers/mlx5_core")
	link(t, root, "class/infiniband/mlx5_0", "../../"+dev)
	return root
}

func put(t *testing.T, root, rel, content string) {
	t.Helper()
	p := filepath.Join(root, rel)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func link(t *testing.T, root, rel, target string) {
	t.Helper()
	p := filepath.Join(root, rel)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, p); err != nil {
		t.Fatal(err)
	}
}

func fifo(t *testing.T, root, rel string) {
	t.Helper()
	p := filepath.Join(root, rel)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(p, 0o644); err != nil {
		t.Fatal(err)
	}
}

// treeFS is an FS on a temporary tree, which must take the checked path.
func treeFS(t *testing.T, root string) *FS {
	t.Helper()
	s := mustFS(t, root)
	if s.kernel {
		t.Fatalf("%s taken for a sysfs mount", root)
	}
	return s
}

// promptly runs f and fails the test if it has not returned within a few
// seconds (a read that blocks on a FIFO would hang the test otherwise).
func promptly(t *testing.T, what string, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		f()
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatalf("%s blocked", what)
	}
}

// wantErr fails unless err is non-nil and its message holds every part.
func wantErr(t *testing.T, what string, err error, parts ...string) {
	t.Helper()
	if err == nil {
		t.Errorf("%s: want an error, got none", what)
		return
	}
	for _, p := range parts {
		if !strings.Contains(err.Error(), p) {
			t.Errorf("%s: error %q does not contain %q", what, err, p)
		}
	}
}

func TestBoundFIFOAttribute(t *testing.T) {
	root := boundTree(t)
	fifo(t, root, "devices/virtual/net/eth0/carrier")
	s := treeFS(t, root)
	hostPath := filepath.Join(root, "class/net/eth0/carrier")
	want := "sysfs tree: " + hostPath + " is a FIFO, not a regular file"

	var errFile, errString, errAttr error
	var b []byte
	var v, a string
	promptly(t, "reading a FIFO", func() {
		b, errFile = s.ReadFile("/class/net/eth0/carrier")
		v, errString = s.ReadString("/class/net/eth0/carrier")
		a, errAttr = s.readAttr("/class/net/eth0/carrier", make([]byte, 64))
	})
	for _, tc := range []struct {
		name string
		err  error
		got  string
	}{{"ReadFile", errFile, string(b)}, {"ReadString", errString, v}, {"readAttr", errAttr, a}} {
		if tc.err == nil || tc.err.Error() != want || !errors.Is(tc.err, errNotRegular) || tc.got != "" {
			t.Errorf("%s of a FIFO = %q, %v; want error %q", tc.name, tc.got, tc.err, want)
		}
	}
	// The other attributes of the same directory still read.
	if mtu, err := s.ReadString("/class/net/eth0/mtu"); err != nil || mtu != "1500" {
		t.Errorf("mtu = %q, %v; want 1500", mtu, err)
	}
}

func TestBoundFIFOInReadNetdev(t *testing.T) {
	root := boundTree(t)
	if err := os.Remove(filepath.Join(root, "devices/virtual/net/eth0/operstate")); err != nil {
		t.Fatal(err)
	}
	fifo(t, root, "devices/virtual/net/eth0/operstate")
	s := treeFS(t, root)
	var err error
	promptly(t, "ReadNetdev with a FIFO operstate", func() { _, err = s.ReadNetdev("eth0") })
	wantErr(t, "ReadNetdev", err, filepath.Join(root, "class/net/eth0/operstate"), "is a FIFO, not a regular file")
}

func TestBoundFIFOAsDirectory(t *testing.T) {
	root := boundTree(t)
	fifo(t, root, "class/pipe")
	link(t, root, "class/pipe-link", "pipe")
	for _, s := range []*FS{treeFS(t, root), {root: root, kernel: true}} {
		for _, p := range []string{"/class/pipe", "/class/pipe-link"} {
			var names []string
			var err error
			promptly(t, "ReadDir of a FIFO", func() { names, err = s.ReadDir(p) })
			if err == nil || !errors.Is(err, syscall.ENOTDIR) || names != nil {
				t.Errorf("kernel=%v: ReadDir(%s) = %v, %v; want ENOTDIR", s.kernel, p, names, err)
			}
			if !s.kernel {
				wantErr(t, "ReadDir", err, "sysfs tree: "+filepath.Join(root, p)+" is a FIFO, not a directory")
			}
		}
	}
}

// TestBoundFastPathNeverBlocks reads the same FIFO as if the tree were a
// sysfs mount: no type check there, but O_NONBLOCK keeps it from hanging.
func TestBoundFastPathNeverBlocks(t *testing.T) {
	root := boundTree(t)
	fifo(t, root, "class/net/eth0/carrier")
	s := &FS{root: root, kernel: true}
	var v, a string
	var errString, errAttr error
	promptly(t, "fast-path read of a FIFO", func() {
		v, errString = s.ReadString("/class/net/eth0/carrier")
		a, errAttr = s.readAttr("/class/net/eth0/carrier", make([]byte, 64))
	})
	// No writer: end of file at once.
	if v != "" || errString != nil || a != "" || errAttr != nil {
		t.Errorf("fast-path FIFO reads = %q, %v and %q, %v; want empty", v, errString, a, errAttr)
	}
}

func TestBoundDevZero(t *testing.T) {
	root := boundTree(t)
	link(t, root, "class/net/eth0/zero-abs", "/dev/zero")
	link(t, root, "class/net/eth0/zero-rel", "../../../../../../../../../../../dev/zero")
	s := treeFS(t, root)
	for _, p := range []string{"/class/net/eth0/zero-abs", "/class/net/eth0/zero-rel"} {
		// Inside the tree both name <root>/dev/zero, which does not exist.
		var err error
		var b []byte
		promptly(t, "reading /dev/zero", func() { b, err = s.ReadFile(p) })
		if !errors.Is(err, fs.ErrNotExist) || b != nil {
			t.Errorf("ReadFile(%s) = %d bytes, %v; want not-exist", p, len(b), err)
		}
		if _, err := s.readAttr(p, make([]byte, 64)); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("readAttr(%s) = %v; want not-exist", p, err)
		}
		if s.Exists(p) {
			t.Errorf("Exists(%s) = true", p)
		}
	}
	// On the fast path the link is followed to the real /dev/zero, and the
	// read bound stops it.
	fast := &FS{root: root, kernel: true}
	var b []byte
	var err, errAttr error
	promptly(t, "fast-path read of /dev/zero", func() {
		b, err = fast.ReadFile("/class/net/eth0/zero-abs")
		_, errAttr = fast.readAttr("/class/net/eth0/zero-abs", make([]byte, 64))
	})
	if b != nil || !errors.Is(err, errTooLarge) {
		t.Errorf("fast-path ReadFile of /dev/zero = %d bytes, %v; want too large", len(b), err)
	}
	wantErr(t, "fast-path ReadFile of /dev/zero", err, "is larger than 65536 bytes")
	wantErr(t, "fast-path readAttr of /dev/zero", errAttr, "is larger than 64 bytes")
}

// TestBoundDeviceInTree needs root for mknod: a character device made
// inside the tree is refused without being opened.
func TestBoundDeviceInTree(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mknod needs root")
	}
	root := boundTree(t)
	zero := filepath.Join(root, "devices/virtual/net/eth0/zero")
	if err := unix.Mknod(zero, unix.S_IFCHR|0o644, int(unix.Mkdev(1, 5))); err != nil {
		t.Skipf("mknod: %v", err)
	}
	ctr := filepath.Join(root, "class/infiniband/mlx5_0/ports/1/counters/zero")
	if err := unix.Mknod(ctr, unix.S_IFCHR|0o644, int(unix.Mkdev(1, 5))); err != nil {
		t.Fatal(err)
	}
	s := treeFS(t, root)
	_, err := s.ReadFile("/class/net/eth0/zero")
	if err == nil || err.Error() != "sysfs tree: "+filepath.Join(root, "class/net/eth0/zero")+" is a character device, not a regular file" {
		t.Errorf("ReadFile of a char device: %v", err)
	}
	_, err = s.readAttr("/class/net/eth0/zero", make([]byte, 64))
	wantErr(t, "readAttr of a char device", err, "is a character device, not a regular file")
	cs, errs := s.PortCounters("mlx5_0", 1)
	if len(cs) != 3 || len(errs) != 1 {
		t.Fatalf("PortCounters = %v, %v; want 3 counters and 1 error", cs, errs)
	}
	wantErr(t, "PortCounters", errs[0], "counters/zero is a character device, not a regular file")
}

func TestBoundSizeCap(t *testing.T) {
	root := boundTree(t)
	put(t, root, "devices/virtual/net/eth0/exact", strings.Repeat("x", maxReadSize))
	put(t, root, "devices/virtual/net/eth0/over", strings.Repeat("x", maxReadSize+1))
	put(t, root, "devices/virtual/net/eth0/attr64", strings.Repeat("7", 64))
	put(t, root, "devices/virtual/net/eth0/attr65", strings.Repeat("7", 65))
	for _, s := range []*FS{treeFS(t, root), {root: root, kernel: true}} {
		b, err := s.ReadFile("/class/net/eth0/exact")
		if err != nil || len(b) != maxReadSize {
			t.Errorf("kernel=%v: ReadFile of exactly %d bytes = %d bytes, %v", s.kernel, maxReadSize, len(b), err)
		}
		b, err = s.ReadFile("/class/net/eth0/over")
		want := "sysfs tree: " + filepath.Join(root, "class/net/eth0/over") + " is larger than 65536 bytes"
		if b != nil || err == nil || err.Error() != want || !errors.Is(err, errTooLarge) {
			t.Errorf("kernel=%v: ReadFile of %d bytes = %d bytes, %v; want %q", s.kernel, maxReadSize+1, len(b), err, want)
		}
		if v, err := s.ReadString("/class/net/eth0/over"); v != "" || !errors.Is(err, errTooLarge) {
			t.Errorf("kernel=%v: ReadString over the cap = %d bytes, %v", s.kernel, len(v), err)
		}
		buf := make([]byte, 64)
		if v, err := s.readAttr("/class/net/eth0/attr64", buf); err != nil || v != strings.Repeat("7", 64) {
			t.Errorf("kernel=%v: readAttr of 64 bytes = %q, %v", s.kernel, v, err)
		}
		v, err := s.readAttr("/class/net/eth0/attr65", buf)
		want = "sysfs tree: " + filepath.Join(root, "class/net/eth0/attr65") + " is larger than 64 bytes"
		if v != "" || err == nil || err.Error() != want {
			t.Errorf("kernel=%v: readAttr of 65 bytes = %q, %v; want %q", s.kernel, v, err, want)
		}
	}
}

func TestBoundPortCounters(t *testing.T) {
	root := boundTree(t)
	cdir := "devices/pci0000:17/0000:17:00.0/infiniband/mlx5_0/ports/1/counters/"
	fifo(t, root, cdir+"port_rcv_data")
	put(t, root, cdir+"port_xmit_data", strings.Repeat("1", 65))
	put(t, root, cdir+"../hw_counters/rx_write_requests", "11\n")
	link(t, root, cdir+"symbol_error", "../hw_counters/rx_write_requests") // in the tree: read
	link(t, root, cdir+"link_downed", "/etc/hostname")                     // out of it: <root>/etc/hostname
	s := treeFS(t, root)
	var cs []Counter
	var errs []error
	promptly(t, "PortCounters with a FIFO", func() { cs, errs = s.PortCounters("mlx5_0", 1) })
	got := map[string]uint64{}
	for _, c := range cs {
		got[c.Name] = c.Value
	}
	want := map[string]uint64{"port_rcv_packets": 7, "port_xmit_packets": 9, "symbol_error": 11, "out_of_buffer": 3, "rx_write_requests": 11}
	if len(got) != len(want) {
		t.Errorf("counters = %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("counter %s = %d, want %d", k, got[k], v)
		}
	}
	var msgs []string
	for _, e := range errs {
		msgs = append(msgs, e.Error())
	}
	all := strings.Join(msgs, "\n")
	base := filepath.Join(root, "class/infiniband/mlx5_0/ports/1/counters")
	for _, w := range []string{
		"read " + base + "/link_downed: no such file or directory",
		"sysfs tree: " + base + "/port_rcv_data is a FIFO, not a regular file",
		"sysfs tree: " + base + "/port_xmit_data is larger than 64 bytes",
	} {
		if !strings.Contains(all, w) {
			t.Errorf("PortCounters errors %q lack %q", all, w)
		}
	}
	if len(errs) != 3 {
		t.Errorf("PortCounters errors = %q, want 3", all)
	}
}

// outside makes a directory next to the tree with a secret file, a
// subdirectory and a symlink, none of which may be read through the tree.
func outside(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "outside")
	put(t, dir, "hostname", "SECRET\n")
	put(t, dir, "sub/mtu", "4242\n")
	put(t, dir, "operstate", "up\n")
	link(t, dir, "driver", "../secret_driver")
	return dir
}

func TestBoundSymlinksStayInTree(t *testing.T) {
	root := boundTree(t)
	out := outside(t)
	// Every kind of way out: absolute to a file and to a directory,
	// relative climbing far above the root, and via a link in the middle.
	link(t, root, "class/net/eth0/abs-file", filepath.Join(out, "hostname"))
	link(t, root, "class/net/abs-dir", out)
	rel, err := filepath.Rel(filepath.Join(root, "class/net"), out)
	if err != nil || !strings.HasPrefix(rel, "../../..") {
		t.Fatalf("relative path out of the tree: %q, %v", rel, err)
	}
	link(t, root, "class/net/rel-dir", rel)
	link(t, root, "class/net/eth0/rel-file", "../../../../../../../../../../"+strings.TrimPrefix(out, "/")+"/hostname")
	link(t, root, "class/net/eth0/up", "../../../../..")
	s := treeFS(t, root)

	for _, p := range []string{
		"/class/net/eth0/abs-file",
		"/class/net/eth0/rel-file",
		"/class/net/abs-dir/hostname",
		"/class/net/rel-dir/hostname",
		"/class/net/eth0/up/" + strings.TrimPrefix(out, "/") + "/hostname",
	} {
		if b, err := s.ReadFile(p); !errors.Is(err, fs.ErrNotExist) || b != nil {
			t.Errorf("ReadFile(%s) = %q, %v; want not-exist", p, b, err)
		}
		if v, err := s.ReadString(p); !errors.Is(err, fs.ErrNotExist) || v != "" {
			t.Errorf("ReadString(%s) = %q, %v; want not-exist", p, v, err)
		}
		if v, err := s.readAttr(p, make([]byte, 64)); !errors.Is(err, fs.ErrNotExist) || v != "" {
			t.Errorf("readAttr(%s) = %q, %v; want not-exist", p, v, err)
		}
		if s.Exists(p) {
			t.Errorf("Exists(%s) = true", p)
		}
	}
	for _, p := range []string{"/class/net/abs-dir", "/class/net/rel-dir", "/class/net/abs-dir/sub"} {
		if names, err := s.ReadDir(p); !errors.Is(err, fs.ErrNotExist) || names != nil {
			t.Errorf("ReadDir(%s) = %v, %v; want not-exist", p, names, err)
		}
	}
	if v, err := s.LinkBase("/class/net/abs-dir/driver"); !errors.Is(err, fs.ErrNotExist) || v != "" {
		t.Errorf("LinkBase through an outside link = %q, %v; want not-exist", v, err)
	}
	if st, err := s.ReadNetdev("abs-dir"); !errors.Is(err, fs.ErrNotExist) || st.Up {
		t.Errorf("ReadNetdev(abs-dir) = %+v, %v; want not-exist", st, err)
	}
	// Writes stay inside too: the outside files are left as they were.
	if err := s.WriteFile("/class/net/abs-dir/hostname", "pwned"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("WriteFile through an outside link = %v; want not-exist", err)
	}
	if err := s.Mkdir("/class/net/rel-dir/newdir"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Mkdir through an outside link = %v; want not-exist", err)
	}
	if b, _ := os.ReadFile(filepath.Join(out, "hostname")); string(b) != "SECRET\n" {
		t.Errorf("outside file changed to %q", b)
	}
	if _, err := os.Stat(filepath.Join(out, "newdir")); err == nil {
		t.Error("Mkdir created a directory outside the tree")
	}

	// An absolute target is taken from the root, as RESOLVE_IN_ROOT does:
	// once the tree has the file, the link reads it.
	put(t, root, strings.TrimPrefix(out, "/")+"/hostname", "INSIDE\n")
	for _, p := range []string{"/class/net/eth0/abs-file", "/class/net/eth0/rel-file", "/class/net/abs-dir/hostname"} {
		if v, err := s.ReadString(p); err != nil || v != "INSIDE" {
			t.Errorf("ReadString(%s) = %q, %v; want the tree's copy", p, v, err)
		}
	}
}

func TestBoundInTreeSymlinks(t *testing.T) {
	root := boundTree(t)
	// Absolute links onto the tree: kernel-style /sys and the root itself.
	link(t, root, "class/net/eth-sys", "/sys/devices/virtual/net/eth0")
	link(t, root, "class/net/eth-root", filepath.Join(root, "devices/virtual/net/eth0"))
	link(t, root, "devices/virtual/net/eth0/mtu-link", "mtu")
	s := treeFS(t, root)
	for _, nd := range []string{"eth0", "eth-sys", "eth-root"} {
		dir := "/class/net/" + nd
		if v, err := s.ReadString(dir + "/mtu"); err != nil || v != "1500" {
			t.Errorf("ReadString(%s/mtu) = %q, %v; want 1500", dir, v, err)
		}
		if v, err := s.ReadString(dir + "/mtu-link"); err != nil || v != "1500" {
			t.Errorf("ReadString(%s/mtu-link) = %q, %v; want 1500", dir, v, err)
		}
		if v, err := s.readAttr(dir+"/mtu", make([]byte, 64)); err != nil || v != "1500" {
			t.Errorf("readAttr(%s/mtu) = %q, %v; want 1500", dir, v, err)
		}
		names, err := s.ReadDir(dir)
		if err != nil || strings.Join(names, " ") != "mtu mtu-link operstate speed" {
			t.Errorf("ReadDir(%s) = %v, %v", dir, names, err)
		}
		if !s.Exists(dir + "/operstate") {
			t.Errorf("Exists(%s/operstate) = false", dir)
		}
		st, err := s.ReadNetdev(nd)
		if err != nil || st != (NetdevState{Up: true, MTU: 1500, SpeedMbs: 100000}) {
			t.Errorf("ReadNetdev(%s) = %+v, %v", nd, st, err)
		}
	}
	// ".." after a link applies lexically, as it always did for reads.
	if v, err := s.ReadString("/class/net/eth0/../eth0/mtu"); err != nil || v != "1500" {
		t.Errorf("ReadString with .. = %q, %v", v, err)
	}
	if v, err := s.LinkBase("/class/infiniband/mlx5_0/../../../../driver"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("LinkBase(/driver) = %q, %v; want not-exist", v, err) // lexically /driver
	}
	if v, err := s.LinkBase("/bus/../devices/pci0000:17/0000:17:00.0/driver"); err != nil || v != "mlx5_core" {
		t.Errorf("LinkBase(driver) = %q, %v; want mlx5_core", v, err)
	}
	if v, err := s.LinkBase("/class/net/eth0"); err != nil || v != "eth0" {
		t.Errorf("LinkBase(/class/net/eth0) = %q, %v; want eth0", v, err)
	}
	if _, err := s.LinkBase("/class/net/eth0/mtu"); !errors.Is(err, syscall.EINVAL) {
		t.Errorf("LinkBase of a file = %v; want EINVAL", err)
	}
	// Writes and mkdir through in-tree links land in the tree.
	if err := s.WriteFile("/class/net/eth-sys/mtu", "9000"); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(root, "devices/virtual/net/eth0/mtu")); string(b) != "9000" {
		t.Errorf("WriteFile wrote %q", b)
	}
	if err := s.Mkdir("/class/net/eth0/queues"); err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(filepath.Join(root, "devices/virtual/net/eth0/queues")); err != nil || !st.IsDir() {
		t.Errorf("Mkdir: %v", err)
	}
	if err := s.Mkdir("/class/net/eth0/queues"); !errors.Is(err, fs.ErrExist) {
		t.Errorf("second Mkdir = %v; want exists", err)
	}
}

// TestBoundOpenResolvedRefusesLinks checks the second line of defence: a
// symlink in a path that was resolved (a tree changed in between) fails the
// open instead of being followed.
func TestBoundOpenResolvedRefusesLinks(t *testing.T) {
	root := boundTree(t)
	s := treeFS(t, root)
	fd, err := s.openResolved("/devices/virtual/net/eth0/mtu", unix.O_RDONLY)
	if err != nil {
		t.Fatal(err)
	}
	unix.Close(fd)
	// The last component is never followed, with or without openat2.
	link(t, root, "devices/virtual/net/eth0/mtu-link", "mtu")
	if fd, err := s.openResolved("/devices/virtual/net/eth0/mtu-link", unix.O_RDONLY); !errors.Is(err, syscall.ELOOP) {
		if err == nil {
			unix.Close(fd)
		}
		t.Errorf("open of a final symlink = %v; want ELOOP", err)
	}
	fd, err = s.openResolved("/class/net/eth0/mtu", unix.O_RDONLY)
	if noOpenat2.Load() {
		t.Log("no openat2: only the last component is checked")
		if err == nil {
			unix.Close(fd)
		}
		return
	}
	if !errors.Is(err, syscall.ELOOP) {
		if err == nil {
			unix.Close(fd)
		}
		t.Errorf("open through an intermediate symlink = %v; want ELOOP", err)
	}
}

// TestBoundWithoutOpenat2 runs the tree tests again as on a kernel without
// openat2, where every path takes Realpath and an O_NOFOLLOW open.
func TestBoundWithoutOpenat2(t *testing.T) {
	if noOpenat2.Load() {
		t.Skip("no openat2 here: the other tests took this path already")
	}
	noOpenat2.Store(true)
	defer noOpenat2.Store(false)
	for name, f := range map[string]func(*testing.T){
		"FIFOAttribute":      TestBoundFIFOAttribute,
		"FIFOAsDirectory":    TestBoundFIFOAsDirectory,
		"DevZero":            TestBoundDevZero,
		"SizeCap":            TestBoundSizeCap,
		"PortCounters":       TestBoundPortCounters,
		"SymlinksStayInTree": TestBoundSymlinksStayInTree,
		"InTreeSymlinks":     TestBoundInTreeSymlinks,
	} {
		t.Run(name, f)
	}
}

func TestBoundSysfsFastPath(t *testing.T) {
	if s := mustFS(t, boundTree(t)); s.kernel {
		t.Error("a temporary directory taken for sysfs")
	}
	s := mustFS(t, DefaultRoot)
	if !s.kernel {
		t.Skip("/sys is not a sysfs mount here")
	}
	if _, err := os.Stat("/sys/class/net/lo"); err != nil {
		t.Skip("no lo in this /sys")
	}
	if v, err := s.readAttr("/class/net/lo/mtu", make([]byte, 64)); err != nil || v == "" {
		t.Errorf("readAttr(lo/mtu) = %q, %v", v, err)
	}
	if v, err := s.ReadString("/class/net/lo/type"); err != nil || v != "772" {
		t.Errorf("ReadString(lo/type) = %q, %v; want 772 (ARPHRD_LOOPBACK)", v, err)
	}
	if names, err := s.ReadDir("/class/net"); err != nil || len(names) == 0 {
		t.Errorf("ReadDir(/class/net) = %v, %v", names, err)
	}
	if _, err := s.ReadFile("/class/net"); !errors.Is(err, syscall.EISDIR) {
		t.Errorf("ReadFile of a sysfs directory = %v; want EISDIR", err)
	}
}

// The per-read cost of the bounds: counters of the dgx-h100 fixture (the
// checked path, as BenchmarkScrape reads them) and attributes of the live
// /sys (the fast path).

func BenchmarkPortCountersFixture(b *testing.B) {
	s, err := NewFS(filepath.Join("..", "testdata", "sysfs", "dgx-h100", "sys"))
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		for _, dev := range []string{"mlx5_0", "mlx5_1", "mlx5_2", "mlx5_3"} {
			if cs, errs := s.PortCounters(dev, 1); len(cs) == 0 || len(errs) != 0 {
				b.Fatalf("%s: %d counters, %v", dev, len(cs), errs)
			}
		}
	}
}

func BenchmarkReadNetdevFixture(b *testing.B) {
	s, err := NewFS(filepath.Join("..", "testdata", "sysfs", "dgx-h100", "sys"))
	if err != nil {
		b.Fatal(err)
	}
	names, err := s.ReadDir("/class/net")
	if err != nil || len(names) == 0 {
		b.Fatal(names, err)
	}
	for b.Loop() {
		if _, err := s.ReadNetdev(names[0]); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkReadAttrLive(b *testing.B) {
	s, err := NewFS(DefaultRoot)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := s.readAttr("/class/net/lo/mtu", make([]byte, 64)); err != nil {
		b.Skip(err)
	}
	buf := make([]byte, 64)
	for b.Loop() {
		if _, err := s.readAttr("/class/net/lo/mtu", buf); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkReadStringLive(b *testing.B) {
	s, err := NewFS(DefaultRoot)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := s.ReadString("/class/net/lo/address"); err != nil {
		b.Skip(err)
	}
	for b.Loop() {
		if _, err := s.ReadString("/class/net/lo/address"); err != nil {
			b.Fatal(err)
		}
	}
}

// TestBoundConcurrentRenames reads through ".." links while files are
// renamed elsewhere: openat2's RESOLVE_BENEATH then fails with EAGAIN now
// and then, which must be retried or resolved another way, never reported.
func TestBoundConcurrentRenames(t *testing.T) {
	root := boundTree(t)
	s := treeFS(t, root)
	scratch := t.TempDir()
	a, b := filepath.Join(scratch, "a"), filepath.Join(scratch, "b")
	if err := os.WriteFile(a, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
			}
			_ = os.Rename(a, b)
			_ = os.Rename(b, a)
		}
	}()
	defer func() { close(stop); <-done }()
	buf := make([]byte, 64)
	for i := 0; i < 5000; i++ {
		if v, err := s.readAttr("/class/net/eth0/mtu", buf); err != nil || v != "1500" {
			t.Fatalf("read %d: %q, %v", i, v, err)
		}
	}
}
