package agent

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	v1 "github.com/roce-agent/roce-agent/api/v1"
	"github.com/roce-agent/roce-agent/probe"
)

func TestCablingConfig(t *testing.T) {
	c := DefaultConfig()
	if c.LLDP.Source != "auto" || c.LLDP.Socket != "" || c.LLDP.Interval != 30*time.Second {
		t.Errorf("defaults %+v", c.LLDP)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	keys := SettingKeys()
	if keys["lldp.source"] != "auto" || keys["lldp.socket"] != "" || keys["lldp.interval"] != 30*time.Second {
		t.Errorf("SettingKeys: lldp.source %v, lldp.socket %v, lldp.interval %v", keys["lldp.source"], keys["lldp.socket"], keys["lldp.interval"])
	}
	for _, src := range []string{"auto", "lldpctl", "listen", "off"} {
		c.LLDP.Source = src
		if err := c.Validate(); err != nil {
			t.Errorf("lldp.source %s: %v", src, err)
		}
	}
	c.LLDP = LLDPConfig{Source: "snmp", Socket: "run/lldpd.socket", Interval: time.Second}
	want := []string{
		`lldp.source: "snmp" is not one of auto, lldpctl, listen, off`,
		`lldp.socket: "run/lldpd.socket" is not an absolute path`,
		"lldp.interval: 1s is outside 5s-1h",
	}
	err := c.Validate()
	for _, w := range want {
		if err == nil || !strings.Contains(err.Error(), w) {
			t.Errorf("Validate() = %v, want %q", err, w)
		}
	}
	c.LLDP = LLDPConfig{Source: "auto", Socket: "/run/" + strings.Repeat("s", 200), Interval: 2 * time.Hour}
	err = c.Validate()
	for _, w := range []string{"lldp.socket: ", "is longer than 107 bytes", "lldp.interval: 2h0m0s is outside 5s-1h"} {
		if err == nil || !strings.Contains(err.Error(), w) {
			t.Errorf("Validate() = %v, want %q", err, w)
		}
	}
	c.LLDP.Socket, c.LLDP.Interval = "/run/lldpd\n.socket", time.Minute
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), `lldp.socket: "/run/lldpd\n.socket" has control characters`) {
		t.Errorf("Validate() = %v", err)
	}
}

// lldpctlRunner plays a captured `lldpctl -f json` (nic/lldp/testdata),
// its rail names replaced.
type lldpctlRunner struct {
	mu   sync.Mutex
	out  string
	runs int
}

type doneProc probe.Output

func (p doneProc) Wait() (probe.Output, error) { return probe.Output(p), nil }

func (r *lldpctlRunner) Start(_ context.Context, c probe.Command) (probe.Process, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.runs++
	return doneProc(probe.Output{Stdout: r.out}), nil
}

func (r *lldpctlRunner) set(t *testing.T, file string, names ...string) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "nic", "lldp", "testdata", file))
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	for i := 0; i+1 < len(names); i += 2 {
		s = strings.ReplaceAll(s, `"`+names[i]+`"`, `"`+names[i+1]+`"`)
	}
	r.mu.Lock()
	r.out = s
	r.mu.Unlock()
}

// cablingDaemon is the fake-host daemon with two rails (vethA, vethB),
// reconciled once, lldpctl played by the returned runner.
func cablingDaemon(t *testing.T, edit func(*Config)) (*Daemon, *lldpctlRunner, *atomic.Int64) {
	t.Helper()
	host, c := fakeHost(t, 2)
	c.LLDP.Source = "lldpctl"
	if edit != nil {
		edit(&c)
	}
	d := fakeHostDaemon(t, host, c)
	if err := d.Reconcile(); err != nil {
		t.Fatal(err)
	}
	r := &lldpctlRunner{}
	d.cabling.runner = r
	var changes atomic.Int64
	d.cabling.changed = func() { changes.Add(1) }
	return d, r, &changes
}

