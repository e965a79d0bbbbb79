package lab

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	v1 "github.com/roce-agent/roce-agent/api/v1"
	"github.com/roce-agent/roce-agent/nic/nettest"
)

var labCount atomic.Int32

// testPrefix is a prefix no other test (or test process) uses.
func testPrefix() string {
	return fmt.Sprintf("t%d%c-", os.Getpid()%10000, 'a'+rune(labCount.Add(1)-1)%26)
}

// fastDir is a fresh directory on tmpfs when /dev/shm is one, else under
// t.TempDir: a sysfs tree is some 2,000 files, links and directories, 1 s
// to write on this machine's ext4 disk, 60 ms on tmpfs.
func fastDir(t *testing.T) string {
	t.Helper()
	var st unix.Statfs_t
	if unix.Statfs("/dev/shm", &st) == nil && st.Type == unix.TMPFS_MAGIC {
		d, err := os.MkdirTemp("/dev/shm", "roce-lab-test-")
		if err == nil {
			t.Cleanup(func() { os.RemoveAll(d) })
			return d
		}
	}
	return t.TempDir()
}

// newTestLab brings a lab up for one test and takes it down at the end,
// checking that nothing is left.
func newTestLab(t *testing.T, o Options) *Fabric {
	t.Helper()
	nettest.RequireRoot(t)
	nettest.RequireTools(t, "ip", "ping")
	o.Prefix = testPrefix()
	if o.WorkDir == "" {
		o.WorkDir = filepath.Join(fastDir(t), "work")
	}
	t0 := time.Now()
	f, err := Up(o)
	if err != nil {
		t.Fatalf("Up: %v", err)
	}
	t.Logf("lab %s up in %v: %d namespaces", f.Prefix(), time.Since(t0).Round(time.Millisecond), len(f.Namespaces()))
	t.Cleanup(func() {
		t0 := time.Now()
		if err := f.Down(); err != nil {
			t.Errorf("Down: %v", err)
		}
		t.Logf("lab %s down in %v", f.Prefix(), time.Since(t0).Round(time.Millisecond))
		if left, _ := leftovers(f.Prefix()); len(left) > 0 {
			t.Errorf("namespaces left after Down: %v", left)
		}
		if _, err := os.Stat(f.WorkDir()); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("work dir %s left after Down (err %v)", f.WorkDir(), err)
		}
	})
	return f
}

func configureHosts(t *testing.T, f *Fabric) {
	t.Helper()
	for h := 0; h < f.Hosts(); h++ {
		if err := f.ConfigureHostRails(h); err != nil {
			t.Fatalf("ConfigureHostRails(%d): %v", h, err)
		}
	}
}

// reach checks a ping from rail r of host h to rail r of host dh, IPv4
// and IPv6: it must work when ok, fail otherwise.
func reach(t *testing.T, f *Fabric, h, r, dh int, ok bool) {
	t.Helper()
	d := f.Rail(dh, r)
	for _, dst := range []netip.Addr{d.HostIPv4.Addr(), d.HostIPv6.Addr()} {
		err := f.Ping(h, r, dst)
		switch {
		case ok && err != nil:
			t.Errorf("%s rail %d (%s) -> %s rail %d (%s) %s: %v", f.Node(h), r, f.Rail(h, r).Tenant, d.Node, r, d.Tenant, dst, err)
		case !ok && err == nil:
			t.Errorf("%s rail %d (%s) -> %s rail %d (%s) %s: the ping went through", f.Node(h), r, f.Rail(h, r).Tenant, d.Node, r, d.Tenant, dst)
		}
	}
}

func nsHandle(t *testing.T, name string) *netlink.Handle {
	t.Helper()
	h, err := netns.GetFromName(name)
	if err != nil {
		t.Fatalf("open netns %s: %v", name, err)
	}
	defer h.Close()
	nh, err := netlink.NewHandleAt(h)
	if err != nil {
		t.Fatalf("netlink in %s: %v", name, err)
	}
	t.Cleanup(nh.Close)
	return nh
}

