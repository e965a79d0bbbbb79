package kubernetes

import (
	"regexp"
	"slices"
	"strings"
	"testing"

	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/lint"
	"helm.sh/helm/v3/pkg/lint/support"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"
)

// valueSet is one set of values the chart is rendered with.
type valueSet struct {
	name   string
	values string   // YAML, as a user's -f file
	apis   []string // API versions the cluster serves beyond the defaults
	// caps is the container's capabilities.add.
	caps []string
	// check asserts what this set is about.
	check func(t *testing.T, r *rendered)
	// files are the credential files the agent check provides for volumes
	// the chart does not fill (an existing Secret, a host path): volume
	// name -> file name -> content; NODE in a name is the node's name.
	files map[string]map[string]string
}

// testNode is the node the agent check pretends to run on.
const testNode = "gpu-017"

// defaultCaps is the chart's default capability set.
var defaultCaps = []string{"NET_ADMIN", "NET_RAW"}

var valueSets = []valueSet{
	{
		name: "defaults",
		caps: defaultCaps,
		check: func(t *testing.T, r *rendered) {
			if got := strings.Join(r.kinds, ","); got != "ServiceAccount,ConfigMap,DaemonSet" {
				t.Errorf("kinds %s, want ServiceAccount,ConfigMap,DaemonSet", got)
			}
			cfg := r.configMapValues(t)
			if _, ok := cfg["controller"]; ok {
				t.Errorf("defaults: config has a controller section: %v", cfg)
			}
			for _, k := range []string{"rails", "qos", "addressing", "link", "listen"} {
				if _, ok := cfg[k]; ok {
					t.Errorf("defaults: config sets %s; the defaults are settings only (listen from the environment)", k)
				}
			}
			if cfg["state_dir"] != "/var/lib/roce-agent" {
				t.Errorf("state_dir %v, want /var/lib/roce-agent", cfg["state_dir"])
			}
			c := r.container(t)
			// listen.metrics on the node's address, IPv4 or IPv6.
			if e := envVar(t, c, "HOST_IP"); e.ValueFrom == nil || e.ValueFrom.FieldRef == nil || e.ValueFrom.FieldRef.FieldPath != "status.hostIP" {
				t.Errorf("HOST_IP: %+v, want the downward API's status.hostIP", e)
			}
			if e := envVar(t, c, "ROCE_AGENT_LISTEN_METRICS"); e.Value != "[$(HOST_IP)]:9487" {
				t.Errorf("ROCE_AGENT_LISTEN_METRICS %q", e.Value)
			}
			if c.ReadinessProbe.HTTPGet.Host != "" {
				t.Errorf("probe host %q: the kubelet asks the pod's (node's) address", c.ReadinessProbe.HTTPGet.Host)
			}
			for _, v := range []string{"controller-credentials", "web-config", "dev-infiniband", "lldpd-socket"} {
				if hasVolume(r.daemonSet, v) {
					t.Errorf("defaults mount %s", v)
				}
			}
			spec := r.daemonSet.Spec.Template.Spec
			if spec.NodeSelector["nvidia.com/gpu.present"] != "true" || len(spec.NodeSelector) != 1 {
				t.Errorf("nodeSelector %v, want nvidia.com/gpu.present=true", spec.NodeSelector)
			}
			want := corev1.Toleration{Key: "nvidia.com/gpu", Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule}
			if len(spec.Tolerations) != 1 || spec.Tolerations[0] != want {
				t.Errorf("tolerations %+v, want %+v", spec.Tolerations, want)
			}
			res := c.Resources
			if res.Requests.Memory().String() != "20Mi" || res.Requests.Cpu().String() != "10m" || res.Limits.Memory().String() != "128Mi" {
				t.Errorf("resources %+v", res)
			}
			if !strings.Contains(r.notes, "neither controller.url nor desiredState") {
				t.Errorf("NOTES do not warn that nothing is converged without a desired state:\n%s", r.notes)
			}
			if !strings.Contains(r.manifest, "No controller.url and no desired state") {
				t.Errorf("the ConfigMap does not say that the agent needs a desired state")
			}
		},
	},
	{
		name: "controller with a token secret",
		values: `
controller:
  url: https://roce-controller.fabric.svc:8443
  auth: token
  customCA: true
  credentials:
    tokens:
      gpu-017: tok-gpu-017-0123456789
      gpu-018: tok-gpu-018-0123456789
    ca: CA_PEM
settings:
  log: {level: debug, format: json}
  lldp: {source: listen, interval: 1m}
  reconcile: {resync_interval: 2m}
`,
		caps: defaultCaps,
		check: func(t *testing.T, r *rendered) {
			cfg := r.configMapValues(t)
			ctl, _ := cfg["controller"].(map[string]any)
			if ctl["url"] != "https://roce-controller.fabric.svc:8443" {
				t.Errorf("controller %v", ctl)
			}
			if r.secret == nil {
				t.Fatal("no Secret rendered")
			}
			for _, k := range []string{"gpu-017.token", "gpu-018.token", "ca.crt"} {
				if _, ok := r.secret.Data[k]; !ok {
					t.Errorf("Secret has no %s: %s", k, keys(r.secret.Data))
				}
			}
			if string(r.secret.Data["gpu-017.token"]) != "tok-gpu-017-0123456789" {
				t.Errorf("token %q", r.secret.Data["gpu-017.token"])
			}
			v := volume(t, r.daemonSet, "controller-credentials")
			if v.Secret == nil || v.Secret.SecretName != r.secret.Name || *v.Secret.DefaultMode != 0o400 {
				t.Errorf("credentials volume %+v, want the Secret %s, mode 0400", v.VolumeSource, r.secret.Name)
			}
			c := r.container(t)
			if e := envVar(t, c, "ROCE_AGENT_CONTROLLER_TOKEN_FILE"); e.Value != "/etc/roce-agent/controller/$(ROCE_AGENT_NODE_NAME).token" {
				t.Errorf("token file %q", e.Value)
			}
			if e := envVar(t, c, "ROCE_AGENT_CONTROLLER_CA_FILE"); e.Value != "/etc/roce-agent/controller/ca.crt" {
				t.Errorf("CA file %q", e.Value)
			}
			if hasEnv(c, "ROCE_AGENT_CONTROLLER_CERT_FILE") {
				t.Error("token auth sets a client certificate")
			}
			if r.daemonSet.Spec.Template.Annotations["checksum/controller-secret"] == "" {
				t.Error("no checksum of the chart's Secret: a new token would not restart the pods")
			}
			if !strings.Contains(r.notes, "Controller mode") {
				t.Errorf("NOTES:\n%s", r.notes)
			}
		},
	},
	{
		name: "mTLS with an existing secret",
		values: `
controller:
  url: https://fabric-ctl-0.example:8443,https://fabric-ctl-1.example:8443
  auth: mtls
  credentials:
    existingSecret: fabric-node-certs
`,
		caps: defaultCaps,
		files: map[string]map[string]string{"controller-credentials": {
			"NODE.crt": "CERT_PEM", "NODE.key": "KEY_PEM", "ca.crt": "CA_PEM",
		}},
		check: func(t *testing.T, r *rendered) {
			if r.secret != nil {
				t.Errorf("a Secret was rendered beside the existing one: %s", r.secret.Name)
			}
			v := volume(t, r.daemonSet, "controller-credentials")
			if v.Secret == nil || v.Secret.SecretName != "fabric-node-certs" {
				t.Errorf("credentials volume %+v, want Secret fabric-node-certs", v.VolumeSource)
			}
			c := r.container(t)
			for name, want := range map[string]string{
				"ROCE_AGENT_CONTROLLER_CERT_FILE": "/etc/roce-agent/controller/$(ROCE_AGENT_NODE_NAME).crt",
				"ROCE_AGENT_CONTROLLER_KEY_FILE":  "/etc/roce-agent/controller/$(ROCE_AGENT_NODE_NAME).key",
				"ROCE_AGENT_CONTROLLER_CA_FILE":   "/etc/roce-agent/controller/ca.crt",
			} {
				if e := envVar(t, c, name); e.Value != want {
					t.Errorf("%s %q, want %q", name, e.Value, want)
				}
			}
			if m := mount(t, c, "controller-credentials"); !m.ReadOnly {
				t.Error("credentials mounted read-write")
			}
		},
	},
	{
		name: "monitors on",
		values: `
serviceMonitor:
  enabled: true
  labels: {release: kube-prometheus-stack}
  interval: 15s
podMonitor:
  enabled: true
  metricRelabelings:
    - action: drop
      sourceLabels: [__name__]
      regex: roce_agent_rdma_hw_stats_total
`,
		apis: monitoringAPIs,
		caps: defaultCaps,
		check: func(t *testing.T, r *rendered) {
			if r.service == nil || r.serviceMonitor == nil || r.podMonitor == nil {
				t.Fatalf("kinds %v, want a Service, a ServiceMonitor and a PodMonitor", r.kinds)
			}
			if r.service.Spec.ClusterIP != corev1.ClusterIPNone || r.service.Spec.Ports[0].TargetPort != intstr.FromString("metrics") {
				t.Errorf("service %+v", r.service.Spec)
			}
			sel := r.daemonSet.Spec.Template.Labels
			for k, v := range r.service.Spec.Selector {
				if sel[k] != v {
					t.Errorf("the Service selects %s=%s, the pods have %q", k, v, sel[k])
				}
			}
			for k, v := range r.serviceMonitor.Spec.Selector.MatchLabels {
				if r.service.Labels[k] != v {
					t.Errorf("the ServiceMonitor selects %s=%s, the Service has %q", k, v, r.service.Labels[k])
				}
			}
			for k, v := range r.podMonitor.Spec.Selector.MatchLabels {
				if sel[k] != v {
					t.Errorf("the PodMonitor selects %s=%s, the pods have %q", k, v, sel[k])
				}
			}
			ep := r.serviceMonitor.Spec.Endpoints
			if len(ep) != 1 || ep[0].Port != "metrics" || ep[0].Path != "/metrics" || string(ep[0].Interval) != "15s" {
				t.Errorf("ServiceMonitor endpoints %+v", ep)
			}
			if r.serviceMonitor.Labels["release"] != "kube-prometheus-stack" {
				t.Errorf("ServiceMonitor labels %v", r.serviceMonitor.Labels)
			}
			pep := r.podMonitor.Spec.PodMetricsEndpoints
			if len(pep) != 1 || pep[0].Port == nil || *pep[0].Port != "metrics" || len(pep[0].MetricRelabelConfigs) != 1 {
				t.Errorf("PodMonitor endpoints %+v", pep)
			}
			if rl := pep[0].RelabelConfigs; len(rl) < 2 || rl[1].TargetLabel != "instance" {
				t.Errorf("PodMonitor relabelings %+v: want instance from the node's name", rl)
			}
			if r.serviceMonitor.Spec.NamespaceSelector.MatchNames[0] != namespace {
				t.Errorf("namespaceSelector %+v", r.serviceMonitor.Spec.NamespaceSelector)
			}
		},
	},
	{
		name: "custom nodeSelector and tolerations",
		values: `
nodeSelector:
  nvidia.com/gpu.present: null   # Helm merges maps: null removes the default
  node-role.kubernetes.io/gpu: ""
  fabric: roce
tolerations:
  - key: dedicated
    operator: Equal
    value: gpu
    effect: NoExecute
  - operator: Exists
affinity:
  nodeAffinity:
    requiredDuringSchedulingIgnoredDuringExecution:
      nodeSelectorTerms:
        - matchExpressions:
            - {key: kubernetes.io/arch, operator: In, values: [amd64, arm64]}
priorityClassName: system-node-critical
metrics:
  bind: all
image:
  digest: sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
`,
		caps: defaultCaps,
		check: func(t *testing.T, r *rendered) {
			spec := r.daemonSet.Spec.Template.Spec
			if len(spec.NodeSelector) != 2 || spec.NodeSelector["fabric"] != "roce" {
				t.Errorf("nodeSelector %v: want the values' two labels, the default removed", spec.NodeSelector)
			}
			if len(spec.Tolerations) != 2 || spec.Tolerations[0].Key != "dedicated" || spec.Tolerations[1].Operator != corev1.TolerationOpExists {
				t.Errorf("tolerations %+v", spec.Tolerations)
			}
			if spec.Affinity == nil || spec.Affinity.NodeAffinity == nil {
				t.Error("no affinity")
			}
			if spec.PriorityClassName != "system-node-critical" {
				t.Errorf("priorityClassName %q", spec.PriorityClassName)
			}
			c := r.container(t)
			if !strings.HasSuffix(c.Image, "@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef") {
				t.Errorf("image %q, want the digest", c.Image)
			}
			// bind: all is the file's listen.metrics, not the environment's.
			if hasEnv(c, "ROCE_AGENT_LISTEN_METRICS") || hasEnv(c, "HOST_IP") {
				t.Error("bind all still binds the host IP through the environment")
			}
			listen, _ := r.configMapValues(t)["listen"].(map[string]any)
			if listen["metrics"] != ":9487" {
				t.Errorf("listen %v, want metrics :9487", listen)
			}
		},
	},
	{
		name: "probes with /dev/infiniband",
		values: `
controller:
  url: https://roce-controller.fabric.svc:8443
  auth: mtls
  credentials:
    source: hostPath
    hostPath: /etc/roce-agent/pki
    files: {cert: tls.crt, key: tls.key, ca: ca.crt}
probes:
  enabled: true
  extraResources:
    rdma/rdma_shared_device_a: 1
settings:
  probes:
    interval: 10m
    peers_per_interval: 4
    tools: [ib_write_lat, ib_write_bw]
lldpd:
  socket: true
`,
		caps: []string{"IPC_LOCK", "NET_ADMIN", "NET_RAW"},
		files: map[string]map[string]string{"controller-credentials": {
			"tls.crt": "CERT_PEM", "tls.key": "KEY_PEM", "ca.crt": "CA_PEM",
		}},
		check: func(t *testing.T, r *rendered) {
			c := r.container(t)
			m := mount(t, c, "dev-infiniband")
			v := volume(t, r.daemonSet, "dev-infiniband")
			if m.MountPath != "/dev/infiniband" || m.ReadOnly || v.HostPath == nil || v.HostPath.Path != "/dev/infiniband" {
				t.Errorf("/dev/infiniband: mount %+v, volume %+v", m, v.VolumeSource)
			}
			var probePort bool
			for _, p := range c.Ports {
				probePort = probePort || (p.Name == "probe-api" && p.ContainerPort == 9488)
			}
			if !probePort {
				t.Errorf("ports %+v: no probe-api 9488", c.Ports)
			}
			q := c.Resources.Limits["rdma/rdma_shared_device_a"]
			if q.String() != "1" || c.Resources.Limits.Memory().String() != "128Mi" {
				t.Errorf("limits %v: want the RDMA device and the memory limit", c.Resources.Limits)
			}
			cfg := r.configMapValues(t)
			listen, _ := cfg["listen"].(map[string]any)
			if listen["probe_api"] != ":9488" {
				t.Errorf("listen %v, want probe_api :9488", listen)
			}
			if lldp, _ := cfg["lldp"].(map[string]any); lldp["socket"] != "/run/lldpd/lldpd.socket" {
				t.Errorf("lldp %v", cfg["lldp"])
			}
			if v := volume(t, r.daemonSet, "lldpd-socket"); v.HostPath == nil || *v.HostPath.Type != corev1.HostPathSocket {
				t.Errorf("lldpd socket volume %+v", v.VolumeSource)
			}
			cv := volume(t, r.daemonSet, "controller-credentials")
			if cv.HostPath == nil || cv.HostPath.Path != "/etc/roce-agent/pki" {
				t.Errorf("credentials %+v, want the host's /etc/roce-agent/pki", cv.VolumeSource)
			}
			if e := envVar(t, c, "ROCE_AGENT_CONTROLLER_CERT_FILE"); e.Value != "/etc/roce-agent/controller/tls.crt" {
				t.Errorf("cert file %q", e.Value)
			}
		},
	},
	{
		name: "web config on a fixed IPv6 address",
		values: `
metrics:
  bind: "fd00::5"
  port: 19487
  webConfig:
    existingSecret: roce-agent-web
serviceMonitor:
  enabled: true
  force: true
  tlsConfig:
    insecureSkipVerify: true
healthProbes:
  httpHeaders:
    - name: Authorization
      value: Basic cHJvbWV0aGV1czpzZWNyZXQ=
`,
		caps: defaultCaps,
		files: map[string]map[string]string{"web-config": {
			"web-config.yml": "tls_server_config:\n  cert_file: tls.crt\n  key_file: tls.key\n",
			"tls.crt":        "CERT_PEM", "tls.key": "KEY_PEM",
		}},
		check: func(t *testing.T, r *rendered) {
			c := r.container(t)
			for _, p := range []*corev1.Probe{c.ReadinessProbe, c.LivenessProbe} {
				g := p.HTTPGet
				if g.Scheme != corev1.URISchemeHTTPS || g.Host != "fd00::5" || g.Port != intstr.FromString("metrics") || len(g.HTTPHeaders) != 1 {
					t.Errorf("probe %+v: want HTTPS to fd00::5 with the header", g)
				}
			}
			if c.Ports[0].ContainerPort != 19487 {
				t.Errorf("ports %+v", c.Ports)
			}
			listen, _ := r.configMapValues(t)["listen"].(map[string]any)
			if listen["metrics"] != "[fd00::5]:19487" || listen["web_config_file"] != "/etc/roce-agent/web/web-config.yml" {
				t.Errorf("listen %v", listen)
			}
			if r.serviceMonitor == nil {
				t.Fatalf("force: no ServiceMonitor without the API (kinds %v)", r.kinds)
			}
			if r.podMonitor != nil {
				t.Error("a PodMonitor that was not enabled")
			}
			ep := r.serviceMonitor.Spec.Endpoints[0]
			if ep.Scheme == nil || strings.ToLower(string(*ep.Scheme)) != "https" || ep.TLSConfig == nil {
				t.Errorf("ServiceMonitor endpoint scheme %v, TLS %+v", ep.Scheme, ep.TLSConfig)
			}
			if r.service.Spec.Ports[0].Port != 19487 {
				t.Errorf("service ports %+v", r.service.Spec.Ports)
			}
		},
	},
	{
		name: "local mode with a QoS profile",
		values: `
desiredState:
  link: {mtu: 4200}
  qos:
    trust: dscp
    pfc_priorities: [3]
    dscp_to_priority: {26: 3, 48: 6}
    roce_tos: 106
    roce_mode: RoCE v2
privileged: true
appArmorProfile: ""
hostPaths:
  debugfs: {enabled: false}
`,
		caps: defaultCaps,
		check: func(t *testing.T, r *rendered) {
			cfg := r.configMapValues(t)
			qos, _ := cfg["qos"].(map[string]any)
			if qos["trust"] != "dscp" || qos["roce_tos"] != float64(106) {
				t.Errorf("qos %v", qos)
			}
			c := r.container(t)
			sc := c.SecurityContext
			if sc.Privileged == nil || !*sc.Privileged || sc.AllowPrivilegeEscalation != nil || sc.AppArmorProfile != nil {
				t.Errorf("securityContext %+v: want privileged, no allowPrivilegeEscalation, no AppArmor field", sc)
			}
			if hasVolume(r.daemonSet, "debugfs") {
				t.Error("debugfs mounted while disabled")
			}
			if !strings.Contains(r.notes, "Local mode") || strings.Contains(r.notes, "read-only in it") {
				t.Errorf("NOTES:\n%s", r.notes)
			}
		},
	},
}