func cablingOf(t *testing.T, st *NodeStatus, rail int) (Condition, *v1.LLDPNeighbor) {
	t.Helper()
	for _, rs := range st.Rails {
		if rs.Rail != rail {
			continue
		}
		var found []Condition
		for _, c := range rs.Conditions {
			if c.Type == v1.ConditionCablingOK {
				found = append(found, c)
			}
		}
		if len(found) != 1 {
			t.Fatalf("rail %d has %d CablingOK conditions: %+v", rail, len(found), rs.Conditions)
		}
		return found[0], rs.LLDP
	}
	t.Fatalf("no rail %d", rail)
	return Condition{}, nil
}

// The captured swapped host: rails planned on leaf0 swp4 and swp5 reach
// them the other way round; the status, the metrics and the reporter say
// so, and again only when something changes.
func TestCablingSwappedRails(t *testing.T) {
	d, r, changes := cablingDaemon(t, func(c *Config) {
		c.Rails[0].Leaf, c.Rails[0].LeafPort = "leaf0", "swp4"
		c.Rails[1].Leaf, c.Rails[1].LeafPort = "leaf0", "swp5"
	})
	// Before the first check: Unknown.
	if c, n := cablingOf(t, d.Status(), 0); c.Status != StatusUnknown || c.Reason != "NotChecked" || n != nil {
		t.Errorf("before the first check: %+v %+v", c, n)
	}
	r.set(t, "lldpctl-swapped.json", "rail0", "vethA", "rail1", "vethB")
	cfg := d.node.Config().LLDP
	reader := d.cabling.newReader(cfg)
	defer reader.Close()
	d.cabling.check(context.Background(), reader)
	st := d.Status()
	c, n := cablingOf(t, st, 0)
	if c.Status != StatusFalse || c.Reason != "Swapped" || c.Message != "rail 0 reaches leaf0 port swp5, the port planned for rail 1: rails 0 and 1 look swapped (rail 0 should reach leaf0 port swp4)" || c.Since.IsZero() {
		t.Errorf("rail 0: %+v", c)
	}
	if n == nil || n.SysName != "leaf0" || n.PortID != "swp5" || n.ChassisID != "8e:99:89:21:b5:38" || n.Source != "lldpctl" || n.PortDescr != "gpu-02 rail1" {
		t.Errorf("rail 0 neighbour: %+v", n)
	}
	if c, _ := cablingOf(t, st, 1); c.Status != StatusFalse || c.Reason != "Swapped" {
		t.Errorf("rail 1: %+v", c)
	}
	if got := changes.Load(); got != 1 {
		t.Errorf("%d changes reported, want 1", got)
	}
	// The wire status validates against the OpenAPI document's types.
	if w := st.Wire(); w.Rails[0].LLDP == nil {
		t.Errorf("wire status lacks lldp: %+v", w.Rails[0])
	}
	exp := scrape(t, d.Metrics())
	for _, line := range []string{
		`roce_agent_rail_cabling_ok{netdev="vethA",rail="0"} 0`,
		`roce_agent_rail_cabling_ok{netdev="vethB",rail="1"} 0`,
		`roce_agent_rail_lldp_neighbor_info{chassis_id="8e:99:89:21:b5:38",netdev="vethA",port_id="swp5",rail="0",sys_name="leaf0"} 1`,
		`roce_agent_condition_status{rail="0",type="CablingOK"} 0`,
	} {
		if !strings.Contains(exp, line+"\n") {
			t.Errorf("metrics lack %s", line)
		}
	}
	since := c.Since

	// The same answer again: nothing changed, Since kept.
	d.cabling.check(context.Background(), reader)
	if c, _ := cablingOf(t, d.Status(), 0); !c.Since.Equal(since) || changes.Load() != 1 {
		t.Errorf("a repeated check changed something: %+v, %d changes", c, changes.Load())
	}

	// Recabled as planned.
	r.set(t, "lldpctl-swapped.json", "rail0", "vethB", "rail1", "vethA")
	d.cabling.check(context.Background(), reader)
	st = d.Status()
	for _, rail := range []int{0, 1} {
		if c, _ := cablingOf(t, st, rail); c.Status != StatusTrue || c.Reason != "Planned" {
			t.Errorf("rail %d after the fix: %+v", rail, c)
		}
	}
	if changes.Load() != 2 {
		t.Errorf("%d changes, want 2", changes.Load())
	}
	if exp := scrape(t, d.Metrics()); !strings.Contains(exp, `roce_agent_rail_cabling_ok{netdev="vethA",rail="0"} 1`+"\n") {
		t.Errorf("metrics after the fix:\n%s", exp)
	}

	// No neighbours at all: Unknown, -1.
	r.set(t, "lldpctl-none.json")
	d.cabling.check(context.Background(), reader)
	if c, n := cablingOf(t, d.Status(), 0); c.Status != StatusUnknown || c.Reason != "NoNeighbor" || n != nil || !strings.Contains(c.Message, "lldpd knows no LLDP neighbour on vethA") {
		t.Errorf("no neighbours: %+v %+v", c, n)
	}
	if exp := scrape(t, d.Metrics()); !strings.Contains(exp, `roce_agent_rail_cabling_ok{netdev="vethA",rail="0"} -1`+"\n") || strings.Contains(exp, "roce_agent_rail_lldp_neighbor_info{") {
		t.Errorf("metrics without neighbours:\n%s", exp)
	}
}

