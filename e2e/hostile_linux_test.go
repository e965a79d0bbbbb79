package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netns"

	v1 "github.com/roce-agent/roce-agent/api/v1"
	"github.com/roce-agent/roce-agent/lab"
)

func execCommand(name string, args ...string) (string, error) {
	out, err := exec.Command(name, args...).CombinedOutput()
	return string(out), err
}

// readLastGood reads an agent's persisted last good controller config.
func readLastGood(path string) (v1.NodeConfig, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return v1.NodeConfig{}, err
	}
	var lg struct {
		Node   string        `json:"node"`
		Config v1.NodeConfig `json:"config"`
	}
	if err := json.Unmarshal(data, &lg); err != nil {
		return v1.NodeConfig{}, err
	}
	return lg.Config, nil
}

// listenIn opens a TCP listener in a named network namespace.
func listenIn(nsName, addr string) (net.Listener, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		return nil, err
	}
	defer orig.Close()
	target, err := netns.GetFromName(nsName)
	if err != nil {
		return nil, err
	}
	defer target.Close()
	if err := netns.Set(target); err != nil {
		return nil, err
	}
	l, lerr := net.Listen("tcp", addr)
	if err := netns.Set(orig); err != nil {
		panic(fmt.Sprintf("restore the thread's namespace: %v", err))
	}
	return l, lerr
}

// hostileModes are the bad answers the fake controller cycles through.
var hostileModes = []string{"garbage", "http 500", "huge body", "another node's config", "invalid config", "no desired state"}

// testHostileController restarts one agent against a fake controller
// that answers every config request with something bad, and checks that
// the agent keeps its last good config (no change on the host), says it
// is not connected and counts the rejections; then it puts the agent back.
func testHostileController(t *testing.T, f *lab.Fabric, procs *lab.Processes, host int) {
	node := f.Node(host)
	good := agentConfig(t, f, host)
	other := agentConfig(t, f, (host+1)%f.Hosts())
	invalid := good
	invalid.Generation = good.Generation + 100
	invalid.Link.MTU = 1
	empty := v1.NodeConfig{Generation: good.Generation + 200, Node: good.Node}
	other.Generation = good.Generation + 300

	var mu sync.Mutex
	served := map[string]int{}
	n := 0
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/nodes/{node}/config", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		mode := hostileModes[n%len(hostileModes)]
		n++
		served[mode]++
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("ETag", fmt.Sprintf(`"hostile-%d"`, n))
		switch mode {
		case "garbage":
			io.WriteString(w, `{"generation": 7, "node": {"name": "`+node+`"}, "rails": [{"rail": 0, "ipv4": "10.0.0.1/31"`)
		case "http 500":
			http.Error(w, "internal error", http.StatusInternalServerError)
		case "huge body":
			w.Write([]byte(`{"generation": 8, "pad": "`))
			w.Write(bytes.Repeat([]byte("x"), 9<<20))
			w.Write([]byte(`"}`))
		case "another node's config":
			json.NewEncoder(w).Encode(other)
		case "invalid config":
			json.NewEncoder(w).Encode(invalid)
		case "no desired state":
			json.NewEncoder(w).Encode(empty)
		}
	})
	mux.HandleFunc("PUT /v1/nodes/{node}/{what}", func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusNoContent)
	})
	addr := net.JoinHostPort(f.ControllerAddr().String(), "8444")
	l, err := listenIn(f.MgmtNS(), addr)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: mux, ErrorLog: nil}
	go srv.ServeTLS(l, procs.Certs().ServerCert, procs.Certs().ServerKey)
	defer srv.Close()

	cfgPath := procs.AgentConfig(host)
	orig, err := os.ReadFile(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	hostile := strings.Replace(string(orig), procs.ControllerURL(), "https://"+addr, 1)
	if hostile == string(orig) {
		t.Fatalf("controller url %s not in %s", procs.ControllerURL(), cfgPath)
	}
	before := railAddrs(t, f, host)
	if err := procs.Kill(node, syscall.SIGTERM, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfgPath, []byte(hostile), 0o600); err != nil {
		t.Fatal(err)
	}
	watch := watchFlaps(t, f, host)
	if err := procs.Restart(node); err != nil {
		t.Fatal(err)
	}
	why := eventually(90*time.Second, func() string {
		mu.Lock()
		defer mu.Unlock()
		for _, m := range hostileModes {
			if served[m] == 0 {
				return fmt.Sprintf("fake controller has not served %q yet (served %v)", m, served)
			}
		}
		return ""
	})
	if why != "" {
		t.Error(why)
	}
	st, err := procs.AgentStatus(t.Context(), host)
	if err != nil {
		t.Fatal(err)
	}
	if c := condition(st.Conditions, v1.ConditionControllerConnected); c.Status != v1.StatusFalse {
		t.Errorf("ControllerConnected %s (%s), want False", c.Status, c.Reason)
	}
	if st.AppliedGeneration != good.Generation {
		t.Errorf("applied generation %d, want the last good %d", st.AppliedGeneration, good.Generation)
	}
	if got := agentConfig(t, f, host); got.Generation != good.Generation {
		t.Errorf("last good config replaced: generation %d, want %d", got.Generation, good.Generation)
	}
	metrics, err := httpGet(f, procs.AgentURL(host)+"/metrics")
	if err != nil {
		t.Fatal(err)
	}
	rejected := 0.0
	for _, line := range strings.Split(metrics, "\n") {
		if strings.HasPrefix(line, "roce_agent_controller_config_rejected_total{") {
			var v float64
			fmt.Sscan(line[strings.LastIndexByte(line, ' ')+1:], &v)
			rejected += v
		}
	}
	if rejected < 3 {
		t.Errorf("roce_agent_controller_config_rejected_total sums to %v, want at least 3 (another node, invalid, empty)", rejected)
	}
	if ev := watch.Stop(); len(ev) > 0 {
		t.Errorf("the hostile controller changed the host: %v", ev)
	}
	if after := railAddrs(t, f, host); !slicesEqual(before, after) {
		t.Errorf("addresses changed: %v -> %v", before, after)
	}
	mu.Lock()
	t.Logf("fake controller served %v; the agent rejected %v configs and kept generation %d", served, rejected, good.Generation)
	mu.Unlock()

	// Back to the real controller.
	if err := procs.Kill(node, syscall.SIGTERM, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfgPath, orig, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := procs.Restart(node); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := contextTimeout(time.Minute)
	defer cancel()
	if err := procs.WaitConverged(ctx); err != nil {
		t.Fatal(err)
	}
}

func slicesEqual(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// httpGet fetches a URL from the management namespace.
func httpGet(f *lab.Fabric, url string) (string, error) {
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: f.DialContext}}
	resp, err := c.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		return "", fmt.Errorf("GET %s: HTTP %d", url, resp.StatusCode)
	}
	return string(b), err
}