func parseValues(t *testing.T, s string) map[string]any {
	t.Helper()
	vals := map[string]any{}
	if err := yaml.Unmarshal([]byte(s), &vals); err != nil {
		t.Fatalf("values: %v", err)
	}
	return vals
}

// renderSet renders a value set, with the test PEMs in place of CA_PEM,
// CERT_PEM and KEY_PEM.
func renderSet(t *testing.T, vs valueSet) *rendered {
	t.Helper()
	vals := parseValues(t, vs.values)
	pems(t).replaceIn(vals)
	return mustRender(t, vals, vs.apis...)
}

func TestChartRenders(t *testing.T) {
	for _, vs := range valueSets {
		t.Run(vs.name, func(t *testing.T) {
			r := renderSet(t, vs)
			checkCommon(t, r, vs)
			vs.check(t, r)
		})
	}
}

var varRef = regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)

// checkCommon asserts what every render must have: the DaemonSet's host
// network, security context, downward API, probes and mounts.
func checkCommon(t *testing.T, r *rendered, vs valueSet) {
	t.Helper()
	ds := r.daemonSet
	if ds == nil || r.configMap == nil || r.serviceAccount == nil {
		t.Fatalf("kinds %v: want a DaemonSet, a ConfigMap and a ServiceAccount", r.kinds)
	}
	for _, name := range []string{ds.Name, r.configMap.Name, r.serviceAccount.Name} {
		if name != releaseName {
			t.Errorf("object named %q, want %q", name, releaseName)
		}
	}
	for _, ns := range []string{ds.Namespace, r.configMap.Namespace, r.serviceAccount.Namespace} {
		if ns != namespace {
			t.Errorf("namespace %q, want %q", ns, namespace)
		}
	}
	spec := ds.Spec.Template.Spec
	if !spec.HostNetwork || spec.DNSPolicy != corev1.DNSClusterFirstWithHostNet {
		t.Errorf("hostNetwork %v, dnsPolicy %q: want the host's network with cluster DNS", spec.HostNetwork, spec.DNSPolicy)
	}
	if spec.HostPID || spec.HostIPC {
		t.Error("host PID or IPC namespace")
	}
	if spec.EnableServiceLinks == nil || *spec.EnableServiceLinks {
		t.Error("enableServiceLinks is not false: service variables would look like ROCE_AGENT_* settings")
	}
	if spec.AutomountServiceAccountToken == nil || *spec.AutomountServiceAccountToken {
		t.Error("the service account token is mounted; the agent never uses it")
	}
	if spec.ServiceAccountName != r.serviceAccount.Name {
		t.Errorf("serviceAccountName %q, the ServiceAccount is %q", spec.ServiceAccountName, r.serviceAccount.Name)
	}
	if spec.SecurityContext == nil || spec.SecurityContext.SeccompProfile == nil || spec.SecurityContext.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("pod securityContext %+v: want seccomp RuntimeDefault", spec.SecurityContext)
	}
	if spec.TerminationGracePeriodSeconds == nil || *spec.TerminationGracePeriodSeconds != 30 {
		t.Errorf("terminationGracePeriodSeconds %v", spec.TerminationGracePeriodSeconds)
	}
	us := ds.Spec.UpdateStrategy
	if us.Type != appsv1.RollingUpdateDaemonSetStrategyType || us.RollingUpdate == nil || us.RollingUpdate.MaxUnavailable.String() != "1" {
		t.Errorf("updateStrategy %+v: want RollingUpdate, maxUnavailable 1", us)
	}
	for k, v := range ds.Spec.Selector.MatchLabels {
		if ds.Spec.Template.Labels[k] != v {
			t.Errorf("selector %s=%s does not match the pod's %q", k, v, ds.Spec.Template.Labels[k])
		}
	}
	if ds.Spec.Template.Annotations["checksum/config"] == "" {
		t.Error("no checksum/config: a changed config would not restart the pods")
	}

	c := r.container(t)
	sc := c.SecurityContext
	if sc == nil || sc.Capabilities == nil {
		t.Fatal("container has no securityContext.capabilities")
	}
	if sc.RunAsUser == nil || *sc.RunAsUser != 0 {
		t.Errorf("runAsUser %v, want 0 (capabilities of another uid need ambient capabilities)", sc.RunAsUser)
	}
	if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		t.Error("the root file system is writable")
	}
	if got := capNames(sc.Capabilities.Drop); !slices.Equal(got, []string{"ALL"}) {
		t.Errorf("capabilities.drop %v, want [ALL]", got)
	}
	if got := capNames(sc.Capabilities.Add); !slices.Equal(got, vs.caps) {
		t.Errorf("capabilities.add %v, want %v", got, vs.caps)
	}
	if sc.Privileged != nil && *sc.Privileged {
		if vs.name != "local mode with a QoS profile" {
			t.Error("privileged")
		}
	} else {
		if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
			t.Error("allowPrivilegeEscalation is not false")
		}
		if sc.AppArmorProfile == nil || sc.AppArmorProfile.Type != corev1.AppArmorProfileTypeUnconfined {
			t.Errorf("appArmorProfile %+v: the runtime's default profile denies the configfs and debugfs writes", sc.AppArmorProfile)
		}
	}

	// The node's name from the downward API.
	e := envVar(t, c, "ROCE_AGENT_NODE_NAME")
	if e.ValueFrom == nil || e.ValueFrom.FieldRef == nil || e.ValueFrom.FieldRef.FieldPath != "spec.nodeName" || e.Value != "" {
		t.Errorf("ROCE_AGENT_NODE_NAME %+v, want fieldRef spec.nodeName", e)
	}
	// $(VAR) references name variables defined before them, as the
	// kubelet expands them.
	defined := map[string]bool{}
	for _, e := range c.Env {
		for _, m := range varRef.FindAllStringSubmatch(e.Value, -1) {
			if !defined[m[1]] {
				t.Errorf("%s refers to $(%s), not defined before it", e.Name, m[1])
			}
		}
		defined[e.Name] = true
	}

	// Probes on the metrics port.
	var metricsPort int32
	for _, p := range c.Ports {
		if p.Name == "metrics" {
			metricsPort = p.ContainerPort
		}
		if p.HostPort != 0 && p.HostPort != p.ContainerPort {
			t.Errorf("port %s: hostPort %d differs from containerPort %d on the host network", p.Name, p.HostPort, p.ContainerPort)
		}
	}
	if metricsPort == 0 {
		t.Errorf("no metrics port: %+v", c.Ports)
	}
	for _, p := range []struct {
		name  string
		probe *corev1.Probe
		path  string
	}{{"readiness", c.ReadinessProbe, "/readyz"}, {"liveness", c.LivenessProbe, "/healthz"}} {
		if p.probe == nil || p.probe.HTTPGet == nil {
			t.Errorf("%s probe %+v: want httpGet", p.name, p.probe)
			continue
		}
		if g := p.probe.HTTPGet; g.Path != p.path || g.Port != intstr.FromString("metrics") {
			t.Errorf("%s probe %s on %s, want %s on the metrics port", p.name, g.Path, g.Port.String(), p.path)
		}
	}
	if c.StartupProbe != nil {
		t.Error("a startup probe")
	}

	// Arguments and mounts.
	if len(c.Args) < 3 || c.Args[0] != "run" || c.Args[1] != "--config" || c.Args[2] != "/etc/roce-agent/config/config.yaml" {
		t.Errorf("args %v, want run --config /etc/roce-agent/config/config.yaml", c.Args)
	}
	if v := volume(t, ds, "config"); v.ConfigMap == nil || v.ConfigMap.Name != r.configMap.Name {
		t.Errorf("config volume %+v, want ConfigMap %s", v.VolumeSource, r.configMap.Name)
	}
	if m := mount(t, c, "config"); m.MountPath != "/etc/roce-agent/config" || !m.ReadOnly {
		t.Errorf("config mount %+v", m)
	}
	type hostMount struct {
		path, mountPath string
		readOnly        bool
		typ             corev1.HostPathType
	}
	want := map[string]hostMount{
		"sys":         {"/sys", "/sys", true, corev1.HostPathDirectory},
		"sys-devices": {"/sys/devices", "/sys/devices", false, corev1.HostPathDirectory},
		"configfs":    {"/sys/kernel/config", "/sys/kernel/config", false, corev1.HostPathDirectory},
		"debugfs":     {"/sys/kernel/debug", "/sys/kernel/debug", false, corev1.HostPathDirectory},
		"state":       {"/var/lib/roce-agent", "/var/lib/roce-agent", false, corev1.HostPathDirectoryOrCreate},
	}
	for name, w := range want {
		if !hasVolume(ds, name) && name == "debugfs" {
			continue // a set disables it
		}
		v := volume(t, ds, name)
		m := mount(t, c, name)
		if v.HostPath == nil || v.HostPath.Path != w.path || v.HostPath.Type == nil || *v.HostPath.Type != w.typ {
			t.Errorf("volume %s %+v, want hostPath %s (%s)", name, v.VolumeSource, w.path, w.typ)
		}
		if m.MountPath != w.mountPath || m.ReadOnly != w.readOnly {
			t.Errorf("mount %s at %s readOnly %v, want %s readOnly %v", name, m.MountPath, m.ReadOnly, w.mountPath, w.readOnly)
		}
	}
	if cfg := r.configMapValues(t); cfg["state_dir"] != mount(t, c, "state").MountPath {
		t.Errorf("state_dir %v is not the state mount", cfg["state_dir"])
	}
	// Every mount has its volume, and no two share a path.
	paths := map[string]bool{}
	for _, m := range c.VolumeMounts {
		volume(t, ds, m.Name)
		if paths[m.MountPath] {
			t.Errorf("two mounts at %s", m.MountPath)
		}
		paths[m.MountPath] = true
	}
}

