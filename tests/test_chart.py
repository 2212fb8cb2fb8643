"""The Helm chart, rendered and linted by the real Helm engine (helm-python-sdk,
Helm v4), validated against the Kubernetes schemas of the supported versions."""

from __future__ import annotations

import json
import posixpath
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from helm_python import Chart, HelmRenderError, HelmValuesError, lint

from tests.monitoring_crds import problems

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "charts" / "layer-sharing-exporter"
CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))
KUBERNETES_VERSIONS = ["1.30.0", "1.33.0", "1.37.0"]
MONITORING_KINDS = {"ServiceMonitor", "PodMonitor", "PrometheusRule"}
# Not Kubernetes kinds: checked against the Operator's CRDs, or by the SCC admission test.
NOT_KUBERNETES_KINDS = MONITORING_KINDS | {"SecurityContextConstraints", "VerticalPodAutoscaler"}


@pytest.fixture(scope="module")
def chart():
    loaded = Chart.load(CHART)
    yield loaded
    loaded.close()


def render(chart: Chart, values: dict[str, Any]) -> list[dict[str, Any]]:
    rendered = chart.render(values, name="lse", namespace="monitoring", is_install=True)
    docs = []
    for path, text in rendered.items():
        if path.endswith(".yaml"):
            docs += [d for d in yaml.safe_load_all(text) if d]
    return docs


def values_of(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text()) or {}


def of_kind(docs: list[dict[str, Any]], kind: str, component: str = "metrics") -> list[dict[str, Any]]:
    """The objects of `kind` of one component: the exporter's (metrics), or the locality service's."""
    return [d for d in docs if d["kind"] == kind and _component(d) in (component, "")]


def _component(doc: dict[str, Any]) -> str:
    labels = (doc.get("metadata") or {}).get("labels") or {}
    return str(labels.get("app.kubernetes.io/component", ""))


def exporter_container(pod: dict[str, Any]) -> dict[str, Any]:
    (container,) = [c for c in pod["containers"] if c["name"] == "exporter"]
    return container


def test_ci_values_files_cover_the_cases():
    assert {p.name for p in CI_VALUES} >= {
        "default-values.yaml",
        "everything-values.yaml",
        "k3s-values.yaml",
        "digest-values.yaml",
        "no-enrichment-values.yaml",
        "podmonitor-values.yaml",
        "kube-rbac-proxy-values.yaml",
        "crio-values.yaml",
        "openshift-values.yaml",
    }


@pytest.mark.parametrize("values_file", CI_VALUES, ids=lambda p: p.stem)
def test_lint_has_no_errors_or_warnings(values_file):
    report = lint(CHART, values_of(values_file), strict=True, namespace="monitoring")
    assert report["errors"] == []
    serious = [m for m in report["messages"] if m["severity"] >= 2]
    assert serious == []


@pytest.mark.parametrize("values_file", CI_VALUES, ids=lambda p: p.stem)
@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_manifests_validate_against_kubernetes_schemas(chart, values_file, version):
    for doc in render(chart, values_of(values_file)):
        if doc["kind"] in NOT_KUBERNETES_KINDS:
            continue
        kubernetes_validate.validate(doc, version, strict=True)


@pytest.mark.parametrize("values_file", CI_VALUES, ids=lambda p: p.stem)
def test_socket_directory_mount_and_runtime_endpoint_always_agree(chart, values_file):
    """The socket's directory is mounted (read-only, at the same path), never the
    socket file: the runtime recreates its socket on every start and a file mount
    keeps the dead inode (tests/integration/test_kubelet_mounts.py shows both)."""
    values = values_of(values_file)
    (ds,) = of_kind(render(chart, values), "DaemonSet")
    pod = ds["spec"]["template"]["spec"]
    container = exporter_container(pod)
    socket_volume = next(v for v in pod["volumes"] if v["name"] == "runtime-socket-dir")
    mount = next(m for m in container["volumeMounts"] if m["name"] == "runtime-socket-dir")
    endpoint = next(a for a in container["args"] if a.startswith("--runtime-endpoint="))
    crio = values.get("runtime", {}).get("type") == "crio"
    want = values.get("runtime", {}).get("socketPath") or (
        "/var/run/crio/crio.sock" if crio else "/run/containerd/containerd.sock"
    )
    assert socket_volume["hostPath"] == {"path": posixpath.dirname(want), "type": "Directory"}
    assert mount["mountPath"] == posixpath.dirname(want) and mount["readOnly"] is True
    assert endpoint == f"--runtime-endpoint=unix://{mount['mountPath']}/{posixpath.basename(want)}"
    assert not [v for v in pod["volumes"] if v.get("hostPath", {}).get("type") == "Socket"]


def _host_paths(pod: dict[str, Any]) -> dict[str, tuple[str, str, bool]]:
    """hostPath volumes by name: (host path, mount path, read-only)."""
    mounts = {m["name"]: m for m in exporter_container(pod)["volumeMounts"]}
    return {
        v["name"]: (v["hostPath"]["path"], mounts[v["name"]]["mountPath"], mounts[v["name"]].get("readOnly", False))
        for v in pod["volumes"]
        if "hostPath" in v
    }


@pytest.mark.parametrize("storage_root", ["/var/lib/containers/storage", "/data/containers/storage/"])
def test_crio_reads_only_the_storage_metadata_directories(chart, storage_root):
    (ds,) = of_kind(render(chart, {"runtime": {"type": "crio", "storageRoot": storage_root}}), "DaemonSet")
    pod = ds["spec"]["template"]["spec"]
    args = exporter_container(pod)["args"]
    root = storage_root.rstrip("/")
    assert "--runtime-endpoint=unix:///var/run/crio/crio.sock" in args
    assert "--layer-store=containers-storage" in args and f"--storage-root={root}" in args
    assert _host_paths(pod) == {
        "runtime-socket-dir": ("/var/run/crio", "/var/run/crio", True),
        "storage-layers": (f"{root}/overlay-layers", f"{root}/overlay-layers", True),
        "storage-images": (f"{root}/overlay-images", f"{root}/overlay-images", True),
        # crio runs as uid 0: the analysis keeps its summaries in the capacity directory.
        "image-fs-dir": (IMAGE_FS_DIR, IMAGE_FS_DIR, False),
    }
    volumes = {v["name"]: v["hostPath"]["type"] for v in pod["volumes"] if "hostPath" in v}
    # The runtime's directories must exist; only the exporter's own small directory is created.
    assert volumes.pop("image-fs-dir") == "DirectoryOrCreate" and set(volumes.values()) == {"Directory"}


def test_containerd_uses_its_own_layer_store_and_no_storage_mounts(chart):
    (ds,) = of_kind(render(chart, {}), "DaemonSet")
    pod = ds["spec"]["template"]["spec"]
    args = exporter_container(pod)["args"]
    assert "--layer-store=containerd" in args and not any(a.startswith("--storage-root") for a in args)
    assert set(_host_paths(pod)) == {"runtime-socket-dir", "image-fs-dir"}
    (ds,) = of_kind(render(chart, {"imageFilesystem": {"mountHostPath": True}}), "DaemonSet")
    assert _host_paths(ds["spec"]["template"]["spec"])["runtime-root"] == (
        "/var/lib/containerd",
        "/host/var/lib/containerd",
        True,
    )
    crio = {"runtime": {"type": "crio"}, "imageFilesystem": {"mountHostPath": True}}
    (ds,) = of_kind(render(chart, crio), "DaemonSet")
    assert _host_paths(ds["spec"]["template"]["spec"])["runtime-root"][0] == "/var/lib/containers/storage"


VOLUME_SOURCES = {"configMap", "downwardAPI", "emptyDir", "hostPath", "projected", "secret"}


