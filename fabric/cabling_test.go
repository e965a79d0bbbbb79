package fabric

import (
	"os"
	"strings"
	"testing"
)

// A node's cabling becomes its rails' leaf and leaf_port; bad cabling is
// refused naming the field; a cabling change changes that node only.
func TestPlanCabling(t *testing.T) {
	base, err := os.ReadFile("testdata/plan.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cabled := strings.Replace(string(base), "{name: gpu-01, index: 1}",
		"{name: gpu-01, index: 1, cabling: [{rail: 0, leaf: leaf0, port: swp1}, {rail: 1, leaf: leaf1, port: swp1}, {rail: 7, leaf: leaf7}]}", 1)
	p, err := ParsePlan([]byte(cabled))
	if err != nil {
		t.Fatal(err)
	}
	f, err := NewFabric(p)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := f.Config("gpu-01")
	if err := c.Validate(); err != nil {
		t.Fatalf("derived config invalid: %v", err)
	}
	for r, want := range map[int][2]string{0: {"leaf0", "swp1"}, 1: {"leaf1", "swp1"}, 2: {}, 7: {"leaf7", ""}} {
		if got := [2]string{c.Rails[r].Leaf, c.Rails[r].LeafPort}; got != want {
			t.Errorf("rail %d: leaf/port %q, want %q", r, got, want)
		}
	}
	if c0, _ := f.Config("gpu-00"); c0.Rails[0].Leaf != "" {
		t.Errorf("gpu-00 has cabling: %+v", c0.Rails[0])
	}

	old, err := NewFabric(loadTestPlan(t))
	if err != nil {
		t.Fatal(err)
	}
	if got := ChangedNodes(old, f); len(got) != 1 || got[0] != "gpu-01" {
		t.Errorf("ChangedNodes = %v, want [gpu-01]", got)
	}
	if g, _ := NewFabricFrom(p, old); g == nil || len(g.addrs) == 0 || &g.addrs[0] != &old.addrs[0] {
		t.Error("a cabling change does not share the address table")
	}

	for _, tc := range []struct{ name, to, field string }{
		{"rail out of range", "{rail: 8, leaf: leaf0}", "nodes[1].cabling[0].rail"},
		{"rail twice", "{rail: 0, leaf: leaf0}, {rail: 0, leaf: leaf1}", "nodes[1].cabling[1].rail"},
		{"no leaf", "{rail: 0, port: swp1}", "nodes[1].cabling[0].leaf"},
		{"one port twice", "{rail: 0, leaf: leaf0, port: swp1}, {rail: 1, leaf: leaf0, port: swp1}", "nodes[1].cabling[1].port"},
		{"unprintable", `{rail: 0, leaf: "leaf\t0"}`, "nodes[1].cabling[0].leaf"},
		{"unknown key", "{rail: 0, leaf: leaf0, switch: x}", "switch"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			doc := strings.Replace(string(base), "{name: gpu-01, index: 1}", "{name: gpu-01, index: 1, cabling: ["+tc.to+"]}", 1)
			_, err := ParsePlan([]byte(doc))
			if err == nil {
				t.Fatal("accepted")
			}
			if !strings.Contains(err.Error(), tc.field) {
				t.Errorf("error does not name %s: %v", tc.field, err)
			}
		})
	}
}
