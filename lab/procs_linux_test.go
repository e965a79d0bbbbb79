package lab

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	v1 "github.com/roce-agent/roce-agent/api/v1"
	"github.com/roce-agent/roce-agent/nic/nettest"
)

// binDir is where the end-to-end test finds roce-controller and
// roce-agent: $ROCE_LAB_BIN, else a build of this tree's commands (a
// bin/ left by an older make build would run agents that refuse the
// lab's config: the probe settings are newer).
func binDir(t *testing.T) string {
	t.Helper()
	if dir := os.Getenv("ROCE_LAB_BIN"); dir != "" {
		if err := CheckBinaries(dir); err != nil {
			t.Fatalf("ROCE_LAB_BIN: %v", err)
		}
		return dir
	}
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("end-to-end lab: no go command to build roce-agent and roce-controller (or set ROCE_LAB_BIN)")
	}
	dir := t.TempDir()
	out, err := exec.Command("go", "build", "-o", dir+"/", "../cmd/roce-agent", "../cmd/roce-controller").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return dir
}

// TestProcesses runs the controller and an agent per host in the default
// lab: every agent converges with its tenant binding, tenants are healthy,
// rails reach their tenant only, and a GPU moved with POST /v1/moves
// changes tenant on the host (agent) and on the leaves (Follow).
func TestProcesses(t *testing.T) {
	nettest.RequireRoot(t)
	bin := binDir(t)
	f := newTestLab(t, Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	t0 := time.Now()
	p, err := f.Start(ctx, ProcessOptions{BinDir: bin})
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		if err := p.Stop(); err != nil {
			t.Errorf("Stop: %v", err)
		}
	})
	wctx, wcancel := context.WithTimeout(ctx, time.Minute)
	defer wcancel()
	if err := p.WaitConverged(wctx); err != nil {
		t.Fatalf("WaitConverged: %v\ncontroller log:\n%s", err, tail(p.LogFile("controller"), 10))
	}
	t.Logf("controller and %d agents converged %v after Start", f.Hosts(), time.Since(t0).Round(time.Millisecond))
	for _, tn := range f.Plan().Tenants {
		th, err := p.TenantHealth(ctx, tn.ID)
		if err != nil {
			t.Fatalf("health of %s: %v", tn.ID, err)
		}
		if th.Total == 0 || th.Healthy != th.Total {
			t.Errorf("%s: %d of %d rails healthy", tn.ID, th.Healthy, th.Total)
		}
	}
	// The agents' endpoint on the management network.
	resp, err := (&http.Client{Transport: &http.Transport{DialContext: f.DialContext}, Timeout: 5 * time.Second}).Get(p.AgentURL(1) + "/metrics")
	if err != nil {
		t.Fatalf("metrics of gpu-01: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !bytes.Contains(body, []byte("roce_agent_")) {
		t.Errorf("metrics of gpu-01: %d, %d bytes", resp.StatusCode, len(body))
	}
	for h := 0; h < f.Hosts(); h++ {
		if err := f.WaitRailsUp(h, 5*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	// The agents configured the rails: tenants reach their own only.
	reach(t, f, 0, 0, 2, true)
	reach(t, f, 1, 3, 3, true)
	reach(t, f, 0, 0, 1, false)
	reach(t, f, 1, 0, 2, false)

	// Move GPU 0 of gpu-01 to tenant-a; the leaves follow the controller.
	fctx, fcancel := context.WithCancel(ctx)
	defer fcancel()
	go p.Follow(fctx, 200*time.Millisecond)
	move, _ := json.Marshal(v1.Move{Node: "gpu-01", GPUs: []int{0}, Tenant: "tenant-a"})
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, p.ControllerURL()+"/v1/moves", bytes.NewReader(move))
	req.Header.Set("Content-Type", "application/json")
	resp, err = p.AdminClient().Do(req)
	if err != nil {
		t.Fatalf("POST /v1/moves: %v", err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("POST /v1/moves: %d %s", resp.StatusCode, body)
	}
	t1 := time.Now()
	deadline := time.Now().Add(30 * time.Second)
	for f.Rail(1, 0).Tenant != "tenant-a" {
		if time.Now().After(deadline) {
			t.Fatal("the leaves did not follow the move")
		}
		time.Sleep(50 * time.Millisecond)
	}
	wctx2, wcancel2 := context.WithTimeout(ctx, 30*time.Second)
	defer wcancel2()
	if err := p.WaitConverged(wctx2); err != nil {
		t.Fatalf("WaitConverged after the move: %v", err)
	}
	t.Logf("move applied by the leaves and the agent %v after POST /v1/moves", time.Since(t1).Round(time.Millisecond))
	if err := f.WaitRailsUp(1, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	reach(t, f, 1, 0, 2, true)
	reach(t, f, 1, 0, 0, true)
	reach(t, f, 1, 0, 3, false)
	if g := p.Guide(); !strings.Contains(g, p.ControllerURL()+"/v1/tenants/tenant-a/health") || !strings.Contains(g, f.HostNS(0)) || !strings.Contains(g, "probe --peer") {
		t.Errorf("guide:\n%s", g)
	}
}