// TestUpDown: the topology has the documented shape; Down leaves no
// namespace and no file.
func TestUpDown(t *testing.T) {
	f := newTestLab(t, Options{})
	p := f.Prefix()
	want := []string{p + "sp", p + "l0", p + "l0p", p + "l1", p + "l1p", p + "h0", p + "h1", p + "h2", p + "h3", p + "mg",
		p + "l0t0", p + "l1t0", p + "l0t1", p + "l1t1", p + "l0t2", p + "l1t2"}
	if got := f.Namespaces(); strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("namespaces %v, want %v", got, want)
	}
	for _, n := range want {
		if _, err := os.Stat(filepath.Join(netnsDir, n)); err != nil {
			t.Errorf("netns %s: %v", n, err)
		}
	}
	// Host rails: fixture names and MACs, MTU 9000, down, no address.
	h1 := nsHandle(t, f.HostNS(1))
	for r, dev := range f.Netdevs(1) {
		link, err := h1.LinkByName(dev)
		if err != nil {
			t.Fatalf("rail %d: %v", r, err)
		}
		a := link.Attrs()
		if a.MTU != 9000 || a.Flags&net.FlagUp != 0 || a.HardwareAddr.String() != railMAC(1, r).String() {
			t.Errorf("%s: mtu %d flags %v mac %s, want 9000, down, %s", dev, a.MTU, a.Flags, a.HardwareAddr, railMAC(1, r))
		}
		addrs, _ := h1.AddrList(link, netlink.FAMILY_V4)
		if len(addrs) != 0 {
			t.Errorf("%s has addresses %v", dev, addrs)
		}
	}
	mg, err := h1.LinkByName(MgmtNetdev)
	if err != nil {
		t.Fatal(err)
	}
	if addrs, _ := h1.AddrList(mg, netlink.FAMILY_V4); len(addrs) != 1 || addrs[0].IP.String() != "192.168.77.11" {
		t.Errorf("mgmt0 of host 1: %v, want 192.168.77.11/24", addrs)
	}
	// Leaf ends: in the tenant's namespace, up, leaf addresses.
	info := f.Rail(1, 5)
	if info.Tenant != "tenant-c" || info.Leaf != 0 || info.LeafNS != f.TenantNS(0, "tenant-c") || info.Netdev != "enp189s0np0" {
		t.Errorf("Rail(1, 5) = %+v", info)
	}
	leaf := nsHandle(t, info.LeafNS)
	port, err := leaf.LinkByName(info.LeafPort)
	if err != nil {
		t.Fatalf("leaf port: %v", err)
	}
	if port.Attrs().MTU != 9000 || port.Attrs().Flags&net.FlagUp == 0 {
		t.Errorf("leaf port %s: mtu %d flags %v", info.LeafPort, port.Attrs().MTU, port.Attrs().Flags)
	}
	addrs, _ := leaf.AddrList(port, netlink.FAMILY_ALL)
	var got []string
	for _, a := range addrs {
		if !a.IP.IsLinkLocalUnicast() {
			got = append(got, a.IPNet.String())
		}
	}
	if strings.Join(got, " ") != "10.105.0.2/31 fd00:105::2/127" {
		t.Errorf("leaf port addresses %v", got)
	}
	for _, n := range []string{f.HostNS(0), f.TenantNS(1, "tenant-a")} {
		if _, err := os.Stat(filepath.Join(netnsDir, n)); err != nil {
			t.Errorf("%s: %v", n, err)
		}
	}
	if f.TenantNS(0, "nobody") != "" {
		t.Error("TenantNS of an unknown tenant is not empty")
	}
	if _, err := os.Stat(filepath.Join(f.SysfsRoot(2), "class/net/enp27s0np0")); err != nil {
		t.Errorf("sysfs tree: %v", err)
	}
	// A second lab with the same prefix is refused, before it makes anything.
	if _, err := Up(Options{Prefix: p, WorkDir: filepath.Join(fastDir(t), "w2")}); err == nil || !strings.Contains(err.Error(), "exists") {
		t.Errorf("second Up with prefix %s: %v", p, err)
	}
}

