package nic

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/Mellanox/rdmamap"

	"github.com/roce-agent/roce-agent/nic/sysfstest"
)

func mustFS(t *testing.T, root string) *FS {
	t.Helper()
	s, err := NewFS(root)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestNewFSMissingRoot(t *testing.T) {
	_, err := NewFS(filepath.Join(t.TempDir(), "nope"))
	if err == nil || !strings.Contains(err.Error(), "sysfs root") || strings.Contains(err.Error(), "\n") {
		t.Fatalf("want a one-line sysfs root error, got %v", err)
	}
}

// A directory that is not a sysfs tree (empty, /etc) is an error, not an
// inventory of nothing.
func TestNewFSRefusesNonSysfs(t *testing.T) {
	for _, dir := range []string{t.TempDir(), "/etc"} {
		_, err := NewFS(dir)
		if err == nil || !strings.Contains(err.Error(), "sysfs root "+dir+": not a sysfs tree") {
			t.Errorf("NewFS(%s): %v", dir, err)
		}
	}
}

func TestNewFSAcceptsParentOfSys(t *testing.T) {
	dir := t.TempDir()
	tree := sysfstest.New(dir)
	if tree.Err() != nil {
		t.Fatal(tree.Err())
	}
	s := mustFS(t, dir)
	if s.Root() != tree.Root() {
		t.Errorf("root = %s, want %s", s.Root(), tree.Root())
	}
}

func TestRealpath(t *testing.T) {
	dir := t.TempDir()
	tree := sysfstest.New(dir)
	hb := tree.HostBridge("0000:17", 0)
	fn := hb.Bridge("0000:17:01.0", 0x8086, 1).Function("0000:18:00.0", sysfstest.PCIFunc{Vendor: 0x15b3, Class: 0x020000})
	fn.AddNetdev("eth0", sysfstest.Netdev{MAC: "02:00:00:00:00:01", MTU: 1500})
	root := tree.Root()
	// An absolute link as a test tree might make, to the tree itself, and
	// a kernel-style absolute /sys link.
	if err := os.Symlink(filepath.Join(root, "devices/pci0000:17/0000:17:01.0"), filepath.Join(root, "abs-tree")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/sys/devices/pci0000:17", filepath.Join(root, "abs-sys")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("loop-b", filepath.Join(root, "loop-a")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("loop-a", filepath.Join(root, "loop-b")); err != nil {
		t.Fatal(err)
	}
	s := mustFS(t, root)
	for _, tc := range []struct{ in, want string }{
		{"/bus/pci/devices/0000:18:00.0", "/devices/pci0000:17/0000:17:01.0/0000:18:00.0"},
		{"/class/net/eth0/device", "/devices/pci0000:17/0000:17:01.0/0000:18:00.0"},
		{"/class/pci_bus/0000:18/../../0000:18:00.0", "/devices/pci0000:17/0000:17:01.0/0000:18:00.0"},
		{"/abs-tree/0000:18:00.0", "/devices/pci0000:17/0000:17:01.0/0000:18:00.0"},
		{"/abs-sys/0000:17:01.0", "/devices/pci0000:17/0000:17:01.0"},
		{"/../../../devices", "/devices"},
	} {
		got, err := s.Realpath(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("Realpath(%s) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
	if _, err := s.Realpath("/loop-a"); err == nil {
		t.Error("Realpath of a symlink loop: want error")
	}
	if _, err := s.Realpath("/class/net/nope"); err == nil {
		t.Error("Realpath of a missing path: want error")
	}
}

func TestRdmamapListerAgreesWithSysfs(t *testing.T) {
	root := filepath.Join("..", "testdata", "sysfs", "dgx-h100", "sys")
	s := mustFS(t, root)
	want, err := SysfsLister{FS: s}.RDMADeviceNames()
	if err != nil {
		t.Fatal(err)
	}
	// rdmamap reads fixed paths held in package variables; point the one it
	// lists at the fixture for the duration of the test.
	saved := rdmamap.RdmaClassDir
	rdmamap.RdmaClassDir = filepath.Join(root, "class", "infiniband")
	defer func() { rdmamap.RdmaClassDir = saved }()
	got, _ := RdmamapLister{}.RDMADeviceNames()
	if strings.Join(got, " ") != strings.Join(want, " ") || len(got) != 10 {
		t.Errorf("rdmamap lists %v, sysfs lists %v", got, want)
	}
	if _, ok := NewLister(s).(SysfsLister); !ok {
		t.Error("a fixture tree must be listed from sysfs, not rdmamap")
	}
	if _, ok := NewLister(&FS{root: DefaultRoot}).(RdmamapLister); !ok {
		t.Error("the live /sys is listed with rdmamap")
	}
}
