package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/roce-agent/roce-agent/nic/nettest"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
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
		{name: "unknown command", args: []string{"frobnicate"}, code: 2, want: []string{`roce-agent: unknown command "frobnicate" for "roce-agent"`, "run 'roce-agent --help' for usage"}},
		{name: "unexpected argument", args: []string{"plan", "now"}, code: 2, want: []string{`roce-agent: plan: unexpected argument "now"`, "run 'roce-agent plan --help' for usage"}},
		{name: "dry-run is teardown's", args: []string{"inventory", "--dry-run"}, code: 2, want: []string{"unknown flag: --dry-run"}},
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

// TestCommandHelp: `<cmd> --help`, `<cmd> -h` and `help <cmd>` print that
// command's help (its description and Example, not the global one) to
// stdout with exit 0.
func TestCommandHelp(t *testing.T) {
	for _, spec := range commandSpecs {
		var first string
		for _, args := range [][]string{{spec.use, "--help"}, {spec.use, "-h"}, {"help", spec.use}, {"--config", "/nonexistent", spec.use, "--help"}} {
			code, out, errOut := runCLI(t, args...)
			if code != 0 || errOut != "" {
				t.Errorf("%v: exit %d, stderr %q", args, code, errOut)
			}
			for _, want := range []string{spec.example, "roce-agent " + spec.use + " [flags]", strings.SplitN(spec.long, "\n", 2)[0], "Exit status: 0", "Changes: ", "Global Flags:", "--sysfs-root"} {
				if !strings.Contains(out, want) {
					t.Errorf("%v: help does not contain %q:\n%s", args, want, out)
				}
			}
			if strings.Contains(out, "Available Commands") {
				t.Errorf("%v: printed the global help:\n%s", args, out)
			}
			if first == "" {
				first = out
			} else if out != first {
				t.Errorf("%v: help differs from %s --help:\n%s", args, spec.use, out)
			}
		}
	}
	code, out, _ := runCLI(t, "help", "teardown")
	if code != 0 || !strings.Contains(out, "--dry-run") {
		t.Errorf("help teardown: exit %d, no --dry-run in\n%s", code, out)
	}
	code, out, _ = runCLI(t, "help")
	if code != 0 || !strings.Contains(out, "Available Commands") || !strings.Contains(out, "Exit status:") {
		t.Errorf("help: exit %d\n%s", code, out)
	}
}

// TestRootUsage: no command prints the usage to stderr and exits 2; the
// root help lists every command in order and the exit codes.
func TestRootUsage(t *testing.T) {
	code, out, errOut := runCLI(t)
	if code != 2 || out != "" || !strings.Contains(errOut, "Usage:\n  roce-agent [command]") || !strings.HasSuffix(errOut, "roce-agent: no command given\nrun 'roce-agent --help' for usage\n") {
		t.Errorf("no command: exit %d, stdout %q, stderr\n%s", code, out, errOut)
	}
	code, out, _ = runCLI(t, "--help")
	last := -1
	for _, name := range []string{"inventory", "run", "plan", "apply", "teardown", "version", "completion", "help"} {
		i := strings.Index(out, "\n  "+name+" ")
		if i < 0 || i < last {
			t.Errorf("--help: %q missing or out of order", name)
		}
		last = i
	}
	if code != 0 || !strings.Contains(out, exitCodesHelp) {
		t.Errorf("--help: exit %d, no exit codes in\n%s", code, out)
	}
}

// TestSuggestions: a mistyped command is a usage error with cobra's "Did
// you mean this?".
func TestSuggestions(t *testing.T) {
	for typo, want := range map[string]string{"aply": "apply", "inventroy": "inventory", "tear": "", "versoin": "version", "plna": "plan"} {
		code, out, errOut := runCLI(t, typo, "--config", "/nonexistent")
		if code != 2 || out != "" || !strings.Contains(errOut, fmt.Sprintf("roce-agent: unknown command %q for \"roce-agent\"", typo)) {
			t.Errorf("%s: exit %d, stderr %q", typo, code, errOut)
		}
		if want != "" && !strings.Contains(errOut, "\n\nDid you mean this?\n\t"+want+"\n") {
			t.Errorf("%s: no suggestion %q in %q", typo, want, errOut)
		}
	}
}

