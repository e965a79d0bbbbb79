package lab

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"

	v1 "github.com/roce-agent/roce-agent/api/v1"
	"github.com/roce-agent/roce-agent/fabric"
	"github.com/roce-agent/roce-agent/nic/sysfstest"
)

// MaxRails is the most rails a lab host has: its sysfs tree is a DGX H100
// layout (sysfstest.DGX), one compute NIC per GPU tray slot.
const MaxRails = sysfstest.DGXRails

// DefaultPlan is the lab's fabric plan for hosts nodes (gpu-00, gpu-01,
// ..., index = position) of 8 rails: rail n takes the IPv4 pool
// 10.<100+n>.0.0/16 and the IPv6 pool fd00:<100+n>::/64, MTU 9000, rail
// tables and rule priorities from 1000, no QoS section (the lab has no
// RDMA NIC and no DCB). Tenants cover both isolation modes:
//
//   - tenant-a (VRF TENANT-A, VNI 10001): the even nodes, whole (server
//     isolation);
//   - tenant-b (VNI 10002): GPUs 0-3 of the odd nodes (GPU isolation);
//   - tenant-c (VNI 10003): GPUs 4-7 of the odd nodes.
//
// With 4 hosts on 2 leaves (hosts 0-1 on leaf 0, 2-3 on leaf 1) every
// tenant crosses the leaves. A tenant without members is left out.
func DefaultPlan(hosts int) v1.FabricPlan {
	const rails = 8
	p := v1.FabricPlan{
		Rails: rails,
		Link: v1.LinkConfig{
			MTU:     9000,
			Routing: v1.RoutingConfig{TableBase: 1000, RulePriorityBase: 1000},
		},
	}
	for n := 0; n < rails; n++ {
		p.Addressing.IPv4Pools = append(p.Addressing.IPv4Pools, fmt.Sprintf("10.%d.0.0/16", 100+n))
		p.Addressing.IPv6Pools = append(p.Addressing.IPv6Pools, fmt.Sprintf("fd00:%d::/64", 100+n))
	}
	a := v1.Tenant{ID: "tenant-a", VRF: "TENANT-A", VNI: 10001}
	b := v1.Tenant{ID: "tenant-b", VRF: "TENANT-B", VNI: 10002}
	c := v1.Tenant{ID: "tenant-c", VRF: "TENANT-C", VNI: 10003}
	for i := 0; i < hosts; i++ {
		name := fmt.Sprintf("gpu-%02d", i)
		p.Nodes = append(p.Nodes, v1.PlanNode{Name: name, Index: i})
		if i%2 == 0 {
			a.Members = append(a.Members, v1.TenantMember{Node: name})
			continue
		}
		b.Members = append(b.Members, v1.TenantMember{Node: name, GPUs: []int{0, 1, 2, 3}})
		c.Members = append(c.Members, v1.TenantMember{Node: name, GPUs: []int{4, 5, 6, 7}})
	}
	for _, t := range []v1.Tenant{a, b, c} {
		if len(t.Members) > 0 {
			p.Tenants = append(p.Tenants, t)
		}
	}
	return fabric.Defaults(p)
}

// ReadPlan reads a fabric plan file, YAML or JSON (the same keys as the
// controller's plan), refusing unknown keys.
func ReadPlan(file string) (v1.FabricPlan, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return v1.FabricPlan{}, fmt.Errorf("read plan: %w", err)
	}
	p, err := ParsePlan(data)
	if err != nil {
		return v1.FabricPlan{}, fmt.Errorf("plan %s: %w", file, err)
	}
	return p, nil
}

// ParsePlan decodes a fabric plan, YAML or JSON, as the controller does
// (fabric.ParsePlan: unknown keys refused, defaults filled, every conflict
// named); ReadPlan then checks what the lab can build.
func ParsePlan(data []byte) (v1.FabricPlan, error) {
	return fabric.ParsePlan(data)
}

// railAddrs are the four addresses of a rail: the host's and the leaf's,
// IPv4 /31 and IPv6 /127.
type railAddrs struct {
	hostV4, hostV6, leafV4, leafV6 netip.Prefix
}

// planAddrs derives rail n of node index i from the pools: leaf = pool +
// 2*i, host = pool + 2*i + 1.
func planAddrs(p v1.FabricPlan, index, rail int) (railAddrs, error) {
	v4 := v1.ParsePools(p.Addressing.IPv4Pools, false)
	v6 := v1.ParsePools(p.Addressing.IPv6Pools, true)
	if rail >= len(v4) || !v4[rail].IsValid() {
		return railAddrs{}, fmt.Errorf("rail %d has no valid ipv4 pool", rail)
	}
	if rail >= len(v6) || !v6[rail].IsValid() {
		return railAddrs{}, fmt.Errorf("rail %d has no valid ipv6 pool", rail)
	}
	var r railAddrs
	var err error
	if r.leafV4, r.hostV4, err = pair(v4[rail], index, 31); err != nil {
		return railAddrs{}, err
	}
	if r.leafV6, r.hostV6, err = pair(v6[rail], index, 127); err != nil {
		return railAddrs{}, err
	}
	return r, nil
}

