package controller

import (
	"context"
	"fmt"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	v1 "github.com/roce-agent/roce-agent/api/v1"
	"github.com/roce-agent/roce-agent/fabric"
)

// testLeaseTTL is short, so that the expiry test is quick.
const testLeaseTTL = 2 * time.Second

// fabricPlan is testdata/fabric.yaml.
func fabricPlan(t testing.TB) v1.FabricPlan {
	t.Helper()
	data, err := os.ReadFile("testdata/fabric.yaml")
	if err != nil {
		t.Fatal(err)
	}
	p, err := fabric.ParsePlan(data)
	if err != nil {
		t.Fatalf("testdata/fabric.yaml: %v", err)
	}
	return p
}

func moveTo(node, tenant string, gpus ...int) v1.Move {
	return v1.Move{Node: node, Tenant: tenant, GPUs: gpus}
}

// testStore is a store with a quick readiness check and a short lease
// TTL; it stops when the test ends.
func testStore(t testing.TB, cli *clientv3.Client, prefix string) *Store {
	t.Helper()
	s, err := NewStore(StoreConfig{Client: cli, Prefix: prefix, LeaseTTL: testLeaseTTL, CheckInterval: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func generations(t testing.TB, s *Store) map[string]int64 {
	t.Helper()
	out := map[string]int64{}
	for _, n := range []string{"gpu-00", "gpu-01", "gpu-02", "gpu-03", "gpu-04"} {
		c, err := s.Config(n)
		if err != nil {
			t.Fatal(err)
		}
		out[n] = c.Generation
	}
	return out
}

func TestStoreGenerations(t *testing.T) {
	_, cli := testEtcd(t)
	s := testStore(t, cli, "")
	ctx := testCtx(t)
	if err := s.Ready(); err == nil {
		t.Fatal("ready without a plan")
	}
	changed, err := s.LoadPlan(ctx, fabricPlan(t))
	if err != nil {
		t.Fatal(err)
	}
	if len(changed) != 5 || s.Epoch() != 1 {
		t.Fatalf("first load: changed %v epoch %d", changed, s.Epoch())
	}
	if err := s.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	// The same plan again writes nothing.
	if changed, err := s.LoadPlan(ctx, fabricPlan(t)); err != nil || len(changed) != 0 || s.Epoch() != 1 || s.Changes() != 1 {
		t.Fatalf("same plan: %v %v epoch %d changes %d", changed, err, s.Epoch(), s.Changes())
	}
	changed, err = s.Move(ctx, moveTo("gpu-01", "tenant-a"))
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"gpu-00", "gpu-01", "gpu-02", "gpu-03"}; !slices.Equal(changed, want) {
		t.Fatalf("move changed %v, want %v", changed, want)
	}
	// The change is served on this replica when Move returns.
	if got, want := generations(t, s), map[string]int64{"gpu-00": 2, "gpu-01": 2, "gpu-02": 2, "gpu-03": 2, "gpu-04": 1}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("generations %v, want %v", got, want)
	}
	c, _ := s.Config("gpu-01")
	if c.Rails[1].Tenant == nil || c.Rails[1].Tenant.ID != "tenant-a" || len(c.Rails[1].Peers) != 2 {
		t.Errorf("gpu-01 rail 1 after the move: %+v", c.Rails[1])
	}
	// A moved GPU back and forth ends with new generations, never old ones.
	if _, err := s.Move(ctx, moveTo("gpu-01", "tenant-b", 0)); err != nil {
		t.Fatal(err)
	}
	if g := generations(t, s); g["gpu-01"] != 3 || g["gpu-04"] != 1 {
		t.Errorf("generations %v", g)
	}
	if _, err := s.Move(ctx, moveTo("gpu-09", "tenant-a")); err == nil {
		t.Error("move of an unknown node: no error")
	}
	if _, err := s.Tenant("tenant-z"); err == nil {
		t.Error("unknown tenant: no error")
	}

	// A second store on another prefix sees nothing of this one.
	other := testStore(t, cli, "/other/")
	time.Sleep(300 * time.Millisecond)
	if err := other.Ready(); err == nil {
		t.Error("a store on another prefix is ready without a plan")
	}
}

// Two replicas changing the plan at once: every change lands (the
// ModRevision guard makes the loser retry) and both end on one epoch.
func TestStoreConcurrentChanges(t *testing.T) {
	_, cli := testEtcd(t)
	a, b := testStore(t, cli, ""), testStore(t, cli, "")
	ctx := testCtx(t)
	if _, err := a.LoadPlan(ctx, fabricPlan(t)); err != nil {
		t.Fatal(err)
	}
	// Each changes what no other touches, so each writes in any order.
	moves := []v1.Move{moveTo("gpu-04", "tenant-a"), moveTo("gpu-01", "", 0), moveTo("gpu-03", "", 1), moveTo("gpu-00", "tenant-c"), moveTo("gpu-02", ""), moveTo("gpu-01", "tenant-b", 1)}
	var wg sync.WaitGroup
	errs := make([]error, len(moves))
	for i, m := range moves {
		s := a
		if i%2 == 1 {
			s = b
		}
		wg.Go(func() { _, errs[i] = s.Move(ctx, m) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("move %d: %v", i, err)
		}
	}
	want := int64(1 + len(moves))
	deadline := time.Now().Add(5 * time.Second)
	for a.Epoch() != want || b.Epoch() != want {
		if time.Now().After(deadline) {
			t.Fatalf("epochs %d and %d, want %d", a.Epoch(), b.Epoch(), want)
		}
		time.Sleep(10 * time.Millisecond)
	}
	ta, _ := a.Tenant("tenant-c")
	tb, _ := b.Tenant("tenant-c")
	if fmt.Sprint(ta) != fmt.Sprint(tb) || len(ta.Members) != 1 || ta.Members[0].Node != "gpu-00" {
		t.Errorf("replicas differ or lost a move: %+v vs %+v", ta, tb)
	}
	t.Logf("conflicts retried: %d", a.Conflicts()+b.Conflicts())
}

// A 50,000-node plan record fits etcd's default request limit.
func TestPlanRecordSize(t *testing.T) {
	t.Parallel()
	const n = 50000
	p := v1.FabricPlan{Rails: 8}
	for r := range 8 {
		p.Addressing.IPv4Pools = append(p.Addressing.IPv4Pools, fmt.Sprintf("10.%d.0.0/15", 2*r))
		p.Addressing.IPv6Pools = append(p.Addressing.IPv6Pools, fmt.Sprintf("fd00:0:0:%x::/64", 0x100+r))
	}
	rec := planRecord{Epoch: 1234, Generations: map[string]int64{}}
	for i := range n {
		name := fmt.Sprintf("gpu-%05d", i)
		p.Nodes = append(p.Nodes, v1.PlanNode{Name: name, Index: i})
		rec.Generations[name] = int64(1000 + i%200)
	}
	for k := range n / 100 {
		tn := v1.Tenant{ID: fmt.Sprintf("tenant-%03d", k), VRF: fmt.Sprintf("T%03d", k), VNI: 10000 + k}
		for i := range 100 {
			m := v1.TenantMember{Node: p.Nodes[k*100+i].Name}
			if i%3 == 0 {
				m.GPUs = []int{0, 1, 2, 3}
			}
			tn.Members = append(tn.Members, m)
		}
		p.Tenants = append(p.Tenants, tn)
	}
	rec.Plan = fabric.Defaults(p)
	data, err := encodeRecord(rec)
	if err != nil {
		t.Fatal(err)
	}
	if len(data) > 1<<20 {
		t.Errorf("50,000 nodes: %d bytes compressed, want under 1 MiB", len(data))
	}
	back, err := decodeRecord(data)
	if err != nil || len(back.Plan.Nodes) != n || back.Generations["gpu-04999"] != rec.Generations["gpu-04999"] {
		t.Fatalf("round trip: %v", err)
	}
	_, cli := testEtcd(t)
	if _, err := cli.Put(testCtx(t), DefaultPrefix+"/plan", string(data)); err != nil {
		t.Fatalf("etcd refuses the record: %v", err)
	}
	t.Logf("50,000 nodes, 500 tenants: %d bytes", len(data))
}

// A liveness key on no lease (written by hand) is replaced by a leased
// one at the next heartbeat.
func TestHeartbeatReplacesUnleasedKey(t *testing.T) {
	_, cli := testEtcd(t)
	s := testStore(t, cli, "")
	ctx := testCtx(t)
	if _, err := s.LoadPlan(ctx, fabricPlan(t)); err != nil {
		t.Fatal(err)
	}
	if err := s.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Put(ctx, s.aliveKey("gpu-01"), "garbage"); err != nil {
		t.Fatal(err)
	}
	if err := s.Heartbeat(ctx, "gpu-01", v1.Heartbeat{AppliedGeneration: 1}); err != nil {
		t.Fatal(err)
	}
	resp, err := cli.Get(ctx, s.aliveKey("gpu-01"))
	if err != nil || len(resp.Kvs) != 1 || resp.Kvs[0].Lease == 0 {
		t.Fatalf("liveness key: %v %v", resp, err)
	}
	if err := s.Heartbeat(ctx, "gpu-09", v1.Heartbeat{}); err == nil {
		t.Error("heartbeat of an unknown node: no error")
	}
}

// probePairs without etcd: a reachable false without an error is not OK,
// of two results of a tool and family at one time the later listed wins,
// and a prober whose status is missing adds nothing.
func TestProbePairs(t *testing.T) {
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	no := false
	member := func(node string, rail int) bool { return (node == "a" || node == "b") && rail == 0 }
	statuses := map[string]v1.NodeStatus{
		"a": {Node: "a", Probes: []v1.ProbeResult{
			{Rail: 0, PeerNode: "b", PeerRail: 0, Tool: v1.ProbeToolReachability, Time: at, Reachable: &no},
			{Rail: 0, PeerNode: "b", PeerRail: 0, Tool: v1.ProbeToolLatency, Time: at, Error: "first"},
			{Rail: 0, PeerNode: "b", PeerRail: 0, Tool: v1.ProbeToolLatency, Time: at, Error: "second"},
			{Rail: 1, PeerNode: "b", PeerRail: 1, Tool: v1.ProbeToolLatency, Time: at},
		}},
	}
	got := probePairs([]string{"b", "a", "c"}, statuses, member)
	if len(got) != 1 || got[0].Node != "a" || got[0].PeerNode != "b" || got[0].OK || len(got[0].Results) != 2 ||
		got[0].Results[0].Tool != v1.ProbeToolLatency || got[0].Results[0].Error != "second" || got[0].Results[1].Tool != v1.ProbeToolReachability {
		t.Errorf("pairs %+v", got)
	}
	if got := probePairs(nil, nil, member); got == nil || len(got) != 0 {
		t.Errorf("no statuses: %#v", got)
	}
}