// TestReachability: a rail reaches the same rail of its tenant's other
// hosts, on its leaf and across leaves, IPv4 and IPv6; nothing of another
// tenant.
func TestReachability(t *testing.T) {
	f := newTestLab(t, Options{})
	configureHosts(t, f)
	// tenant-a: gpu-00 (leaf 0) and gpu-02 (leaf 1), every rail.
	for _, r := range []int{0, 7} {
		reach(t, f, 0, r, 2, true)
		reach(t, f, 2, r, 0, true)
	}
	// tenant-b (GPUs 0-3) and tenant-c (GPUs 4-7) of gpu-01 (leaf 0) and gpu-03 (leaf 1).
	reach(t, f, 1, 2, 3, true)
	reach(t, f, 3, 6, 1, true)
	// Across tenants: same leaf (gpu-00 and gpu-01 on leaf 0) and across leaves.
	reach(t, f, 0, 0, 1, false)
	reach(t, f, 0, 5, 3, false)
	reach(t, f, 1, 4, 2, false)
	reach(t, f, 3, 0, 2, false)
	// A tenant does not reach the underlay.
	if err := f.Ping(0, 0, f.VTEP(1)); err == nil {
		t.Errorf("a rail reaches the underlay's VTEP %s", f.VTEP(1))
	}
}

// TestSameLeafTenant: with one leaf, members of a tenant meet in one
// namespace and no VXLAN route is needed.
func TestSameLeafTenant(t *testing.T) {
	f := newTestLab(t, Options{Hosts: 2, Leaves: 1})
	configureHosts(t, f)
	p := DefaultPlan(2)
	// gpu-00 whole and gpu-01 GPU 1: tenant-a on one leaf.
	p.Tenants[0].Members = append(p.Tenants[0].Members, v1.TenantMember{Node: "gpu-01", GPUs: []int{1}})
	p.Tenants[1].Members[0].GPUs = []int{0, 2, 3}
	if err := f.Sync(p); err != nil {
		t.Fatal(err)
	}
	reach(t, f, 0, 1, 1, true)
	reach(t, f, 0, 0, 1, false)
}

// TestVXLANInTenantNamespace: the VXLAN device lives in the tenant's
// namespace but encapsulates in the leaf's underlay: a cross-leaf ping
// makes the underlay's link to the spine count packets, and the tenant
// namespace has no route to the underlay.
func TestVXLANInTenantNamespace(t *testing.T) {
	f := newTestLab(t, Options{})
	configureHosts(t, f)
	tenantNS := f.TenantNS(0, "tenant-a")
	tn := nsHandle(t, tenantNS)
	under := nsHandle(t, f.LeafNS(0))
	vxName := f.VXLANDevice(10001)
	link, err := tn.LinkByName(vxName)
	if err != nil {
		t.Fatalf("%s in %s: %v", vxName, tenantNS, err)
	}
	vx, ok := link.(*netlink.Vxlan)
	if !ok {
		t.Fatalf("%s is a %s", vxName, link.Type())
	}
	if vx.VxlanId != 10001 || vx.Port != 4789 || vx.Learning || !net.IP(vx.SrcAddr).Equal(f.VTEP(0).AsSlice()) || vx.Attrs().HardwareAddr.String() != routerMAC(0, 10001).String() {
		t.Errorf("vxlan: id %d port %d learning %v local %s mac %s", vx.VxlanId, vx.Port, vx.Learning, vx.SrcAddr, vx.Attrs().HardwareAddr)
	}
	if _, err := under.LinkByName(vxName); err == nil {
		t.Errorf("%s is in the underlay namespace too", vxName)
	}
	// The IPv6 next hop of remote leaves is their device's EUI-64
	// link-local address: check ours is what linkLocal computes.
	ll, _ := tn.AddrList(vx, netlink.FAMILY_V6)
	if len(ll) != 1 || ll[0].IP.String() != linkLocal(routerMAC(0, 10001)).String() {
		t.Errorf("%s link-local addresses %v, want %s", vxName, ll, linkLocal(routerMAC(0, 10001)))
	}
	if r, err := tn.RouteGet(f.VTEP(1).AsSlice()); err == nil {
		t.Errorf("the tenant namespace routes the remote VTEP: %v", r)
	}
	counters := func() (uint64, uint64) {
		l, err := under.LinkByName(f.SpineLink())
		if err != nil {
			t.Fatal(err)
		}
		s := l.Attrs().Statistics
		return s.TxPackets, s.RxPackets
	}
	tx0, rx0 := counters()
	const n = 5
	for i := 0; i < n; i++ {
		if err := f.Ping(0, 0, f.Rail(2, 0).HostIPv4.Addr()); err != nil {
			t.Fatal(err)
		}
	}
	tx1, rx1 := counters()
	if tx1-tx0 < n || rx1-rx0 < n {
		t.Errorf("underlay link to the spine: tx %d -> %d, rx %d -> %d during %d cross-leaf pings", tx0, tx1, rx0, rx1, n)
	}
	t.Logf("underlay %s of %s: tx +%d rx +%d packets for %d pings", f.SpineLink(), f.LeafNS(0), tx1-tx0, rx1-rx0, n)
}

