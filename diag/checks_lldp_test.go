package diag

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/roce-agent/roce-agent/agent"
	"github.com/roce-agent/roce-agent/probe"

	v1 "github.com/roce-agent/roce-agent/api/v1"
)

// lldpRunner plays lldpctl: out, or err.
type lldpRunner struct {
	out  probe.Output
	err  error
	cmds []probe.Command
}

type lldpDone probe.Output

func (p lldpDone) Wait() (probe.Output, error) { return probe.Output(p), nil }

func (r *lldpRunner) Start(_ context.Context, c probe.Command) (probe.Process, error) {
	r.cmds = append(r.cmds, c)
	if r.err != nil {
		return nil, r.err
	}
	return lldpDone(r.out), nil
}

// capturedLldpctl is a captured `lldpctl -f json` (nic/lldp/testdata)
// with its interface names replaced: old, new, ...
func capturedLldpctl(t *testing.T, file string, names ...string) string {
	t.Helper()
	b, err := os.ReadFile("../nic/lldp/testdata/" + file)
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	for i := 0; i+1 < len(names); i += 2 {
		s = strings.ReplaceAll(s, `"`+names[i]+`"`, `"`+names[i+1]+`"`)
	}
	return s
}

// lldpctlJSON is lldpctl's list shape for netdev -> "leaf port".
func lldpctlJSON(t *testing.T, ports map[string]string) string {
	t.Helper()
	var list []map[string]any
	for dev, lp := range ports {
		leaf, port, _ := strings.Cut(lp, " ")
		list = append(list, map[string]any{dev: map[string]any{
			"via":     "LLDP",
			"chassis": map[string]any{leaf: map[string]any{"id": map[string]string{"type": "local", "value": "chassis-" + leaf}}},
			"port":    map[string]any{"id": map[string]string{"type": "ifname", "value": port}, "ttl": "120"},
		}})
	}
	b, err := json.Marshal(map[string]any{"lldp": map[string]any{"interface": list}})
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// lldpEnv is the DGX fixture with lldpctl played by r and no daemon.
func lldpEnv(t *testing.T, r *lldpRunner) (*Env, []string) {
	e := dgx(t, nil)
	// The fixture stands for the live host: its lldpctl is the fake.
	e.Live = true
	e.Runner = r
	e.Config.Listen.Metrics = ""
	var devs []string
	for _, rail := range e.Rails() {
		devs = append(devs, rail.Netdev)
	}
	if len(devs) < 4 {
		t.Fatalf("fixture rails %v", devs)
	}
	return e, devs
}

func plan(e *Env, leafPorts ...string) {
	e.Desired = true
	e.Config.Rails = nil
	for i, lp := range leafPorts {
		leaf, port, _ := strings.Cut(lp, " ")
		e.Config.Rails = append(e.Config.Rails, agent.RailConfig{Rail: intPtr(i), Leaf: leaf, LeafPort: port})
	}
}

func intPtr(i int) *int { return &i }

// The captured swapped host, its rails renamed to the fixture's first
// two: both fail CABLE-001 naming the swap; they still have ports of
// their own; the other rails have no neighbour.
func TestLLDPCableSwapped(t *testing.T) {
	r := &lldpRunner{}
	e, devs := lldpEnv(t, r)
	r.out.Stdout = capturedLldpctl(t, "lldpctl-swapped.json", "rail0", devs[0], "rail1", devs[1])
	e.Config.LLDP.Socket = "/run/lldpd-test.socket"
	plan(e, "leaf0 swp4", "leaf0 swp5")
	rs := check(t, e, "LLDP-CABLE-001")
	res := want(t, rs, devs[0], Fail, "leaf0 port swp5", "leaf0 port swp4", "rails 0 and 1 look swapped", "read from lldpctl")
	if res.Rail == nil || *res.Rail != 0 {
		t.Errorf("rail %v", res.Rail)
	}
	want(t, rs, devs[1], Fail, "rail 1 reaches leaf0 port swp4, the port planned for rail 0")
	want(t, rs, devs[2], Skip, "no leaf is planned")
	if c := r.cmds[0]; c.Name != "lldpctl" || strings.Join(c.Args, " ") != "-u /run/lldpd-test.socket -f json" {
		t.Errorf("ran %v", c)
	}
	rs = check(t, e, "LLDP-CABLE-002")
	want(t, rs, devs[0], Pass, "leaf0 port swp5")
	want(t, rs, devs[3], Unknown, "no LLDP neighbour on rail 3", "is LLDP off on the leaf port")
}

func TestLLDPCablePlannedAndShared(t *testing.T) {
	r := &lldpRunner{}
	e, devs := lldpEnv(t, r)
	ports := map[string]string{}
	var plans []string
	for i, d := range devs {
		ports[d] = fmt.Sprintf("leaf%d swp1", i)
		plans = append(plans, fmt.Sprintf("leaf%d swp1", i))
	}
	r.out.Stdout = lldpctlJSON(t, ports)
	plan(e, plans...)
	all(t, check(t, e, "LLDP-CABLE-001"), Pass)
	all(t, check(t, e, "LLDP-CABLE-002"), Pass)

	// Rail 1 is patched to rail 0's port.
	ports[devs[1]] = "leaf0 swp1"
	r2 := &lldpRunner{out: probe.Output{Stdout: lldpctlJSON(t, ports)}}
	e2, _ := lldpEnv(t, r2)
	plan(e2, plans...)
	rs := check(t, e2, "LLDP-CABLE-001")
	want(t, rs, devs[0], Pass, "which another rail reaches too")
	want(t, rs, devs[1], Fail, "rail 1 reaches leaf0 port swp1, not the planned leaf1 port swp1")
	rs = check(t, e2, "LLDP-CABLE-002")
	want(t, rs, devs[0], Fail, "rails 0 and 1 both reach leaf0 port swp1")
	want(t, rs, devs[1], Fail, "rails 0 and 1 both reach")
	want(t, rs, devs[2], Pass, "leaf2 port swp1")

	// Without a desired state, CABLE-001 skips and says what it saw.
	r3 := &lldpRunner{out: probe.Output{Stdout: lldpctlJSON(t, ports)}}
	e3, _ := lldpEnv(t, r3)
	res := want(t, check(t, e3, "LLDP-CABLE-001"), devs[2], Skip, "no desired state")
	if res.Observed != "leaf2 port swp1" {
		t.Errorf("observed %q", res.Observed)
	}
}

// Without lldpctl the running daemon's /v1/status gives the neighbours.
func TestLLDPCableFromDaemon(t *testing.T) {
	e, devs := lldpEnv(t, &lldpRunner{err: probe.ErrToolMissing})
	st := v1.NodeStatus{Node: "gpu-017", Rails: []v1.RailStatus{
		{Rail: 0, Netdev: devs[0], LLDP: &v1.LLDPNeighbor{ChassisID: "c0", SysName: "leaf0", PortID: "swp2", Source: "frame", Seen: time.Now()}},
		{Rail: 1, Netdev: devs[1], LLDP: &v1.LLDPNeighbor{ChassisID: "c0", SysName: "leaf0", PortID: "swp1", Source: "frame", Seen: time.Now()}},
	}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/status" {
			http.NotFound(w, r)
			return
		}
		_ = json.NewEncoder(w).Encode(st)
	}))
	defer srv.Close()
	e.Config.Listen.Metrics = strings.TrimPrefix(srv.URL, "http://")
	plan(e, "leaf0 swp1", "leaf0 swp2")
	rs := check(t, e, "LLDP-CABLE-001")
	want(t, rs, devs[0], Fail, "rails 0 and 1 look swapped", "read from the daemon's /v1/status")
	want(t, rs, devs[2], Skip)
}

