package fabric

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"

	v1 "github.com/roce-agent/roce-agent/api/v1"
)

func loadTestPlan(t testing.TB) v1.FabricPlan {
	t.Helper()
	data, err := os.ReadFile("testdata/plan.yaml")
	if err != nil {
		t.Fatal(err)
	}
	p, err := ParsePlan(data)
	if err != nil {
		t.Fatalf("ParsePlan: %v", err)
	}
	return p
}

func TestDeriveExamplePlan(t *testing.T) {
	p := loadTestPlan(t)
	configs, err := Derive(p)
	if err != nil {
		t.Fatal(err)
	}
	if len(configs) != 4 {
		t.Fatalf("%d configs, want 4", len(configs))
	}
	c := configs["gpu-01"]
	if err := c.Validate(); err != nil {
		t.Fatalf("derived config invalid: %v", err)
	}
	if c.NoDesiredState() != "" {
		t.Fatalf("derived config has no desired state: %s", c.NoDesiredState())
	}
	r5 := c.Rails[5]
	if *r5.Rail != 5 || r5.IPv4 != "10.105.0.3/31" || r5.LeafIPv4 != "10.105.0.2" || r5.IPv6 != "fd00:0:0:105::3/127" || r5.LeafIPv6 != "fd00:0:0:105::2" {
		t.Errorf("rail 5 addresses: %+v", r5)
	}
	if !slices.Equal(r5.Routes, []string{"10.105.0.0/16", "fd00:0:0:105::/64"}) {
		t.Errorf("rail 5 routes %v", r5.Routes)
	}
	if r5.Tenant == nil || r5.Tenant.ID != "tenant-c" || r5.Tenant.VNI != 10003 || r5.Tenant.VRF != "TENANT-C" {
		t.Errorf("rail 5 tenant %+v", r5.Tenant)
	}
	want := []v1.PeerConfig{{Node: "gpu-03", Rail: 5, IPv4: "10.105.0.7", IPv6: "fd00:0:0:105::7"}}
	if !reflect.DeepEqual(r5.Peers, want) {
		t.Errorf("rail 5 peers %+v, want %+v", r5.Peers, want)
	}
	if r := c.Rails[2]; r.Tenant == nil || r.Tenant.ID != "tenant-b" || r.Peers[0].Node != "gpu-03" {
		t.Errorf("rail 2: %+v", r)
	}
	if c.QoS.Trust != "dscp" || c.Link.MTU != 9000 || c.Link.Routing.TableBase != 1000 {
		t.Errorf("node settings: %+v %+v", c.QoS, c.Link)
	}
	for _, r := range configs["gpu-00"].Rails {
		if r.Tenant == nil || r.Tenant.ID != "tenant-a" || len(r.Peers) != 1 || r.Peers[0].Node != "gpu-02" {
			t.Errorf("gpu-00 rail %d: %+v", *r.Rail, r)
		}
	}
}

func TestParsePlanRejects(t *testing.T) {
	base, err := os.ReadFile("testdata/plan.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, from, to, field string
	}{
		{"unknown key", "rails: 8", "rails: 8\nspine: 4", "spine"},
		{"overlapping pools", "10.101.0.0/16, 10.102", "10.100.128.0/17, 10.102", "addressing.ipv4_pools[1]"},
		{"pool count", "10.106.0.0/16, 10.107.0.0/16]", "10.106.0.0/16]", "addressing.ipv4_pools"},
		{"index twice", "{name: gpu-03, index: 3}", "{name: gpu-03, index: 1}", "nodes[3].index"},
		{"name twice", "{name: gpu-03, index: 3}", "{name: gpu-02, index: 3}", "nodes[3].name"},
		{"unknown member", "{node: gpu-02}]", "{node: gpu-09}]", "tenants[0].members[1].node"},
		{"gpu in two tenants", "gpus: [4, 5, 6, 7]}, {node: gpu-03, gpus: [4", "gpus: [3, 5, 6, 7]}, {node: gpu-03, gpus: [4", "tenants[2].members[0]"},
		{"gpu out of range", "gpus: [0, 1, 2, 3]}, {node: gpu-03", "gpus: [0, 1, 2, 8]}, {node: gpu-03", "tenants[1].members[0].gpus[3]"},
		{"vni twice", "vni: 10003", "vni: 10002", "tenants[2].vni"},
		{"vrf twice", "vrf: TENANT-C", "vrf: TENANT-B", "tenants[2].vrf"},
		{"bad mtu", "mtu: 9000", "mtu: 20", "link.mtu"},
		{"wrong type", "rails: 8", "rails: eight", "rails"},
		{"no room", "{name: gpu-03, index: 3}", "{name: gpu-03, index: 40000}", "addressing.ipv4_pools[0]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			doc := strings.Replace(string(base), tc.from, tc.to, 1)
			if doc == string(base) {
				t.Fatalf("test edit %q not applied", tc.from)
			}
			_, err := ParsePlan([]byte(doc))
			if err == nil {
				t.Fatal("accepted")
			}
			if !strings.Contains(err.Error(), tc.field+":") {
				t.Errorf("error does not name %s: %v", tc.field, err)
			}
		})
	}
	if _, err := ParsePlan([]byte("# nothing\n")); err == nil {
		t.Error("empty plan accepted")
	}
}

