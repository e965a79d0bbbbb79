package main

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/roce-agent/roce-agent/agent"
	v1 "github.com/roce-agent/roce-agent/api/v1"
	"github.com/roce-agent/roce-agent/nic/nettest"
)

// labController is a minimal controller for the lab: it serves lab-host's
// config (long-polling on If-None-Match with wait) and keeps the statuses
// and heartbeats it is sent. It listens inside the lab's host namespace,
// where the daemon runs.
type labController struct {
	mu       sync.Mutex
	cfg      v1.NodeConfig
	changed  chan struct{}
	statuses []v1.NodeStatus
	leases   []v1.Heartbeat
	srv      *http.Server
	url      string
}

func labNodeConfig(gen int64, mtu int) v1.NodeConfig {
	nc := v1.NodeConfig{
		Generation: gen,
		Node:       v1.NodeIdentity{Name: "lab-host"},
		Link:       v1.LinkConfig{MTU: mtu, Routes: []string{"10.200.0.0/16", "fc00:200::/64"}, Routing: v1.RoutingConfig{TableBase: 1000, RulePriorityBase: 1000}},
	}
	for n := 0; n < 8; n++ {
		rail := n
		nc.Rails = append(nc.Rails, v1.RailConfig{Rail: &rail, Netdev: fmt.Sprintf("rail%d", n), IPv4: nettest.HostIPv4(n), IPv6: nettest.HostIPv6(n)})
	}
	return nc
}

func startLabController(t *testing.T, lab *nettest.Lab, nc v1.NodeConfig) *labController {
	t.Helper()
	c := &labController{cfg: nc, changed: make(chan struct{})}
	var ln net.Listener
	var err error
	inNS(t, lab.Host, func() { ln, err = net.Listen("tcp", "127.0.0.1:0") })
	if err != nil {
		t.Fatal(err)
	}
	c.url = "http://" + ln.Addr().String()
	c.srv = &http.Server{Handler: c}
	go func() { _ = c.srv.Serve(ln) }()
	t.Cleanup(func() { _ = c.srv.Close() })
	return c
}

func (c *labController) set(nc v1.NodeConfig) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.cfg = nc
	close(c.changed)
	c.changed = make(chan struct{})
}

func (c *labController) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.Method + " " + r.URL.Path {
	case "GET /v1/nodes/lab-host/config":
		c.mu.Lock()
		cfg, changed := c.cfg, c.changed
		c.mu.Unlock()
		etag := fmt.Sprintf(`"g%d"`, cfg.Generation)
		if r.Header.Get("If-None-Match") == etag {
			wait, _ := time.ParseDuration(r.URL.Query().Get("wait"))
			select {
			case <-changed:
				c.mu.Lock()
				cfg = c.cfg
				c.mu.Unlock()
				etag = fmt.Sprintf(`"g%d"`, cfg.Generation)
			case <-time.After(wait):
				w.WriteHeader(http.StatusNotModified)
				return
			case <-r.Context().Done():
				return
			}
		}
		w.Header().Set("ETag", etag)
		_ = json.NewEncoder(w).Encode(cfg)
	case "PUT /v1/nodes/lab-host/status":
		var st v1.NodeStatus
		if err := json.NewDecoder(r.Body).Decode(&st); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		c.mu.Lock()
		c.statuses = append(c.statuses, st)
		c.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	case "PUT /v1/nodes/lab-host/lease":
		var hb v1.Heartbeat
		if err := json.NewDecoder(r.Body).Decode(&hb); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		c.mu.Lock()
		c.leases = append(c.leases, hb)
		c.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	default:
		http.NotFound(w, r)
	}
}

// reported: a status with applied_generation gen and ControllerConnected
// True reached the controller.
func (c *labController) reported(gen int64) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, st := range c.statuses {
		if st.AppliedGeneration != gen {
			continue
		}
		for _, cond := range st.Conditions {
			if cond.Type == v1.ConditionControllerConnected && cond.Status == v1.StatusTrue {
				return true
			}
		}
	}
	return false
}