// TestGlobalFlagsAnywhere: the global flags work before and after the
// command, long and short.
func TestGlobalFlagsAnywhere(t *testing.T) {
	soft := fixture(t, "soft-roce")
	for _, args := range [][]string{
		{"--sysfs-root", soft, "-o", "json", "inventory"},
		{"inventory", "--sysfs-root", soft, "-o", "json"},
		{"-o", "json", "inventory", "--sysfs-root=" + soft},
		{"--output=json", "--sysfs-root", soft, "--log-level", "debug", "inventory", "--log-format", "json"},
	} {
		code, out, errOut := runCLI(t, args...)
		if code != 0 || !strings.Contains(out, `"rdma_device": "rxe0"`) {
			t.Errorf("%v: exit %d, stderr %q, stdout %q", args, code, errOut, out)
		}
	}
}

func TestVersionFlagAndDate(t *testing.T) {
	code, out, errOut := runCLI(t, "--version")
	if code != 0 || errOut != "" || out != versionText() || !strings.HasPrefix(out, "roce-agent "+version+"\n") || !strings.Contains(out, "  date: ") || !strings.Contains(out, "  go: go") {
		t.Errorf("--version: exit %d, stderr %q, stdout %q", code, errOut, out)
	}
	code, out, _ = runCLI(t, "version")
	if code != 0 || out != versionText() {
		t.Errorf("version: exit %d, %q, want %q", code, out, versionText())
	}
	code, out, _ = runCLI(t, "version", "-o", "json")
	var v map[string]string
	if code != 0 || json.Unmarshal([]byte(out), &v) != nil || v["date"] == "" || v["version"] != version || !strings.HasPrefix(v["go"], "go") {
		t.Errorf("version -o json: exit %d, %q", code, out)
	}
}

// TestVersionLDFlags builds the binary the way the Makefile does and
// checks that version, commit and date come through.
func TestVersionLDFlags(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary; skipped with -short")
	}
	bin := filepath.Join(t.TempDir(), "roce-agent")
	build := exec.Command("go", "build", "-ldflags", "-X main.version=v9.8.7 -X main.commit=abc123 -X main.date=2026-01-02T03:04:05Z", "-o", bin, ".")
	build.Env = append(os.Environ(), "CGO_CFLAGS=-Wno-deprecated-declarations")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	out, err := exec.Command(bin, "--version").Output()
	if err != nil || !strings.HasPrefix(string(out), "roce-agent v9.8.7\n") || !strings.Contains(string(out), "  commit: abc123\n") || !strings.Contains(string(out), "  date: 2026-01-02T03:04:05Z\n") {
		t.Errorf("--version: %v %q", err, out)
	}
	cmd := exec.Command(bin, "version", "-o", "json")
	cmd.Env = cleanCLIEnv()
	out, err = cmd.Output()
	var v map[string]string
	if err != nil || json.Unmarshal(out, &v) != nil || v["version"] != "v9.8.7" || v["commit"] != "abc123" || v["date"] != "2026-01-02T03:04:05Z" {
		t.Errorf("version -o json: %v %q", err, out)
	}
}

// TestBinaryUsage: the built binary's exit codes for help, typos and usage
// errors.
func TestBinaryUsage(t *testing.T) {
	bin := binary(t)
	for _, tc := range []struct {
		args       []string
		code       int
		stdout     string
		stderr     string
		stdoutNone bool
	}{
		{args: []string{"plan", "--help"}, code: 0, stdout: "roce-agent --config /etc/roce-agent/config.yaml plan -o json"},
		{args: []string{"help", "apply"}, code: 0, stdout: "roce-agent apply [flags]"},
		{args: []string{"aply"}, code: 2, stderr: "Did you mean this?\n\tapply", stdoutNone: true},
		{args: nil, code: 2, stderr: "no command given", stdoutNone: true},
		{args: []string{"-o", "yaml", "version"}, code: 2, stderr: `--output: "yaml" is not one of table, json`, stdoutNone: true},
		{args: []string{"completion", "bash"}, code: 0, stdout: "roce-agent"},
	} {
		cmd := exec.Command(bin, tc.args...)
		cmd.Env = cleanCLIEnv()
		var out, errOut bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errOut
		err := cmd.Run()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		if code != tc.code || !strings.Contains(out.String(), tc.stdout) || !strings.Contains(errOut.String(), tc.stderr) || (tc.stdoutNone && out.Len() > 0) {
			t.Errorf("%v: exit %d (want %d)\nstdout %q\nstderr %q", tc.args, code, tc.code, out.String(), errOut.String())
		}
	}
}