def scc_refusals(scc: dict[str, Any], pod: dict[str, Any]) -> list[str]:
    """What OpenShift's SCC admission would refuse in `pod` (the checks this chart's pod can hit)."""
    refused = []
    for volume in pod["volumes"]:
        (source,) = set(volume) - {"name"}
        if source not in scc["volumes"] or (source == "hostPath" and not scc["allowHostDirVolumePlugin"]):
            refused.append(f"volume {volume['name']}: {source}")
    if pod.get("automountServiceAccountToken") and "projected" not in scc["volumes"]:
        refused.append("service account token: projected")
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(key) and not scc[f"allow{key[0].upper()}{key[1:]}"]:
            refused.append(key)
    security = pod["securityContext"]
    if scc["runAsUser"]["type"] == "MustRunAs" and security.get("runAsUser") != scc["runAsUser"]["uid"]:
        refused.append(f"runAsUser {security.get('runAsUser')}")
    for key, given in (
        ("fsGroup", [security.get("fsGroup")]),
        ("supplementalGroups", security.get("supplementalGroups", [])),
    ):
        if scc[key]["type"] == "MustRunAs":
            allowed = [(r["min"], r["max"]) for r in scc[key]["ranges"]]
            for gid in [g for g in given if g is not None]:
                if not any(low <= gid <= high for low, high in allowed):
                    refused.append(f"{key} {gid}")
    wanted_type = scc["seLinuxContext"]["seLinuxOptions"]["type"]
    if security.get("seLinuxOptions", {}).get("type", wanted_type) != wanted_type:
        refused.append("seLinuxOptions")
    if security.get("seccompProfile", {}).get("type") == "RuntimeDefault" and "runtime/default" not in scc.get(
        "seccompProfiles", []
    ):
        refused.append("seccomp RuntimeDefault")
    for container in pod["containers"]:
        sc = container.get("securityContext", {})
        if sc.get("privileged") and not scc["allowPrivilegedContainer"]:
            refused.append(f"{container['name']}: privileged")
        if sc.get("allowPrivilegeEscalation", True) and not scc["allowPrivilegeEscalation"]:
            refused.append(f"{container['name']}: allowPrivilegeEscalation")
        if not set(scc["requiredDropCapabilities"]) <= set(sc.get("capabilities", {}).get("drop", [])):
            refused.append(f"{container['name']}: capabilities not dropped")
        if set(sc.get("capabilities", {}).get("add", [])) - set(scc["allowedCapabilities"]):
            refused.append(f"{container['name']}: capabilities added")
        if scc["readOnlyRootFilesystem"] and not sc.get("readOnlyRootFilesystem"):
            refused.append(f"{container['name']}: writable root")
        if any(p.get("hostPort") for p in container.get("ports", [])) and not scc["allowHostPorts"]:
            refused.append(f"{container['name']}: hostPort")
    return refused


@pytest.mark.parametrize(
    "values",
    [
        values_of(CHART / "ci" / "openshift-values.yaml"),
        {"openshift": {"securityContextConstraints": {"create": True}}, "imageFilesystem": {"mountHostPath": True}},
        {
            "openshift": {"securityContextConstraints": {"create": True}},
            "podSecurityContext": {"runAsUser": 1000, "runAsGroup": 0, "runAsNonRoot": True},
            "webConfig": {"secretName": "w"},
            "extraVolumes": [{"name": "scratch", "emptyDir": {}}],
        },
    ],
    ids=["openshift-values", "image-fs", "other-user"],
)
def test_openshift_scc_admits_exactly_the_rendered_pod(chart, values):
    docs = render(chart, values)
    (scc,) = of_kind(docs, "SecurityContextConstraints")
    (ds,) = of_kind(docs, "DaemonSet")
    pod = ds["spec"]["template"]["spec"]
    assert scc_refusals(scc, pod) == []
    # Only the volume kinds the pod has, no wider.
    assert scc["volumes"] == sorted({next(iter(set(v) - {"name"})) for v in pod["volumes"]} | _token_volume(pod))
    assert pod["securityContext"]["seLinuxOptions"] == {"type": "spc_t"}
    assert set(scc["volumes"]) <= VOLUME_SOURCES and scc["allowPrivilegedContainer"] is False
    assert scc["requiredDropCapabilities"] == ["ALL"] and scc["allowedCapabilities"] == []
    # The pod's service account, and no one else, may use it.
    (role,) = [r for r in of_kind(docs, "Role") if r["metadata"]["name"].endswith("-scc")]
    assert role["rules"] == [
        {
            "apiGroups": ["security.openshift.io"],
            "resources": ["securitycontextconstraints"],
            "resourceNames": [scc["metadata"]["name"]],
            "verbs": ["use"],
        }
    ]
    (binding,) = [b for b in of_kind(docs, "RoleBinding") if b["roleRef"]["name"] == role["metadata"]["name"]]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": pod["serviceAccountName"], "namespace": "monitoring"}
    ]
    assert scc["users"] == [] and scc["groups"] == []
    # The SCC admits exactly the pod's uid (CRI-O's metadata is root-only, so crio runs as uid 0,
    # still without capabilities); the emulation refuses any other.
    uid = pod["securityContext"]["runAsUser"]
    assert scc["runAsUser"] == {"type": "MustRunAs", "uid": uid}
    if values.get("runtime", {}).get("type") == "crio":
        assert uid == 0
    other = {**pod, "securityContext": {**pod["securityContext"], "runAsUser": uid + 1}}
    assert scc_refusals(scc, other) == [f"runAsUser {uid + 1}"]
    # Only the pod's own group, not any (e.g. the host's `disk` group, gid 6).
    gid = pod["securityContext"]["runAsGroup"]
    assert scc["fsGroup"] == scc["supplementalGroups"] == {"type": "MustRunAs", "ranges": [{"min": gid, "max": gid}]}
    disk = {**pod, "securityContext": {**pod["securityContext"], "fsGroup": 6, "supplementalGroups": [6]}}
    assert scc_refusals(scc, disk) == ["fsGroup 6", "supplementalGroups 6"]
    assert scc_refusals({**scc, "allowHostDirVolumePlugin": False}, pod)


def _token_volume(pod: dict[str, Any]) -> set[str]:
    """The service account token arrives as a projected volume when mounted."""
    return {"projected"} if pod.get("automountServiceAccountToken") else set()


def test_no_scc_unless_asked(chart):
    docs = render(chart, {"runtime": {"type": "crio"}})
    assert of_kind(docs, "SecurityContextConstraints") == []
    (ds,) = of_kind(docs, "DaemonSet")
    assert "seLinuxOptions" not in ds["spec"]["template"]["spec"]["securityContext"]