func TestApplyMoveKeepsAddresses(t *testing.T) {
	p := loadTestPlan(t)
	before, _ := Derive(p)
	moved, err := ApplyMove(p, v1.Move{Node: "gpu-01", GPUs: []int{5}, Tenant: "tenant-a"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ApplyMove(p, v1.Move{Node: "gpu-01", Tenant: "nope"}); !errors.As(err, new(*NotFoundError)) {
		t.Errorf("unknown tenant: %v", err)
	}
	if _, err := ApplyMove(p, v1.Move{Node: "gpu-01", GPUs: []int{9}, Tenant: "tenant-a"}); err == nil || !strings.Contains(err.Error(), "gpus[0]") {
		t.Errorf("bad gpu: %v", err)
	}
	after, _ := Derive(moved)
	r := after["gpu-01"].Rails[5]
	if r.Tenant.ID != "tenant-a" || r.IPv4 != before["gpu-01"].Rails[5].IPv4 || r.IPv6 != before["gpu-01"].Rails[5].IPv6 {
		t.Errorf("moved rail: %+v", r)
	}
	if got := Changed(before, after); !slices.Equal(got, []string{"gpu-00", "gpu-01", "gpu-02", "gpu-03"}) {
		t.Errorf("changed %v", got)
	}
	if !reflect.DeepEqual(p, loadTestPlan(t)) {
		t.Error("ApplyMove modified its input")
	}
	// Whole node back and forth.
	m2, err := ApplyMove(moved, v1.Move{Node: "gpu-01", Tenant: "tenant-b"})
	if err != nil {
		t.Fatal(err)
	}
	f, _ := NewFabric(m2)
	for r := 0; r < 8; r++ {
		if got := f.RailTenant("gpu-01", r); got != "tenant-b" {
			t.Errorf("rail %d in %q after whole-node move", r, got)
		}
	}
	tb, _ := f.Tenant("tenant-b")
	for _, m := range tb.Members {
		if m.Node == "gpu-01" && m.GPUs != nil {
			t.Errorf("whole node member has gpus %v", m.GPUs)
		}
	}
}

func TestPutTenant(t *testing.T) {
	p := loadTestPlan(t)
	_, err := PutTenant(p, v1.Tenant{ID: "tenant-d", VRF: "TENANT-D", VNI: 10004, Members: []v1.TenantMember{{Node: "gpu-00", GPUs: []int{1}}}})
	var ce *ConflictError
	if !errors.As(err, &ce) || !strings.Contains(err.Error(), "tenant-a") {
		t.Errorf("GPU of another tenant: %v", err)
	}
	_, err = PutTenant(p, v1.Tenant{ID: "tenant-d", VRF: "TENANT-D", VNI: 10004, Members: []v1.TenantMember{{Node: "gpu-99"}}})
	var fe *FieldError
	if !errors.As(err, &fe) || fe.Field != "members[0].node" {
		t.Errorf("unknown member: %v", err)
	}
	out, err := PutTenant(p, v1.Tenant{ID: "tenant-b", VRF: "TENANT-B", VNI: 10002, Members: []v1.TenantMember{{Node: "gpu-01", GPUs: []int{0}}}})
	if err != nil {
		t.Fatal(err)
	}
	f, _ := NewFabric(out)
	if f.RailTenant("gpu-01", 1) != "" || f.RailTenant("gpu-01", 0) != "tenant-b" || f.RailTenant("gpu-03", 0) != "" {
		t.Error("replace did not take")
	}
}

// bigPlan is a fabric of n nodes in a few tenants.
func bigPlan(n, tenants int) v1.FabricPlan {
	p := v1.FabricPlan{Rails: 8}
	for r := 0; r < 8; r++ {
		p.Addressing.IPv4Pools = append(p.Addressing.IPv4Pools, fmt.Sprintf("10.%d.0.0/16", 100+r))
		p.Addressing.IPv6Pools = append(p.Addressing.IPv6Pools, fmt.Sprintf("fd00:0:0:%x::/64", 0x100+r))
	}
	for i := 0; i < n; i++ {
		p.Nodes = append(p.Nodes, v1.PlanNode{Name: fmt.Sprintf("gpu-%05d", i), Index: i})
	}
	for k := 0; k < tenants; k++ {
		t := v1.Tenant{ID: fmt.Sprintf("t%d", k), VRF: fmt.Sprintf("T%d", k), VNI: 10000 + k}
		for i := k; i < n; i += tenants {
			t.Members = append(t.Members, v1.TenantMember{Node: p.Nodes[i].Name})
		}
		p.Tenants = append(p.Tenants, t)
	}
	return Defaults(p)
}

func TestPeersBoundedAndSymmetric(t *testing.T) {
	p := bigPlan(200, 2) // 100 nodes per tenant, max 16 peers
	f, err := NewFabric(p)
	if err != nil {
		t.Fatal(err)
	}
	lists := map[string]map[string]bool{}
	for _, n := range f.Nodes() {
		c, _ := f.Config(n)
		r := c.Rails[3]
		if len(r.Peers) != 16 {
			t.Fatalf("%s: %d peers, want 16", n, len(r.Peers))
		}
		lists[n] = map[string]bool{}
		for _, peer := range r.Peers {
			if f.RailTenant(peer.Node, 3) != r.Tenant.ID || peer.Node == n {
				t.Fatalf("%s: peer %s not in its tenant", n, peer.Node)
			}
			lists[n][peer.Node] = true
		}
	}
	for a, peers := range lists {
		for b := range peers {
			if !lists[b][a] {
				t.Errorf("%s lists %s but not the reverse", a, b)
			}
		}
	}
}

// TestChangedNodesMatchesFullDiff: the candidate shortcut finds exactly
// what a full re-derivation finds, over random moves, in rings smaller
// and larger than max_peers+1 (where only the neighbourhood of a change
// is derived).
func TestChangedNodesMatchesFullDiff(t *testing.T) {
	for _, c := range []struct{ nodes, tenants, maxPeers, moves int }{
		{60, 3, 0, 40},   // rings of 20: near max_peers+1, crossing it
		{300, 3, 0, 80},  // rings of 100, max_peers 16
		{120, 2, 4, 80},  // rings of 60, max_peers 4
		{90, 3, 1, 60},   // max_peers 1: one peer each side
		{200, 2, 15, 60}, // odd max_peers
	} {
		t.Run(fmt.Sprintf("%dnodes-%dtenants-maxpeers%d", c.nodes, c.tenants, c.maxPeers), func(t *testing.T) {
			p := bigPlan(c.nodes, c.tenants)
			if c.maxPeers > 0 {
				p.Probes.MaxPeers = c.maxPeers
			}
			checkChangedNodes(t, p, c.tenants, c.moves)
		})
	}
}

// TestChangedNodesTenantSwap: a whole tenant's nodes join another (the
// load test's move), and back, in large rings.
func TestChangedNodesTenantSwap(t *testing.T) {
	p := bigPlan(400, 4)
	t0, t1 := p.Tenants[0], p.Tenants[1]
	grown := t1
	grown.Members = append(slices.Clone(t1.Members), t0.Members...)
	emptied := t0
	emptied.Members = nil
	steps := []v1.Tenant{emptied, grown, t1, t0}
	for _, tn := range steps {
		q, err := PutTenant(p, tn)
		if err != nil {
			t.Fatal(err)
		}
		fa, _ := NewFabric(p)
		fb, _ := NewFabricFrom(q, fa)
		da, _ := Derive(p)
		db, _ := Derive(q)
		got, configs := ChangedConfigs(fa, fb)
		if want := Changed(da, db); !slices.Equal(got, want) {
			t.Fatalf("put %s: ChangedNodes %v, full diff %v", tn.ID, got, want)
		}
		for _, n := range got {
			if !reflect.DeepEqual(configs[n], db[n]) {
				t.Fatalf("put %s: config of %s differs from the full derivation", tn.ID, n)
			}
		}
		p = q
	}
}

func checkChangedNodes(t *testing.T, p v1.FabricPlan, tenants, moves int) {
	t.Helper()
	rng := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < moves; i++ {
		m := v1.Move{Node: p.Nodes[rng.IntN(len(p.Nodes))].Name, Tenant: fmt.Sprintf("t%d", rng.IntN(tenants))}
		if rng.IntN(2) == 0 {
			m.GPUs = []int{rng.IntN(8), 8 + rng.IntN(0+1) - 1}
			m.GPUs = slices.Compact(m.GPUs)
		}
		if rng.IntN(5) == 0 {
			m.Tenant = ""
		}
		q, err := ApplyMove(p, m)
		if err != nil {
			t.Fatalf("move %+v: %v", m, err)
		}
		fa, _ := NewFabric(p)
		fb, _ := NewFabricFrom(q, fa)
		da, _ := Derive(p)
		db, _ := Derive(q)
		if got, want := ChangedNodes(fa, fb), Changed(da, db); !slices.Equal(got, want) {
			t.Fatalf("move %+v: ChangedNodes %v, full diff %v", m, got, want)
		}
		p = q
	}
}

func BenchmarkDeriveNode(b *testing.B) {
	f, err := NewFabric(bigPlan(10000, 4))
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		f.Config(fmt.Sprintf("gpu-%05d", i%10000))
	}
}

// Several nodes move in one change: the same as moving them one by one,
// and the request is checked field by field.
func TestApplyMoveNodes(t *testing.T) {
	p := bigPlan(40, 2)
	var names []string
	for _, m := range p.Tenants[0].Members[:10] {
		names = append(names, m.Node)
	}
	batch, err := ApplyMove(p, v1.Move{Nodes: names, Tenant: "t1"})
	if err != nil {
		t.Fatal(err)
	}
	one := p
	for _, n := range names {
		if one, err = ApplyMove(one, v1.Move{Node: n, Tenant: "t1"}); err != nil {
			t.Fatal(err)
		}
	}
	db, _ := Derive(batch)
	do, _ := Derive(one)
	if got := Changed(do, db); len(got) != 0 {
		t.Errorf("batch and one-by-one differ for %v", got)
	}
	fb, _ := NewFabric(batch)
	for _, n := range names {
		if fb.RailTenant(n, 3) != "t1" {
			t.Errorf("%s rail 3 in %q", n, fb.RailTenant(n, 3))
		}
	}
	// GPUs of several nodes.
	g, err := ApplyMove(p, v1.Move{Nodes: names[:2], GPUs: []int{1, 2}, Tenant: ""})
	if err != nil {
		t.Fatal(err)
	}
	fg, _ := NewFabric(g)
	if fg.RailTenant(names[0], 1) != "" || fg.RailTenant(names[1], 2) != "" || fg.RailTenant(names[1], 3) != "t0" {
		t.Error("GPU move of several nodes did not take")
	}
	for _, tc := range []struct {
		m     v1.Move
		field string
	}{
		{v1.Move{Tenant: "t1"}, "node"},
		{v1.Move{Node: names[0], Nodes: names[1:2], Tenant: "t1"}, "nodes"},
		{v1.Move{Nodes: []string{names[0], names[0]}, Tenant: "t1"}, "nodes[1]"},
		{v1.Move{Nodes: []string{names[0], "bad name"}, Tenant: "t1"}, "nodes[1]"},
	} {
		_, err := ApplyMove(p, tc.m)
		var fe *FieldError
		if !errors.As(err, &fe) || fe.Field != tc.field {
			t.Errorf("%+v: %v, want a field error on %s", tc.m, err, tc.field)
		}
	}
	if _, err := ApplyMove(p, v1.Move{Nodes: []string{names[0], "gpu-99999"}, Tenant: "t1"}); !errors.As(err, new(*NotFoundError)) {
		t.Errorf("unknown node in nodes: %v", err)
	}
}
