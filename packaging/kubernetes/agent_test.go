package kubernetes

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// testPEMs are a self-signed certificate for the test node (also its CA)
// and its key.
type testPEMs struct{ cert, key string }

var (
	pemsOnce sync.Once
	pemsVal  testPEMs
	pemsErr  error
)

func pems(t *testing.T) testPEMs {
	t.Helper()
	pemsOnce.Do(func() {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			pemsErr = err
			return
		}
		tmpl := &x509.Certificate{
			SerialNumber:          big.NewInt(1),
			Subject:               pkix.Name{CommonName: testNode},
			NotBefore:             time.Now().Add(-time.Hour),
			NotAfter:              time.Now().Add(24 * time.Hour),
			KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
			ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth},
			BasicConstraintsValid: true,
			IsCA:                  true,
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
		if err != nil {
			pemsErr = err
			return
		}
		kder, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			pemsErr = err
			return
		}
		pemsVal = testPEMs{
			cert: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})),
			key:  string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})),
		}
	})
	if pemsErr != nil {
		t.Fatal(pemsErr)
	}
	return pemsVal
}

// replace puts the PEMs in place of CA_PEM, CERT_PEM and KEY_PEM.
func (p testPEMs) replace(s string) string {
	return strings.NewReplacer("CA_PEM", p.cert, "CERT_PEM", p.cert, "KEY_PEM", p.key).Replace(s)
}

// replaceIn replaces the placeholders in every string of parsed values.
func (p testPEMs) replaceIn(v any) any {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			x[k] = p.replaceIn(e)
		}
	case []any:
		for i, e := range x {
			x[i] = p.replaceIn(e)
		}
	case string:
		return p.replace(x)
	}
	return v
}

var (
	agentOnce sync.Once
	agentBin  string
	agentErr  error
	agentDir  string
)

// buildAgent builds the repository's roce-agent once for the test binary
// (`go build ./cmd/roce-agent` in the repository's root, with its own
// go.mod) and returns its path.
func buildAgent(t *testing.T) string {
	t.Helper()
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("no go command to build roce-agent with")
	}
	agentOnce.Do(func() {
		root, err := filepath.Abs("../..")
		if err != nil {
			agentErr = err
			return
		}
		agentDir, err = os.MkdirTemp("", "roce-agent-k8s-test-")
		if err != nil {
			agentErr = err
			return
		}
		bin := filepath.Join(agentDir, "roce-agent")
		start := time.Now()
		cmd := exec.Command("go", "build", "-o", bin, "./cmd/roce-agent")
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			agentErr = fmt.Errorf("go build ./cmd/roce-agent in %s: %v\n%s", root, err, out)
			return
		}
		t.Logf("built roce-agent in %s", time.Since(start).Round(time.Millisecond))
		agentBin = bin
	})
	if agentErr != nil {
		t.Fatal(agentErr)
	}
	return agentBin
}

func TestMain(m *testing.M) {
	flag.Parse()
	code := m.Run()
	if agentDir != "" {
		os.RemoveAll(agentDir)
	}
	os.Exit(code)
}

// podEnv is the container's environment as the kubelet makes it: values,
// the downward API's fields, and $(VAR) references expanded.
func podEnv(t *testing.T, c *corev1.Container, hostIP string) map[string]string {
	t.Helper()
	env := map[string]string{}
	var order []string
	for _, e := range c.Env {
		v := e.Value
		if e.ValueFrom != nil {
			if e.ValueFrom.FieldRef == nil {
				t.Fatalf("%s: only fieldRef is simulated: %+v", e.Name, e.ValueFrom)
			}
			switch e.ValueFrom.FieldRef.FieldPath {
			case "spec.nodeName":
				v = testNode
			case "status.hostIP":
				v = hostIP
			default:
				t.Fatalf("%s: fieldRef %s is not simulated", e.Name, e.ValueFrom.FieldRef.FieldPath)
			}
		} else {
			v = varRef.ReplaceAllStringFunc(v, func(ref string) string {
				name := varRef.FindStringSubmatch(ref)[1]
				if x, ok := env[name]; ok {
					return x
				}
				return ref
			})
		}
		if _, dup := env[e.Name]; !dup {
			order = append(order, e.Name)
		}
		env[e.Name] = v
	}
	return env
}