// TestSync: moving a GPU to another tenant moves its leaf port and flips
// reachability; a new tenant gets namespaces, a tenant gone loses them; a
// rail without tenant is parked; Sync is idempotent.
func TestSync(t *testing.T) {
	f := newTestLab(t, Options{})
	configureHosts(t, f)
	reach(t, f, 1, 0, 3, true)  // tenant-b
	reach(t, f, 1, 0, 2, false) // tenant-b -> tenant-a
	p := DefaultPlan(4)
	// GPU 0 of gpu-01: tenant-b -> tenant-a.
	p.Tenants[1].Members[0].GPUs = []int{1, 2, 3}
	p.Tenants[0].Members = append(p.Tenants[0].Members, v1.TenantMember{Node: "gpu-01", GPUs: []int{0}})
	if err := f.Sync(p); err != nil {
		t.Fatal(err)
	}
	if info := f.Rail(1, 0); info.Tenant != "tenant-a" || info.LeafNS != f.TenantNS(0, "tenant-a") {
		t.Errorf("after the move: %+v", info)
	}
	reach(t, f, 1, 0, 2, true)  // now tenant-a, across leaves
	reach(t, f, 1, 0, 0, true)  // tenant-a, same leaf
	reach(t, f, 1, 0, 3, false) // no longer tenant-b
	reach(t, f, 1, 1, 3, true)  // the rest of tenant-b stays
	// Idempotent: nothing moves, no route changes.
	before := tenantState(t, f)
	if err := f.Sync(p); err != nil {
		t.Fatal(err)
	}
	if after := tenantState(t, f); after != before {
		t.Errorf("a second Sync changed the leaves:\nbefore %s\nafter  %s", before, after)
	}
	// A new tenant on rail 7 of gpu-00 and gpu-02; GPUs 4-7 of gpu-03 in no tenant.
	q := clonePlan(p)
	q.Tenants[0].Members[0] = v1.TenantMember{Node: "gpu-00", GPUs: []int{0, 1, 2, 3, 4, 5, 6}}
	q.Tenants[0].Members[1] = v1.TenantMember{Node: "gpu-02", GPUs: []int{0, 1, 2, 3, 4, 5, 6}}
	q.Tenants[2].Members = q.Tenants[2].Members[:1]
	q.Tenants = append(q.Tenants, v1.Tenant{ID: "tenant-d", VRF: "TENANT-D", VNI: 10004, Members: []v1.TenantMember{{Node: "gpu-00", GPUs: []int{7}}, {Node: "gpu-02", GPUs: []int{7}}}})
	if err := f.Sync(q); err != nil {
		t.Fatal(err)
	}
	d0, d1 := f.TenantNS(0, "tenant-d"), f.TenantNS(1, "tenant-d")
	if d0 == "" || d1 == "" {
		t.Fatalf("tenant-d namespaces: %q %q", d0, d1)
	}
	if f.TenantNS(1, "tenant-c") != "" {
		t.Errorf("tenant-c still has a namespace on leaf 1: %s", f.TenantNS(1, "tenant-c"))
	}
	if info := f.Rail(3, 4); info.Tenant != "" || info.LeafNS != f.ParkingNS(1) {
		t.Errorf("parked rail: %+v", info)
	}
	reach(t, f, 0, 7, 2, true)
	reach(t, f, 0, 6, 2, true)
	reach(t, f, 1, 4, 3, false) // gpu-03 rail 4 is parked
	reach(t, f, 3, 4, 1, false)
	// Back to the default plan: tenant-d's namespaces go.
	if err := f.Sync(DefaultPlan(4)); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{d0, d1} {
		if _, err := os.Stat(filepath.Join(netnsDir, n)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s still exists (%v)", n, err)
		}
	}
	reach(t, f, 1, 0, 3, true)
	reach(t, f, 3, 4, 1, true)
	reach(t, f, 0, 7, 2, true)
	// Sync refuses a plan that changes the fabric.
	bad := DefaultPlan(4)
	bad.Nodes[0].Index = 9
	if err := f.Sync(bad); err == nil {
		t.Error("Sync accepted a plan with another node index")
	}
}

