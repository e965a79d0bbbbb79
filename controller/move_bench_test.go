package controller

import (
	"encoding/json"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	v1 "github.com/roce-agent/roce-agent/api/v1"
	"github.com/roce-agent/roce-agent/fabric"
)

// movePlan is n nodes in tenants of 1,000 whole nodes, as the load test
// has them.
func movePlan(n int) v1.FabricPlan {
	p := v1.FabricPlan{Rails: 8}
	for r := 0; r < 8; r++ {
		p.Addressing.IPv4Pools = append(p.Addressing.IPv4Pools, fmt.Sprintf("10.%d.0.0/16", 100+r))
		p.Addressing.IPv6Pools = append(p.Addressing.IPv6Pools, fmt.Sprintf("fd00:0:0:%x::/64", 0x100+r))
	}
	for i := 0; i < n; i++ {
		p.Nodes = append(p.Nodes, v1.PlanNode{Name: fmt.Sprintf("gpu-%05d", i), Index: i})
	}
	for k := 0; k*1000 < n; k++ {
		t := v1.Tenant{ID: fmt.Sprintf("tenant-%02d", k), VRF: fmt.Sprintf("T%02d", k), VNI: 10000 + k}
		for i := k * 1000; i < min(n, (k+1)*1000); i++ {
			t.Members = append(t.Members, v1.TenantMember{Node: p.Nodes[i].Name})
		}
		p.Tenants = append(p.Tenants, t)
	}
	return fabric.Defaults(p)
}

// BenchmarkTenantMove: the load test's tenant move (tenant-00's 1,000
// nodes join tenant-01: two PUTs) on a 10,000-node plan, every node
// long-polling; an iteration ends when every woken node has its new
// config as JSON.
func BenchmarkTenantMove(b *testing.B) {
	_, cli := testEtcd(b)
	s := testStore(b, cli, "")
	ctx := testCtx(b)
	p := movePlan(10000)
	if _, err := s.LoadPlan(ctx, p); err != nil {
		b.Fatal(err)
	}
	if err := s.WaitReady(ctx); err != nil {
		b.Fatal(err)
	}
	nodes := make([]string, len(p.Nodes))
	for i, n := range p.Nodes {
		nodes[i] = n.Name
		if _, err := s.Config(n.Name); err != nil {
			b.Fatal(err)
		}
	}
	t0, t1 := p.Tenants[0], p.Tenants[1]
	grown := t1
	grown.Members = append(append([]v1.TenantMember(nil), t1.Members...), t0.Members...)
	emptied := t0
	emptied.Members = nil
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		steps := [][2]v1.Tenant{{emptied, grown}, {t1, t0}}[i%2]
		b.StopTimer()
		var wg sync.WaitGroup
		var mu sync.Mutex
		var last time.Time
		b.StartTimer()
		start := time.Now()
		for _, n := range nodes {
			ch := s.subscribe(n)
			wg.Go(func() {
				select {
				case <-ch:
					st, err := s.node(n)
					if err == nil {
						_, _ = st.served[n].json()
					}
					mu.Lock()
					if now := time.Now(); now.After(last) {
						last = now
					}
					mu.Unlock()
				case <-time.After(2 * time.Second):
				}
			})
		}
		for _, t := range steps {
			if _, err := s.PutTenant(ctx, t); err != nil {
				b.Fatal(err)
			}
		}
		puts := time.Since(start)
		wg.Wait()
		b.ReportMetric(float64(puts.Microseconds())/1000, "ms-puts")
		b.ReportMetric(float64(last.Sub(start).Microseconds())/1000, "ms-last-config")
	}
}

// BenchmarkStatusBurst: 1,000 nodes put their status at once (what a move
// of 1,000 nodes makes them do).
func BenchmarkStatusBurst(b *testing.B) {
	_, cli := testEtcd(b)
	s := testStore(b, cli, "")
	ctx := testCtx(b)
	p := movePlan(2000)
	if _, err := s.LoadPlan(ctx, p); err != nil {
		b.Fatal(err)
	}
	if err := s.WaitReady(ctx); err != nil {
		b.Fatal(err)
	}
	inv := testInventory(b)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		var wg sync.WaitGroup
		for _, n := range p.Nodes[:1000] {
			wg.Go(func() {
				st := v1.NodeStatus{Node: n.Name, Version: "bench", AppliedGeneration: int64(i), Inventory: inv, LastReconcile: time.Now()}
				if err := s.PutStatus(ctx, st); err != nil {
					b.Error(err)
				}
			})
		}
		wg.Wait()
	}
}

func testInventory(b *testing.B) *v1.Inventory {
	data, err := os.ReadFile("../testdata/golden/inventory/dgx-h100-nvml.json")
	if err != nil {
		b.Fatal(err)
	}
	var inv v1.Inventory
	if err := json.Unmarshal(data, &inv); err != nil {
		b.Fatal(err)
	}
	return &inv
}