// TestAgentAcceptsConfig builds roce-agent and runs `roce-agent version`
// (which loads and validates the config like `run` does, without needing a
// desired state) as the pod would run it: the ConfigMap's config.yaml, the
// container's environment (the node's name, the listen address from the
// node's IPv4 and IPv6 address, the controller's credential files), the
// Secret's or the provided credential files, the container's arguments.
func TestAgentAcceptsConfig(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: builds roce-agent")
	}
	bin := buildAgent(t)
	for _, vs := range valueSets {
		for _, hostIP := range []string{"10.0.0.17", "fd00:0:0:17::1"} {
			t.Run(vs.name+"/"+hostIP, func(t *testing.T) {
				r := renderSet(t, vs)
				runAgent(t, bin, r, vs, hostIP)
			})
		}
	}
}

func runAgent(t *testing.T, bin string, r *rendered, vs valueSet, hostIP string) {
	t.Helper()
	c := r.container(t)
	dir := t.TempDir()
	// The mounts the agent reads at load, moved under dir.
	moved := map[string]string{}
	for _, m := range c.VolumeMounts {
		v := volume(t, r.daemonSet, m.Name)
		local := filepath.Join(dir, m.Name)
		switch {
		case m.Name == "config":
			for name, data := range r.configMap.Data {
				writeFile(t, filepath.Join(local, name), []byte(data), 0o644)
			}
		case v.Secret != nil && r.secret != nil && v.Secret.SecretName == r.secret.Name:
			for name, data := range r.secret.Data {
				writeFile(t, filepath.Join(local, name), data, 0o400)
			}
		case vs.files[m.Name] != nil:
			for name, data := range vs.files[m.Name] {
				writeFile(t, filepath.Join(local, strings.ReplaceAll(name, "NODE", testNode)), []byte(pems(t).replace(data)), 0o400)
			}
		default:
			if v.Secret != nil || v.HostPath != nil && strings.HasPrefix(m.MountPath, "/etc/") {
				t.Fatalf("volume %s: the test has no files for it", m.Name)
			}
			continue
		}
		moved[m.MountPath] = local
	}
	// Longest mount path first, so nested mounts are moved whole.
	paths := make([]string, 0, len(moved))
	for p := range moved {
		paths = append(paths, p)
	}
	slices.SortFunc(paths, func(a, b string) int { return len(b) - len(a) })
	relocate := func(s string) string {
		for _, p := range paths {
			s = strings.ReplaceAll(s, p+"/", moved[p]+"/")
		}
		return s
	}
	cfgPath := filepath.Join(moved["/etc/roce-agent/config"], "config.yaml")
	cfg, err := os.ReadFile(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, cfgPath, []byte(relocate(string(cfg))), 0o644)

	args := slices.Clone(c.Args)
	if args[0] != "run" {
		t.Fatalf("args %v do not start with run", args)
	}
	args[0] = "version"
	for i := range args {
		args[i] = relocate(args[i])
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = []string{"PATH=/usr/bin:/bin", "HOME=" + dir}
	for k, v := range podEnv(t, c, hostIP) {
		if varRef.MatchString(v) {
			t.Errorf("%s=%s: a reference the kubelet would leave unexpanded", k, v)
		}
		cmd.Env = append(cmd.Env, k+"="+relocate(v))
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("roce-agent %s: %v\n%s\nconfig.yaml:\n%s\nenv: %v", strings.Join(args, " "), err, out, relocate(string(cfg)), cmd.Env)
	}
	if !strings.HasPrefix(string(out), "roce-agent ") {
		t.Errorf("roce-agent version printed %q", out)
	}
}

// TestAgentRefusesBrokenConfig: the check above would notice a config the
// agent refuses (an unknown key in settings).
func TestAgentRefusesBrokenConfig(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: builds roce-agent")
	}
	bin := buildAgent(t)
	vs := valueSet{name: "broken", values: "settings: {log: {level: loud}, colour: blue}\n"}
	r := renderSet(t, vs)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "config.yaml")
	writeFile(t, cfg, []byte(r.config(t)), 0o644)
	cmd := exec.Command(bin, "--config", cfg, "version")
	cmd.Env = []string{"PATH=/usr/bin:/bin", "HOME=" + dir}
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 2 || !strings.Contains(string(out), "colour") {
		t.Errorf("roce-agent version with an unknown key: %v\n%s", err, out)
	}
}

