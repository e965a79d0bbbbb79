{{/* The chart's name, at most 63 characters. */}}
{{- define "roce-agent.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's full name, at most 63 characters. */}}
{{- define "roce-agent.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "roce-agent.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every object. */}}
{{- define "roce-agent.labels" -}}
helm.sh/chart: {{ include "roce-agent.chart" . }}
{{ include "roce-agent.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: node-agent
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* The DaemonSet's selector: never changes for a release. */}}
{{- define "roce-agent.selectorLabels" -}}
app.kubernetes.io/name: {{ include "roce-agent.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "roce-agent.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "roce-agent.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "roce-agent.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* The Secret the controller's credentials come from (source: secret). */}}
{{- define "roce-agent.controllerSecretName" -}}
{{- default (printf "%s-controller" (include "roce-agent.fullname" .)) .Values.controller.credentials.existingSecret }}
{{- end }}

{{/* "true" when the controller's credentials are mounted. */}}
{{- define "roce-agent.controllerCredentials" -}}
{{- $c := .Values.controller }}
{{- if and $c.url (or (ne $c.auth "none") $c.customCA) }}true{{ end }}
{{- end }}

{{/* "true" when the controller's CA file is used. */}}
{{- define "roce-agent.controllerCA" -}}
{{- $c := .Values.controller }}
{{- if and $c.url (or $c.customCA (eq $c.auth "mtls")) }}true{{ end }}
{{- end }}

{{/* The metrics port's scheme. */}}
{{- define "roce-agent.scheme" -}}
{{- if .Values.metrics.webConfig.existingSecret }}HTTPS{{ else }}HTTP{{ end }}
{{- end }}

{{/*
The bind address when metrics.bind names one: an IPv6 address in brackets.
Empty for hostIP (the environment sets it) and all.
*/}}
{{- define "roce-agent.bindHost" -}}
{{- $b := toString .Values.metrics.bind }}
{{- if not (has $b (list "hostIP" "all")) }}
{{- if contains ":" $b }}[{{ $b }}]{{ else }}{{ $b }}{{ end }}
{{- end }}
{{- end }}

{{/* The container's capabilities, sorted and without repeats. */}}
{{- define "roce-agent.capabilities" -}}
{{- $caps := concat .Values.capabilities .Values.extraCapabilities }}
{{- if .Values.probes.enabled }}
{{- $caps = append $caps "IPC_LOCK" }}
{{- end }}
{{- toYaml ($caps | uniq | sortAlpha) }}
{{- end }}

{{/*
Checks of values that the agent would refuse at start, so that a broken
release fails at install instead of in a crash-looping pod.
*/}}
{{- define "roce-agent.validate" -}}
{{- $c := .Values.controller }}
{{- if not (has $c.auth (list "none" "token" "mtls")) }}
{{- fail (printf "controller.auth: %q is not one of none, token, mtls" $c.auth) }}
{{- end }}
{{- if not (has $c.credentials.source (list "secret" "hostPath" "volume")) }}
{{- fail (printf "controller.credentials.source: %q is not one of secret, hostPath, volume" $c.credentials.source) }}
{{- end }}
{{- if and $c.url .Values.desiredState }}
{{- fail "desiredState: set, but controller.url is set and the controller sends the desired state; remove it" }}
{{- end }}
{{- if and (not $c.url) (or (ne $c.auth "none") $c.customCA $c.insecureHTTP) }}
{{- fail "controller.auth, controller.customCA and controller.insecureHTTP need controller.url" }}
{{- end }}
{{- if and (contains "http://" $c.url) (include "roce-agent.controllerCA" .) }}
{{- fail "controller.auth mtls and controller.customCA need an https controller.url" }}
{{- end }}
{{- if and (include "roce-agent.controllerCredentials" .) (eq $c.credentials.source "secret") (not $c.credentials.existingSecret) }}
{{- if and (eq $c.auth "token") (not $c.credentials.tokens) }}
{{- fail "controller.auth token: set controller.credentials.tokens (node name: token) or controller.credentials.existingSecret" }}
{{- end }}
{{- if and (eq $c.auth "mtls") (not $c.credentials.certificates) }}
{{- fail "controller.auth mtls: set controller.credentials.certificates (node name: {crt, key}) or controller.credentials.existingSecret" }}
{{- end }}
{{- $perNode := "$(ROCE_AGENT_NODE_NAME)" }}
{{- if and (eq $c.auth "token") (gt (len $c.credentials.tokens) 1) (not (contains $perNode $c.credentials.files.token)) }}
{{- fail (printf "controller.credentials.files.token: %q names one file for every node; with several tokens it must contain %s" $c.credentials.files.token $perNode) }}
{{- end }}
{{- if and (eq $c.auth "mtls") (gt (len $c.credentials.certificates) 1) (not (and (contains $perNode $c.credentials.files.cert) (contains $perNode $c.credentials.files.key))) }}
{{- fail (printf "controller.credentials.files.cert and key: with several certificates they must contain %s" $perNode) }}
{{- end }}
{{- if and (include "roce-agent.controllerCA" .) (not $c.credentials.ca) }}
{{- fail "controller.customCA (or auth mtls): set controller.credentials.ca (PEM) or controller.credentials.existingSecret" }}
{{- end }}
{{- end }}
{{- if and (eq $c.credentials.source "volume") (include "roce-agent.controllerCredentials" .) (not $c.credentials.volume) }}
{{- fail "controller.credentials.source volume: set controller.credentials.volume" }}
{{- end }}
{{- if .Values.probes.enabled }}
{{- $insecure := and .Values.settings.probes .Values.settings.probes.insecure_http }}
{{- if and (ne $c.auth "mtls") (not $insecure) }}
{{- fail "probes.enabled: peers are authenticated with the node's certificate: set controller.auth mtls (or settings.probes.insecure_http for a lab)" }}
{{- end }}
{{- end }}
{{- $settings := .Values.settings | default dict }}
{{- range $k := list "state_dir" "listen" "node" "sysfs_root" }}
{{- if hasKey $settings $k }}
{{- fail (printf "settings.%s: set by the chart (hostPaths, metrics, probes, the node's name); remove it" $k) }}
{{- end }}
{{- end }}
{{- if and (hasKey $settings "controller") (or (hasKey $settings.controller "url") (hasKey $settings.controller "insecure_http") (hasKey $settings.controller "ca_file") (hasKey $settings.controller "cert_file") (hasKey $settings.controller "key_file") (hasKey $settings.controller "token_file")) }}
{{- fail "settings.controller: url, insecure_http and the files are set by the chart's controller values; remove them" }}
{{- end }}
{{- range $k := list "generation" "link" "addressing" "rails" "qos" }}
{{- if hasKey $settings $k }}
{{- fail (printf "settings.%s: desired state: put it under desiredState (local mode) or leave it to the controller" $k) }}
{{- end }}
{{- end }}
{{- end }}

{{/*
The agent's config file: settings, the chart's keys, and in local mode the
desired state.
*/}}
{{- define "roce-agent.config" -}}
{{- $cfg := deepCopy (.Values.settings | default dict) }}
{{- $_ := set $cfg "state_dir" .Values.hostPaths.stateDir }}
{{- $listen := dict }}
{{- if eq (toString .Values.metrics.bind) "all" }}
{{- $_ := set $listen "metrics" (printf ":%v" .Values.metrics.port) }}
{{- else if ne (toString .Values.metrics.bind) "hostIP" }}
{{- $_ := set $listen "metrics" (printf "%s:%v" (include "roce-agent.bindHost" .) .Values.metrics.port) }}
{{- end }}
{{- if .Values.metrics.webConfig.existingSecret }}
{{- $_ := set $listen "web_config_file" (printf "%s/%s" .Values.metrics.webConfig.mountPath .Values.metrics.webConfig.file) }}
{{- end }}
{{- if .Values.probes.enabled }}
{{- $_ := set $listen "probe_api" (printf ":%v" .Values.probes.port) }}
{{- end }}
{{- if $listen }}
{{- $_ := set $cfg "listen" $listen }}
{{- end }}
{{- if .Values.lldpd.socket }}
{{- $lldp := deepCopy (get $cfg "lldp" | default dict) }}
{{- $_ := set $lldp "socket" "/run/lldpd/lldpd.socket" }}
{{- $_ := set $cfg "lldp" $lldp }}
{{- end }}
{{- if .Values.controller.url }}
{{- $ctl := deepCopy (get $cfg "controller" | default dict) }}
{{- $_ := set $ctl "url" .Values.controller.url }}
{{- if .Values.controller.insecureHTTP }}
{{- $_ := set $ctl "insecure_http" true }}
{{- end }}
{{- $_ := set $cfg "controller" $ctl }}
{{- else }}
{{- $cfg = mergeOverwrite $cfg (deepCopy .Values.desiredState) }}
{{- end }}
{{- toYaml $cfg }}
{{- end }}

{{/*
What a ServiceMonitor endpoint and a PodMonitor endpoint share: interval,
scheme, TLS, basic auth, and relabelings that name the series after the node
(instance: the node's name, node: likewise) before the user's.
*/}}
{{- define "roce-agent.monitorEndpoint" -}}
{{- $m := .m }}
interval: {{ $m.interval }}
scrapeTimeout: {{ $m.scrapeTimeout }}
scheme: {{ default (lower (include "roce-agent.scheme" .root)) $m.scheme }}
{{- with $m.tlsConfig }}
tlsConfig:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $m.basicAuth }}
basicAuth:
  {{- toYaml . | nindent 2 }}
{{- end }}
relabelings:
  - sourceLabels: [__meta_kubernetes_pod_node_name]
    targetLabel: node
    action: replace
  - sourceLabels: [__meta_kubernetes_pod_node_name]
    targetLabel: instance
    action: replace
  {{- with $m.relabelings }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- with $m.metricRelabelings }}
metricRelabelings:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}
