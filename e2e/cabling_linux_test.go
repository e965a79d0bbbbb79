package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "github.com/roce-agent/roce-agent/api/v1"
	"github.com/roce-agent/roce-agent/lab"
	"github.com/roce-agent/roce-agent/nic/nettest"
)

// cablingPlan is the lab's default plan cut to 2 hosts of 3 rails:
// gpu-00 whole in tenant-a (leaf 0), GPUs 0-2 of gpu-01 in tenant-b
// (leaf 1). The lab adds each node's cabling (rail n -> leaf<L> port
// h<i>r<n>).
func cablingPlan() v1.FabricPlan {
	const rails = 3
	p := lab.DefaultPlan(2)
	p.Rails = rails
	p.Addressing.IPv4Pools = p.Addressing.IPv4Pools[:rails]
	p.Addressing.IPv6Pools = p.Addressing.IPv6Pools[:rails]
	p.Tenants = p.Tenants[:2]
	p.Tenants[1].Members[0].GPUs = []int{0, 1, 2}
	return p
}

// railCabling is what one rail's status says about its cabling.
type railCabling struct {
	cond v1.Condition
	lldp *v1.LLDPNeighbor
}

func (c railCabling) String() string {
	s := fmt.Sprintf("CablingOK %s (%s: %s)", c.cond.Status, c.cond.Reason, c.cond.Message)
	if c.lldp != nil {
		s += fmt.Sprintf(", neighbour %s port %s", c.lldp.SysName, c.lldp.PortID)
	}
	return s
}

// cablingOf reads every rail's CablingOK and LLDP neighbour from host i's
// agent (/v1/status).
func cablingOf(procs *lab.Processes, host int) (map[int]railCabling, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := procs.AgentStatus(ctx, host)
	if err != nil {
		return nil, err
	}
	out := map[int]railCabling{}
	for _, r := range st.Rails {
		out[r.Rail] = railCabling{cond: condition(r.Conditions, v1.ConditionCablingOK), lldp: r.LLDP}
	}
	return out, nil
}

// cablingWrong says how the rails' cabling status differs from what the
// lab's cabling makes it (Rail's CabledPort: the planned port but where
// SwapRails swapped it): CablingOK True with the planned leaf port as the
// neighbour, or False (Swapped) with the port the rail reaches. "" when
// it does not. Rails that are not swapped and not True are added to
// notTrue, when it is not nil.
func cablingWrong(f *lab.Fabric, procs *lab.Processes, notTrue *[]string) string {
	var bad []string
	for h := 0; h < f.Hosts(); h++ {
		got, err := cablingOf(procs, h)
		if err != nil {
			return err.Error()
		}
		for r := 0; r < f.Rails(); r++ {
			info := f.Rail(h, r)
			c, ok := got[r]
			switch {
			case !ok:
				bad = append(bad, fmt.Sprintf("%s rail %d not reported", info.Node, r))
				continue
			case notTrue != nil && info.CabledPort == info.LeafPort && c.cond.Status != v1.StatusTrue:
				*notTrue = append(*notTrue, fmt.Sprintf("%s rail %d: %s", info.Node, r, c))
			case c.lldp == nil || c.lldp.SysName != info.LeafName || c.lldp.PortID != info.CabledPort:
				bad = append(bad, fmt.Sprintf("%s rail %d: %s, want neighbour %s port %s", info.Node, r, c, info.LeafName, info.CabledPort))
				continue
			}
			want, reason := v1.StatusTrue, c.cond.Reason
			if info.CabledPort != info.LeafPort {
				want, reason = v1.StatusFalse, "Swapped"
			}
			if c.cond.Status != want || c.cond.Reason != reason {
				bad = append(bad, fmt.Sprintf("%s rail %d: %s, want %s (%s)", info.Node, r, c, want, reason))
			}
		}
	}
	return strings.Join(bad, "; ")
}