// cleanCLIEnv is the environment without ROCE_AGENT_* settings.
func cleanCLIEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "ROCE_AGENT_") {
			env = append(env, kv)
		}
	}
	return env
}

// TestDocumentedEnv: every environment variable docs/config.md's table
// documents is read: a bad value is an error that names its key (exit 2),
// or, where no value is invalid, the value shows in the output.
func TestDocumentedEnv(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "..", "docs", "config.md"))
	if err != nil {
		t.Fatal(err)
	}
	documented := map[string]bool{}
	nameRE := regexp.MustCompile(`(ROCE_AGENT|\.\.\.)(_[A-Z0-9_]+)`)
	for _, line := range strings.Split(string(b), "\n") {
		cells := strings.Split(line, "|")
		if len(cells) < 4 || !strings.HasPrefix(strings.TrimSpace(cells[1]), "`") {
			continue
		}
		for _, m := range nameRE.FindAllStringSubmatch(cells[2], -1) {
			documented["ROCE_AGENT"+m[2]] = true
		}
	}
	if len(documented) < 15 {
		t.Fatalf("found only %d env vars in docs/config.md's table: %v", len(documented), documented)
	}
	soft := fixture(t, "soft-roce")
	inventory := []string{"inventory", "--sysfs-root", soft, "-o", "json"}
	pki := filepath.Dir(nettest.WebConfig(t)) // cert.pem, key.pem
	token := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(token, []byte("tok-123\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	https := map[string]string{"ROCE_AGENT_CONTROLLER_URL": "https://fabric-ctl:8443"}
	mtls := map[string]string{"ROCE_AGENT_CONTROLLER_URL": "https://fabric-ctl:8443", "ROCE_AGENT_CONTROLLER_CERT_FILE": filepath.Join(pki, "cert.pem"), "ROCE_AGENT_CONTROLLER_KEY_FILE": filepath.Join(pki, "key.pem")}
	type envCase struct {
		bad, key string // a bad value and the key its error must name ("" when no value is invalid)
		good     string // a good value: exit 0 ...
		args     []string
		output   string            // ... and this in the output of args (default: version)
		with     map[string]string // other settings the good value needs
		// knownBroken: the good value is refused today, for this reason;
		// the subtest skips until it works, then fails to have this removed.
		knownBroken string
	}
	cases := map[string]envCase{
		"ROCE_AGENT_GENERATION":                      {bad: "1.5", key: "generation", good: "7"},
		"ROCE_AGENT_GPU_NVML":                        {bad: "maybe", key: "gpu.nvml", good: "off"},
		"ROCE_AGENT_LISTEN_WEB_CONFIG_FILE":          {bad: "/nonexistent/web.yml", key: "listen.web_config_file", good: nettest.WebConfig(t)},
		"ROCE_AGENT_NODE_NAME":                       {good: "env-node-42", args: inventory, output: `"node": "env-node-42"`},
		"ROCE_AGENT_NODE_INDEX":                      {bad: "-1", key: "node.index", good: "3"},
		"ROCE_AGENT_SYSFS_ROOT":                      {bad: "/" + strings.Repeat("s", 1100), key: "sysfs_root", good: soft, args: []string{"inventory", "-o", "json"}, output: `"rdma_device": "rxe0"`},
		"ROCE_AGENT_STATE_DIR":                       {bad: "relative", key: "state_dir", good: "/var/lib/roce-agent-test"},
		"ROCE_AGENT_LOG_LEVEL":                       {bad: "loud", key: "log.level", good: "debug", args: inventory, output: `"rdma_device": "rxe0"`},
		"ROCE_AGENT_LOG_FORMAT":                      {bad: "xml", key: "log.format", good: "json"},
		"ROCE_AGENT_LISTEN_METRICS":                  {bad: "bad", key: "listen.metrics", good: ":9999"},
		"ROCE_AGENT_RECONCILE_RESYNC_INTERVAL":       {bad: "1ms", key: "reconcile.resync_interval", good: "30s"},
		"ROCE_AGENT_RECONCILE_DEBOUNCE":              {bad: "11s", key: "reconcile.debounce", good: "1s"},
		"ROCE_AGENT_LINK_MTU":                        {bad: "9000.5", key: "link.mtu", good: "1500"},
		"ROCE_AGENT_LINK_IPV6_SLAAC":                 {bad: "maybe", key: "link.ipv6_slaac", good: "true"},
		"ROCE_AGENT_LINK_ROUTES":                     {bad: "10.0.0.0/8,notaprefix", key: "link.routes[1]", good: "10.0.0.0/8,fc00::/16"},
		"ROCE_AGENT_LINK_ROUTING_TABLE_BASE":         {bad: "253", key: "link.routing.table_base", good: "2000"},
		"ROCE_AGENT_LINK_ROUTING_RULE_PRIORITY_BASE": {bad: "40000", key: "link.routing.rule_priority_base", good: "2000"},
		"ROCE_AGENT_ADDRESSING_IPV4_POOLS":           {bad: "10.0.0.0/24,bad", key: "addressing.ipv4_pools[1]", good: "10.0.0.0/24,10.0.1.0/24", with: map[string]string{"ROCE_AGENT_NODE_INDEX": "3"}},
		"ROCE_AGENT_ADDRESSING_IPV6_POOLS":           {bad: "bad", key: "addressing.ipv6_pools[0]", good: "fc00:0:0:1::/64", with: map[string]string{"ROCE_AGENT_NODE_INDEX": "3"}},
		"ROCE_AGENT_QOS_TRUST":                       {bad: "bad", key: "qos.trust", good: "pcp"},
		"ROCE_AGENT_QOS_DCBX":                        {bad: "firmware", key: "qos.dcbx", good: "host"},
		"ROCE_AGENT_QOS_ROCE_MODE":                   {bad: "v3", key: "qos.roce_mode", good: "RoCE v2"},
		"ROCE_AGENT_QOS_ROCE_TOS":                    {bad: "300", key: "qos.roce_tos", good: "106"},
		"ROCE_AGENT_QOS_PFC_PRIORITIES":              {bad: "3,9", key: "qos.pfc_priorities[1]", good: "3,4"},
		"ROCE_AGENT_CONTROLLER_URL":                  {bad: "http://fabric-ctl:8080", key: "controller.url", good: "https://fabric-ctl:8443"},
		"ROCE_AGENT_CONTROLLER_CA_FILE":              {bad: "/nonexistent/ca.pem", key: "controller.ca_file", good: filepath.Join(pki, "cert.pem"), with: https},
		"ROCE_AGENT_CONTROLLER_CERT_FILE":            {bad: "/nonexistent/node.pem", key: "controller.cert_file", good: filepath.Join(pki, "cert.pem"), with: mtls},
		"ROCE_AGENT_CONTROLLER_KEY_FILE":             {bad: "/nonexistent/node-key.pem", key: "controller.key_file", good: filepath.Join(pki, "key.pem"), with: mtls},
		"ROCE_AGENT_CONTROLLER_TOKEN_FILE":           {bad: "/nonexistent/token", key: "controller.token_file", good: token, with: https},
		"ROCE_AGENT_CONTROLLER_INSECURE_HTTP":        {bad: "maybe", key: "controller.insecure_http", good: "true", with: map[string]string{"ROCE_AGENT_CONTROLLER_URL": "http://fabric-ctl:8080"}},
		"ROCE_AGENT_CONTROLLER_HEARTBEAT_INTERVAL":   {bad: "1ms", key: "controller.heartbeat_interval", good: "5s"},
		"ROCE_AGENT_CONTROLLER_STATUS_INTERVAL":      {bad: "1s", key: "controller.status_interval", good: "1m"},
		"ROCE_AGENT_CONTROLLER_WAIT":                 {bad: "11m", key: "controller.wait", good: "1m"},
		"ROCE_AGENT_CONTROLLER_TIMEOUT":              {bad: "0s", key: "controller.timeout", good: "30s"},
		"ROCE_AGENT_LISTEN_PROBE_API":                {bad: "9488", key: "listen.probe_api", good: ":9488", with: map[string]string{"ROCE_AGENT_PROBES_INSECURE_HTTP": "true"}},
		"ROCE_AGENT_PROBES_INTERVAL":                 {bad: "1s", key: "probes.interval", good: "30s"},
		"ROCE_AGENT_SYSCTL_ROOT":                     {bad: "proc/sys", key: "sysctl_root", good: "/host/proc/sys"},
		"ROCE_AGENT_LLDP_SOURCE":                     {bad: "snmp", key: "lldp.source", good: "off"},
		"ROCE_AGENT_LLDP_SOCKET":                     {bad: "run/lldpd.socket", key: "lldp.socket", good: "/run/lldpd.socket"},
		"ROCE_AGENT_LLDP_INTERVAL":                   {bad: "1s", key: "lldp.interval", good: "1m"},
		"ROCE_AGENT_PROBES_PEERS_PER_INTERVAL":       {bad: "0", key: "probes.peers_per_interval", good: "4"},
		"ROCE_AGENT_PROBES_TOOLS":                    {bad: "rping,sh", key: "probes.tools", good: "rping,ib_write_bw"},
		"ROCE_AGENT_PROBES_FAMILIES":                 {bad: "ipx", key: "probes.families", good: "ipv6"},
		"ROCE_AGENT_PROBES_MIN_FRACTION_OF_RATE":     {bad: "2", key: "probes.min_fraction_of_rate", good: "0.5"},
		"ROCE_AGENT_PROBES_BANDWIDTH_BYTES":          {bad: "-1", key: "probes.bandwidth_bytes", good: "1048576"},
		"ROCE_AGENT_PROBES_BANDWIDTH_ITERATIONS":     {bad: "-5", key: "probes.bandwidth_iterations", good: "100"},
		"ROCE_AGENT_PROBES_LATENCY_ITERATIONS":       {bad: "-1", key: "probes.latency_iterations", good: "10"},
		"ROCE_AGENT_PROBES_PINGS":                    {bad: "5000", key: "probes.pings", good: "5"},
		"ROCE_AGENT_PROBES_TIMEOUT":                  {bad: "0s", key: "probes.timeout", good: "30s"},
		"ROCE_AGENT_PROBES_TOOLS_DIR":                {bad: "relative", key: "probes.tools_dir", good: "/usr/bin"},
		"ROCE_AGENT_PROBES_INSECURE_HTTP":            {bad: "maybe", key: "probes.insecure_http", good: "true"},
	}
	for name := range documented {
		if _, ok := cases[name]; !ok {
			t.Errorf("%s is documented in docs/config.md but has no case here", name)
		}
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			if !documented[name] {
				t.Errorf("%s is not in docs/config.md's table", name)
			}
			unset := func() {
				for other := range cases {
					t.Setenv(other, "")
					os.Unsetenv(other)
				}
			}
			unset()
			if tc.key != "" {
				t.Setenv(name, tc.bad)
				code, out, errOut := runCLI(t, "version")
				if code != 2 || out != "" || !regexp.MustCompile(`(^|\n|roce-agent: |')`+regexp.QuoteMeta(tc.key)+`('|:)`).MatchString(errOut) {
					t.Errorf("%s=%s: exit %d, want 2 and an error naming %s; stderr %q", name, tc.bad, code, tc.key, errOut)
				}
			}
			unset()
			for k, v := range tc.with {
				t.Setenv(k, v)
			}
			t.Setenv(name, tc.good)
			args := tc.args
			if args == nil {
				args = []string{"version"}
			}
			code, out, errOut := runCLI(t, args...)
			ok := code == 0 && strings.Contains(out, tc.output)
			switch {
			case !ok && tc.knownBroken != "":
				t.Skipf("%s=%s: known bug: %s (exit %d, stderr %q)", name, tc.good, tc.knownBroken, code, errOut)
			case !ok:
				t.Errorf("%s=%s %v: exit %d, stderr %q, want exit 0 and %q in\n%s", name, tc.good, args, code, errOut, tc.output, out)
			case tc.knownBroken != "":
				t.Errorf("%s=%s works now: remove its knownBroken", name, tc.good)
			}
		})
	}
}