// tenantState renders every leaf port's namespace and ifindex and every
// tenant namespace's routes and neighbours.
func tenantState(t *testing.T, f *Fabric) string {
	t.Helper()
	var b strings.Builder
	for h := 0; h < f.Hosts(); h++ {
		for r := 0; r < f.Rails(); r++ {
			info := f.Rail(h, r)
			l, err := nsHandle(t, info.LeafNS).LinkByName(info.LeafPort)
			if err != nil {
				t.Fatal(err)
			}
			fmt.Fprintf(&b, "%s@%s#%d ", info.LeafPort, info.LeafNS, l.Attrs().Index)
		}
	}
	for l := 0; l < f.Leaves(); l++ {
		for _, tn := range []string{"tenant-a", "tenant-b", "tenant-c"} {
			ns := f.TenantNS(l, tn)
			if ns == "" {
				continue
			}
			out, err := exec.Command("ip", "-n", ns, "route", "show", "proto", "static").CombinedOutput()
			if err != nil {
				t.Fatal(err)
			}
			out6, _ := exec.Command("ip", "-n", ns, "-6", "route", "show", "proto", "static").CombinedOutput()
			neigh, _ := exec.Command("ip", "-n", ns, "neigh", "show", "nud", "permanent").CombinedOutput()
			fmt.Fprintf(&b, "\n%s: %s%s%s", ns, out, out6, neigh)
		}
	}
	return b.String()
}

