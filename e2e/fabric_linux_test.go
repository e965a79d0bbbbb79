package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	v1 "github.com/roce-agent/roce-agent/api/v1"
	"github.com/roce-agent/roce-agent/lab"
)

// TestFabric runs the default lab (4 hosts x 8 rails, 2 leaves, tenants
// in both isolation modes) with the built controller and agents, and
// walks it through what a fabric lives through: convergence, isolation in
// the data path, the agents' peer probes (fake tools, over the rails), a
// GPU moved between tenants (and its probe pairs with it), a controller
// outage, an agent killed mid-apply, a controller that answers garbage.
func TestFabric(t *testing.T) {
	f, procs := startLab(t, "e2f-", lab.Options{}, lab.ProcessOptions{})
	plan := f.Plan()

	t.Run("converged and bound", func(t *testing.T) {
		var nodes v1.NodeList
		why := eventually(30*time.Second, func() string {
			if err := admin(t, procs, "GET", "/v1/nodes", nil, &nodes); err != nil {
				return err.Error()
			}
			for _, n := range nodes.Nodes {
				if !n.Alive || n.AppliedGeneration != n.ConfigGeneration || n.Reported == nil {
					return fmt.Sprintf("%s: alive %v, applied generation %d of %d, reported %v", n.Name, n.Alive, n.AppliedGeneration, n.ConfigGeneration, n.Reported)
				}
			}
			return ""
		})
		if why != "" {
			t.Fatal(why)
		}
		if len(nodes.Nodes) != f.Hosts() {
			t.Fatalf("%d nodes listed, want %d", len(nodes.Nodes), f.Hosts())
		}
		for _, tenant := range plan.Tenants {
			var th v1.TenantHealth
			why := eventually(30*time.Second, func() string {
				var err error
				if th, err = procs.TenantHealth(context.Background(), tenant.ID); err != nil {
					return err.Error()
				}
				if th.Healthy != th.Total || th.Total == 0 {
					return fmt.Sprintf("%s: %d of %d rails healthy: %+v", tenant.ID, th.Healthy, th.Total, th.Rails)
				}
				return ""
			})
			if why != "" {
				t.Fatal(why)
			}
			want := 0
			for _, m := range tenant.Members {
				if len(m.GPUs) == 0 {
					want += plan.Rails
				}
				want += len(m.GPUs)
			}
			if th.Total != want {
				t.Errorf("%s: %d rails in health, the plan has %d", tenant.ID, th.Total, want)
			}
			for _, r := range th.Rails {
				if !r.Bound || !r.Alive || r.LastHeartbeat == nil {
					t.Errorf("%s: %s rail %d: bound %v alive %v heartbeat %v", tenant.ID, r.Node, r.Rail, r.Bound, r.Alive, r.LastHeartbeat)
				}
			}
		}
		// Each agent says, on its own endpoint, which tenant each rail is in.
		for h := 0; h < f.Hosts(); h++ {
			st, err := procs.AgentStatus(context.Background(), h)
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range st.Rails {
				want := f.Rail(h, r.Rail).Tenant
				got := ""
				if r.Tenant != nil {
					got = r.Tenant.ID
				}
				if got != want {
					t.Errorf("%s rail %d reports tenant %q, want %q", f.Node(h), r.Rail, got, want)
				}
			}
			if c := condition(st.Conditions, v1.ConditionControllerConnected); c.Status != v1.StatusTrue {
				t.Errorf("%s: ControllerConnected %s (%s)", f.Node(h), c.Status, c.Reason)
			}
		}
	})

	t.Run("isolation in the data path", func(t *testing.T) {
		checkIsolation(t, f)
	})

	t.Run("probes: tenant pairs pass over the rails, outsiders refused", func(t *testing.T) {
		testProbes(t, f, procs)
	})

	t.Run("GPU moved: binding and peers follow, no address change, no flap", func(t *testing.T) {
		// GPU 4 of gpu-01 (tenant-c) joins tenant-a (gpu-00 and gpu-02).
		watch := watchFlaps(t, f, 1)
		before := railAddrs(t, f, 1)
		var res v1.MoveResult
		t0 := time.Now()
		if err := admin(t, procs, "POST", "/v1/moves", v1.Move{Node: "gpu-01", GPUs: []int{4}, Tenant: "tenant-a"}, &res); err != nil {
			t.Fatal(err)
		}
		for _, n := range []string{"gpu-00", "gpu-01", "gpu-02", "gpu-03"} {
			if !slices.Contains(res.ChangedNodes, n) {
				t.Errorf("move result %v lacks %s (its rail 4 peers change)", res.ChangedNodes, n)
			}
		}
		why := eventually(10*time.Second, func() string {
			st, err := procs.AgentStatus(context.Background(), 1)
			if err != nil {
				return err.Error()
			}
			for _, r := range st.Rails {
				if r.Rail == 4 && (r.Tenant == nil || r.Tenant.ID != "tenant-a") {
					return fmt.Sprintf("gpu-01 rail 4 reports %+v", r.Tenant)
				}
			}
			return ""
		})
		if why != "" {
			t.Fatal(why)
		}
		t.Logf("gpu-01 reported the new binding %s after the move", time.Since(t0).Round(time.Millisecond))
		// Peers as the agents hold them (their last good config on disk).
		peers := func(host, rail int) []string {
			c := agentConfig(t, f, host)
			for _, r := range c.Rails {
				if r.Rail != nil && *r.Rail == rail {
					var out []string
					for _, p := range r.Peers {
						out = append(out, p.Node)
					}
					slices.Sort(out)
					return out
				}
			}
			return nil
		}
		why = eventually(10*time.Second, func() string {
			if got := peers(1, 4); !slices.Equal(got, []string{"gpu-00", "gpu-02"}) {
				return fmt.Sprintf("gpu-01 rail 4 peers %v", got)
			}
			if got := peers(0, 4); !slices.Equal(got, []string{"gpu-01", "gpu-02"}) {
				return fmt.Sprintf("gpu-00 rail 4 peers %v", got)
			}
			if got := peers(3, 4); len(got) != 0 {
				return fmt.Sprintf("gpu-03 rail 4 peers %v, want none (tenant-c lost gpu-01 on rail 4)", got)
			}
			return ""
		})
		if why != "" {
			t.Error(why)
		}
		time.Sleep(time.Second) // let any late change show
		if ev := watch.Stop(); len(ev) > 0 {
			t.Errorf("the move changed the host: %v", ev)
		}
		if after := railAddrs(t, f, 1); !slices.Equal(before, after) {
			t.Errorf("addresses changed: %v -> %v", before, after)
		}
		// The fabric moves the leaf port; the data path follows.
		newPlan, err := procs.ControllerPlan(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if err := f.Sync(newPlan); err != nil {
			t.Fatal(err)
		}
		if got := f.Rail(1, 4).Tenant; got != "tenant-a" {
			t.Fatalf("lab rail tenant %q after sync", got)
		}
		checkIsolation(t, f)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := procs.WaitConverged(ctx); err != nil {
			t.Fatal(err)
		}
		if after := railAddrs(t, f, 1); !slices.Equal(before, after) {
			t.Errorf("addresses changed after the leaf port moved: %v -> %v", before, after)
		}
	})

	t.Run("controller away: agents run on the last good config and reconnect", func(t *testing.T) {
		outage := time.Minute
		if s := os.Getenv("E2E_OUTAGE"); s != "" {
			d, err := time.ParseDuration(s)
			if err != nil {
				t.Fatalf("E2E_OUTAGE: %v", err)
			}
			outage = d
		}
		if err := procs.Kill("controller", syscall.SIGTERM, 20*time.Second); err != nil {
			t.Fatal(err)
		}
		down := time.Now()
		why := eventually(30*time.Second, func() string {
			for h := 0; h < f.Hosts(); h++ {
				st, err := procs.AgentStatus(context.Background(), h)
				if err != nil {
					return err.Error()
				}
				if c := condition(st.Conditions, v1.ConditionControllerConnected); c.Status != v1.StatusFalse {
					return fmt.Sprintf("%s: ControllerConnected %s", f.Node(h), c.Status)
				}
			}
			return ""
		})
		if why != "" {
			t.Error(why)
		}
		// Drift is still repaired, from the last good config.
		r := f.Rail(2, 3)
		if out, err := runIn(r.HostNS, "ip", "address", "del", r.HostIPv4.String(), "dev", r.Netdev); err != nil {
			t.Fatalf("delete address: %v: %s", err, out)
		}
		why = eventually(10*time.Second, func() string {
			if !slices.Contains(railAddrs(t, f, 2), r.HostIPv4.String()) {
				return "address not restored"
			}
			return ""
		})
		if why != "" {
			t.Error("during the outage:", why)
		}
		time.Sleep(time.Until(down.Add(outage)))
		for h := 0; h < f.Hosts(); h++ {
			if _, err := procs.PID(f.Node(h)); err != nil {
				t.Fatal(err)
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		if err := procs.WaitConverged(ctx); err == nil {
			t.Fatal("WaitConverged passed with the controller down")
		} else if !strings.Contains(err.Error(), "ControllerConnected") {
			t.Logf("while down: %v", err)
		}
		away := time.Since(down)
		if err := procs.Restart("controller"); err != nil {
			t.Fatal(err)
		}
		up := time.Now()
		ctx2, cancel2 := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel2()
		if err := procs.WaitConverged(ctx2); err != nil {
			t.Fatal(err)
		}
		t.Logf("after %s away, every agent reconnected %s after the controller was restarted", away.Round(time.Second), time.Since(up).Round(time.Millisecond))
	})

	// After the outage (a minute of rounds since the move): the probes
	// followed the moved GPU.
	t.Run("probes: the moved GPU's pairs join tenant-a and leave tenant-c", func(t *testing.T) {
		testProbesAfterMove(t, f, procs)
	})

	t.Run("agent killed mid-apply converges without flap", func(t *testing.T) {
		host := 3
		node := f.Node(host)
		if err := procs.Kill(node, syscall.SIGKILL, 5*time.Second); err != nil {
			t.Fatal(err)
		}
		// A bare host again: rails down, no addresses.
		for _, dev := range f.Netdevs(host) {
			runIn(f.HostNS(host), "ip", "link", "set", dev, "down")
			runIn(f.HostNS(host), "ip", "address", "flush", "dev", dev, "scope", "global")
		}
		// Kill it at the first address it adds (netlink event): mid-apply.
		first := firstAddrEvent(t, f, host)
		if err := procs.Restart(node); err != nil {
			t.Fatal(err)
		}
		select {
		case <-first:
		case <-time.After(30 * time.Second):
			t.Fatal("the restarted agent added no address in 30s")
		}
		if err := procs.Kill(node, syscall.SIGKILL, 5*time.Second); err != nil {
			t.Fatal(err)
		}
		partial := railAddrs(t, f, host)
		watch := watchFlaps(t, f, host)
		if err := procs.Restart(node); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := procs.WaitConverged(ctx); err != nil {
			t.Fatal(err)
		}
		time.Sleep(500 * time.Millisecond)
		ev := watch.Stop()
		for _, e := range ev {
			if !strings.HasPrefix(e, "added ") {
				t.Errorf("after the restart: %s", e)
			}
		}
		t.Logf("killed with %d of %d addresses in place; the restart added %d and removed nothing", len(partial), 2*f.Rails(), len(ev))
	})

	t.Run("controller answering garbage: rejected, last good kept", func(t *testing.T) {
		testHostileController(t, f, procs, 2)
	})
}

// checkIsolation pings, from every rail of every host, the same rail of
// every other host: it must answer within the tenant and not across.
func checkIsolation(t *testing.T, f *lab.Fabric) {
	t.Helper()
	ok, blocked := 0, 0
	for a := 0; a < f.Hosts(); a++ {
		for b := 0; b < f.Hosts(); b++ {
			if a == b {
				continue
			}
			for _, rail := range []int{0, 4} {
				ra, rb := f.Rail(a, rail), f.Rail(b, rail)
				same := ra.Tenant != "" && ra.Tenant == rb.Tenant
				for _, dst := range []netip.Addr{rb.HostIPv4.Addr(), rb.HostIPv6.Addr()} {
					err := pingRetry(f, a, rail, dst, same)
					switch {
					case same && err != nil:
						t.Errorf("%s rail %d (%s) -> %s rail %d (%s) %s: %v", ra.Node, rail, ra.Tenant, rb.Node, rail, rb.Tenant, dst, err)
					case !same && err == nil:
						t.Errorf("%s rail %d (%s) reached %s rail %d (%s) at %s across tenants", ra.Node, rail, ra.Tenant, rb.Node, rail, rb.Tenant, dst)
					case same:
						ok++
					default:
						blocked++
					}
				}
			}
		}
	}
	t.Logf("%d pings within tenants answered (crossing leaves included), %d across tenants blocked", ok, blocked)
}

// pingRetry tries a few times when a ping should work (a fresh IPv6
// neighbour may take a second), once when it should not.
func pingRetry(f *lab.Fabric, host, rail int, dst netip.Addr, want bool) error {
	tries := 1
	if want {
		tries = 4
	}
	var err error
	for i := 0; i < tries; i++ {
		if err = f.Ping(host, rail, dst); err == nil {
			return nil
		}
	}
	return err
}

func runIn(ns string, args ...string) (string, error) {
	out, err := execCommand("ip", append([]string{"netns", "exec", ns}, args...)...)
	return out, err
}

// railAddrs lists a host's global rail addresses, sorted.
func railAddrs(t *testing.T, f *lab.Fabric, host int) []string {
	t.Helper()
	var out []string
	for _, dev := range f.Netdevs(host) {
		o, err := runIn(f.HostNS(host), "ip", "-o", "address", "show", "dev", dev, "scope", "global")
		if err != nil {
			t.Fatalf("list addresses: %v", err)
		}
		for _, line := range strings.Split(o, "\n") {
			fs := strings.Fields(line)
			for i := 0; i+1 < len(fs); i++ {
				if fs[i] == "inet" || fs[i] == "inet6" {
					out = append(out, fs[i+1])
				}
			}
		}
	}
	slices.Sort(out)
	return out
}

// agentConfig is the last good config an agent holds on disk.
func agentConfig(t *testing.T, f *lab.Fabric, host int) v1.NodeConfig {
	t.Helper()
	path := filepath.Join(f.WorkDir(), "hosts", f.Node(host), "state", "controller-config.json")
	c, err := readLastGood(path)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return c
}