@pytest.mark.parametrize("values_file", CI_VALUES, ids=lambda p: p.stem)
def test_probes_and_service_target_the_listening_port(chart, values_file):
    values = values_of(values_file)
    docs = render(chart, values)
    (ds,) = of_kind(docs, "DaemonSet")
    pod = ds["spec"]["template"]["spec"]
    container = exporter_container(pod)
    # The container that owns the "metrics" port: the exporter, or kube-rbac-proxy in front of it.
    (front,) = [c for c in pod["containers"] if any(p["name"] == "metrics" for p in c.get("ports", []))]
    port = next(p for p in front["ports"] if p["name"] == "metrics")["containerPort"]
    proxy = values.get("kubeRBACProxy", {}).get("enabled", False)
    if proxy:
        assert front["name"] == "kube-rbac-proxy"
        upstream = values.get("kubeRBACProxy", {}).get("upstreamPort", 9878)
        assert f"--listen-address=127.0.0.1:{upstream}" in container["args"]
        assert f"--upstream=http://127.0.0.1:{upstream}/" in front["args"]
        assert f"--secure-listen-address=0.0.0.0:{port}" in front["args"]
        assert "--ignore-paths=/healthz,/readyz" in front["args"]
    else:
        assert front is container
        assert f"--listen-address=0.0.0.0:{port}" in container["args"]
    scheme = "HTTPS" if values.get("webConfig", {}).get("tls") or proxy else "HTTP"
    # A named probe port resolves against its own container only (the kubelet's rule): the
    # probes belong to the container that declares "metrics".
    assert front["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics", "scheme": scheme}
    assert front["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics", "scheme": scheme}
    assert all("livenessProbe" not in c for c in pod["containers"] if c is not front)
    (service,) = of_kind(docs, "Service")
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["ports"] == [{"name": "metrics", "port": port, "targetPort": "metrics", "protocol": "TCP"}]
    assert service["spec"]["selector"].items() <= ds["spec"]["template"]["metadata"]["labels"].items()
    env = {e["name"]: e for e in container["env"]}
    assert env["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"


@pytest.mark.parametrize("values_file", CI_VALUES, ids=lambda p: p.stem)
def test_pod_is_hardened(chart, values_file):
    values = values_of(values_file)
    (ds,) = of_kind(render(chart, values), "DaemonSet")
    pod = ds["spec"]["template"]["spec"]
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    if values.get("runtime", {}).get("type") == "crio":
        # containers/storage keeps layers.json and images.json root-only (0600): uid 0, no capabilities.
        assert pod["securityContext"]["runAsNonRoot"] is False and pod["securityContext"]["runAsUser"] == 0
    else:
        # Non-root by default: user 65534 in group 0 opens the root:root 0660 socket.
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert (pod["securityContext"]["runAsUser"], pod["securityContext"]["runAsGroup"]) == (65534, 0)
    for container in pod["containers"]:
        sc = container["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False and sc["privileged"] is False
        assert sc["readOnlyRootFilesystem"] is True and sc["capabilities"] == {"drop": ["ALL"]}
        assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]
        assert all(
            m.get("readOnly")
            for m in container.get("volumeMounts", [])
            if m["name"] not in ("scratch", "analysis-state", "image-fs-dir")
        )
    assert not pod.get("hostNetwork") and not pod.get("hostPID") and not pod.get("hostIPC")
    assert pod["tolerations"] == [{"operator": "Exists"}]
    assert pod["nodeSelector"] == {"kubernetes.io/os": "linux"}
    assert ds["spec"]["updateStrategy"]["type"] == "RollingUpdate"


def test_rbac_only_with_enrichment_and_read_only(chart):
    off = {"kubernetesEnrichment": {"enabled": False}}
    assert of_kind(render(chart, off), "ClusterRole") == []
    (ds,) = of_kind(render(chart, off), "DaemonSet")
    assert ds["spec"]["template"]["spec"]["automountServiceAccountToken"] is False
    assert "--kubernetes" not in ds["spec"]["template"]["spec"]["containers"][0]["args"]
    docs = render(chart, {})  # on by default
    (role,) = of_kind(docs, "ClusterRole")
    verbs = {v for rule in role["rules"] for v in rule["verbs"]}
    assert verbs <= {"get", "list", "watch"}
    assert {r for rule in role["rules"] for r in rule["resources"]} == {"pods", "replicasets", "jobs"}
    (ds,) = of_kind(docs, "DaemonSet")
    assert "--kubernetes" in ds["spec"]["template"]["spec"]["containers"][0]["args"]
    assert ds["spec"]["template"]["spec"]["automountServiceAccountToken"] is True
    (binding,) = of_kind(docs, "ClusterRoleBinding")
    assert binding["subjects"][0]["name"] == of_kind(docs, "ServiceAccount")[0]["metadata"]["name"]


def test_image_by_tag_or_digest(chart):
    (ds,) = of_kind(render(chart, {}), "DaemonSet")
    assert ds["spec"]["template"]["spec"]["containers"][0]["image"].endswith(":0.1.0")
    (ds,) = of_kind(render(chart, values_of(CHART / "ci" / "digest-values.yaml")), "DaemonSet")
    assert ds["spec"]["template"]["spec"]["containers"][0]["image"] == (
        "registry.example.com/platform/layer-sharing-exporter@sha256:" + "2" * 64
    )


def test_config_map_is_a_valid_exporter_config(chart, tmp_path):
    from exporter.config import load_file

    docs = render(chart, values_of(CHART / "ci" / "everything-values.yaml"))
    (config_map,) = [c for c in of_kind(docs, "ConfigMap") if "config.yaml" in c["data"]]
    path = tmp_path / "config.yaml"
    path.write_text(config_map["data"]["config.yaml"])
    config = load_file(path)
    assert [b.name for b in config.bases] == ["debian-12", "alpine-3.20"]
    assert config.runtime.cri.host_root == "/host" and config.metrics.layers_top_n == 20


def test_monitoring_objects_have_their_required_fields(chart):
    docs = render(chart, values_of(CHART / "ci" / "everything-values.yaml"))
    (sm,) = of_kind(docs, "ServiceMonitor")
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    assert sm["spec"]["selector"]["matchLabels"] and sm["spec"]["endpoints"][0]["port"] == "metrics"
    relabel = sm["spec"]["endpoints"][0]["relabelings"][0]
    assert relabel == {"sourceLabels": ["__meta_kubernetes_pod_node_name"], "targetLabel": "node", "action": "replace"}
    assert of_kind(docs, "PodMonitor") == []
    (pm,) = of_kind(render(chart, values_of(CHART / "ci" / "podmonitor-values.yaml")), "PodMonitor")
    assert pm["spec"]["podMetricsEndpoints"][0]["port"] == "metrics"
    assert pm["spec"]["podMetricsEndpoints"][0]["relabelings"][0]["targetLabel"] == "node"
    (rule,) = of_kind(docs, "PrometheusRule")
    for group in rule["spec"]["groups"]:
        assert group["name"] and group["rules"]
        for r in group["rules"]:
            assert r["expr"] and ("alert" in r) != ("record" in r)
            if "alert" in r:
                assert {"summary", "description", "runbook_url"} <= set(r["annotations"])
                assert r["labels"]["severity"] in {"critical", "warning", "info"}


def _alerts(rule: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"] if "alert" in r}


ALL_ALERTS = {
    "prometheusRule": {"enabled": True, "alerts": {"LayerSharingExporterDown": {"enabled": True}}},
    "imageFilesystem": {"mountHostPath": True},
}


def test_each_alert_can_be_switched_off(chart):
    on = ALL_ALERTS
    (rule,) = of_kind(render(chart, on), "PrometheusRule")
    assert len(_alerts(rule)) == 9
    for name in _alerts(rule):
        alerts = {"LayerSharingExporterDown": {"enabled": True}, name: {"enabled": False}}
        off = {**on, "prometheusRule": {"enabled": True, "alerts": alerts}}
        (rule,) = of_kind(render(chart, off), "PrometheusRule")
        assert name not in _alerts(rule) and len(_alerts(rule)) == 8


def test_image_filesystem_alerts_only_where_the_capacity_is_measured(chart):
    """Without imageFilesystem.capacityDir or mountHostPath there is no
    layer_sharing_image_fs_capacity_bytes (nor the GC model): an alert on it could never fire."""
    off = {"prometheusRule": {"enabled": True}, "imageFilesystem": {"capacityDir": ""}}
    (rule,) = of_kind(render(chart, off), "PrometheusRule")
    assert not [a for a in _alerts(rule) if a.startswith(("ImageFilesystem", "ImageGC", "Reclaimable"))]
    assert not [a for a in _alerts(rule).values() if "image_fs_capacity_bytes" in a["expr"]]
    needing = {
        "ImageFilesystemFillingUp",
        "ImageFilesystemFillingUpForecast",
        "ImageGCCannotReclaimEnough",
        "ReclaimableImageBytesHigh",
    }
    for on in ({"imageFilesystem": {"mountHostPath": True, "capacityDir": ""}}, {}):  # {}: capacityDir, the default
        (rule,) = of_kind(render(chart, {"prometheusRule": {"enabled": True}, **on}), "PrometheusRule")
        alerts = _alerts(rule)
        assert needing <= set(alerts)
        assert "predict_linear(" in alerts["ImageFilesystemFillingUpForecast"]["expr"]


def test_exporter_down_is_optional_and_off_beside_kube_prometheus_stacks_target_down(chart):
    (rule,) = of_kind(render(chart, {"prometheusRule": {"enabled": True}}), "PrometheusRule")
    assert "LayerSharingExporterDown" not in _alerts(rule)
    rules_file = (ROOT / "rules" / "layer-sharing.rules.yml").read_text()
    assert "- alert: LayerSharingExporterDown" in rules_file  # for a Prometheus without TargetDown


def test_severities_fit_a_capacity_exporter(chart):
    (rule,) = of_kind(render(chart, ALL_ALERTS), "PrometheusRule")
    alerts = _alerts(rule)
    assert alerts["LayerSharingExporterDown"]["labels"]["severity"] == "warning"
    assert "critical" not in {a["labels"]["severity"] for a in alerts.values()}


def test_ratio_drop_compares_nodes_not_exporter_pods(chart):
    (rule,) = of_kind(render(chart, {"prometheusRule": {"enabled": True}}), "PrometheusRule")
    expr = _alerts(rule)["LayerSharingRatioDropped"]["expr"]
    assert expr.count("sum by (cluster, node) (") == 4
    # Twice for the ratio 6 hours ago, once for the images the cluster held then.
    assert expr.count("offset 6h") == 3
    assert "unless on (cluster, image_id)" in expr


@pytest.mark.parametrize(("honor_labels", "label"), [(True, "namespace"), (False, "exported_namespace")])
def test_namespace_showback_reads_the_measured_pods_namespace(chart, honor_labels, label):
    values = {"prometheusRule": {"enabled": True}, "serviceMonitor": {"enabled": True, "honorLabels": honor_labels}}
    (rule,) = of_kind(render(chart, values), "PrometheusRule")
    (record,) = [
        r
        for g in rule["spec"]["groups"]
        for r in g["rules"]
        if r.get("record") == "namespace:layer_sharing_pod_attributed_bytes:sum"
    ]
    # The per-namespace family, whole whatever pod series metrics.podsTopN keeps.
    assert f"sum by (cluster, job, {label}) (layer_sharing_namespace_attributed_bytes{{" in record["expr"]


@pytest.mark.parametrize("monitor", ["serviceMonitor", "podMonitor"])
def test_web_config_secret_enables_tls_everywhere(chart, monitor):
    docs = render(chart, {"webConfig": {"secretName": "lse-web", "tls": True}, monitor: {"enabled": True}})
    (ds,) = of_kind(docs, "DaemonSet")
    pod = ds["spec"]["template"]["spec"]
    container = exporter_container(pod)
    assert "--web-config-file=/etc/layer-sharing-exporter-web/web-config.yml" in container["args"]
    assert {"name": "web-config", "secret": {"secretName": "lse-web"}} in pod["volumes"]
    assert container["livenessProbe"]["httpGet"]["scheme"] == "HTTPS"
    (monitor_doc,) = [d for d in docs if d["kind"] in {"ServiceMonitor", "PodMonitor"}]
    endpoints = monitor_doc["spec"].get("endpoints") or monitor_doc["spec"]["podMetricsEndpoints"]
    assert endpoints[0]["scheme"] == "https"
    (ds,) = of_kind(render(chart, {}), "DaemonSet")
    assert not any(
        a.startswith("--web-config-file") for a in exporter_container(ds["spec"]["template"]["spec"])["args"]
    )


def test_network_policy_denies_egress_without_enrichment(chart):
    values = {"networkPolicy": {"enabled": True}, "kubernetesEnrichment": {"enabled": False}}
    (policy,) = of_kind(render(chart, values), "NetworkPolicy")
    assert policy["spec"]["egress"] == [] and "Egress" in policy["spec"]["policyTypes"]
    (policy,) = of_kind(render(chart, {"networkPolicy": {"enabled": True}}), "NetworkPolicy")
    assert {p["port"] for rule in policy["spec"]["egress"] for p in rule["ports"]} == {443, 6443}


# Value sets beyond the ci/ files that change the monitoring objects.
MONITORING_VALUES = [
    *[values_of(p) for p in CI_VALUES],
    {"serviceMonitor": {"enabled": True, "jobLabel": "", "honorLabels": False, "authorization": {}}},
    {
        "kubeRBACProxy": {"enabled": True},
        "podMonitor": {"enabled": True, "authorization": {"credentials": {"name": "prom-token", "key": "token"}}},
    },
    {
        "serviceMonitor": {"enabled": True, "tlsConfig": {"serverName": "x"}},
        "webConfig": {"secretName": "w", "tls": True},
    },
    {
        "podMonitor": {"enabled": True, "namespace": "prom", "labels": {"team": "a"}},
        "prometheusRule": {"enabled": True, "namespace": "prom", "additionalRuleLabels": {"team": "a"}},
        "monitoringLabels": {"release": "kps"},
        "measuredPodLabels": {"namespace": "exported_namespace", "pod": "exported_pod"},
        "webConfig": {"config": {"tls_server_config": {"cert_file": "/c", "key_file": "/k"}}},
    },
]


def test_every_monitoring_object_validates_against_the_operator_crds(chart):
    seen: dict[str, int] = {}
    for values in MONITORING_VALUES:
        for doc in render(chart, values):
            if doc["kind"] in MONITORING_KINDS:
                seen[doc["kind"]] = seen.get(doc["kind"], 0) + 1
                assert problems(doc) == [], (doc["kind"], values)
    assert seen.keys() == MONITORING_KINDS and min(seen.values()) >= 2


def test_the_crd_check_catches_what_the_operator_would_reject_or_prune(chart):
    values = {"serviceMonitor": {"enabled": True}, "prometheusRule": {"enabled": True}}
    docs = render(chart, values)
    (sm,) = of_kind(docs, "ServiceMonitor")
    sm["spec"]["sampleLimit"] = "100"
    sm["spec"]["endpoints"][0]["scheme"] = "tcp"
    sm["spec"]["endpoints"][0]["prot"] = "metrics"
    found = problems(sm)
    assert any(p.startswith("spec.sampleLimit:") for p in found)
    assert any(p.startswith("spec.endpoints.0.scheme:") for p in found)
    assert "spec.endpoints[0].prot: not in the ServiceMonitor schema" in found
    (rule,) = of_kind(docs, "PrometheusRule")
    rule["spec"]["groups"][1]["rules"][0]["for"] = "15 minutes"
    assert any(".for:" in p for p in problems(rule))


def _seconds(duration: str) -> int:
    units = {"s": 1, "m": 60, "h": 3600}
    return int(duration[:-1]) * units[duration[-1]]


def test_scrape_timeout_never_exceeds_the_interval(chart):
    """The Operator rejects a monitor whose scrapeTimeout exceeds its interval; the schema cannot say it."""
    for values in MONITORING_VALUES:
        for doc in render(chart, values):
            for endpoint in doc.get("spec", {}).get("endpoints", []) + doc.get("spec", {}).get(
                "podMetricsEndpoints", []
            ):
                assert _seconds(endpoint["scrapeTimeout"]) <= _seconds(endpoint["interval"])


def operator_job(docs: list[dict[str, Any]]) -> str:
    """The `job` the Prometheus Operator gives the exporter's series (its promcfg.go):
    the jobLabel's value on the Service (pod, for a PodMonitor) when set and
    non-empty, else the Service name (<namespace>/<name> for a PodMonitor)."""
    monitors = [d for d in docs if d["kind"] in {"ServiceMonitor", "PodMonitor"}]
    assert len(monitors) == 1
    (monitor,) = monitors
    job_label = monitor["spec"].get("jobLabel", "")
    if monitor["kind"] == "ServiceMonitor":
        (service,) = of_kind(docs, "Service")
        assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
        return str(service["metadata"]["labels"].get(job_label) or service["metadata"]["name"])
    (ds,) = of_kind(docs, "DaemonSet")
    pod_labels = ds["spec"]["template"]["metadata"]["labels"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    return str(pod_labels.get(job_label) or f"{monitor['metadata']['namespace']}/{monitor['metadata']['name']}")


@pytest.mark.parametrize("monitor", ["serviceMonitor", "podMonitor"])
@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"nameOverride": "images"},
        {"fullnameOverride": "node-images"},
        {"nameOverride": "images", "fullnameOverride": "node-images"},
        {"jobLabel": ""},
        {"nameOverride": "images", "jobLabel": ""},
    ],
    ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items()) or "defaults",
)
def test_rules_select_the_job_the_monitor_produces(chart, monitor, overrides):
    overrides = dict(overrides)
    values: dict[str, Any] = {"prometheusRule": {"enabled": True}, monitor: {"enabled": True}}
    if "jobLabel" in overrides:
        values[monitor]["jobLabel"] = overrides.pop("jobLabel")
    docs = render(chart, {**values, **overrides})
    job = operator_job(docs)
    (rule,) = of_kind(docs, "PrometheusRule")
    selectors = {
        m for group in rule["spec"]["groups"] for r in group["rules"] for m in re.findall(r'job="[^"]*"', r["expr"])
    }
    assert selectors == {f'job="{job}"'}
    if "nameOverride" in overrides and values[monitor].get("jobLabel") is None:
        assert job == "images"  # not the fixed job="layer-sharing-exporter" of old