// capNames are capability names as strings.
func capNames(cs []corev1.Capability) []string {
	out := make([]string, len(cs))
	for i, c := range cs {
		out[i] = string(c)
	}
	return out
}

// TestMonitorsNeedTheAPI: without monitoring.coreos.com/v1 the monitors and
// their Service are left out unless forced.
func TestMonitorsNeedTheAPI(t *testing.T) {
	vals := "serviceMonitor: {enabled: true}\npodMonitor: {enabled: true}\n"
	r := mustRender(t, parseValues(t, vals))
	if r.serviceMonitor != nil || r.podMonitor != nil || r.service != nil {
		t.Errorf("kinds %v without the monitoring API", r.kinds)
	}
	if !strings.Contains(r.notes, "no ServiceMonitor or\nPodMonitor was created") {
		t.Errorf("NOTES do not say the monitors were left out:\n%s", r.notes)
	}
	r = mustRender(t, parseValues(t, "podMonitor: {enabled: true, force: true}\n"))
	if r.podMonitor == nil || r.serviceMonitor != nil {
		t.Errorf("kinds %v, want the forced PodMonitor only", r.kinds)
	}
	r = mustRender(t, nil, monitoringAPIs...)
	if r.serviceMonitor != nil || r.podMonitor != nil {
		t.Errorf("kinds %v: monitors that were not enabled", r.kinds)
	}
}

