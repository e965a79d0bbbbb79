package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

const placeholder = "@SYSFS_ROOT@"

func fixture(t *testing.T, host string) string {
	t.Helper()
	p, err := filepath.Abs(filepath.Join("..", "..", "testdata", "sysfs", host, "sys"))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func golden(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "testdata", "golden", "inventory", name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func runCLI(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code := run(args, &out, &errOut)
	return code, out.String(), errOut.String()
}

func writeConfig(t testing.TB, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestInventoryMatchesGolden(t *testing.T) {
	t.Setenv("ROCE_AGENT_NODE_NAME", "gpu-017")
	for _, host := range []string{"dgx-h100", "mixed-vendor", "soft-roce", "empty"} {
		root := fixture(t, host)
		for _, format := range []string{"json", "table"} {
			code, out, errOut := runCLI(t, "inventory", "--sysfs-root", root, "--output", format)
			if code != 0 {
				t.Fatalf("%s %s: exit %d: %s", host, format, code, errOut)
			}
			ext := map[string]string{"json": ".json", "table": ".txt"}[format]
			if got, want := strings.ReplaceAll(out, root, placeholder), golden(t, host+ext); got != want {
				t.Errorf("%s %s output differs from golden:\n%s", host, format, got)
			}
		}
	}
}

func TestConfigPinsRails(t *testing.T) {
	cfg := writeConfig(t, "node:\n  name: gpu-017\nrails:\n  - rail: 0\n    netdev: vethA\n  - rail: 1\n    rdma_device: rxe1\n")
	root := fixture(t, "soft-roce")
	code, out, errOut := runCLI(t, "--config", cfg, "inventory", "--sysfs-root", root, "-o", "json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	if got, want := strings.ReplaceAll(out, root, placeholder), golden(t, "soft-roce-pinned.json"); got != want {
		t.Errorf("pinned output differs from golden:\n%s", got)
	}
}

func TestErrors(t *testing.T) {
	soft := fixture(t, "soft-roce")
	missing := filepath.Join(t.TempDir(), "no-such-dir")
	for _, tc := range []struct {
		name string
		env  map[string]string
		cfg  string
		args []string
		code int
		want []string
	}{
		{name: "missing sysfs root", args: []string{"inventory", "--sysfs-root", missing}, code: 1,
			want: []string{"roce-agent: sysfs root " + missing + ": stat " + missing + ": no such file or directory\n"}},
		{name: "not a sysfs tree", args: []string{"inventory", "--sysfs-root", "/etc"}, code: 1,
			want: []string{"roce-agent: sysfs root /etc: not a sysfs tree"}},
		{name: "bad output", args: []string{"inventory", "-o", "yaml"}, code: 2, want: []string{`--output: "yaml" is not one of table, json`}},
		{name: "no command", args: nil, code: 2, want: []string{"no command given"}},
		{name: "unknown command", args: []string{"frobnicate"}, code: 2, want: []string{`unknown command "frobnicate" (commands: inventory, run, plan, apply, teardown, version)`}},
		{name: "unknown flag", args: []string{"inventory", "--bogus"}, code: 2, want: []string{"unknown flag: --bogus"}},
		{name: "unknown config keys", cfg: "node:\n  name: x\n  colour: red\nsysfs_rot: /sys\nrails:\n  - rail: 0\n    netdev: eth0\n    ipv5: 10.0.0.1/31\n",
			args: []string{"inventory"}, code: 2, want: []string{"unknown keys: node.colour, rails[0].ipv5, sysfs_rot"}},
		{name: "invalid config lists every problem", cfg: "log:\n  format: xml\nrails:\n  - netdev: eth0\n  - rail: 1\n    netdev: eth0\n  - rail: 1\n",
			args: []string{"inventory"}, code: 2, want: []string{
				`log.format: "xml" is not one of auto, text, json`, "rails[0].rail: required", `rails[1].netdev: "eth0" is also rails[0]`,
				"rails[2].rail: rail 1 is also rails[1]"}},
		{name: "pinned rdma device and netdev the same", cfg: "rails:\n  - rail: 0\n    rdma_device: rxe0\n    netdev: vethB\n",
			args: []string{"inventory", "--sysfs-root", soft}, code: 1, want: []string{`roce-agent: rails: rail 0: netdev "vethB" is not the netdev of rdma_device "rxe0"`}},
		{name: "bad env", env: map[string]string{"ROCE_AGENT_LOG_LEVEL": "loud"}, args: []string{"version"}, code: 2,
			want: []string{`log.level: "loud" is not one of debug, info, warn, error`, "no config file"}},
		{name: "config file missing", args: []string{"--config", missing, "version"}, code: 2, want: []string{"config " + missing + ": open " + missing + ": no such file or directory"}},
		{name: "loose env value", env: map[string]string{"ROCE_AGENT_LINK_MTU": "9000.5"}, args: []string{"inventory"}, code: 2,
			want: []string{"link.mtu", `"9000.5" is not an integer`}},
		{name: "duration as a number", cfg: "reconcile:\n  resync_interval: 60\n", args: []string{"inventory"}, code: 2,
			want: []string{"reconcile.resync_interval", "60 is not a duration"}},
		{name: "config file missing from env", env: map[string]string{"ROCE_AGENT_CONFIG": missing}, args: []string{"inventory"}, code: 2, want: []string{"config " + missing}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			args := tc.args
			if tc.cfg != "" {
				args = append([]string{"--config", writeConfig(t, tc.cfg)}, args...)
			}
			code, out, errOut := runCLI(t, args...)
			if code != tc.code {
				t.Errorf("exit %d, want %d (stderr %q)", code, tc.code, errOut)
			}
			if out != "" {
				t.Errorf("stdout should be empty on error, got %q", out)
			}
			for _, w := range tc.want {
				if !strings.Contains(errOut, w) {
					t.Errorf("stderr %q does not contain %q", errOut, w)
				}
			}
		})
	}
}

// TestMissingPinFailsOnlyItsRail: a pinned netdev or RDMA device the host
// does not have is a rail with a warning; every NIC is still reported.
func TestMissingPinFailsOnlyItsRail(t *testing.T) {
	soft := fixture(t, "soft-roce")
	for _, tc := range []struct{ cfg, want string }{
		{"rails:\n  - rail: 3\n    netdev: vethZ\n", `rail-missing: rail 3 is pinned to a device the host does not have: netdev "vethZ" does not exist`},
		{"rails:\n  - rail: 0\n    rdma_device: mlx5_0\n", `rail-missing: rail 0 is pinned to a device the host does not have: rdma_device "mlx5_0" does not exist`},
	} {
		code, out, errOut := runCLI(t, "--config", writeConfig(t, tc.cfg), "inventory", "--sysfs-root", soft)
		if code != 0 || !strings.Contains(out, tc.want) || !strings.Contains(out, "rxe0") || !strings.Contains(out, "rxe1") {
			t.Errorf("exit %d, stderr %q, stdout:\n%s\nwant the warning %q and both NICs", code, errOut, out, tc.want)
		}
	}
}

func TestSettingsPrecedence(t *testing.T) {
	soft, empty := fixture(t, "soft-roce"), fixture(t, "empty")
	// env sets the root...
	t.Setenv("ROCE_AGENT_SYSFS_ROOT", soft)
	_, out, _ := runCLI(t, "inventory", "-o", "json")
	if !strings.Contains(out, `"rdma_device": "rxe0"`) {
		t.Errorf("ROCE_AGENT_SYSFS_ROOT not used: %s", out)
	}
	// ...the config file is weaker than env...
	cfg := writeConfig(t, "sysfs_root: "+empty+"\n")
	_, out, _ = runCLI(t, "--config", cfg, "inventory", "-o", "json")
	if !strings.Contains(out, `"rdma_device": "rxe0"`) {
		t.Errorf("config file overrode env: %s", out)
	}
	// ...and a flag beats both.
	_, out, _ = runCLI(t, "--config", cfg, "inventory", "-o", "json", "--sysfs-root", empty)
	if strings.Contains(out, "rxe0") {
		t.Errorf("flag did not win: %s", out)
	}
}

func TestVersion(t *testing.T) {
	code, out, _ := runCLI(t, "version", "-o", "json")
	var v map[string]string
	if code != 0 || json.Unmarshal([]byte(out), &v) != nil || v["version"] == "" || v["go"] == "" {
		t.Errorf("version: %d %q", code, out)
	}
	code, out, _ = runCLI(t, "--help")
	if code != 0 || !strings.Contains(out, "inventory") || !strings.Contains(out, "--sysfs-root") {
		t.Errorf("help: %d %q", code, out)
	}
}

var (
	binOnce sync.Once
	binPath string
	binErr  error
)

// binary builds the real roce-agent once per test run.
func binary(t *testing.T) string { return binaryB(t) }

func binaryB(t testing.TB) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds the binary; skipped with -short")
	}
	binOnce.Do(func() {
		dir, err := os.MkdirTemp("", "roce-agent-bin")
		if err != nil {
			binErr = err
			return
		}
		binPath = filepath.Join(dir, "roce-agent")
		build := exec.Command("go", "build", "-o", binPath, ".")
		build.Env = append(os.Environ(), "CGO_CFLAGS=-Wno-deprecated-declarations")
		if out, err := build.CombinedOutput(); err != nil {
			binErr = fmt.Errorf("go build: %w\n%s", err, out)
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binPath
}

func TestMain(m *testing.M) {
	code := m.Run()
	if binPath != "" {
		os.RemoveAll(filepath.Dir(binPath))
	}
	os.Exit(code)
}

// TestBinaryEndToEnd runs the built binary on every fixture tree, as a
// user would.
func TestBinaryEndToEnd(t *testing.T) {
	bin := binary(t)
	for _, host := range []string{"dgx-h100", "mixed-vendor", "soft-roce", "empty"} {
		root := fixture(t, host)
		cmd := exec.Command(bin, "inventory", "--sysfs-root", root, "--output", "json")
		cmd.Env = append(os.Environ(), "ROCE_AGENT_NODE_NAME=gpu-017")
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("%s: %v", host, err)
		}
		if got := strings.ReplaceAll(string(out), root, placeholder); got != golden(t, host+".json") {
			t.Errorf("%s: binary output differs from golden", host)
		}
	}
	out, err := exec.Command(bin, "inventory", "--sysfs-root", "/nonexistent/sys").CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 || strings.Count(string(out), "\n") != 1 {
		t.Errorf("missing root: want one line and exit 1, got %v %q", err, out)
	}
}