// TestCleanup: after a crash (no Down), Cleanup stops the processes in
// the lab's namespaces and removes the namespaces and the work dir.
func TestCleanup(t *testing.T) {
	nettest.RequireRoot(t)
	nettest.RequireTools(t, "ip", "sleep")
	prefix := testPrefix()
	wd := filepath.Join(fastDir(t), "work")
	f, err := Up(Options{Prefix: prefix, WorkDir: wd, Hosts: 2})
	if err != nil {
		t.Fatal(err)
	}
	// A process left in a host namespace, as an agent of a crashed lab.
	cmd := exec.Command("ip", "netns", "exec", f.HostNS(1), "sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	// Let ip netns exec switch namespaces before Cleanup looks.
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		ids := map[nsID]bool{}
		var st unix.Stat_t
		if unix.Stat(filepath.Join(netnsDir, f.HostNS(1)), &st) == nil {
			ids[nsID{st.Dev, st.Ino}] = true
		}
		// The lab's lldpds are there already: wait for this one.
		if pids, _ := pidsIn(ids); slices.Contains(pids, cmd.Process.Pid) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := Cleanup(prefix); err != nil {
		t.Errorf("Cleanup: %v", err)
	}
	if err := RemoveWorkDir(wd); err != nil {
		t.Errorf("RemoveWorkDir: %v", err)
	}
	select {
	case err := <-exited:
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGTERM {
			t.Errorf("the process in the lab ended with %v, want SIGTERM", err)
		}
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		t.Error("Cleanup left the process in the lab running")
	}
	if left, _ := leftovers(prefix); len(left) > 0 {
		t.Errorf("namespaces left: %v", left)
	}
	if _, err := os.Stat(wd); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("work dir left (%v)", err)
	}
	if _, err := os.Stat(LLDPRunDir(prefix)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("lldpd run dir left (%v)", err)
	}
	// Down after Cleanup: nothing to do, no error (it closes the handles).
	if err := f.Down(); err != nil {
		t.Errorf("Down after Cleanup: %v", err)
	}
	// Nothing left: Cleanup does nothing.
	if err := Cleanup(prefix); err != nil {
		t.Errorf("second Cleanup: %v", err)
	}
}

// TestDownAfterPartialUp: Down removes what a half-built lab made.
func TestDownAfterPartialUp(t *testing.T) {
	nettest.RequireRoot(t)
	prefix := testPrefix()
	wd := filepath.Join(fastDir(t), "work")
	f, err := newFabric(Options{Prefix: prefix, WorkDir: wd, Hosts: 2})
	if err != nil {
		t.Fatal(err)
	}
	if err := f.prepareWorkDir(); err != nil {
		t.Fatal(err)
	}
	if err := f.writeTrees(); err != nil {
		t.Fatal(err)
	}
	if err := f.buildCore(); err != nil {
		t.Fatal(err)
	}
	if left, _ := leftovers(prefix); len(left) == 0 {
		t.Fatal("buildCore made no namespace")
	}
	if err := f.Down(); err != nil {
		t.Fatalf("Down: %v", err)
	}
	if left, _ := leftovers(prefix); len(left) > 0 {
		t.Errorf("namespaces left: %v", left)
	}
	if _, err := os.Stat(wd); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("work dir left (%v)", err)
	}
	// Up refuses bad options before making anything.
	for _, o := range []Options{
		{Prefix: "Bad"},
		{Prefix: prefix, Hosts: 2, Leaves: 3},
		{Prefix: prefix, MgmtSubnet: netip.MustParsePrefix("192.168.77.0/29")},
		{Prefix: prefix, MgmtSubnet: netip.MustParsePrefix("10.100.0.0/24")},
	} {
		if _, err := Up(o); err == nil {
			t.Errorf("Up(%+v) accepted", o)
		}
	}
	if left, _ := leftovers(prefix); len(left) > 0 {
		t.Errorf("namespaces left: %v", left)
	}
}

// TestWorkDirNotOwned: in an existing empty work dir, Down removes only
// what the lab put there.
func TestWorkDirNotOwned(t *testing.T) {
	wd := fastDir(t)
	f := newTestLabIn(t, wd)
	if _, err := os.Stat(filepath.Join(wd, markerFile)); err != nil {
		t.Fatal(err)
	}
	if err := f.Down(); err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(wd)
	if err != nil || len(entries) != 0 {
		t.Errorf("work dir after Down: %v %v", entries, err)
	}
}

func newTestLabIn(t *testing.T, wd string) *Fabric {
	t.Helper()
	nettest.RequireRoot(t)
	f, err := Up(Options{Prefix: testPrefix(), WorkDir: wd, Hosts: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f.Down() })
	return f
}