// TestChartRefuses: values the agent would refuse at start fail the
// install, naming the value.
func TestChartRefuses(t *testing.T) {
	for _, tc := range []struct{ values, want string }{
		{"controller: {url: 'https://c:8443'}\ndesiredState: {qos: {trust: dscp}}\n", "desiredState: set, but controller.url is set"},
		{"controller: {auth: token}\n", "need controller.url"},
		{"controller: {url: 'https://c:8443', auth: password}\n", "at '/controller/auth': value must be one of"},
		{"controller: {url: 'https://c:8443', auth: token}\n", "set controller.credentials.tokens"},
		{"controller: {url: 'https://c:8443', auth: mtls}\n", "set controller.credentials.certificates"},
		{"controller: {url: 'https://c:8443', customCA: true}\n", "set controller.credentials.ca"},
		{"controller: {url: 'http://c:8080', insecureHTTP: true, auth: mtls, credentials: {existingSecret: s}}\n", "need an https controller.url"},
		{"controller: {url: 'https://c:8443', auth: token, credentials: {source: volume}}\n", "set controller.credentials.volume"},
		{"probes: {enabled: true}\n", "probes.enabled: peers are authenticated"},
		{"controller: {url: 'https://c:8443', auth: token, credentials: {tokens: {gpu-1: t1, gpu-2: t2}, files: {token: token}}}\n", "names one file for every node"},
		{"settings: {state_dir: /tmp/x}\n", "settings.state_dir: set by the chart"},
		{"settings: {listen: {metrics: ':1'}}\n", "settings.listen: set by the chart"},
		{"settings: {controller: {url: 'https://c'}}\n", "settings.controller: url"},
		{"settings: {qos: {trust: dscp}}\n", "settings.qos: desired state"},
		{"appArmorProfile: Localhost\n", "appArmorLocalhostProfile: required"},
		// values.schema.json: a misspelt key, a wrong type.
		{"nodeSelecter: {fabric: roce}\n", "nodeSelecter"},
		{"metrics: {port: '9487'}\n", "at '/metrics/port': got string, want integer"},
		{"hostPaths: {stateDir: var/lib/roce-agent}\n", "at '/hostPaths/stateDir'"},
	} {
		_, err := renderChart(t, parseValues(t, tc.values))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("values %q: error %v, want one containing %q", tc.values, err, tc.want)
		}
	}
}