def test_an_explicit_job_selector_wins(chart):
    values = {"prometheusRule": {"enabled": True, "jobSelector": 'job="custom"'}, "serviceMonitor": {"enabled": True}}
    (rule,) = of_kind(render(chart, values), "PrometheusRule")
    exprs = [r["expr"] for g in rule["spec"]["groups"] for r in g["rules"]]
    assert all('job="custom"' in e for e in exprs if "job=" in e)


def test_service_and_pod_monitor_together_are_refused(chart):
    values = {"serviceMonitor": {"enabled": True}, "podMonitor": {"enabled": True}}
    with pytest.raises(HelmRenderError, match="scrape every series twice"):
        render(chart, values)


@pytest.mark.parametrize("monitor", ["serviceMonitor", "podMonitor"])
def test_scrape_limits_and_honor_labels_are_configurable(chart, monitor):
    key = "endpoints" if monitor == "serviceMonitor" else "podMetricsEndpoints"
    (doc,) = [d for d in render(chart, {monitor: {"enabled": True}}) if d["kind"] in {"ServiceMonitor", "PodMonitor"}]
    assert "sampleLimit" not in doc["spec"] and "labelLimit" not in doc["spec"]  # 0: no limit
    assert doc["spec"][key][0]["honorLabels"] is True
    values = {monitor: {"enabled": True, "sampleLimit": 4000, "labelLimit": 12, "honorLabels": False}}
    (doc,) = [d for d in render(chart, values) if d["kind"] in {"ServiceMonitor", "PodMonitor"}]
    assert (doc["spec"]["sampleLimit"], doc["spec"]["labelLimit"]) == (4000, 12)
    assert doc["spec"][key][0]["honorLabels"] is False