// TestRunWithController runs the built daemon in controller mode: it
// converges the lab from the controller's config, applies a new
// generation pushed through the long-poll, reports its status and
// heartbeat; restarted with the controller gone it runs on the last good
// config, and with neither it changes nothing and is not ready.
func TestRunWithController(t *testing.T) {
	nettest.RequireRoot(t)
	lab := nettest.NewLab(t, 8)
	ctl := startLabController(t, lab, labNodeConfig(1, 9000))
	state := t.TempDir()
	settings := writeConfig(t, fmt.Sprintf("node: {name: lab-host}\nstate_dir: %s\ncontroller: {url: %q, insecure_http: true, heartbeat_interval: 1s}\n", state, ctl.url))
	rail1 := func() string { return lab.Host.MustExec(t, "ip", "-o", "address", "show", "dev", "rail1") }
	mtu := func() string { return lab.Host.MustExec(t, "ip", "-o", "link", "show", "dev", "rail1") }

	cmd, sd, logs := startDaemon(t, lab, nil, "--config", settings, "--log-format", "json", "run")
	if !strings.Contains(rail1(), "10.0.1.1/31") {
		t.Fatalf("rail1 not configured from the controller:\n%s", logs.String())
	}
	waitFor(t, "generation 1 reported", func() bool { return ctl.reported(1) })
	ctl.set(labNodeConfig(2, 8000))
	waitFor(t, "mtu 8000", func() bool { return strings.Contains(mtu(), "mtu 8000") })
	waitFor(t, "generation 2 reported", func() bool { return ctl.reported(2) })
	waitFor(t, "a heartbeat with generation 2", func() bool {
		ctl.mu.Lock()
		defer ctl.mu.Unlock()
		return len(ctl.leases) > 0 && ctl.leases[len(ctl.leases)-1].AppliedGeneration == 2
	})
	if sd.Count("RELOADING=1") == 0 {
		t.Error("a new generation was not applied as a reload")
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Errorf("exit after SIGTERM: %v\n%s", err, logs.String())
	}
	if _, err := os.Stat(filepath.Join(state, agent.ControllerFile)); err != nil {
		t.Fatalf("no last good config: %v", err)
	}

	// The controller gone: the last good config (mtu 8000) is used.
	_ = ctl.srv.Close()
	lab.Host.MustExec(t, "ip", "link", "set", "dev", "rail1", "mtu", "9000")
	cmd, _, logs = startDaemon(t, lab, nil, "--config", settings, "--log-format", "json", "run")
	waitFor(t, "mtu 8000 from the last good config", func() bool { return strings.Contains(mtu(), "mtu 8000") })
	if !strings.Contains(logs.String(), "UsingLastGood") {
		t.Errorf("no UsingLastGood in the log:\n%s", logs.String())
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	_ = cmd.Wait()

	// Neither: nothing changes, not ready.
	if err := os.Remove(filepath.Join(state, agent.ControllerFile)); err != nil {
		t.Fatal(err)
	}
	lab.Host.MustExec(t, "ip", "address", "flush", "dev", "rail1")
	sd2 := nettest.NewSystemd(t)
	c := startBare(t, lab, sd2, "--config", settings, "run")
	time.Sleep(time.Second)
	if sd2.Count("READY=1") != 0 {
		t.Error("READY=1 without a desired state")
	}
	if strings.Contains(rail1(), "10.0.1.1/31") {
		t.Error("the daemon changed the host without a desired state")
	}
	_ = c.Process.Signal(syscall.SIGTERM)
	if err := c.Wait(); err != nil {
		t.Errorf("exit after SIGTERM while waiting: %v", err)
	}
}

// startBare runs the daemon like startDaemon without waiting for READY=1.
func startBare(t *testing.T, lab *nettest.Lab, sd *nettest.Systemd, args ...string) *exec.Cmd {
	t.Helper()
	argv := append([]string{"netns", "exec", lab.Host.Name, binary(t)}, args...)
	cmd := exec.Command("ip", argv...)
	cmd.Env = append(cleanEnv(), "NOTIFY_SOCKET="+sd.Socket)
	cmd.Stderr = &lockedBuffer{}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	return cmd
}
