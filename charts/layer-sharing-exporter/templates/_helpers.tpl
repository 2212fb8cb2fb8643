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

{{/* The one place the socket path becomes the endpoint: mount and flag always agree. */}}
{{- define "lse.runtimeEndpoint" -}}
{{- printf "unix://%s" .Values.runtime.socketPath }}
{{- end }}

{{/* The directory holding the socket: mounted at the same path, read-only. */}}
{{- define "lse.runtimeSocketDir" -}}
{{- dir .Values.runtime.socketPath }}
{{- end }}

{{- define "lse.config" -}}
namespace: {{ .Values.runtime.namespace | quote }}
snapshotter: {{ .Values.runtime.snapshotter | quote }}
refresh_interval_seconds: {{ .Values.config.refreshIntervalSeconds }}
rpc_timeout_seconds: {{ .Values.config.rpcTimeoutSeconds }}
collect_writable_layers: {{ .Values.config.collectWritableLayers }}
writable_refresh_seconds: {{ .Values.config.writableRefreshSeconds }}
log_level: {{ .Values.config.logLevel | quote }}
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
