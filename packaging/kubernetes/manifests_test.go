package kubernetes

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

// The chart, relative to this directory.
const chartDir = "../helm/roce-agent"

// The release every render uses.
const (
	releaseName = "roce-agent"
	namespace   = "roce-system"
)

var update = flag.Bool("update", false, "rewrite daemonset.yaml from the chart's defaults")

// kubeVersion is the cluster the renders pretend to install on: helm as a
// library reports v1.20 otherwise, below the chart's kubeVersion.
var kubeVersion = &chartutil.KubeVersion{Version: "v1.33.0", Major: "1", Minor: "33"}

// monitoringAPIs is what a cluster with the Prometheus Operator serves.
var monitoringAPIs = []string{"monitoring.coreos.com/v1", "monitoring.coreos.com/v1/ServiceMonitor", "monitoring.coreos.com/v1/PodMonitor"}

// rendered is one render of the chart: its objects, decoded strictly, and
// its notes.
type rendered struct {
	docs  []doc
	notes string

	daemonSet      *appsv1.DaemonSet
	configMap      *corev1.ConfigMap
	secret         *corev1.Secret
	serviceAccount *corev1.ServiceAccount
	service        *corev1.Service
	namespace      *corev1.Namespace
	serviceMonitor *monitoringv1.ServiceMonitor
	podMonitor     *monitoringv1.PodMonitor
	kinds          []string
	manifest       string
}

// doc is one YAML document of a manifest.
type doc struct {
	source string // helm's "# Source:" line, when there is one
	text   string
}

func loadChart(t *testing.T) *chart.Chart {
	t.Helper()
	c, err := loader.Load(chartDir)
	if err != nil {
		t.Fatalf("load chart %s: %v", chartDir, err)
	}
	return c
}

// renderChart renders the chart as `helm template` does (a client-only dry
// run) with the values and the extra API versions the cluster serves.
func renderChart(t *testing.T, vals map[string]any, apis ...string) (*rendered, error) {
	t.Helper()
	install := action.NewInstall(&action.Configuration{Log: func(string, ...any) {}})
	install.DryRun = true
	install.ClientOnly = true
	install.Replace = true
	install.ReleaseName = releaseName
	install.Namespace = namespace
	install.KubeVersion = kubeVersion
	install.APIVersions = chartutil.VersionSet(apis)
	rel, err := install.Run(loadChart(t), vals)
	if err != nil {
		return nil, err
	}
	r := &rendered{notes: rel.Info.Notes, manifest: rel.Manifest}
	if len(rel.Hooks) > 0 {
		t.Errorf("the chart has %d hooks; it has none", len(rel.Hooks))
	}
	r.decode(t, rel.Manifest)
	return r, nil
}

// mustRender renders and fails the test on an error.
func mustRender(t *testing.T, vals map[string]any, apis ...string) *rendered {
	t.Helper()
	r, err := renderChart(t, vals, apis...)
	if err != nil {
		t.Fatalf("render: %v", err)
	}
	return r
}

var docSeparator = regexp.MustCompile(`(?m)^---[ \t]*$`)

// splitDocs splits a multi-document YAML stream, dropping documents that
// hold only comments and white space.
func splitDocs(manifest string) []doc {
	var out []doc
	for _, part := range docSeparator.Split(manifest, -1) {
		d := doc{text: part}
		empty := true
		for _, line := range strings.Split(part, "\n") {
			trimmed := strings.TrimSpace(line)
			if strings.HasPrefix(trimmed, "# Source: ") && d.source == "" {
				d.source = strings.TrimPrefix(trimmed, "# Source: ")
			}
			if trimmed != "" && !strings.HasPrefix(trimmed, "#") {
				empty = false
			}
		}
		if !empty {
			out = append(out, d)
		}
	}
	return out
}

// decode decodes every document strictly into the type of its kind: an
// unknown field, a wrong type, a duplicate key or an unknown kind fails.
func (r *rendered) decode(t *testing.T, manifest string) {
	t.Helper()
	r.docs = splitDocs(manifest)
	for _, d := range r.docs {
		var head struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
		}
		if err := yaml.Unmarshal([]byte(d.text), &head); err != nil {
			t.Fatalf("%s: not YAML: %v\n%s", d.source, err, d.text)
		}
		var obj any
		want := ""
		switch head.Kind {
		case "DaemonSet":
			r.daemonSet = &appsv1.DaemonSet{}
			obj, want = r.daemonSet, "apps/v1"
		case "ConfigMap":
			r.configMap = &corev1.ConfigMap{}
			obj, want = r.configMap, "v1"
		case "Secret":
			r.secret = &corev1.Secret{}
			obj, want = r.secret, "v1"
		case "ServiceAccount":
			r.serviceAccount = &corev1.ServiceAccount{}
			obj, want = r.serviceAccount, "v1"
		case "Service":
			r.service = &corev1.Service{}
			obj, want = r.service, "v1"
		case "Namespace":
			r.namespace = &corev1.Namespace{}
			obj, want = r.namespace, "v1"
		case "ServiceMonitor":
			r.serviceMonitor = &monitoringv1.ServiceMonitor{}
			obj, want = r.serviceMonitor, "monitoring.coreos.com/v1"
		case "PodMonitor":
			r.podMonitor = &monitoringv1.PodMonitor{}
			obj, want = r.podMonitor, "monitoring.coreos.com/v1"
		default:
			t.Fatalf("%s: kind %q (%s) is not one the tests know", d.source, head.Kind, head.APIVersion)
		}
		if head.APIVersion != want {
			t.Errorf("%s: %s has apiVersion %q, want %q", d.source, head.Kind, head.APIVersion, want)
		}
		if err := yaml.UnmarshalStrict([]byte(d.text), obj); err != nil {
			t.Fatalf("%s: %s does not decode strictly: %v\n%s", d.source, head.Kind, err, d.text)
		}
		r.kinds = append(r.kinds, head.Kind)
	}
}