// TestChartKubeVersion: the chart asks for the Kubernetes that has
// securityContext.appArmorProfile (1.30).
func TestChartKubeVersion(t *testing.T) {
	c := loadChart(t)
	if c.Metadata.APIVersion != "v2" {
		t.Errorf("Chart.yaml apiVersion %q, want v2", c.Metadata.APIVersion)
	}
	old := kubeVersion
	defer func() { kubeVersion = old }()
	kubeVersion = &chartutil.KubeVersion{Version: "v1.29.9", Major: "1", Minor: "29"}
	if _, err := renderChart(t, nil); err == nil || !strings.Contains(err.Error(), "kubeVersion") {
		t.Errorf("render for 1.29: %v, want the chart's kubeVersion refusing it", err)
	}
}

// TestChartLint: `helm lint` (the library's linter) finds nothing above
// INFO, for the defaults and each value set.
func TestChartLint(t *testing.T) {
	sets := append([]valueSet{{name: "defaults (no values)"}}, valueSets...)
	for _, vs := range sets {
		vals := parseValues(t, vs.values)
		pems(t).replaceIn(vals)
		l := lint.AllWithKubeVersion(chartDir, vals, namespace, kubeVersion)
		for _, m := range l.Messages {
			if m.Severity > support.InfoSev {
				t.Errorf("%s: %s", vs.name, m)
			} else {
				t.Logf("%s: %s", vs.name, m)
			}
		}
	}
}