var updateDocs = flag.Bool("update-docs", false, "rewrite docs/cli.md from the commands' help")

// TestCLIDoc: docs/cli.md is generated from the command tree (every
// command, its flags, description, examples, changes and exit status), so
// it cannot drift: after changing a command, run
// go test ./cmd/roce-agent -run TestCLIDoc -update-docs
func TestCLIDoc(t *testing.T) {
	path := filepath.Join("..", "..", "docs", "cli.md")
	want := cliDoc()
	if *updateDocs {
		if err := os.WriteFile(path, []byte(want), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := string(b); got != want {
		gl, wl := strings.Split(got, "\n"), strings.Split(want, "\n")
		for i := 0; i < len(gl) || i < len(wl); i++ {
			var g, w string
			if i < len(gl) {
				g = gl[i]
			}
			if i < len(wl) {
				w = wl[i]
			}
			if g != w {
				t.Fatalf("docs/cli.md differs from the commands at line %d:\n got %q\nwant %q\nrun: go test ./cmd/roce-agent -run TestCLIDoc -update-docs", i+1, g, w)
			}
		}
	}
	// Belt and braces: every command and flag is named.
	root := docRoot()
	for _, c := range docCommands(root) {
		if !strings.Contains(want, "\n## "+c.CommandPath()+"\n") {
			t.Errorf("docs/cli.md has no section for %s", c.CommandPath())
		}
		c.Flags().VisitAll(func(f *pflag.Flag) {
			if !strings.Contains(want, "--"+f.Name+" ") {
				t.Errorf("docs/cli.md does not name %s --%s", c.CommandPath(), f.Name)
			}
		})
	}
}

// docRoot is the command tree as the binary runs it, help command
// included.
func docRoot() *cobra.Command {
	root := newRootCommand(io.Discard, io.Discard)
	root.InitDefaultHelpCmd()
	root.InitDefaultVersionFlag()
	for _, c := range append(docCommands(root), root) {
		c.InitDefaultHelpFlag()
	}
	return root
}

// docCommands lists the documented commands, depth first, in help order.
func docCommands(c *cobra.Command) []*cobra.Command {
	var out []*cobra.Command
	for _, sub := range c.Commands() {
		if !sub.IsAvailableCommand() && sub.Name() != "help" {
			continue
		}
		out = append(out, sub)
		out = append(out, docCommands(sub)...)
	}
	return out
}

func cliDoc() string {
	root := docRoot()
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	fence := func(lang, text string) { p("```%s\n%s\n```\n\n", lang, strings.TrimRight(text, "\n")) }
	p("# Command line\n\n")
	p("<!-- Generated from cmd/roce-agent/cli.go by `go test ./cmd/roce-agent -run TestCLIDoc -update-docs`; edit the commands there, not this file. -->\n\n")
	p("```\nroce-agent [global flags] <command> [flags]\n```\n\n")
	p("Global flags may come before or after the command (`roce-agent --config F plan -o json` and\n")
	p("`roce-agent plan --config F -o json` are the same); a command's own flags (`teardown --dry-run`)\n")
	p("come after it. `roce-agent <command> --help` and `roce-agent help <command>` print a command's\n")
	p("help; `roce-agent --version` the version. A mistyped command is an error with suggestions\n")
	p("(`Did you mean this?`). The config keys and their `ROCE_AGENT_*` variables are in\n")
	p("[config.md](config.md).\n\n")
	p("Commands:\n\n")
	for _, c := range docCommands(root) {
		anchor := strings.ReplaceAll(c.CommandPath(), " ", "-")
		p("- [`%s`](#%s): %s\n", strings.TrimPrefix(c.CommandPath(), "roce-agent "), anchor, c.Short)
	}
	p("\n## Global flags\n\n")
	fence("", root.PersistentFlags().FlagUsages())
	p("and, on `roce-agent` alone (`roce-agent --version`, `roce-agent --help`):\n\n")
	fence("", root.LocalNonPersistentFlags().FlagUsages())
	p("## Exit status\n\n")
	fence("", strings.TrimPrefix(exitCodesHelp, "Exit status:\n"))
	p("Every error is one line (or a few, for a config with several problems) on stderr, starting\n`roce-agent: `; a usage error is followed by `run 'roce-agent <command> --help' for usage`.\n\n")
	for _, c := range docCommands(root) {
		p("## %s\n\n", c.CommandPath())
		p("%s.\n\n", strings.TrimSuffix(c.Short, "."))
		fence("", c.UseLine())
		changes, hasSpec := c.Annotations["changes"]
		if hasSpec {
			desc, _, _ := strings.Cut(c.Long, "\n\nChanges: ")
			p("%s\n\n", desc)
			p("**Changes:** %s\n\n", changes)
			p("**Exit status:** %s\n\n", c.Annotations["exit"])
		} else if c.Long != "" {
			fence("text", c.Long)
		}
		p("Flags (and the [global flags](#global-flags)):\n\n")
		fence("", c.LocalNonPersistentFlags().FlagUsages())
		if c.Example != "" {
			p("Examples:\n\n")
			lines := strings.Split(c.Example, "\n")
			for i, l := range lines {
				lines[i] = strings.TrimPrefix(l, "  ")
			}
			fence("sh", strings.Join(lines, "\n"))
		}
	}
	return strings.TrimRight(b.String(), "\n") + "\n"
}