// unitCapabilities reads CapabilityBoundingSet= of a systemd unit, as
// systemd combines several lines (an empty one resets), names without CAP_.
func unitCapabilities(t *testing.T, path string) []string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var caps []string
	found := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		v, ok := strings.CutPrefix(line, "CapabilityBoundingSet=")
		if !ok {
			continue
		}
		found = true
		if strings.HasPrefix(v, "~") {
			t.Fatalf("%s: %s: an inverted set; the test compares a list", path, line)
		}
		if strings.TrimSpace(v) == "" {
			caps = nil
			continue
		}
		for _, c := range strings.Fields(v) {
			name, ok := strings.CutPrefix(c, "CAP_")
			if !ok {
				t.Fatalf("%s: %q is not a CAP_ name", path, c)
			}
			caps = append(caps, name)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if !found {
		t.Fatalf("%s has no CapabilityBoundingSet=", path)
	}
	slices.Sort(caps)
	return slices.Compact(caps)
}

// unitValues are the values of a key in a unit, every line's fields.
func unitValues(t *testing.T, path, key string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), key+"="); ok {
			out = append(out, strings.Fields(v)...)
		}
	}
	return out
}

// TestCapabilitiesMatchSystemdUnit: the chart's default capabilities are
// the systemd unit's CapabilityBoundingSet, and the chart's read-write
// host mounts are the unit's ReadWritePaths= under /sys.
func TestCapabilitiesMatchSystemdUnit(t *testing.T) {
	const unit = "../systemd/roce-agent.service"
	if _, err := os.Stat(unit); errors.Is(err, os.ErrNotExist) {
		t.Skipf("%s does not exist (yet): nothing to compare the chart's capabilities with", unit)
	}
	want := unitCapabilities(t, unit)
	r := mustRender(t, nil)
	c := r.container(t)
	got := capNames(c.SecurityContext.Capabilities.Add)
	if !slices.Equal(got, want) {
		t.Errorf("the chart's default capabilities %v differ from the unit's CapabilityBoundingSet %v", got, want)
	}
	if !slices.Equal(defaultCaps, want) {
		t.Errorf("the tests' defaultCaps %v differ from the unit's %v", defaultCaps, want)
	}
	if amb := unitValues(t, unit, "AmbientCapabilities"); len(amb) != 0 {
		t.Errorf("the unit has AmbientCapabilities %v; the pod runs as uid 0 with none, like the unit", amb)
	}

	// ReadWritePaths under /sys are the chart's read-write host mounts;
	// /proc/sys/net is mounted at /host/proc/sys/net (runtimes refuse
	// mounts inside /proc), where ROCE_AGENT_SYSCTL_ROOT points the agent.
	rw := map[string]bool{}
	for _, m := range c.VolumeMounts {
		if !m.ReadOnly {
			rw[m.MountPath] = true
		}
	}
	for _, p := range unitValues(t, unit, "ReadWritePaths") {
		p = strings.TrimLeft(p, "-+")
		switch {
		case strings.HasPrefix(p, "/sys/"):
			if !rw[p] {
				t.Errorf("the unit writes %s; the chart does not mount it read-write", p)
			}
		case p == "/proc/sys/net":
			if !rw["/host/proc/sys/net"] {
				t.Errorf("the unit writes /proc/sys/net; the chart does not mount the node's read-write at /host/proc/sys/net")
			}
			if v := envVar(t, c, "ROCE_AGENT_SYSCTL_ROOT").Value; v != "/host/proc/sys" {
				t.Errorf("ROCE_AGENT_SYSCTL_ROOT is %q, want /host/proc/sys", v)
			}
		default:
			t.Errorf("the unit's ReadWritePaths %s: the test does not know it", p)
		}
	}
	if sd := unitValues(t, unit, "StateDirectory"); len(sd) != 1 || "/var/lib/"+sd[0] != mount(t, c, "state").MountPath {
		t.Errorf("the unit's StateDirectory %v is not the chart's state mount %s", sd, mount(t, c, "state").MountPath)
	}
}