def test_default_affinity_keeps_off_virtual_nodes_and_can_be_replaced(chart):
    (ds,) = of_kind(render(chart, {}), "DaemonSet")
    terms = ds["spec"]["template"]["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    (term,) = terms["nodeSelectorTerms"]
    assert {(e["key"], e["operator"], tuple(e["values"])) for e in term["matchExpressions"]} == {
        ("eks.amazonaws.com/compute-type", "NotIn", ("fargate",)),
        ("type", "NotIn", ("virtual-kubelet",)),
    }
    mine: dict[str, Any] = {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": []}}
    (ds,) = of_kind(render(chart, {"affinity": {"nodeAffinity": None}}), "DaemonSet")
    assert "nodeAffinity" not in ds["spec"]["template"]["spec"].get("affinity", {})
    (ds,) = of_kind(render(chart, {"affinity": mine}), "DaemonSet")
    node_affinity = ds["spec"]["template"]["spec"]["affinity"]["nodeAffinity"]
    assert node_affinity["preferredDuringSchedulingIgnoredDuringExecution"] == []


def test_kube_rbac_proxy_fronts_the_exporter(chart):
    docs = render(chart, values_of(CHART / "ci" / "kube-rbac-proxy-values.yaml"))
    (ds,) = of_kind(docs, "DaemonSet")
    pod = ds["spec"]["template"]["spec"]
    assert [c["name"] for c in pod["containers"]] == ["exporter", "kube-rbac-proxy"]
    assert "ports" not in exporter_container(pod)  # reachable only from inside the pod
    assert pod["automountServiceAccountToken"] is True  # the proxy's token and access reviews
    (role,) = of_kind(docs, "ClusterRole")
    assert sorted((r["apiGroups"][0], r["resources"][0], tuple(r["verbs"])) for r in role["rules"]) == [
        ("authentication.k8s.io", "tokenreviews", ("create",)),
        ("authorization.k8s.io", "subjectaccessreviews", ("create",)),
    ]
    (binding,) = of_kind(docs, "ClusterRoleBinding")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"][0]["name"] == of_kind(docs, "ServiceAccount")[0]["metadata"]["name"]
    (sm,) = of_kind(docs, "ServiceMonitor")
    endpoint = sm["spec"]["endpoints"][0]
    assert endpoint["scheme"] == "https" and endpoint["tlsConfig"] == {"insecureSkipVerify": True}
    assert endpoint["bearerTokenFile"] == "/var/run/secrets/kubernetes.io/serviceaccount/token"
    (policy,) = of_kind(docs, "NetworkPolicy")
    assert {p["port"] for rule in policy["spec"]["egress"] for p in rule["ports"]} == {443, 6443}


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"kubeRBACProxy": {"enabled": True}, "webConfig": {"secretName": "s", "tls": True}}, "Turn webConfig.tls off"),
        (
            {"kubeRBACProxy": {"enabled": True}, "webConfig": {"config": {"tls_server_config": {"cert_file": "/c"}}}},
            "Turn webConfig.tls off",
        ),
        ({"kubeRBACProxy": {"enabled": True}, "podMonitor": {"enabled": True}}, "needs podMonitor.authorization"),
        ({"webConfig": {"secretName": "s", "config": {"basic_auth_users": {}}}}, "not both"),
    ],
)
def test_combinations_that_cannot_work_are_refused(chart, values, message):
    with pytest.raises(HelmRenderError, match=message):
        render(chart, values)


def _pod_annotations(chart: Chart, values: dict[str, Any]) -> dict[str, str]:
    (ds,) = of_kind(render(chart, values), "DaemonSet")
    annotations: dict[str, str] = ds["spec"]["template"]["metadata"]["annotations"]
    return annotations


def test_changed_config_or_web_config_rolls_the_pods(chart):
    users = {"prometheus": "$2b$10$Unx1JArzNZq1gkf0XjkP1.3ibRU8i2UxvVvn0m1OTTHLr/4lLdWUG"}
    base = _pod_annotations(chart, {"webConfig": {"config": {"basic_auth_users": users}}})
    same = _pod_annotations(chart, {"webConfig": {"config": {"basic_auth_users": users}}})
    other = _pod_annotations(chart, {"webConfig": {"config": {"basic_auth_users": {"grafana": users["prometheus"]}}}})
    assert base == same
    assert base["checksum/web-config"] != other["checksum/web-config"]
    assert base["checksum/config"] == other["checksum/config"]
    tuned = _pod_annotations(chart, {"config": {"refreshIntervalSeconds": 60}})
    assert tuned["checksum/config"] != base["checksum/config"]
    # Without a cluster to look an existing Secret up in, there is nothing to hash: no annotation.
    assert "checksum/web-config" not in _pod_annotations(chart, {"webConfig": {"secretName": "lse-web"}})
    docs = render(chart, {"webConfig": {"config": {"basic_auth_users": users}}})
    (secret,) = of_kind(docs, "Secret")
    assert yaml.safe_load(secret["stringData"]["web-config.yml"]) == {"basic_auth_users": users}
    (ds,) = of_kind(docs, "DaemonSet")
    pod = ds["spec"]["template"]["spec"]
    assert {"name": "web-config", "secret": {"secretName": secret["metadata"]["name"]}} in pod["volumes"]
    assert "--web-config-file=/etc/layer-sharing-exporter-web/web-config.yml" in exporter_container(pod)["args"]


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"service": {"port": "http"}}, "/service/port"),
        ({"runtim": {}}, "additional properties 'runtim' not allowed"),
        ({"runtime": {"socketPath": "containerd.sock"}}, "/runtime/socketPath"),
        ({"runtime": {"socketPath": "/containerd.sock"}}, "/runtime/socketPath"),
        ({"runtime": {"type": "docker"}}, "/runtime/type"),
        ({"serviceMonitor": {"sampleLimit": -1}}, "/serviceMonitor/sampleLimit"),
        ({"podMonitor": {"honorLabels": "yes"}}, "/podMonitor/honorLabels"),
        ({"kubeRBACProxy": {"upstreamPort": 0}}, "/kubeRBACProxy/upstreamPort"),
        ({"openshift": {"scc": {}}}, "additional properties 'scc' not allowed"),
        ({"runtime": {"storageRoot": "relative/storage"}}, "/runtime/storageRoot"),
        ({"image": {"digest": "latest"}}, "/image/digest"),
        ({"prometheusRule": {"alerts": {"ImageFilesystemFillingUp": {"severity": "page"}}}}, "severity"),
        ({"config": {"bases": [{"name": "x"}]}}, "/config/bases/0"),
    ],
)
def test_schema_rejects_bad_values_readably(chart, values, message):
    with pytest.raises(HelmValuesError, match=message.replace("(", r"\(")):
        chart.render(values, name="lse", namespace="monitoring")


def test_notes_say_how_to_see_metrics_and_one_nodes_df_by_its_name(chart):
    rendered = chart.render({}, name="lse", namespace="monitoring")
    notes = rendered["layer-sharing-exporter/templates/NOTES.txt"]
    assert "port-forward" in notes
    # The pod on that node (not an arbitrary pod of the DaemonSet), selected as the DaemonSet selects its pods.
    selector = re.search(r"get pod -l (\S+) --field-selector spec.nodeName=\$NODE -o name", notes)
    assert selector is not None
    (ds,) = of_kind(
        [d for p, t in rendered.items() if p.endswith(".yaml") for d in yaml.safe_load_all(t) if d], "DaemonSet"
    )
    labels = dict(pair.split("=") for pair in selector.group(1).split(","))
    assert labels == ds["spec"]["selector"]["matchLabels"]
    # The exporter's own config file: the same runtime, containerd namespace and storage root as it serves.
    config_arg = next(
        a for a in exporter_container(ds["spec"]["template"]["spec"])["args"] if a.startswith("--config=")
    )
    assert f"-c exporter -- layer-sharing-exporter df --config {config_arg.split('=', 1)[1]}" in notes


def test_readme_values_table_is_in_sync():
    result = subprocess.run(
        [sys.executable, "-m", "scripts.gen_chart_docs", "--check"], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


# --- Issue 25: the stacks people run (kube-prometheus-stack, OpenShift) and the charts' conventions.


def _monitoring_docs(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] in MONITORING_KINDS or "grafana_dashboard" in d["metadata"]["labels"]]


@pytest.mark.parametrize("monitor", ["serviceMonitor", "podMonitor"])
def test_one_value_labels_every_monitoring_object(chart, monitor):
    """kube-prometheus-stack selects by `release: <its release>`: one value puts it on the
    monitor, the PrometheusRule and the dashboard ConfigMaps; an object's own labels win."""
    values = {
        "monitoringLabels": {"release": "kps", "team": "platform"},
        monitor: {"enabled": True},
        "prometheusRule": {"enabled": True, "labels": {"team": "rules"}},
        "grafanaDashboards": {"enabled": True},
    }
    docs = _monitoring_docs(render(chart, values))
    assert sorted(d["kind"] for d in docs) == sorted(
        ["ConfigMap"] * 3 + ["PrometheusRule", "ServiceMonitor" if monitor == "serviceMonitor" else "PodMonitor"]
    )
    for doc in docs:
        labels = doc["metadata"]["labels"]
        assert labels["release"] == "kps", doc["kind"]
        assert labels["team"] == ("rules" if doc["kind"] == "PrometheusRule" else "platform")
        assert labels["app.kubernetes.io/instance"] == "lse"
    # The rest of the release is not a monitoring object and does not get them.
    (ds,) = of_kind(render(chart, values), "DaemonSet")
    assert "release" not in ds["metadata"]["labels"]