// Without a plan: rails on distinct ports of one leaf are fine, and the
// message says what was not checked.
func TestCablingWithoutPlan(t *testing.T) {
	d, r, _ := cablingDaemon(t, nil)
	r.set(t, "lldpctl-several.json", "rail0", "vethA", "rail1", "vethB")
	reader := d.cabling.newReader(d.node.Config().LLDP)
	defer reader.Close()
	d.cabling.check(context.Background(), reader)
	c, n := cablingOf(t, d.Status(), 1)
	if c.Status != StatusTrue || c.Reason != "DistinctPorts" || !strings.Contains(c.Message, "was not checked") || n == nil || n.PortID != "swp2" {
		t.Errorf("rail 1: %+v %+v", c, n)
	}
}

// lldp.source off: no condition, no metric, nothing read.
func TestCablingOff(t *testing.T) {
	d, r, _ := cablingDaemon(t, func(c *Config) { c.LLDP.Source = "off" })
	ctx, cancel := context.WithCancel(context.Background())
	stop := d.cabling.start(ctx)
	time.Sleep(50 * time.Millisecond)
	stop()
	cancel()
	for _, rs := range d.Status().Rails {
		for _, c := range rs.Conditions {
			if c.Type == v1.ConditionCablingOK {
				t.Errorf("rail %d has %+v", rs.Rail, c)
			}
		}
	}
	if r.runs != 0 {
		t.Errorf("lldpctl ran %d times", r.runs)
	}
	if exp := scrape(t, d.Metrics()); strings.Contains(exp, "roce_agent_rail_cabling_ok{") {
		t.Error("cabling metric with lldp.source off")
	}
}

// The background loop checks as soon as there are rails, and stops with
// its context.
func TestCablingLoop(t *testing.T) {
	d, r, _ := cablingDaemon(t, nil)
	r.set(t, "lldpctl-several.json", "rail0", "vethA", "rail1", "vethB")
	stop := d.cabling.start(context.Background())
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if c, _ := cablingOf(t, d.Status(), 0); c.Reason == "DistinctPorts" {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	stop()
	if c, _ := cablingOf(t, d.Status(), 0); c.Reason != "DistinctPorts" {
		t.Errorf("rail 0 after the loop: %+v", c)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.runs != 1 {
		t.Errorf("lldpctl ran %d times in one interval", r.runs)
	}
}
