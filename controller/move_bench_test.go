package controller

import (
	"encoding/json"
	"os"
	"sync"
	"testing"
	"time"

	v1 "github.com/roce-agent/roce-agent/api/v1"
	"github.com/roce-agent/roce-agent/controller/loadtest"
	"github.com/roce-agent/roce-agent/fabric"
)

// BenchmarkTenantMove: the load test's tenant move (tenant-00's 1,000
// nodes join tenant-01: two PUTs) on a 10,000-node plan, every node
// long-polling; an iteration ends when every woken node has its new
// config as JSON.
func BenchmarkTenantMove(b *testing.B) {
	_, cli := testEtcd(b)
	s := testStore(b, cli, "")
	ctx := testCtx(b)
	p := fabric.Defaults(loadtest.FleetPlan(10000))
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
	p := fabric.Defaults(loadtest.FleetPlan(2000))
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