def _notes(chart: Chart, values: dict[str, Any]) -> str:
    return chart.render(values, name="lse", namespace="monitoring")["layer-sharing-exporter/templates/NOTES.txt"]


@pytest.mark.parametrize(
    ("values", "warned"),
    [
        ({"serviceMonitor": {"enabled": True}}, True),
        ({"prometheusRule": {"enabled": True}}, True),
        ({"podMonitor": {"enabled": True}}, True),
        ({"serviceMonitor": {"enabled": True}, "monitoringLabels": {"release": "kps"}}, False),
        ({"serviceMonitor": {"enabled": True, "labels": {"release": "kps"}}}, False),
        ({}, False),
    ],
)
def test_notes_warn_when_monitors_carry_no_selector_label(chart, values, warned):
    notes = _notes(chart, values)
    assert ("WARNING: the ServiceMonitor/PodMonitor/PrometheusRule carry no selector label" in notes) is warned
    if warned:
        assert "--set monitoringLabels.release=" in notes


def test_notes_tell_openshift_which_labels_user_workload_monitoring_rewrites(chart):
    openshift = values_of(CHART / "ci" / "openshift-values.yaml")
    notes = _notes(chart, openshift)
    assert "--set measuredPodLabels.namespace=exported_namespace" in notes
    assert "monitoringLabels.release" not in notes  # no kube-prometheus-stack there
    told = {**openshift, "measuredPodLabels": {"namespace": "exported_namespace", "pod": "exported_pod"}}
    notes = _notes(chart, told)
    assert "--set measuredPodLabels" not in notes
    assert "--prometheus-namespace-label exported_namespace" in notes


def test_dashboard_folder_annotation_is_the_sidecars_folder_annotation(chart):
    values = {"grafanaDashboards": {"enabled": True, "folder": "Capacity"}}
    for doc in of_kind(render(chart, values), "ConfigMap"):
        if "grafana_dashboard" in doc["metadata"]["labels"]:
            assert doc["metadata"]["annotations"] == {"grafana_folder": "Capacity"}
    values = {"grafanaDashboards": {"enabled": True, "folderAnnotation": "k8s-sidecar-target-directory"}}
    boards = [d for d in of_kind(render(chart, values), "ConfigMap") if "grafana_dashboard" in d["metadata"]["labels"]]
    assert boards and all(
        d["metadata"]["annotations"] == {"k8s-sidecar-target-directory": "Layer sharing"} for d in boards
    )


def _schemes(docs: list[dict[str, Any]]) -> set[str]:
    (ds,) = of_kind(docs, "DaemonSet")
    container = exporter_container(ds["spec"]["template"]["spec"])
    schemes = {
        container["livenessProbe"]["httpGet"]["scheme"].lower(),
        container["readinessProbe"]["httpGet"]["scheme"].lower(),
    }
    for doc in docs:
        if doc["kind"] in {"ServiceMonitor", "PodMonitor"}:
            schemes |= {
                e["scheme"] for e in doc["spec"].get("endpoints", []) + doc["spec"].get("podMetricsEndpoints", [])
            }
    return schemes


TLS_WEB_CONFIG = {"tls_server_config": {"cert_file": "/etc/tls/tls.crt", "key_file": "/etc/tls/tls.key"}}
AUTH_WEB_CONFIG = {"basic_auth_users": {"prometheus": "$2b$10$Unx1JArzNZq1gkf0XjkP1.3ibRU8i2UxvVvn0m1OTTHLr/4lLdWUG"}}


@pytest.mark.parametrize("monitor", ["serviceMonitor", "podMonitor"])
@pytest.mark.parametrize(
    ("web_config", "scheme"),
    [
        ({}, "http"),
        ({"config": TLS_WEB_CONFIG}, "https"),
        ({"config": AUTH_WEB_CONFIG}, "http"),
        ({"config": TLS_WEB_CONFIG, "tls": True}, "https"),
        ({"config": AUTH_WEB_CONFIG, "tls": False}, "http"),
        # A Secret `helm template` cannot read: webConfig.tls says it.
        ({"secretName": "lse-web", "tls": True}, "https"),
        ({"secretName": "lse-web"}, "http"),
    ],
)
def test_tls_is_decided_in_one_place_from_the_web_config(chart, monitor, web_config, scheme):
    """The probes and the monitor always agree, and follow the web config itself."""
    assert _schemes(render(chart, {"webConfig": web_config, monitor: {"enabled": True}})) == {scheme}


@pytest.mark.parametrize(
    ("web_config", "message"),
    [
        ({"tls": True}, "webConfig.tls is true but there is no web config"),
        ({"config": AUTH_WEB_CONFIG, "tls": True}, "webConfig.tls is true but the web config has no tls_server_config"),
        ({"config": TLS_WEB_CONFIG, "tls": False}, "webConfig.tls is false but the web config has tls_server_config"),
    ],
)
def test_contradictory_tls_settings_fail_the_render(chart, web_config, message):
    with pytest.raises(HelmRenderError, match=message):
        render(chart, {"webConfig": web_config})


def test_namespace_override_moves_every_namespaced_object(chart):
    values = {
        "namespaceOverride": "images",
        "serviceMonitor": {"enabled": True},
        "prometheusRule": {"enabled": True},
        "webConfig": {"config": AUTH_WEB_CONFIG},
        "networkPolicy": {"enabled": True},
        "grafanaDashboards": {"enabled": True},
        "verticalPodAutoscaler": {"enabled": True},
        "openshift": {"securityContextConstraints": {"create": True}},
        "kubeRBACProxy": {"enabled": True},
    }
    docs = render(chart, values)
    cluster_scoped = {"ClusterRole", "ClusterRoleBinding", "SecurityContextConstraints"}
    for doc in docs:
        if doc["kind"] not in cluster_scoped:
            assert doc["metadata"]["namespace"] == "images", doc["kind"]
    for binding in of_kind(docs, "ClusterRoleBinding") + of_kind(docs, "RoleBinding"):
        assert {s["namespace"] for s in binding["subjects"]} == {"images"}
    (sm,) = of_kind(docs, "ServiceMonitor")
    assert sm["spec"]["namespaceSelector"] == {"matchNames": ["images"]}


@pytest.mark.parametrize("monitor", ["serviceMonitor", "podMonitor"])
def test_monitors_and_rules_can_live_in_prometheus_namespace(chart, monitor):
    values = {monitor: {"enabled": True, "namespace": "prom"}, "prometheusRule": {"enabled": True, "namespace": "prom"}}
    docs = render(chart, values)
    (doc,) = [d for d in docs if d["kind"] in {"ServiceMonitor", "PodMonitor"}]
    assert doc["metadata"]["namespace"] == "prom"
    # It still selects the exporter where it runs.
    assert doc["spec"]["namespaceSelector"] == {"matchNames": ["monitoring"]}
    (rule,) = of_kind(docs, "PrometheusRule")
    assert rule["metadata"]["namespace"] == "prom"
    # A PodMonitor's job is <its namespace>/<its name>; the rules follow it.
    if monitor == "podMonitor":
        values[monitor]["jobLabel"] = ""
        (rule,) = of_kind(render(chart, values), "PrometheusRule")
        assert 'job="prom/lse-layer-sharing-exporter"' in rule["spec"]["groups"][0]["rules"][0]["expr"]


def test_revision_history_limit(chart):
    (ds,) = of_kind(render(chart, {}), "DaemonSet")
    assert ds["spec"]["revisionHistoryLimit"] == 10
    (ds,) = of_kind(render(chart, {"revisionHistoryLimit": 3}), "DaemonSet")
    assert ds["spec"]["revisionHistoryLimit"] == 3


def test_extra_objects_are_rendered_through_tpl(chart):
    values = {
        "extraObjects": [
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "{{ .Release.Name }}-extra"}, "data": {}},
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: {{ .Release.Name }}-token\n",
        ]
    }
    docs = render(chart, values)
    names = {(d["kind"], d["metadata"]["name"]) for d in docs}
    assert {("ConfigMap", "lse-extra"), ("Secret", "lse-token")} <= names