// pair is the point-to-point pair of index in pool (fabric.PairAddrs),
// with prefix length bits.
func pair(pool netip.Prefix, index, bits int) (leaf, host netip.Prefix, err error) {
	l, h, err := fabric.PairAddrs(pool, index)
	if err != nil {
		return leaf, host, err
	}
	return netip.PrefixFrom(l, bits), netip.PrefixFrom(h, bits), nil
}

// checkPlan reports what the lab cannot build from a plan, every problem
// at once: 1-MaxRails rails, an IPv4 and an IPv6 pool per rail, nodes with
// distinct names and indexes that fit the pools, tenants with distinct
// IDs and VNIs (1-16777215) whose members are nodes and GPUs of the plan,
// no GPU in two tenants.
func checkPlan(p v1.FabricPlan) error {
	var errs []error
	fail := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if p.Rails < 1 || p.Rails > MaxRails {
		fail("rails: %d, the lab builds 1-%d", p.Rails, MaxRails)
	}
	if len(p.Nodes) == 0 {
		fail("nodes: none")
	}
	names := map[string]bool{}
	indexes := map[int]bool{}
	for i, n := range p.Nodes {
		switch {
		case n.Name == "" || len(n.Name) > 63 || strings.ContainsAny(n.Name, " /\t\n"):
			fail("nodes[%d].name: %q is empty, longer than 63 bytes or has blanks or slashes", i, n.Name)
		case names[n.Name]:
			fail("nodes[%d].name: %s used twice", i, n.Name)
		}
		if indexes[n.Index] {
			fail("nodes[%d].index: %d used twice", i, n.Index)
		}
		names[n.Name], indexes[n.Index] = true, true
		for r := 0; r < p.Rails && r < MaxRails; r++ {
			if _, err := planAddrs(p, n.Index, r); err != nil {
				fail("nodes[%d] (%s): %w", i, n.Name, err)
				break
			}
		}
	}
	ids := map[string]bool{}
	vnis := map[int]bool{}
	taken := map[[2]any]string{}
	for i, t := range p.Tenants {
		switch {
		case t.ID == "" || len(t.ID) > 63 || strings.ContainsAny(t.ID, " /\t\n"):
			fail("tenants[%d].id: %q is empty, longer than 63 bytes or has blanks or slashes", i, t.ID)
		case ids[t.ID]:
			fail("tenants[%d].id: %s used twice", i, t.ID)
		}
		switch {
		case t.VNI < 1 || t.VNI > 1<<24-1:
			fail("tenants[%d].vni: %d is outside 1-16777215", i, t.VNI)
		case vnis[t.VNI]:
			fail("tenants[%d].vni: %d used twice", i, t.VNI)
		}
		ids[t.ID], vnis[t.VNI] = true, true
		for j, m := range t.Members {
			if !names[m.Node] {
				fail("tenants[%d].members[%d].node: %s is not a node of the plan", i, j, m.Node)
				continue
			}
			gpus := m.GPUs
			if len(gpus) == 0 {
				gpus = make([]int, p.Rails)
				for g := range gpus {
					gpus[g] = g
				}
			}
			for _, g := range gpus {
				if g < 0 || g >= p.Rails {
					fail("tenants[%d].members[%d].gpus: GPU %d is outside 0-%d", i, j, g, p.Rails-1)
					continue
				}
				key := [2]any{m.Node, g}
				if other, ok := taken[key]; ok && other != t.ID {
					fail("tenants[%d].members[%d]: GPU %d of %s is also in %s", i, j, g, m.Node, other)
				}
				taken[key] = t.ID
			}
		}
	}
	return errors.Join(errs...)
}

// railTenants maps every (node, rail) of a tenant to the tenant's index in
// p.Tenants; GPU g brings rail g.
func railTenants(p v1.FabricPlan) map[string]map[int]int {
	out := map[string]map[int]int{}
	for ti, t := range p.Tenants {
		for _, m := range t.Members {
			if out[m.Node] == nil {
				out[m.Node] = map[int]int{}
			}
			if len(m.GPUs) == 0 {
				for r := 0; r < p.Rails; r++ {
					out[m.Node][r] = ti
				}
				continue
			}
			for _, g := range m.GPUs {
				out[m.Node][g] = ti
			}
		}
	}
	return out
}
