package diag

import (
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/roce-agent/roce-agent/agent"
	"github.com/roce-agent/roce-agent/qos"
)

// nicDCB is a NIC's dcbnl state per netdev, as mlx5 keeps it (a DSCP's
// new mapping replaces the old one).
type nicDCB struct {
	mu   sync.Mutex
	ieee map[string]*qos.IEEE
	dcbx map[string]uint8
}

func newNICDCB() *nicDCB {
	return &nicDCB{ieee: map[string]*qos.IEEE{}, dcbx: map[string]uint8{}}
}

func (f *nicDCB) state(dev string) *qos.IEEE {
	s, ok := f.ieee[dev]
	if !ok {
		s = &qos.IEEE{PFC: &qos.PFC{Cap: 8}}
		f.ieee[dev] = s
	}
	return s
}

func (f *nicDCB) IEEE(dev string) (qos.IEEE, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := *f.state(dev)
	s.Apps = append([]qos.App(nil), s.Apps...)
	if s.PFC != nil {
		p := *s.PFC
		s.PFC = &p
	}
	return s, nil
}

func (f *nicDCB) SetIEEE(dev string, in qos.IEEE) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := f.state(dev)
	if in.PFC != nil {
		p := *in.PFC
		s.PFC = &p
	}
	if in.ETS != nil {
		e := *in.ETS
		s.ETS = &e
	}
	for _, a := range in.Apps {
		kept := s.Apps[:0]
		for _, have := range s.Apps {
			if have.Selector != a.Selector || have.Protocol != a.Protocol {
				kept = append(kept, have)
			}
		}
		s.Apps = append(kept, a)
	}
	return nil
}

func (f *nicDCB) DelApps(dev string, apps []qos.App) error { return nil }

func (f *nicDCB) DCBX(dev string) (uint8, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.dcbx[dev], nil
}

func (f *nicDCB) SetDCBX(dev string, mode uint8) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.dcbx[dev] = mode
	return nil
}

func (f *nicDCB) setPFC(dev string, enable uint8) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.state(dev).PFC.Enable = enable
}

func qosConfig(t *testing.T) agent.Config {
	c := softRoCEConfig(t)
	tos := 106
	c.QoS = agent.QoSConfig{DCBX: "host", PFCPriorities: []int{3}, DSCPToPriority: map[int]int{26: 3, 48: 6}, RoCETos: &tos, RoCEMode: "RoCE v2"}
	return c
}

func TestQoSChecksConverged(t *testing.T) {
	cfg := qosConfig(t)
	// rdma_cm's configfs, as the kernel shows it with rdma_cm loaded.
	mkConfigfs(t, cfg)
	e := hostEnv(t, cfg, newNICDCB(), nil)
	for _, id := range []string{"QOS-TRUST-001", "QOS-PFC-001", "QOS-DSCP-001", "QOS-TOS-001"} {
		rs := check(t, e, id)
		all(t, rs, Pass)
		if len(rs) != 2 {
			t.Errorf("%s: %d results, want one per rail", id, len(rs))
		}
	}
	// Knobs the profile leaves alone are not checked.
	want(t, check(t, e, "QOS-ETS-001"), "node", Skip, "does not set")
	want(t, check(t, e, "QOS-DCQCN-001"), "node", Skip, "does not set")
}

func TestQoSChecksFaults(t *testing.T) {
	cfg := qosConfig(t)
	mkConfigfs(t, cfg)
	dcb := newNICDCB()
	e := hostEnv(t, cfg, dcb, nil)
	// PFC turned off on vethB by hand, and the ToS reset (rdma_cm
	// re-registered the device).
	dcb.setPFC("vethB", 0)
	writeTree(t, cfg, "/kernel/config/rdma_cm/rxe0/ports/1/default_roce_tos", "0")
	e.Node.MarkStale()
	rs := check(t, e, "QOS-PFC-001")
	want(t, rs, "vethB", Fail, "3:off", "pfc on [3]", "dcb pfc set dev vethB")
	want(t, rs, "vethA", Pass)
	var tosFail int
	for _, r := range check(t, e, "QOS-TOS-001") {
		if r.Status == Fail {
			tosFail++
			if r.Observed != "default_roce_tos 0" || r.Expected != "tos 106, RoCE v2" {
				t.Errorf("tos: observed %q expected %q", r.Observed, r.Expected)
			}
		}
	}
	if tosFail != 1 {
		t.Errorf("%d ToS failures, want 1", tosFail)
	}
}

func TestQoSUnsupportedDCQCN(t *testing.T) {
	cfg := qosConfig(t)
	mkConfigfs(t, cfg)
	cfg.QoS.DCQCN = &agent.DCQCNConfig{NP: map[string]int64{"cnp_dscp": 48}}
	e := hostEnv(t, cfg, newNICDCB(), nil)
	rs := check(t, e, "QOS-DCQCN-001")
	for _, r := range rs {
		if r.Status != Warn || r.Observed != "unsupported" {
			t.Errorf("rxe DCQCN: %+v", r)
		}
	}
}

// mkConfigfs makes rdma_cm's configfs directory in cfg's tree, as the
// kernel shows it with rdma_cm loaded.
func mkConfigfs(t *testing.T, cfg agent.Config) {
	t.Helper()
	for _, dev := range []string{"rxe0", "rxe1"} {
		writeTree(t, cfg, "/kernel/config/rdma_cm/"+dev+"/ports/1/default_roce_mode", "IB/RoCE v1")
		writeTree(t, cfg, "/kernel/config/rdma_cm/"+dev+"/ports/1/default_roce_tos", "0")
	}
}

// writeTree writes a file in cfg's sysfs tree.
func writeTree(t *testing.T, cfg agent.Config, p, content string) {
	t.Helper()
	full := filepath.Join(cfg.SysfsRoot, filepath.FromSlash(p))
	if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(full, []byte(content+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
}