def test_global_image_registry_wins_for_every_image(chart):
    values = {"global": {"imageRegistry": "mirror.example.com"}, "kubeRBACProxy": {"enabled": True}}
    (ds,) = of_kind(render(chart, values), "DaemonSet")
    images = [c["image"] for c in ds["spec"]["template"]["spec"]["containers"]]
    assert images == [
        "mirror.example.com/layer-sharing-exporter/layer-sharing-exporter:0.1.0",
        "mirror.example.com/brancz/kube-rbac-proxy:v0.22.1",
    ]
    values = {"global": {"imagePullSecrets": [{"name": "g"}]}, "imagePullSecrets": [{"name": "own"}]}
    (ds,) = of_kind(render(chart, values), "DaemonSet")
    assert ds["spec"]["template"]["spec"]["imagePullSecrets"] == [{"name": "own"}, {"name": "g"}]


def test_vertical_pod_autoscaler_targets_the_daemonset(chart):
    assert of_kind(render(chart, {}), "VerticalPodAutoscaler") == []
    values = {
        "verticalPodAutoscaler": {
            "enabled": True,
            "maxAllowed": {"memory": "512Mi"},
            "controlledValues": "RequestsOnly",
        }
    }
    docs = render(chart, values)
    (vpa,) = of_kind(docs, "VerticalPodAutoscaler")
    (ds,) = of_kind(docs, "DaemonSet")
    assert vpa["apiVersion"] == "autoscaling.k8s.io/v1"
    assert vpa["spec"]["targetRef"] == {"apiVersion": "apps/v1", "kind": "DaemonSet", "name": ds["metadata"]["name"]}
    (policy,) = vpa["spec"]["resourcePolicy"]["containerPolicies"]
    assert policy == {
        "containerName": "exporter",
        "controlledValues": "RequestsOnly",
        "maxAllowed": {"memory": "512Mi"},
    }
    assert vpa["spec"]["updatePolicy"] == {"updateMode": "Auto"}
    with pytest.raises(HelmValuesError, match="updateMode"):
        chart.render({"verticalPodAutoscaler": {"updatePolicy": {"updateMode": "Sometimes"}}}, name="l", namespace="m")


def _contexts(chart: Chart, values: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    (ds,) = of_kind(render(chart, values), "DaemonSet")
    pod = ds["spec"]["template"]["spec"]
    return pod["securityContext"], exporter_container(pod)["securityContext"]


def test_security_contexts_are_named_as_the_node_exporter_chart_with_old_names_accepted(chart):
    pod, container = _contexts(chart, {})
    assert pod == {
        "runAsNonRoot": True,
        "runAsUser": 65534,
        "runAsGroup": 0,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert container == {
        "allowPrivilegeEscalation": False,
        "privileged": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    # New names: securityContext is the pod's, containerSecurityContext every container's.
    pod, container = _contexts(
        chart,
        {"securityContext": {"runAsGroup": 998, "fsGroup": 998}, "containerSecurityContext": {"procMount": "Default"}},
    )
    assert (pod["runAsGroup"], pod["fsGroup"], pod["runAsUser"]) == (998, 998, 65534)
    assert container["procMount"] == "Default" and container["readOnlyRootFilesystem"] is True
    # Old names: podSecurityContext for the pod, container-only keys under securityContext for the containers.
    pod, container = _contexts(
        chart,
        {
            "podSecurityContext": {"runAsUser": 0, "runAsNonRoot": False},
            "securityContext": {"readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"], "add": []}},
        },
    )
    assert (pod["runAsUser"], pod["runAsNonRoot"]) == (0, False)
    assert "capabilities" not in pod and "readOnlyRootFilesystem" not in pod
    assert container["capabilities"] == {"drop": ["ALL"], "add": []}
    (ds,) = of_kind(render(chart, {"kubeRBACProxy": {"enabled": True}}), "DaemonSet")
    assert {c["name"]: c["securityContext"] for c in ds["spec"]["template"]["spec"]["containers"]}[
        "kube-rbac-proxy"
    ] == container | {"capabilities": {"drop": ["ALL"]}}


def _rule(chart: Chart, values: dict[str, Any]) -> dict[str, Any]:
    (rule,) = of_kind(render(chart, values), "PrometheusRule")
    return rule


def test_alert_labels_annotations_and_thresholds_are_values(chart):
    values = {
        "prometheusRule": {
            "enabled": True,
            "additionalRuleLabels": {"team": "platform", "severity": "ignored"},
            "additionalRuleAnnotations": {"dashboard": "https://grafana/d/layer-sharing-node"},
            "alerts": {
                "LayerSharingLayersMissing": {
                    "for": "2h",
                    "severity": "info",
                    "labels": {"team": "storage", "page": "no"},
                    "annotations": {"summary": "Ebenen fehlen."},
                },
                "LayerSharingRatioDropped": {"drop": 0.3, "window": "12h"},
            },
        }
    }
    alerts = _alerts(_rule(chart, values))
    missing = alerts["LayerSharingLayersMissing"]
    assert missing["for"] == "2h"
    assert missing["labels"] == {"severity": "info", "team": "storage", "page": "no"}
    assert missing["annotations"]["summary"] == "Ebenen fehlen."
    assert missing["annotations"]["dashboard"] == "https://grafana/d/layer-sharing-node"
    assert missing["annotations"]["runbook_url"].endswith("#layersharinglayersmissing")
    for name, alert in alerts.items():
        assert alert["labels"]["team"] in {"platform", "storage"}, name
        if name != "LayerSharingLayersMissing":
            assert alert["labels"]["severity"] != "ignored"  # an alert's own severity wins
    ratio = alerts["LayerSharingRatioDropped"]["expr"]
    assert ") > 0.3)" in ratio and ratio.count("offset 12h") == 3


def test_reclaimable_threshold_is_relative_and_gated_on_filesystem_pressure(chart):
    """A fixed 20 GiB fired on nodes the kubelet manages fine: relative to the disk, and only above
    the kubelet's GC low threshold, or not at all."""
    on = {"prometheusRule": {"enabled": True}}
    assert "ReclaimableImageBytesHigh" not in _alerts(_rule(chart, {**on, "imageFilesystem": {"capacityDir": ""}}))
    gated = _alerts(_rule(chart, {**on, "kubelet": {"imageGCLowThresholdPercent": 70}}))["ReclaimableImageBytesHigh"]
    assert "/ max by (cluster, node) (layer_sharing_image_fs_capacity_bytes{" in gated["expr"]
    assert "> 0.25 and on (cluster, node)" in gated["expr"] and gated["expr"].endswith("> 0.7")
    gc = _alerts(_rule(chart, on))["ImageGCCannotReclaimEnough"]
    assert gc["expr"] == (
        'layer_sharing_image_gc_bytes_to_free{job="layer-sharing-exporter"} > 0 and on (cluster, node, mountpoint) '
        'layer_sharing_image_gc_can_reach_low_threshold{job="layer-sharing-exporter"} == 0'
    )


IMAGE_FS_DIR = "/var/lib/layer-sharing-exporter"


def test_a_small_host_directory_gives_capacity_and_keeps_the_analysis_state(chart, tmp_path):
    """imageFilesystem.capacityDir: a DirectoryOrCreate hostPath (no image file exposed) for statvfs,
    which also keeps the analysis summaries across upgrades: handed to the exporter's user by an
    init container that is root with CHOWN alone."""
    from exporter.config import load_file

    docs = render(chart, {"kubelet": {"imageGCHighThresholdPercent": 90, "imageGCLowThresholdPercent": 75}})
    (ds,) = of_kind(docs, "DaemonSet")
    pod = ds["spec"]["template"]["spec"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == "image-fs-dir"]
    assert volume["hostPath"] == {"path": IMAGE_FS_DIR, "type": "DirectoryOrCreate"}
    assert not [v for v in pod["volumes"] if "emptyDir" in v]  # the state is no longer lost on upgrades
    assert _host_paths(pod)["image-fs-dir"] == (IMAGE_FS_DIR, IMAGE_FS_DIR, False)
    (init,) = pod["initContainers"]
    assert init["command"][-3:] == [IMAGE_FS_DIR, "65534", "0"]
    assert init["securityContext"]["capabilities"] == {"drop": ["ALL"], "add": ["CHOWN"]}
    assert init["securityContext"]["runAsUser"] == 0 and init["securityContext"]["readOnlyRootFilesystem"] is True
    assert init["securityContext"]["allowPrivilegeEscalation"] is False
    (config_map,) = [c for c in of_kind(docs, "ConfigMap") if "config.yaml" in c["data"]]
    (tmp_path / "config.yaml").write_text(config_map["data"]["config.yaml"])
    config = load_file(tmp_path / "config.yaml")
    assert config.runtime.cri.capacity_dir == config.analysis.state_dir == IMAGE_FS_DIR
    assert config.runtime.cri.host_root == ""
    assert (config.metrics.image_gc_high_threshold_percent, config.metrics.image_gc_low_threshold_percent) == (90, 75)
    # Where the chart's SCC admits one uid and no capability: no init container, the directory
    # read-only for statvfs, the summaries in an emptyDir.
    (ds,) = of_kind(render(chart, {"openshift": {"securityContextConstraints": {"create": True}}}), "DaemonSet")
    pod = ds["spec"]["template"]["spec"]
    assert "initContainers" not in pod
    assert _host_paths(pod)["image-fs-dir"] == (IMAGE_FS_DIR, IMAGE_FS_DIR, True)
    assert [v["name"] for v in pod["volumes"] if "emptyDir" in v] == ["analysis-state"]
    # Without it: the emptyDir of before, no capacity.
    (ds,) = of_kind(render(chart, {"imageFilesystem": {"capacityDir": ""}}), "DaemonSet")
    pod = ds["spec"]["template"]["spec"]
    assert "image-fs-dir" not in _host_paths(pod) and "initContainers" not in pod


def test_series_budget_values_reach_the_config(chart, tmp_path):
    from exporter.config import load_file

    fleet = values_of(CHART / "ci" / "fleet-values.yaml")
    fleet["config"]["metrics"]["namespaceExclude"] = ["kube-*"]
    (config_map,) = [c for c in of_kind(render(chart, fleet), "ConfigMap") if "config.yaml" in c["data"]]
    (tmp_path / "config.yaml").write_text(config_map["data"]["config.yaml"])
    metrics = load_file(tmp_path / "config.yaml").metrics
    assert (metrics.pods, metrics.workloads, metrics.workload_bases) == (False, False, False)
    assert (metrics.images_top_n, metrics.bases_top_n, metrics.namespace_exclude) == (5, 5, ("kube-*",))
    (config_map,) = [c for c in of_kind(render(chart, {}), "ConfigMap") if "config.yaml" in c["data"]]
    (tmp_path / "config.yaml").write_text(config_map["data"]["config.yaml"])
    from exporter.outputs.collector import MetricsOptions

    assert load_file(tmp_path / "config.yaml").metrics == MetricsOptions()  # the chart's defaults are the code's


@pytest.mark.parametrize(
    ("values", "namespace_label", "pod_label"),
    [
        ({"serviceMonitor": {"enabled": True}}, "namespace", "pod"),
        ({"serviceMonitor": {"enabled": True, "honorLabels": False}}, "exported_namespace", "exported_pod"),
        # OpenShift user-workload monitoring forces honorLabels off whatever the monitor says: the setting says it.
        (
            {
                "serviceMonitor": {"enabled": True},
                "measuredPodLabels": {"namespace": "exported_namespace", "pod": "exported_pod"},
            },
            "exported_namespace",
            "exported_pod",
        ),
    ],
)
def test_measured_pod_labels_are_one_setting_for_rules_and_dashboards(chart, values, namespace_label, pod_label):
    values = {
        **values,
        "prometheusRule": {"enabled": True},
        "grafanaDashboards": {"enabled": True},
        "clusterLabel": "k8s_cluster",
    }
    docs = render(chart, values)
    (rule,) = of_kind(docs, "PrometheusRule")
    (showback,) = [
        r
        for g in rule["spec"]["groups"]
        for r in g["rules"]
        if r.get("record") == "namespace:layer_sharing_pod_attributed_bytes:sum"
    ]
    assert f"sum by (k8s_cluster, job, {namespace_label}) (" in showback["expr"]
    assert all(
        "cluster," not in r["expr"].replace("k8s_cluster,", "") for g in rule["spec"]["groups"] for r in g["rules"]
    )
    boards = [d for d in of_kind(docs, "ConfigMap") if "grafana_dashboard" in d["metadata"]["labels"]]
    assert len(boards) == 3
    for board in boards:
        (text,) = board["data"].values()
        variables = {v["name"]: v for v in json.loads(text)["templating"]["list"]}
        for name, want in [
            ("namespace_label", namespace_label),
            ("pod_label", pod_label),
            ("cluster_label", "k8s_cluster"),
        ]:
            assert variables[name]["type"] == "constant" and variables[name]["query"] == want
            assert variables[name]["current"] == {"text": want, "value": want}


def test_dashboard_configmaps_are_the_generated_dashboards_with_the_label_constants_set(chart):
    """The chart parses and re-serialises each dashboard to set its constants: nothing else changes."""
    docs = render(chart, {"grafanaDashboards": {"enabled": True}})
    boards = {
        name: json.loads(text)
        for d in of_kind(docs, "ConfigMap")
        if "grafana_dashboard" in d["metadata"]["labels"]
        for name, text in d["data"].items()
    }
    assert sorted(boards) == sorted(p.name for p in (CHART / "dashboards").glob("*.json"))
    for name, board in boards.items():
        generated = json.loads((CHART / "dashboards" / name).read_text())
        for variable in board["templating"]["list"]:
            if variable["type"] == "constant":
                assert variable.pop("current") == {"text": variable["query"], "value": variable["query"]}
        assert board == generated, name


def test_the_locality_service_reads_only_and_is_never_taken_for_an_exporter(chart):
    assert of_kind(render(chart, {}), "Deployment", component="locality") == []  # off by default
    values = {"locality": {"enabled": True, "registryAuthSecret": "regcred"}, "serviceMonitor": {"enabled": True}}
    docs = render(chart, values)
    (deployment,) = of_kind(docs, "Deployment", component="locality")
    (ds,) = of_kind(docs, "DaemonSet")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    exporter_selector = ds["spec"]["selector"]["matchLabels"]
    # Neither the DaemonSet's Service nor the report's selector takes it for an exporter.
    assert not exporter_selector.items() <= pod_labels.items()
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    args = container["args"]
    assert args[:2] == ["report", "--view=locality"]
    selector = next(a for a in args if a.startswith("--selector=")).removeprefix("--selector=")
    assert dict(pair.split("=") for pair in selector.split(",")) == exporter_selector
    assert "--port=9877" in args and "--exporter-namespace=monitoring" in args
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert {"name": "DOCKER_CONFIG", "value": "/etc/layer-sharing-exporter-registry"} in container["env"]
    # Read-only: pods and nodes listed cluster-wide; the exporters' pod proxy in their namespace only.
    (cluster_role,) = of_kind(docs, "ClusterRole", component="locality")
    assert cluster_role["rules"] == [
        {"apiGroups": [""], "resources": ["pods", "nodes"], "verbs": ["list"]},
        {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["get"]},
    ]
    (role,) = of_kind(docs, "Role", component="locality")
    assert role["metadata"]["namespace"] == "monitoring"
    assert role["rules"] == [{"apiGroups": [""], "resources": ["pods/proxy"], "verbs": ["get"]}]
    (monitor,) = of_kind(docs, "ServiceMonitor", component="locality")
    (service,) = of_kind(docs, "Service", component="locality")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]


