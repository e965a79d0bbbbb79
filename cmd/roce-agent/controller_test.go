package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/roce-agent/roce-agent/agent"
	v1 "github.com/roce-agent/roce-agent/api/v1"
)

// In controller mode the file holds settings only: every desired-state key
// it (or the environment) sets is an error naming it, and nothing runs.
func TestControllerModeRefusesDesiredKeys(t *testing.T) {
	t.Setenv("ROCE_AGENT_LINK_MTU", "1500")
	cfg := writeConfig(t, "controller:\n  url: https://fabric-ctl:8443\nnode:\n  name: gpu-017\n  index: 3\ngeneration: 4\nrails:\n  - {rail: 0, ipv4: 10.0.0.1/31}\nqos: {trust: dscp}\nLink: {mtu: 9000}\naddressing: {ipv4_pools: [10.0.0.0/16]}\n")
	code, out, errOut := runCLI(t, "--config", cfg, "version")
	if code != 2 || out != "" {
		t.Errorf("exit %d, stdout %q", code, out)
	}
	for _, want := range []string{
		"invalid config " + cfg + ":\n",
		"\ngeneration: set in the config file, but controller.url is set and the controller sends the desired state; remove it",
		"\nnode.index: set in the config file",
		"\nlink: set in the config file",
		"\naddressing: set in the config file",
		"\nrails: set in the config file",
		"\nqos: set in the config file",
		"\nlink.mtu: set by ROCE_AGENT_LINK_MTU, but controller.url is set and the controller sends the desired state; unset it",
	} {
		if !strings.Contains(errOut, want) {
			t.Errorf("stderr lacks %q:\n%s", want, errOut)
		}
	}
	// node.name and the agent's settings are fine.
	os.Unsetenv("ROCE_AGENT_LINK_MTU")
	cfg = writeConfig(t, "controller:\n  url: https://fabric-ctl:8443\nnode:\n  name: gpu-017\nlog: {level: debug}\n")
	if code, _, errOut := runCLI(t, "--config", cfg, "version"); code != 0 {
		t.Errorf("settings only: exit %d: %s", code, errOut)
	}
}

// An http:// controller without insecure_http is a config error naming
// controller.url (exit 2), from the file or the environment.
func TestControllerModePlainHTTPRefused(t *testing.T) {
	cfg := writeConfig(t, "controller:\n  url: http://fabric-ctl:8080\n")
	code, _, errOut := runCLI(t, "--config", cfg, "version")
	if code != 2 || !strings.Contains(errOut, `controller.url: "http://fabric-ctl:8080" is plain HTTP: set controller.insecure_http (labs only) or use https`) {
		t.Errorf("exit %d: %s", code, errOut)
	}
	cfg = writeConfig(t, "controller:\n  url: http://fabric-ctl:8080\n  insecure_http: true\n")
	if code, _, errOut := runCLI(t, "--config", cfg, "version"); code != 0 {
		t.Errorf("with insecure_http: exit %d: %s", code, errOut)
	}
}

// plan and apply in controller mode use the last good controller config
// the daemon saved; without one they change nothing and exit 2, also with
// no config file at all (the controller named in the environment).
func TestControllerModePlanApplyNeedLastGood(t *testing.T) {
	state := t.TempDir()
	t.Setenv("ROCE_AGENT_STATE_DIR", state)
	t.Setenv("ROCE_AGENT_NODE_NAME", "gpu-017")
	t.Setenv("ROCE_AGENT_CONTROLLER_URL", "https://fabric-ctl:8443")
	t.Setenv("ROCE_AGENT_CONFIG", "")
	os.Unsetenv("ROCE_AGENT_CONFIG") // no file at all: the default path, absent here
	for _, cmd := range []string{"plan", "apply"} {
		code, out, errOut := runCLI(t, cmd, "--sysfs-root", fixture(t, "soft-roce"))
		want := "roce-agent: no desired state: controller.url is set and there is no last good controller config (" + filepath.Join(state, agent.ControllerFile) + "); " + cmd + " uses the config the daemon last accepted from the controller and does not ask the controller itself"
		if code != 2 || out != "" || !strings.Contains(errOut, want) {
			t.Errorf("%s: exit %d, stdout %q, stderr %q", cmd, code, out, errOut)
		}
	}
	if entries, _ := os.ReadDir(state); len(entries) != 0 {
		t.Errorf("state_dir has %v: something ran", entries)
	}
	// A last good config for another node is no desired state either.
	writeLastGood(t, state, "gpu-018")
	code, _, errOut := runCLI(t, "plan", "--sysfs-root", fixture(t, "soft-roce"))
	if code != 2 || !strings.Contains(errOut, "config for another node") {
		t.Errorf("another node's config: exit %d: %s", code, errOut)
	}
}

// plan in controller mode plans the last good config (read-only: the
// pinned netdev does not exist here, which plan reports as a conflict).
func TestControllerModePlanUsesLastGood(t *testing.T) {
	state := t.TempDir()
	t.Setenv("ROCE_AGENT_STATE_DIR", state)
	t.Setenv("ROCE_AGENT_NODE_NAME", "gpu-017")
	cfg := writeConfig(t, "controller:\n  url: https://fabric-ctl:8443\n")
	writeLastGood(t, state, "gpu-017")
	code, out, errOut := runCLI(t, "--config", cfg, "plan", "--sysfs-root", fixture(t, "soft-roce"), "-o", "json")
	if code != 0 || !strings.Contains(out, `"netdev": "roceagentzz0"`) || !strings.Contains(errOut, "desired state from the last good controller config") || !strings.Contains(errOut, "generation=9") {
		t.Errorf("exit %d\nstdout %s\nstderr %s", code, out, errOut)
	}
}

func writeLastGood(t *testing.T, state, node string) {
	t.Helper()
	rail := 0
	nc := v1.NodeConfig{
		Generation: 9,
		Node:       v1.NodeIdentity{Name: node},
		Link:       v1.LinkConfig{MTU: 9000, Routing: v1.RoutingConfig{TableBase: 1000, RulePriorityBase: 1000}},
		Rails:      []v1.RailConfig{{Rail: &rail, Netdev: "roceagentzz0", IPv4: "10.77.0.1/31"}},
	}
	b, err := json.Marshal(agent.LastGood{Node: node, Saved: time.Now(), Config: nc})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(state, agent.ControllerFile), b, 0o600); err != nil {
		t.Fatal(err)
	}
}
