package lab

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	v1 "github.com/roce-agent/roce-agent/api/v1"
)

// smallPlan is DefaultPlan(2) cut to rails rails (at most 4): gpu-00
// whole in tenant-a, GPUs 0-(rails-1) of gpu-01 in tenant-b.
func smallPlan(rails int) v1.FabricPlan {
	p := DefaultPlan(2)
	p.Rails = rails
	p.Addressing.IPv4Pools = p.Addressing.IPv4Pools[:rails]
	p.Addressing.IPv6Pools = p.Addressing.IPv6Pools[:rails]
	p.Tenants = p.Tenants[:2]
	p.Tenants[1].Members[0].GPUs = nil
	for g := 0; g < rails; g++ {
		p.Tenants[1].Members[0].GPUs = append(p.Tenants[1].Members[0].GPUs, g)
	}
	return p
}

// requireLLDPD skips a test where lldpd is not installed.
func requireLLDPD(t *testing.T) {
	t.Helper()
	if _, _, err := FindLLDPD(); err != nil {
		t.Skipf("no LLDP test: %v", err)
	}
}

// waitLLDP polls until check says nothing ("") or the timeout passes.
func waitLLDP(t *testing.T, timeout time.Duration, check func() string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		why := check()
		if why == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %s", timeout, why)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// cablingSeen says how the hosts' and leaves' LLDP neighbours differ from
// the lab's cabling (Rail's CabledPort), "" when they do not.
func cablingSeen(f *Fabric) string {
	ctx := context.Background()
	var bad []string
	leafSeen := map[int]map[string]LLDPNeighbor{}
	for l := 0; l < f.Leaves(); l++ {
		m, err := f.LeafLLDPNeighbors(ctx, l)
		if err != nil {
			return err.Error()
		}
		leafSeen[l] = m
	}
	for h := 0; h < f.Hosts(); h++ {
		seen, err := f.HostLLDPNeighbors(ctx, h)
		if err != nil {
			return err.Error()
		}
		for r := 0; r < f.Rails(); r++ {
			info := f.Rail(h, r)
			n, ok := seen[info.Netdev]
			switch {
			case !ok:
				bad = append(bad, fmt.Sprintf("%s %s: no neighbour", info.Node, info.Netdev))
			case n.SysName != info.LeafName || n.PortID != info.CabledPort:
				bad = append(bad, fmt.Sprintf("%s %s: neighbour %s port %s, want %s port %s", info.Node, info.Netdev, n.SysName, n.PortID, info.LeafName, info.CabledPort))
			}
			ln, ok := leafSeen[info.Leaf][info.CabledPort]
			switch {
			case !ok:
				bad = append(bad, fmt.Sprintf("%s %s: no neighbour", info.LeafName, info.CabledPort))
			case ln.SysName != info.Node || ln.PortID != info.Netdev:
				bad = append(bad, fmt.Sprintf("%s %s: neighbour %s port %s, want %s port %s", info.LeafName, info.CabledPort, ln.SysName, ln.PortID, info.Node, info.Netdev))
			}
		}
	}
	return strings.Join(bad, "; ")
}

// TestLLDPNeighbors: the lab's lldpds see each other over every rail (the
// host its leaf and leaf port, the leaf the node and netdev), the plan
// names that cabling, a swapped pair of rails shows as such (and breaks
// the rails' data path) until swapped back, a tenant namespace made by
// Sync gets its lldpd, and Down leaves no lldpd.
func TestLLDPNeighbors(t *testing.T) {
	requireLLDPD(t)
	plan := smallPlan(3)
	f := newTestLab(t, Options{Plan: &plan, LLDP: LLDPOn})
	if !f.LLDP() || f.LLDPNote() != "" {
		t.Fatalf("LLDP %v, note %q", f.LLDP(), f.LLDPNote())
	}
	for h, n := range f.Plan().Nodes {
		want := labCabling(h, f.LeafOf(h), 3)
		if !slices.Equal(n.Cabling, want) {
			t.Errorf("plan cabling of %s: %+v, want %+v", n.Name, n.Cabling, want)
		}
		if s := f.LLDPSocket(h); !strings.HasPrefix(s, f.WorkDir()) && !strings.HasPrefix(s, LLDPRunDir(f.Prefix())) {
			t.Errorf("LLDPSocket(%d) = %q, neither in the work dir nor in %s", h, s, LLDPRunDir(f.Prefix()))
		}
	}
	configureHosts(t, f)
	t0 := time.Now()
	waitLLDP(t, 15*time.Second, func() string { return cablingSeen(f) })
	t.Logf("every rail's LLDP neighbours seen in %v", time.Since(t0).Round(time.Millisecond))

	// Miscable rails 0 and 2 of gpu-01.
	t0 = time.Now()
	if err := f.SwapRails(1, 0, 2); err != nil {
		t.Fatal(err)
	}
	t.Logf("SwapRails took %v", time.Since(t0).Round(time.Millisecond))
	if got := f.Miscabled(1); !slices.Equal(got, []int{0, 2}) {
		t.Errorf("Miscabled(1) = %v, want [0 2]", got)
	}
	r0, r2 := f.Rail(1, 0), f.Rail(1, 2)
	if r0.CabledPort != r2.LeafPort || r2.CabledPort != r0.LeafPort || r0.LeafPort != "h1r0" {
		t.Errorf("after the swap: rail 0 %s -> %s, rail 2 %s -> %s", r0.LeafPort, r0.CabledPort, r2.LeafPort, r2.CabledPort)
	}
	t0 = time.Now()
	waitLLDP(t, 15*time.Second, func() string { return cablingSeen(f) })
	t.Logf("the swap seen in %v", time.Since(t0).Round(time.Millisecond))
	if err := f.Ping(1, 1, f.Rail(1, 1).LeafIPv4.Addr()); err != nil {
		t.Errorf("rail 1 (not swapped): %v", err)
	}

	// Swap back.
	if err := f.SwapRails(1, 2, 0); err != nil {
		t.Fatal(err)
	}
	if got := f.Miscabled(1); len(got) != 0 {
		t.Errorf("Miscabled(1) after swapping back = %v", got)
	}
	waitLLDP(t, 15*time.Second, func() string { return cablingSeen(f) })
	for r := 0; r < 3; r++ {
		if err := f.Ping(1, r, f.Rail(1, r).LeafIPv4.Addr()); err != nil {
			t.Errorf("rail %d after swapping back: %v", r, err)
		}
	}

	// Rail 2 of gpu-01 to a new tenant: leaf 1 makes its namespace, with
	// an lldpd, and the rail's neighbours stay.
	q := f.Plan()
	q.Tenants[1].Members[0].GPUs = []int{0, 1}
	q.Tenants = append(q.Tenants, v1.Tenant{ID: "tenant-d", VRF: "TENANT-D", VNI: 10004, Members: []v1.TenantMember{{Node: "gpu-01", GPUs: []int{2}}}})
	if err := f.Sync(q); err != nil {
		t.Fatal(err)
	}
	dns := f.TenantNS(1, "tenant-d")
	if dns == "" || f.Rail(1, 2).LeafNS != dns {
		t.Fatalf("tenant-d on leaf 1: namespace %q, rail 2 in %q", dns, f.Rail(1, 2).LeafNS)
	}
	f.mu.Lock()
	pr := f.lldp.procs[dns]
	f.mu.Unlock()
	if pr == nil {
		t.Fatalf("no lldpd in %s", dns)
	}
	waitLLDP(t, 15*time.Second, func() string { return cablingSeen(f) })
	// A swap across tenants: the ports change namespaces too.
	if err := f.SwapRails(1, 1, 2); err != nil {
		t.Fatal(err)
	}
	if r1 := f.Rail(1, 1); r1.CabledPort != "h1r2" || r1.LeafNS == dns {
		t.Errorf("rail 1 after the swap: %+v", r1)
	}
	waitLLDP(t, 15*time.Second, func() string { return cablingSeen(f) })
	if n, _ := f.LeafLLDPNeighbors(context.Background(), 1); n["h1r2"].NS != dns || n["h1r2"].PortID != f.Rail(1, 1).Netdev {
		t.Errorf("leaf 1 sees on h1r2 %+v, want %s of gpu-01 in netns %s", n["h1r2"], f.Rail(1, 1).Netdev, dns)
	}
	if err := f.SwapRails(1, 1, 2); err != nil {
		t.Fatal(err)
	}
	waitLLDP(t, 15*time.Second, func() string { return cablingSeen(f) })
	// Back: tenant-d's namespace goes, its lldpd first.
	if err := f.Sync(plan); err != nil {
		t.Fatal(err)
	}
	select {
	case <-pr.done:
	default:
		t.Errorf("the lldpd of %s still runs after its namespace went", dns)
	}

	f.mu.Lock()
	var procs []*lldpProc
	for _, p := range f.lldp.procs {
		procs = append(procs, p)
	}
	f.mu.Unlock()
	if want := 2 + 2 + 2; len(procs) != want { // hosts, parking, tenants
		t.Errorf("%d lldpds, want %d", len(procs), want)
	}
	if err := f.Down(); err != nil {
		t.Fatal(err)
	}
	for _, p := range procs {
		select {
		case <-p.done:
		default:
			t.Errorf("lldpd of %s runs after Down", p.ns)
		}
		if _, err := os.Stat(p.sock); err == nil {
			t.Errorf("socket %s left after Down", p.sock)
		}
	}
}

// TestLLDPOptions: LLDPOff runs none and says so, the plan still names
// the cabling; a mode the lab does not know is refused; where lldpd is
// not installed, LLDPOn fails Up.
func TestLLDPOptions(t *testing.T) {
	plan := smallPlan(1)
	f := newTestLab(t, Options{Plan: &plan, LLDP: LLDPOff})
	if f.LLDP() || f.LLDPNote() == "" || f.LLDPSocket(0) != "" {
		t.Errorf("LLDPOff: LLDP %v, note %q, socket %q", f.LLDP(), f.LLDPNote(), f.LLDPSocket(0))
	}
	if _, err := f.HostLLDPNeighbors(context.Background(), 0); err == nil {
		t.Error("HostLLDPNeighbors without lldpd: no error")
	}
	if len(f.Plan().Nodes[0].Cabling) != 1 {
		t.Errorf("LLDPOff: the plan has no cabling: %+v", f.Plan().Nodes[0])
	}
	if _, err := Up(Options{Prefix: testPrefix(), Plan: &plan, LLDP: "sometimes", WorkDir: filepath.Join(t.TempDir(), "w")}); err == nil || !strings.Contains(err.Error(), "sometimes") {
		t.Errorf("Up with LLDP \"sometimes\": %v", err)
	}
	if _, _, err := FindLLDPD(); err == nil {
		return
	}
	if _, err := Up(Options{Prefix: testPrefix(), Plan: &plan, LLDP: LLDPOn, WorkDir: filepath.Join(t.TempDir(), "w")}); err == nil || !strings.Contains(err.Error(), "lldpd") {
		t.Errorf("Up with LLDPOn and no lldpd: %v", err)
	}
}