def test_the_locality_service_refuses_kube_rbac_proxy(chart):
    with pytest.raises(HelmRenderError, match="pod proxy, which carries no token"):
        render(chart, {"locality": {"enabled": True}, "kubeRBACProxy": {"enabled": True}})


def test_notes_say_how_to_check_the_locality_service(chart):
    notes = _notes(chart, {"locality": {"enabled": True}})
    assert "kubectl -n monitoring rollout status deployment/lse-layer-sharing-exporter-locality" in notes
    assert "scrape its Service on port 9878" in notes
    assert "locality service" not in _notes(chart, {})
    with_monitor = _notes(chart, {"locality": {"enabled": True}, "serviceMonitor": {"enabled": True}})
    assert "scrape its Service" not in with_monitor


def test_the_locality_service_is_scraped_by_the_kind_of_monitor_the_exporters_are(chart):
    values = {
        "locality": {"enabled": True},
        "podMonitor": {"enabled": True, "namespace": "obs", "labels": {"release": "kps"}, "sampleLimit": 500,
                       "metricRelabelings": [{"action": "drop", "regex": "x"}]},
    }  # fmt: skip
    docs = render(chart, values)
    assert of_kind(docs, "ServiceMonitor", component="locality") == []
    (monitor,) = of_kind(docs, "PodMonitor", component="locality")
    assert monitor["metadata"]["namespace"] == "obs" and monitor["metadata"]["labels"]["release"] == "kps"
    assert monitor["spec"]["sampleLimit"] == 500
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    assert endpoint["metricRelabelings"] == [{"action": "drop", "regex": "x"}]
    (deployment,) = of_kind(docs, "Deployment", component="locality")
    assert (
        monitor["spec"]["selector"]["matchLabels"].items()
        <= deployment["spec"]["template"]["metadata"]["labels"].items()
    )
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}  # never two runs asking every node at once


def test_the_locality_service_refuses_basic_auth_on_the_exporters(chart):
    web = {"basic_auth_users": {"prometheus": "$2y$10$abcdefghijklmnopqrstuv"}}
    with pytest.raises(HelmRenderError, match="carries no credentials"):
        render(chart, {"locality": {"enabled": True}, "webConfig": {"config": web}})