// TestCablingSwappedRail: with lldpd in the lab's host and leaf
// namespaces and the plan naming each rail's leaf port, every rail of
// every agent reaches CablingOK True with the planned neighbour; two
// rails of one host swapped at the leaf turn CablingOK False on exactly
// those two (reason Swapped, the message naming the leaf port each
// reaches and the swap), in the agent's status and the controller's, and
// roce-agent diag --check LLDP- on that host fails them (exit 2); swapped
// back, every rail is True again.
func TestCablingSwappedRail(t *testing.T) {
	nettest.RequireRoot(t)
	if _, _, err := lab.FindLLDPD(); err != nil {
		t.Skipf("no cabling test: %v", err)
	}
	plan := cablingPlan()
	t0 := time.Now()
	f, procs := startLab(t, "e2c-", lab.Options{Plan: &plan, LLDP: lab.LLDPOn}, lab.ProcessOptions{ProbeInterval: -1})
	t.Logf("lab up and converged in %v", time.Since(t0).Round(time.Millisecond))
	if !f.LLDP() {
		t.Fatalf("the lab runs no lldpd: %s", f.LLDPNote())
	}

	// The controller serves each rail's planned leaf port.
	for h := 0; h < f.Hosts(); h++ {
		var cfg v1.NodeConfig
		if err := admin(t, procs, "GET", "/v1/nodes/"+f.Node(h)+"/config", nil, &cfg); err != nil {
			t.Fatal(err)
		}
		for _, rc := range cfg.Rails {
			if rc.Rail == nil {
				continue
			}
			info := f.Rail(h, *rc.Rail)
			if rc.Leaf != info.LeafName || rc.LeafPort != info.LeafPort {
				t.Errorf("%s rail %d config: leaf %q port %q, want %q %q", info.Node, info.Rail, rc.Leaf, rc.LeafPort, info.LeafName, info.LeafPort)
			}
		}
	}

	t0 = time.Now()
	if why := eventually(60*time.Second, func() string { return cablingWrong(f, procs, nil) }); why != "" {
		t.Fatalf("cabling never OK: %s", why)
	}
	t.Logf("every rail CablingOK with its planned leaf port in %v", time.Since(t0).Round(time.Millisecond))
	// The controller has it too.
	if why := eventually(30*time.Second, func() string { return reportedCabling(t, f, procs, 1, nil) }); why != "" {
		t.Errorf("controller's status of gpu-01: %s", why)
	}

	// diag in a lab host's namespace compares the kernel's rails (its
	// sysfs tree is a fixture, its rail netdevs are real) with the last
	// good controller config: all converged.
	diagRails(t, f, procs, 1)

	// Miscable rails 0 and 2 of gpu-01.
	const host, a, b = 1, 0, 2
	if err := f.SwapRails(host, a, b); err != nil {
		t.Fatal(err)
	}
	t0 = time.Now()
	var notTrue []string
	if why := eventually(60*time.Second, func() string { return cablingWrong(f, procs, &notTrue) }); why != "" {
		t.Fatalf("the swap never showed: %s", why)
	}
	t.Logf("the swap showed in %v", time.Since(t0).Round(time.Millisecond))
	// The other rails stay True all along (one more check round).
	deadline := time.Now().Add(lab.LLDPCheckInterval + time.Second)
	for time.Now().Before(deadline) {
		if why := cablingWrong(f, procs, &notTrue); why != "" {
			t.Errorf("after the swap showed: %s", why)
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	if len(notTrue) > 0 {
		t.Errorf("rails not swapped left CablingOK True: %s", strings.Join(notTrue, "; "))
	}
	got, err := cablingOf(procs, host)
	if err != nil {
		t.Fatal(err)
	}
	for _, x := range [][2]int{{a, b}, {b, a}} {
		r, other := x[0], x[1]
		c := got[r]
		seen := f.Rail(host, r).CabledPort
		swap := fmt.Sprintf("rails %d and %d", r, other)
		if c.cond.Reason != "Swapped" || !strings.Contains(c.cond.Message, seen) || !strings.Contains(c.cond.Message, swap) {
			t.Errorf("rail %d: %s: want reason Swapped, a message naming the leaf port it reaches (%s) and %q", r, c, seen, swap)
		}
		t.Logf("gpu-01 rail %d: %s", r, c)
	}
	if why := eventually(30*time.Second, func() string { return reportedCabling(t, f, procs, host, []int{a, b}) }); why != "" {
		t.Errorf("controller's status of gpu-01: %s", why)
	}
	diagCabling(t, f, procs, host, []int{a, b})

	// Swap back.
	if err := f.SwapRails(host, a, b); err != nil {
		t.Fatal(err)
	}
	t0 = time.Now()
	if why := eventually(60*time.Second, func() string { return cablingWrong(f, procs, nil) }); why != "" {
		t.Fatalf("cabling never OK again: %s", why)
	}
	t.Logf("every rail CablingOK again in %v", time.Since(t0).Round(time.Millisecond))
	diagCabling(t, f, procs, host, nil)
}

// reportedCabling says how the status the controller holds for host i
// (GET /v1/nodes/{node}/status) differs from CablingOK False on the bad
// rails and True on the others ("" when it does not).
func reportedCabling(t *testing.T, f *lab.Fabric, procs *lab.Processes, host int, badRails []int) string {
	var st v1.NodeStatus
	if err := admin(t, procs, "GET", "/v1/nodes/"+f.Node(host)+"/status", nil, &st); err != nil {
		return err.Error()
	}
	var bad []string
	for _, r := range st.Rails {
		want := v1.StatusTrue
		for _, b := range badRails {
			if b == r.Rail {
				want = v1.StatusFalse
			}
		}
		if c := condition(r.Conditions, v1.ConditionCablingOK); c.Status != want {
			bad = append(bad, fmt.Sprintf("rail %d CablingOK %s (%s), want %s", r.Rail, c.Status, c.Reason, want))
		}
	}
	if len(st.Rails) != f.Rails() {
		bad = append(bad, fmt.Sprintf("%d rails reported, want %d", len(st.Rails), f.Rails()))
	}
	return strings.Join(bad, "; ")
}

// diagResult is one result of roce-agent diag -o json.
type diagResult struct {
	ID       string `json:"id"`
	Rail     *int   `json:"rail"`
	Subject  string `json:"subject"`
	Status   string `json:"status"`
	Observed string `json:"observed"`
	Expected string `json:"expected"`
	Reason   string `json:"reason"`
}

// diagCabling runs roce-agent diag -o json --check LLDP- in host i's
// namespace, with its agent's config: it must exit 2 with LLDP-CABLE-001
// FAIL on exactly the bad rails, or 0 without a FAIL when there are none.
// It is skipped (logged) while this roce-agent has no diag command.
func diagCabling(t *testing.T, f *lab.Fabric, procs *lab.Processes, host int, badRails []int) {
	t.Helper()
	bin := filepath.Join(binaries(t), lab.AgentBinary)
	if err := exec.Command(bin, "diag", "--help").Run(); err != nil {
		t.Logf("no roce-agent diag (%v): the diag check is left out", err)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	// Equivalent to: ip netns exec <host ns> roce-agent --config <agent.yaml> diag -o json --check LLDP-
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", f.HostNS(host), bin, "--config", procs.AgentConfig(host), "diag", "-o", "json", "--check", "LLDP-")
	out, err := cmd.Output()
	code := 0
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		code = ee.ExitCode()
	case err != nil:
		t.Fatalf("roce-agent diag: %v", err)
	}
	wantCode := 0
	if len(badRails) > 0 {
		wantCode = 2
	}
	var doc struct {
		Results []diagResult `json:"results"`
	}
	if err := json.Unmarshal(out, &doc); err != nil {
		t.Fatalf("roce-agent diag (exit %d): decode: %v\n%s\nstderr: %s", code, err, out, stderrOf(ee))
	}
	if code != wantCode {
		t.Errorf("roce-agent diag --check LLDP- exited %d, want %d:\n%s", code, wantCode, out)
	}
	failed := map[int]bool{}
	passed := map[int]bool{}
	for _, r := range doc.Results {
		if !strings.HasPrefix(r.ID, "LLDP-") {
			t.Errorf("diag --check LLDP- ran %s", r.ID)
		}
		t.Logf("diag %s rail %v %s: %s (observed %q, expected %q)", r.ID, ptrInt(r.Rail), r.Status, r.Reason, r.Observed, r.Expected)
		if r.ID != "LLDP-CABLE-001" || r.Rail == nil {
			continue
		}
		switch r.Status {
		case "FAIL":
			failed[*r.Rail] = true
		case "PASS":
			passed[*r.Rail] = true
		}
	}
	for r := 0; r < f.Rails(); r++ {
		bad := false
		for _, b := range badRails {
			bad = bad || b == r
		}
		switch {
		case bad && !failed[r]:
			t.Errorf("diag: LLDP-CABLE-001 did not fail rail %d (swapped)", r)
		case !bad && !passed[r]:
			t.Errorf("diag: LLDP-CABLE-001 did not pass rail %d", r)
		}
	}
}

func ptrInt(p *int) any {
	if p == nil {
		return "-"
	}
	return *p
}

func stderrOf(ee *exec.ExitError) string {
	if ee == nil {
		return ""
	}
	return string(ee.Stderr)
}

// diagRails runs roce-agent diag's link checks in a host's namespace and
// wants every rail to pass each of them.
func diagRails(t *testing.T, f *lab.Fabric, procs *lab.Processes, host int) {
	t.Helper()
	bin := filepath.Join(binaries(t), lab.AgentBinary)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	checks := []string{"NET-LINK-001", "ROCE-ADDR-001", "ROCE-MTU-001", "NET-ROUTE-001", "NET-SYSCTL-001"}
	// Equivalent to: ip netns exec <host ns> roce-agent --config <agent.yaml> diag -o json --check ...
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", f.HostNS(host), bin, "--config", procs.AgentConfig(host), "diag", "-o", "json", "--check", strings.Join(checks, ","))
	out, err := cmd.Output()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("roce-agent diag: %v", err)
	}
	var doc struct {
		Results []diagResult `json:"results"`
	}
	if err := json.Unmarshal(out, &doc); err != nil {
		t.Fatalf("roce-agent diag: decode: %v\n%s\nstderr: %s", err, out, stderrOf(ee))
	}
	passed := map[string]bool{}
	for _, r := range doc.Results {
		if r.Status != "PASS" {
			t.Errorf("diag %s rail %v: %s: %s (observed %q, expected %q)", r.ID, ptrInt(r.Rail), r.Status, r.Reason, r.Observed, r.Expected)
			continue
		}
		if r.Rail != nil {
			passed[fmt.Sprintf("%s/%d", r.ID, *r.Rail)] = true
		}
	}
	for _, id := range checks {
		for r := 0; r < f.Rails(); r++ {
			if !passed[fmt.Sprintf("%s/%d", id, r)] {
				t.Errorf("diag: %s did not pass rail %d of %s", id, r, f.Node(host))
			}
		}
	}
	if !t.Failed() {
		t.Logf("diag: %s on every rail of %s PASS", strings.Join(checks, ", "), f.Node(host))
	}
}
