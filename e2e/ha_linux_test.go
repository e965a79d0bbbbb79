package e2e

import (
	"fmt"
	"syscall"
	"testing"
	"time"

	v1 "github.com/roce-agent/roce-agent/api/v1"
	"github.com/roce-agent/roce-agent/lab"
)

// TestControllerHA runs three etcd members and two controller replicas;
// the agents list both replicas. One replica and one etcd member are
// killed: the agents keep reporting (to the other replica, through the
// remaining quorum) and a tenant move made there still reaches them.
func TestControllerHA(t *testing.T) {
	_, procs := startLab(t, "e2h-", lab.Options{}, lab.ProcessOptions{EtcdMembers: 3, Replicas: 2})
	urls := procs.ControllerURLs()
	if len(urls) != 2 {
		t.Fatalf("replicas %v", urls)
	}
	for _, name := range []string{"controller", "etcd-0"} {
		if err := procs.Kill(name, syscall.SIGKILL, 5*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	killed := time.Now()
	// Every node heartbeats through the surviving replica.
	why := eventually(90*time.Second, func() string {
		var nodes v1.NodeList
		if err := adminAt(t, procs, urls[1], "GET", "/v1/nodes", nil, &nodes); err != nil {
			return err.Error()
		}
		for _, n := range nodes.Nodes {
			if !n.Alive || n.LastHeartbeat == nil || n.LastHeartbeat.Before(killed) {
				return fmt.Sprintf("%s: alive %v, last heartbeat %v (killed at %s)", n.Name, n.Alive, n.LastHeartbeat, killed.Format(time.TimeOnly))
			}
		}
		return ""
	})
	if why != "" {
		t.Fatal(why)
	}
	t.Logf("every agent heartbeating through replica 2 %s after replica 1 and etcd member 1 were killed", time.Since(killed).Round(time.Millisecond))
	// A move through the surviving replica reaches the agent.
	moved := time.Now()
	if err := adminAt(t, procs, urls[1], "POST", "/v1/moves", v1.Move{Node: "gpu-03", GPUs: []int{0}, Tenant: "tenant-a"}, nil); err != nil {
		t.Fatal(err)
	}
	why = eventually(60*time.Second, func() string {
		st, err := procs.AgentStatus(t.Context(), 3)
		if err != nil {
			return err.Error()
		}
		for _, r := range st.Rails {
			if r.Rail == 0 && (r.Tenant == nil || r.Tenant.ID != "tenant-a") {
				return fmt.Sprintf("gpu-03 rail 0 reports %+v", r.Tenant)
			}
		}
		return ""
	})
	if why != "" {
		t.Fatal(why)
	}
	t.Logf("the move through replica 2 reached gpu-03 in %s", time.Since(moved).Round(time.Millisecond))
	// Its status reached the controller too.
	why = eventually(30*time.Second, func() string {
		var th v1.TenantHealth
		if err := adminAt(t, procs, urls[1], "GET", "/v1/tenants/tenant-a/health", nil, &th); err != nil {
			return err.Error()
		}
		for _, r := range th.Rails {
			if r.Node == "gpu-03" && r.Rail == 0 {
				if !r.Bound {
					return "gpu-03 rail 0 not bound to tenant-a in the controller's view yet"
				}
				return ""
			}
		}
		return "gpu-03 rail 0 not in tenant-a's health"
	})
	if why != "" {
		t.Error(why)
	}
}
