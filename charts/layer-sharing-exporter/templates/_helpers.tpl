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

{{/* Namespace of every namespaced object: namespaceOverride, else the release's. */}}
{{- define "lse.namespace" -}}
{{- default .Release.Namespace .Values.namespaceOverride | trunc 63 | trimSuffix "-" }}
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

{{/* global.imageRegistry, when set, over an image's own registry (as the prometheus-community charts). */}}
{{- define "lse.registry" -}}
{{- $global := (.root.Values.global | default dict).imageRegistry }}
{{- default .registry $global }}
{{- end }}

{{/* registry/repository@digest, else registry/repository:tag (tag defaults to appVersion). */}}
{{- define "lse.image" -}}
{{- $registry := include "lse.registry" (dict "root" . "registry" .Values.image.registry) }}
{{- $repo := printf "%s/%s" $registry .Values.image.repository | trimPrefix "/" }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" $repo .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" $repo (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* The kube-rbac-proxy sidecar's image. */}}
{{- define "lse.proxyImage" -}}
{{- $i := .Values.kubeRBACProxy.image }}
{{- $registry := include "lse.registry" (dict "root" . "registry" $i.registry) }}
{{- $repo := printf "%s/%s" $registry $i.repository | trimPrefix "/" }}
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
{{- $secret := lookup "v1" "Secret" (include "lse.namespace" .) .Values.webConfig.secretName }}
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

{{/* Whether /metrics is served over TLS: "true" or "". Decided here only, from the web
config itself: tls_server_config in webConfig.config, or in the secretName Secret when
Helm can read it (install, upgrade); webConfig.tls only says it where the chart cannot
see (a Secret under `helm template`), and a value that contradicts the web config fails. */}}
{{- define "lse.tls" -}}
{{- $w := .Values.webConfig }}
{{- $said := $w.tls }}
{{- $seen := "" }}
{{- $known := false }}
{{- if $w.config }}
{{- $known = true }}
{{- $seen = ternary "true" "" (hasKey $w.config "tls_server_config") }}
{{- else if $w.secretName }}
{{- $secret := lookup "v1" "Secret" (include "lse.namespace" .) $w.secretName }}
{{- $file := dig "data" "web-config.yml" "" $secret }}
{{- if $file }}
{{- $known = true }}
{{- $seen = ternary "true" "" (hasKey (b64dec $file | fromYaml) "tls_server_config") }}
{{- end }}
{{- end }}
{{- if and (not $w.config) (not $w.secretName) $said }}
{{- fail "webConfig.tls is true but there is no web config to serve TLS with: give webConfig.config (with tls_server_config) or webConfig.secretName, or drop webConfig.tls (the probes and monitors would speak HTTPS to a plain-HTTP server)." }}
{{- end }}
{{- if and $known (not (kindIs "invalid" $said)) (ne (toString (not (not $said))) (toString (eq $seen "true"))) }}
{{- fail (printf "webConfig.tls is %v but the web config %s tls_server_config: leave webConfig.tls unset, the chart reads the scheme from the web config." $said (ternary "has" "has no" (eq $seen "true"))) }}
{{- end }}
{{- if $known }}
{{- $seen }}
{{- else if $said }}
{{- "true" }}
{{- end }}
{{- end }}

{{/* The scheme the probes (upper case) and monitors use: HTTPS with TLS or kube-rbac-proxy. */}}
{{- define "lse.scheme" -}}
{{- ternary "https" "http" (or (eq (include "lse.tls" .) "true") .Values.kubeRBACProxy.enabled) }}
{{- end }}

{{/* Combinations the schema cannot express, refused with a reason. */}}
{{- define "lse.validate" -}}
{{- if and .Values.webConfig.secretName .Values.webConfig.config }}
{{- fail "webConfig.secretName and webConfig.config are both set: name an existing Secret, or give the web config for the chart to store, not both." }}
{{- end }}
{{- if and .Values.serviceMonitor.enabled .Values.podMonitor.enabled }}
{{- fail "serviceMonitor.enabled and podMonitor.enabled are both true: Prometheus would scrape every series twice and every sum would double. Enable one of them (the ServiceMonitor is the usual choice)." }}
{{- end }}
{{- if and .Values.kubeRBACProxy.enabled (eq (include "lse.tls" .) "true") }}
{{- fail "kubeRBACProxy.enabled with a web config serving TLS: with the proxy, it terminates TLS and the exporter listens on 127.0.0.1 in plain HTTP. Turn webConfig.tls off (drop tls_server_config from the web config)." }}
{{- end }}
{{- if and .Values.locality.enabled (.Values.webConfig.config | default dict).basic_auth_users }}
{{- fail "locality.enabled with basic_auth_users in webConfig.config: the locality service asks each exporter through the API server's pod proxy, which carries no credentials for them. Turn one of them off (TLS alone works)." }}
{{- end }}
{{- if and .Values.locality.enabled .Values.kubeRBACProxy.enabled }}
{{- fail "locality.enabled with kubeRBACProxy.enabled: the locality service asks each exporter through the API server's pod proxy, which carries no token for kube-rbac-proxy. Turn one of them off." }}
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
{{- default (printf "%s/%s" (include "lse.monitorNamespace" (dict "root" . "monitor" .Values.podMonitor)) (include "lse.fullname" .)) $value }}
{{- else }}
{{- $value := "" }}
{{- if .Values.serviceMonitor.jobLabel }}{{ $value = get $labels .Values.serviceMonitor.jobLabel }}{{ end }}
{{- default (include "lse.fullname" .) $value }}
{{- end }}
{{- end }}

{{/* Namespace of a monitoring object: its own namespace value, else the chart's. */}}
{{- define "lse.monitorNamespace" -}}
{{- default (include "lse.namespace" .root) .monitor.namespace }}
{{- end }}

{{/* Labels of a monitoring object: the chart's, monitoringLabels, then its own. */}}
{{- define "lse.monitoringLabels" -}}
{{- $labels := include "lse.labels" .root | fromYaml }}
{{- $labels = merge (deepCopy (.own | default dict)) (deepCopy (.root.Values.monitoringLabels | default dict)) $labels }}
{{- toYaml $labels }}
{{- end }}

{{/* Whether the monitor keeps the exporter's own namespace/pod labels. */}}
{{- define "lse.honorLabels" -}}
{{- ternary .Values.podMonitor.honorLabels .Values.serviceMonitor.honorLabels .Values.podMonitor.enabled }}
{{- end }}

{{/* The label names the measured pod's namespace and name arrive under: the one setting
(measuredPodLabels) the rules, alerts and dashboards share; derived from honorLabels when unset. */}}
{{- define "lse.namespaceLabel" -}}
{{- default (ternary "namespace" "exported_namespace" (eq (include "lse.honorLabels" .) "true")) .Values.measuredPodLabels.namespace }}
{{- end }}
{{- define "lse.podLabel" -}}
{{- default (ternary "pod" "exported_pod" (eq (include "lse.honorLabels" .) "true")) .Values.measuredPodLabels.pod }}
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

{{/* The exporter's user, as the pod's security context says (0 when it does not). */}}
{{- define "lse.podUid" -}}
{{- (include "lse.podSecurityContext" . | fromYaml).runAsUser | default 0 | int }}
{{- end }}

{{/* Whether the analysis keeps its summaries in imageFilesystem.capacityDir: it must be able to
write there. The kubelet creates the directory root's (0755), so a non-root exporter needs the
chown init container, which runs as root with CHOWN: not where the chart's OpenShift SCC (no
capabilities, one uid) applies; there the summaries stay in an emptyDir. */}}
{{- define "lse.stateOnHost" -}}
{{- if and .Values.imageFilesystem.capacityDir .Values.config.analysis.stateDir }}
{{- if or (eq (include "lse.podUid" .) "0") (not .Values.openshift.securityContextConstraints.create) }}true{{ end }}
{{- end }}
{{- end }}

{{/* Whether the exporter measures the image filesystem's capacity (capacityDir or mountHostPath):
the alerts that need it are rendered only then. */}}
{{- define "lse.fsCapacity" -}}
{{- if or .Values.imageFilesystem.capacityDir .Values.imageFilesystem.mountHostPath }}true{{ end }}
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
containerd_namespace: {{ .Values.runtime.namespace | quote }}
{{- with .Values.runtime.snapshotter }}
snapshotter: {{ . | quote }}
{{- end }}
refresh_interval_seconds: {{ .Values.config.refreshIntervalSeconds }}
rpc_timeout_seconds: {{ .Values.config.rpcTimeoutSeconds }}
collect_writable_layers: {{ .Values.config.collectWritableLayers }}
writable_refresh_seconds: {{ .Values.config.writableRefreshSeconds }}
log_level: {{ .Values.config.logLevel | quote }}
analysis_cpu: {{ .Values.config.analysis.cpu }}
{{- if include "lse.stateOnHost" . }}
state_dir: /var/lib/layer-sharing-exporter
{{- else if .Values.config.analysis.stateDir }}
state_dir: /var/lib/layer-sharing-exporter-state
{{- end }}
{{- if .Values.imageFilesystem.mountHostPath }}
host_root: /host
{{- else if .Values.imageFilesystem.capacityDir }}
capacity_dir: /var/lib/layer-sharing-exporter
{{- end }}
{{- $m := .Values.config.metrics }}
metrics:
  images: {{ $m.images }}
  images_top_n: {{ $m.imagesTopN }}
  pods: {{ $m.pods }}
  pods_top_n: {{ $m.podsTopN }}
  workloads: {{ $m.workloads }}
  workloads_top_n: {{ $m.workloadsTopN }}
  workload_bases: {{ $m.workloadBases }}
  workload_bases_top_n: {{ $m.workloadBasesTopN }}
  namespaces: {{ $m.namespaces }}
  namespace_include: {{ $m.namespaceInclude | toJson }}
  namespace_exclude: {{ $m.namespaceExclude | toJson }}
  bases_top_n: {{ $m.basesTopN }}
  layers_top_n: {{ $m.layersTopN }}
  image_gc_high_threshold_percent: {{ .Values.kubelet.imageGCHighThresholdPercent }}
  image_gc_low_threshold_percent: {{ .Values.kubelet.imageGCLowThresholdPercent }}
bases: {{ toYaml .Values.config.bases | nindent 2 }}
{{- end }}

{{/* Relabelling shared by the ServiceMonitor and PodMonitor: a `node` label. */}}
{{- define "lse.nodeRelabeling" -}}
- sourceLabels: [__meta_kubernetes_pod_node_name]
  targetLabel: node
  action: replace
{{- end }}

{{/* Keys only a container's security context has: found in securityContext (once the
container's, now the pod's as in the node-exporter chart) they still go to the containers. */}}
{{- define "lse.containerOnlyKeys" -}}
allowPrivilegeEscalation capabilities privileged procMount readOnlyRootFilesystem
{{- end }}

{{/* The pod's security context: securityContext without container-only keys, the old
podSecurityContext over it; then CRI-O's containers/storage metadata (layers.json,
images.json) is readable by root only (0600), so crio runs as uid 0, still without
capabilities. */}}
{{- define "lse.podSecurityContext" -}}
{{- $containerOnly := splitList " " (include "lse.containerOnlyKeys" .) }}
{{- $podSecurity := dict }}
{{- range $key, $value := .Values.securityContext }}
{{- if not (has $key $containerOnly) }}
{{- $_ := set $podSecurity $key $value }}
{{- end }}
{{- end }}
{{- $podSecurity = mergeOverwrite $podSecurity (deepCopy (.Values.podSecurityContext | default dict)) }}
{{- if eq .Values.runtime.type "crio" }}
{{- $_ := set $podSecurity "runAsUser" 0 }}
{{- $_ := set $podSecurity "runAsNonRoot" false }}
{{- end }}
{{- if .Values.openshift.securityContextConstraints.create }}
{{- $_ := set $podSecurity "seLinuxOptions" (dict "type" .Values.openshift.securityContextConstraints.seLinuxType) }}
{{- end }}
{{- toYaml $podSecurity }}
{{- end }}

{{/* Every container's security context: containerSecurityContext, with container-only
keys still given under the old name (securityContext) over it. */}}
{{- define "lse.containerSecurityContext" -}}
{{- $containerOnly := splitList " " (include "lse.containerOnlyKeys" .) }}
{{- $container := deepCopy (.Values.containerSecurityContext | default dict) }}
{{- range $key, $value := .Values.securityContext }}
{{- if has $key $containerOnly }}
{{- $_ := set $container $key $value }}
{{- end }}
{{- end }}
{{- toYaml $container }}
{{- end }}

{{/* Image pull secrets: the chart's and global.imagePullSecrets. */}}
{{- define "lse.imagePullSecrets" -}}
{{- $secrets := concat (.Values.imagePullSecrets | default list) ((.Values.global | default dict).imagePullSecrets | default list) | uniq }}
{{- with $secrets }}
{{- toYaml . }}
{{- end }}
{{- end }}

{{/* One alert rule: root, name, expr, summary, description and `a` (the alert's values:
for, severity, labels, annotations). Labels: additionalRuleLabels, then its severity,
then the alert's own labels; annotations: the chart's, then additionalRuleAnnotations, then its own. */}}
{{- define "lse.alert" -}}
{{- $r := .root.Values.prometheusRule }}
{{- $labels := merge (deepCopy (.a.labels | default dict)) (dict "severity" .a.severity) (deepCopy ($r.additionalRuleLabels | default dict)) }}
{{- $defaults := dict "summary" .summary "description" .description "runbook_url" (printf "%s#%s" $r.runbookBaseUrl (lower .name)) }}
{{- $annotations := merge (deepCopy (.a.annotations | default dict)) (deepCopy ($r.additionalRuleAnnotations | default dict)) $defaults -}}
- alert: {{ .name }}
  expr: {{ .expr }}
  for: {{ .a.for }}
  labels:
    {{- include "lse.orderedMap" (dict "map" $labels "first" (list "severity")) | nindent 4 }}
  annotations:
    {{- include "lse.orderedMap" (dict "map" $annotations "first" (list "summary" "description" "runbook_url")) | nindent 4 }}
{{- end }}

{{/* A map as YAML lines, the keys in `first` first, then the rest sorted; values as JSON
strings (never folded across lines). */}}
{{- define "lse.orderedMap" -}}
{{- $map := .map }}
{{- $keys := .first }}
{{- range keys $map | sortAlpha }}{{ if not (has . $keys) }}{{ $keys = append $keys . }}{{ end }}{{ end }}
{{- range $keys }}
{{- if hasKey $map . }}
{{ . }}: {{ get $map . | toString | toJson }}
{{- end }}
{{- end }}
{{- end }}

{{/* The locality service's labels: its own name label, so no exporter selector matches it. */}}
{{- define "lse.localitySelectorLabels" -}}
app.kubernetes.io/name: {{ printf "%s-locality" (include "lse.name" .) | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "lse.localityLabels" -}}
helm.sh/chart: {{ include "lse.chart" . }}
{{ include "lse.localitySelectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: locality
app.kubernetes.io/part-of: layer-sharing-exporter
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}
