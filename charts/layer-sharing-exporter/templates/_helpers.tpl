{{/* Chart name, truncated to the 63 characters Kubernetes allows. */}}
{{- define "lse.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "lse.fullname" -}}
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

{{- define "lse.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "lse.selectorLabels" -}}
app.kubernetes.io/name: {{ include "lse.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "lse.labels" -}}
helm.sh/chart: {{ include "lse.chart" . }}
{{ include "lse.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: metrics
app.kubernetes.io/part-of: layer-sharing-exporter
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "lse.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "lse.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* registry/repository@digest, else registry/repository:tag (tag defaults to appVersion). */}}
{{- define "lse.image" -}}
{{- $repo := printf "%s/%s" .Values.image.registry .Values.image.repository | trimPrefix "/" }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" $repo .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" $repo (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* The kube-rbac-proxy sidecar's image. */}}
{{- define "lse.proxyImage" -}}
{{- $i := .Values.kubeRBACProxy.image }}
{{- $repo := printf "%s/%s" $i.registry $i.repository | trimPrefix "/" }}
{{- if $i.digest }}
{{- printf "%s@%s" $repo $i.digest }}
{{- else }}
{{- printf "%s:%s" $repo $i.tag }}
{{- end }}
{{- end }}

{{/* The Secret holding web-config.yml: the user's, or the one the chart makes from webConfig.config. */}}
{{- define "lse.webConfigSecret" -}}
{{- if .Values.webConfig.secretName }}
{{- .Values.webConfig.secretName }}
{{- else if .Values.webConfig.config }}
{{- printf "%s-web-config" (include "lse.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{/* Checksum of the web config, so a change rolls the pods: of webConfig.config when the
chart makes the Secret; of the existing Secret's data when Helm can look it up (install and
upgrade against a cluster; `helm template` cannot, and then no annotation is rendered). */}}
{{- define "lse.webConfigChecksum" -}}
{{- if .Values.webConfig.secretName }}
{{- $secret := lookup "v1" "Secret" .Release.Namespace .Values.webConfig.secretName }}
{{- with $secret }}
{{- toJson .data | sha256sum }}
{{- end }}
{{- else if .Values.webConfig.config }}
{{- include "lse.webConfigYaml" . | sha256sum }}
{{- end }}
{{- end }}

{{- define "lse.webConfigYaml" -}}
{{- toYaml .Values.webConfig.config }}
{{- end }}

{{/* Combinations the schema cannot express, refused with a reason. */}}
{{- define "lse.validate" -}}
{{- if and .Values.webConfig.secretName .Values.webConfig.config }}
{{- fail "webConfig.secretName and webConfig.config are both set: name an existing Secret, or give the web config for the chart to store, not both." }}
{{- end }}
{{- if and .Values.serviceMonitor.enabled .Values.podMonitor.enabled }}
{{- fail "serviceMonitor.enabled and podMonitor.enabled are both true: Prometheus would scrape every series twice and every sum would double. Enable one of them (the ServiceMonitor is the usual choice)." }}
{{- end }}
{{- if and .Values.kubeRBACProxy.enabled .Values.webConfig.tls }}
{{- fail "kubeRBACProxy.enabled and webConfig.tls are both true: with the proxy, it terminates TLS and the exporter listens on 127.0.0.1 in plain HTTP. Turn webConfig.tls off." }}
{{- end }}
{{- if and .Values.kubeRBACProxy.enabled .Values.podMonitor.enabled (not .Values.podMonitor.authorization) }}
{{- fail "kubeRBACProxy.enabled with podMonitor.enabled needs podMonitor.authorization (a Secret holding a token Prometheus may use): a PodMonitor cannot send Prometheus's own service account token. Or use the ServiceMonitor, which does." }}
{{- end }}
{{- end }}

{{/* The `job` label the Prometheus Operator gives the exporter's series: the value of
the monitor's jobLabel on the Service (ServiceMonitor) or pod (PodMonitor) when it is
set and non-empty, else the Service name (ServiceMonitor) or <namespace>/<PodMonitor
name> (PodMonitor). */}}
{{- define "lse.job" -}}
{{- $labels := include "lse.labels" . | fromYaml }}
{{- if .Values.podMonitor.enabled }}
{{- $podLabels := merge (dict) .Values.podLabels $labels }}
{{- $value := "" }}
{{- if .Values.podMonitor.jobLabel }}{{ $value = get $podLabels .Values.podMonitor.jobLabel }}{{ end }}
{{- default (printf "%s/%s" .Release.Namespace (include "lse.fullname" .)) $value }}
{{- else }}
{{- $value := "" }}
{{- if .Values.serviceMonitor.jobLabel }}{{ $value = get $labels .Values.serviceMonitor.jobLabel }}{{ end }}
{{- default (include "lse.fullname" .) $value }}
{{- end }}
{{- end }}

{{/* The PromQL selector of the exporter's series in the rules. */}}
{{- define "lse.jobSelector" -}}
{{- default (printf "job=%s" (include "lse.job" . | quote)) .Values.prometheusRule.jobSelector }}
{{- end }}

{{/* Scrape limits, each only when set (0 = no limit). */}}
{{- define "lse.scrapeLimits" -}}
{{- with .sampleLimit }}
sampleLimit: {{ . }}
{{- end }}
{{- with .labelLimit }}
labelLimit: {{ . }}
{{- end }}
{{- end }}

{{/* The CRI socket on the node: the value, or the runtime type's default. */}}
{{- define "lse.socketPath" -}}
{{- if .Values.runtime.socketPath }}
{{- .Values.runtime.socketPath }}
{{- else if eq .Values.runtime.type "crio" }}
{{- "/var/run/crio/crio.sock" }}
{{- else }}
{{- "/run/containerd/containerd.sock" }}
{{- end }}
{{- end }}

{{/* The one place the socket path becomes the endpoint: mount and flag always agree. */}}
{{- define "lse.runtimeEndpoint" -}}
{{- printf "unix://%s" (include "lse.socketPath" .) }}
{{- end }}

{{/* The directory holding the socket: mounted at the same path, read-only. */}}
{{- define "lse.runtimeSocketDir" -}}
{{- dir (include "lse.socketPath" .) }}
{{- end }}

{{/* The runtime's root, for the optional image filesystem mount. */}}
{{- define "lse.imageFsHostPath" -}}
{{- if .Values.imageFilesystem.hostPath }}
{{- .Values.imageFilesystem.hostPath }}
{{- else if eq .Values.runtime.type "crio" }}
{{- include "lse.storageRoot" . }}
{{- else }}
{{- "/var/lib/containerd" }}
{{- end }}
{{- end }}

{{/* The containers/storage root (crio), without a trailing slash. */}}
{{- define "lse.storageRoot" -}}
{{- .Values.runtime.storageRoot | trimSuffix "/" }}
{{- end }}

{{- define "lse.config" -}}
namespace: {{ .Values.runtime.namespace | quote }}
{{- with .Values.runtime.snapshotter }}
snapshotter: {{ . | quote }}
{{- end }}
refresh_interval_seconds: {{ .Values.config.refreshIntervalSeconds }}
rpc_timeout_seconds: {{ .Values.config.rpcTimeoutSeconds }}
collect_writable_layers: {{ .Values.config.collectWritableLayers }}
writable_refresh_seconds: {{ .Values.config.writableRefreshSeconds }}
log_level: {{ .Values.config.logLevel | quote }}
analysis_cpu: {{ .Values.config.analysis.cpu }}
{{- if .Values.config.analysis.stateDir }}
state_dir: /var/lib/layer-sharing-exporter
{{- end }}
{{- if .Values.imageFilesystem.mountHostPath }}
host_root: /host
{{- end }}
metrics:
  images_top_n: {{ .Values.config.metrics.imagesTopN }}
  pods: {{ .Values.config.metrics.pods }}
  bases_top_n: {{ .Values.config.metrics.basesTopN }}
  layers_top_n: {{ .Values.config.metrics.layersTopN }}
bases: {{ toYaml .Values.config.bases | nindent 2 }}
{{- end }}

{{/* Relabelling shared by the ServiceMonitor and PodMonitor: a `node` label. */}}
{{- define "lse.nodeRelabeling" -}}
- sourceLabels: [__meta_kubernetes_pod_node_name]
  targetLabel: node
  action: replace
{{- end }}

{{/* The pod's security context: the values', except that CRI-O's containers/storage
metadata (layers.json, images.json) is readable by root only (0600), so crio runs as uid 0,
still without capabilities. */}}
{{- define "lse.podSecurityContext" -}}
{{- $podSecurity := deepCopy .Values.podSecurityContext }}
{{- if eq .Values.runtime.type "crio" }}
{{- $_ := set $podSecurity "runAsUser" 0 }}
{{- $_ := set $podSecurity "runAsNonRoot" false }}
{{- end }}
{{- if .Values.openshift.securityContextConstraints.create }}
{{- $_ := set $podSecurity "seLinuxOptions" (dict "type" .Values.openshift.securityContextConstraints.seLinuxType) }}
{{- end }}
{{- toYaml $podSecurity }}
{{- end }}