// container is the agent's container.
func (r *rendered) container(t *testing.T) *corev1.Container {
	t.Helper()
	if r.daemonSet == nil {
		t.Fatal("no DaemonSet rendered")
	}
	cs := r.daemonSet.Spec.Template.Spec.Containers
	if len(cs) != 1 || cs[0].Name != "roce-agent" {
		t.Fatalf("containers: %+v, want one named roce-agent", cs)
	}
	return &cs[0]
}

// config is the agent's config file from the ConfigMap.
func (r *rendered) config(t *testing.T) string {
	t.Helper()
	if r.configMap == nil {
		t.Fatal("no ConfigMap rendered")
	}
	cfg, ok := r.configMap.Data["config.yaml"]
	if !ok {
		t.Fatalf("ConfigMap has no config.yaml: %v", r.configMap.Data)
	}
	return cfg
}

// configMap decodes the agent's config into a map.
func (r *rendered) configMapValues(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	if err := yaml.UnmarshalStrict([]byte(r.config(t)), &m); err != nil {
		t.Fatalf("config.yaml: %v", err)
	}
	return m
}

// env returns the container's variable name, or fails.
func envVar(t *testing.T, c *corev1.Container, name string) corev1.EnvVar {
	t.Helper()
	for _, e := range c.Env {
		if e.Name == name {
			return e
		}
	}
	t.Fatalf("container has no %s: %+v", name, c.Env)
	return corev1.EnvVar{}
}

func hasEnv(c *corev1.Container, name string) bool {
	for _, e := range c.Env {
		if e.Name == name {
			return true
		}
	}
	return false
}

func volume(t *testing.T, ds *appsv1.DaemonSet, name string) corev1.Volume {
	t.Helper()
	for _, v := range ds.Spec.Template.Spec.Volumes {
		if v.Name == name {
			return v
		}
	}
	t.Fatalf("no volume %s", name)
	return corev1.Volume{}
}

func hasVolume(ds *appsv1.DaemonSet, name string) bool {
	for _, v := range ds.Spec.Template.Spec.Volumes {
		if v.Name == name {
			return true
		}
	}
	return false
}

func mount(t *testing.T, c *corev1.Container, name string) corev1.VolumeMount {
	t.Helper()
	for _, m := range c.VolumeMounts {
		if m.Name == name {
			return m
		}
	}
	t.Fatalf("no mount of volume %s: %+v", name, c.VolumeMounts)
	return corev1.VolumeMount{}
}

// plainManifest is packaging/kubernetes/daemonset.yaml: the chart's
// defaults rendered for kubectl apply, with the namespace they need.
func plainManifest(t *testing.T) []byte {
	t.Helper()
	r := mustRender(t, nil)
	var b bytes.Buffer
	b.WriteString(`# roce-agent as a DaemonSet, for clusters without Helm: the Helm chart
# packaging/helm/roce-agent rendered with its default values (namespace
# ` + namespace + `, release ` + releaseName + `). Generated by
#   cd packaging/kubernetes && go test -run TestPlainManifest -update
# do not edit: change the chart and regenerate.
#
# Before applying, edit the ConfigMap's config.yaml: set controller.url (each
# node's desired state then comes from the controller) or a desired state
# (qos, rails): with neither the agent changes nothing and exits 2. The
# chart's values.yaml explains every choice made here. The pods take a
# changed ConfigMap at their next start:
#
#   kubectl apply -f daemonset.yaml
#   kubectl -n ` + namespace + ` rollout restart daemonset/` + releaseName + `
---
apiVersion: v1
kind: Namespace
metadata:
  name: ` + namespace + `
  labels:
    # host network, host paths and NET_ADMIN need the privileged level.
    pod-security.kubernetes.io/enforce: privileged
`)
	for _, d := range splitDocs(r.manifest) {
		b.WriteString("---\n")
		b.WriteString(strings.TrimLeft(d.text, "\n"))
		if !strings.HasSuffix(d.text, "\n") {
			b.WriteString("\n")
		}
	}
	return b.Bytes()
}

func TestPlainManifest(t *testing.T) {
	got := plainManifest(t)
	const file = "daemonset.yaml"
	if *update {
		if err := os.WriteFile(file, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(file)
	if err != nil {
		t.Fatalf("%v (run go test -run TestPlainManifest -update)", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s is not the chart's current render: run `go test -run TestPlainManifest -update` in packaging/kubernetes", file)
	}
	// It decodes strictly like every render, the namespace included.
	r := &rendered{}
	r.decode(t, string(want))
	if r.namespace == nil || r.namespace.Name != namespace || r.daemonSet == nil || r.daemonSet.Namespace != namespace {
		t.Errorf("daemonset.yaml: kinds %v; want a Namespace %s and the DaemonSet in it", r.kinds, namespace)
	}
	for _, d := range r.docs {
		if strings.Contains(d.text, "ServiceMonitor") && strings.Contains(d.text, "kind: ServiceMonitor") {
			t.Errorf("daemonset.yaml holds a ServiceMonitor; the defaults have none")
		}
	}
}

// writeFile writes a file, making its directory.
func writeFile(t *testing.T, path string, data []byte, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, mode); err != nil {
		t.Fatal(err)
	}
}

func keys[M ~map[string]V, V any](m M) string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	return fmt.Sprint(ks)
}