// Nowhere to read neighbours from: the reason says why, per source.
func TestLLDPCableNoSource(t *testing.T) {
	missing := &lldpRunner{err: fmt.Errorf("lldpctl: %w", probe.ErrToolMissing)}
	e, _ := lldpEnv(t, missing)
	e.Live = false
	want(t, check(t, e, "LLDP-CABLE-001"), "node", Skip, "sysfs tree")
	if len(missing.cmds) != 0 {
		t.Errorf("lldpctl ran %d times for a sysfs tree", len(missing.cmds))
	}

	// The live host as root with listening turned off (--lldp-listen 0).
	e, _ = lldpEnv(t, missing)
	e.Live, e.Privileged, e.LLDPListen = true, true, 0
	want(t, check(t, e, "LLDP-CABLE-001"), "node", Unknown, "not installed", "listening for LLDP frames is off")

	// lldpd down, a live host, not root.
	down := &lldpRunner{out: probe.Output{ExitCode: 1, Stderr: "unable to connect to socket /run/lldpd.socket: No such file or directory"}}
	e, _ = lldpEnv(t, down)
	e.Live, e.Privileged = true, false
	// A daemon address nobody listens on.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e.Config.Listen.Metrics = ln.Addr().String()
	ln.Close()
	r := want(t, check(t, e, "LLDP-CABLE-002"), "node", Skip, "lldpd does not answer", "daemon not reachable", "needs root")
	if !r.NeedsPrivilege {
		t.Error("not marked as needing privilege")
	}

	// Root on the live host: diag listens (here the fixture's netdevs do
	// not exist, so each rail says why it could not).
	e, devs := lldpEnv(t, missing)
	e.Live, e.Privileged, e.LLDPListen = true, true, time.Second
	want(t, check(t, e, "LLDP-CABLE-002"), devs[0], Unknown, "lldp listen "+devs[0], "read from LLDP frames")

	// lldp.source off.
	e, _ = lldpEnv(t, missing)
	e.Config.LLDP.Source = "off"
	want(t, check(t, e, "LLDP-CABLE-001"), "node", Skip, "lldp.source is off")

	// An lldpctl that fails otherwise is reported per rail.
	e, devs = lldpEnv(t, &lldpRunner{out: probe.Output{ExitCode: 2, Stderr: "lldpctl: bad"}})
	want(t, check(t, e, "LLDP-CABLE-002"), devs[1], Unknown, "cannot read the LLDP neighbour of rail 1", "exit 2")
}
