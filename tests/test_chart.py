"""The Helm chart, rendered and linted by the real Helm engine (helm-python-sdk,
Helm v4), validated against the Kubernetes schemas of the supported versions."""

from __future__ import annotations

import posixpath
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from helm_python import Chart, HelmValuesError, lint

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "charts" / "layer-sharing-exporter"
CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))
KUBERNETES_VERSIONS = ["1.30.0", "1.33.0", "1.37.0"]
MONITORING_KINDS = {"ServiceMonitor", "PodMonitor", "PrometheusRule"}


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


def of_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def test_ci_values_files_cover_the_cases():
    assert {p.name for p in CI_VALUES} >= {
        "default-values.yaml",
        "everything-values.yaml",
        "k3s-values.yaml",
        "digest-values.yaml",
        "no-enrichment-values.yaml",
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
        if doc["kind"] in MONITORING_KINDS:
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
    (container,) = pod["containers"]
    socket_volume = next(v for v in pod["volumes"] if v["name"] == "runtime-socket-dir")
    mount = next(m for m in container["volumeMounts"] if m["name"] == "runtime-socket-dir")
    endpoint = next(a for a in container["args"] if a.startswith("--runtime-endpoint="))
    want = values.get("runtime", {}).get("socketPath", "/run/containerd/containerd.sock")
    assert socket_volume["hostPath"] == {"path": posixpath.dirname(want), "type": "Directory"}
    assert mount["mountPath"] == posixpath.dirname(want) and mount["readOnly"] is True
    assert endpoint == f"--runtime-endpoint=unix://{mount['mountPath']}/{posixpath.basename(want)}"
    assert not [v for v in pod["volumes"] if v.get("hostPath", {}).get("type") == "Socket"]


@pytest.mark.parametrize("values_file", CI_VALUES, ids=lambda p: p.stem)
def test_probes_and_service_target_the_listening_port(chart, values_file):
    docs = render(chart, values_of(values_file))
    (ds,) = of_kind(docs, "DaemonSet")
    (container,) = ds["spec"]["template"]["spec"]["containers"]
    port = next(p for p in container["ports"] if p["name"] == "metrics")["containerPort"]
    assert f"--listen-address=0.0.0.0:{port}" in container["args"]
    scheme = "HTTPS" if values_of(values_file).get("webConfig", {}).get("tls") else "HTTP"
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics", "scheme": scheme}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics", "scheme": scheme}
    (service,) = of_kind(docs, "Service")
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["ports"] == [{"name": "metrics", "port": port, "targetPort": "metrics", "protocol": "TCP"}]
    assert service["spec"]["selector"].items() <= ds["spec"]["template"]["metadata"]["labels"].items()
    env = {e["name"]: e for e in container["env"]}
    assert env["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"


@pytest.mark.parametrize("values_file", CI_VALUES, ids=lambda p: p.stem)
def test_pod_is_hardened(chart, values_file):
    (ds,) = of_kind(render(chart, values_of(values_file)), "DaemonSet")
    pod = ds["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    # Non-root by default: user 65534 in group 0 opens the root:root 0660 socket.
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert (pod["securityContext"]["runAsUser"], pod["securityContext"]["runAsGroup"]) == (65534, 0)
    sc = container["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False and sc["privileged"] is False
    assert sc["readOnlyRootFilesystem"] is True and sc["capabilities"] == {"drop": ["ALL"]}
    assert not pod.get("hostNetwork") and not pod.get("hostPID") and not pod.get("hostIPC")
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]
    assert all(m.get("readOnly") for m in container["volumeMounts"] if m["name"] != "scratch")
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
    assert config.host_root == "/host" and config.metrics.layers_top_n == 20


def test_monitoring_objects_have_their_required_fields(chart):
    docs = render(chart, values_of(CHART / "ci" / "everything-values.yaml"))
    (sm,) = of_kind(docs, "ServiceMonitor")
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    assert sm["spec"]["selector"]["matchLabels"] and sm["spec"]["endpoints"][0]["port"] == "metrics"
    relabel = sm["spec"]["endpoints"][0]["relabelings"][0]
    assert relabel == {"sourceLabels": ["__meta_kubernetes_pod_node_name"], "targetLabel": "node", "action": "replace"}
    (pm,) = of_kind(docs, "PodMonitor")
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


def test_each_alert_can_be_switched_off(chart):
    on = {"prometheusRule": {"enabled": True}}
    (rule,) = of_kind(render(chart, on), "PrometheusRule")
    alerts = [r["alert"] for g in rule["spec"]["groups"] for r in g["rules"] if "alert" in r]
    assert len(alerts) == 6
    off = {"prometheusRule": {"enabled": True, "alerts": {"LayerSharingRatioDropped": {"enabled": False}}}}
    (rule,) = of_kind(render(chart, off), "PrometheusRule")
    assert "LayerSharingRatioDropped" not in [r.get("alert") for g in rule["spec"]["groups"] for r in g["rules"]]


def test_web_config_secret_enables_tls_everywhere(chart):
    docs = render(
        chart,
        {
            "webConfig": {"secretName": "lse-web", "tls": True},
            "serviceMonitor": {"enabled": True},
            "podMonitor": {"enabled": True},
        },
    )
    (ds,) = of_kind(docs, "DaemonSet")
    pod = ds["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert "--web-config-file=/etc/layer-sharing-exporter/web/web-config.yml" in container["args"]
    assert {"name": "web-config", "secret": {"secretName": "lse-web"}} in pod["volumes"]
    assert container["livenessProbe"]["httpGet"]["scheme"] == "HTTPS"
    assert of_kind(docs, "ServiceMonitor")[0]["spec"]["endpoints"][0]["scheme"] == "https"
    assert of_kind(docs, "PodMonitor")[0]["spec"]["podMetricsEndpoints"][0]["scheme"] == "https"
    (ds,) = of_kind(render(chart, {}), "DaemonSet")
    assert not any(a.startswith("--web-config-file") for a in ds["spec"]["template"]["spec"]["containers"][0]["args"])


def test_network_policy_denies_egress_without_enrichment(chart):
    values = {"networkPolicy": {"enabled": True}, "kubernetesEnrichment": {"enabled": False}}
    (policy,) = of_kind(render(chart, values), "NetworkPolicy")
    assert policy["spec"]["egress"] == [] and "Egress" in policy["spec"]["policyTypes"]
    (policy,) = of_kind(render(chart, {"networkPolicy": {"enabled": True}}), "NetworkPolicy")
    assert {p["port"] for rule in policy["spec"]["egress"] for p in rule["ports"]} == {443, 6443}


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"service": {"port": "http"}}, "/service/port"),
        ({"runtim": {}}, "additional properties 'runtim' not allowed"),
        ({"runtime": {"socketPath": "containerd.sock"}}, "/runtime/socketPath"),
        ({"runtime": {"socketPath": "/containerd.sock"}}, "/runtime/socketPath"),
        ({"image": {"digest": "latest"}}, "/image/digest"),
        ({"prometheusRule": {"alerts": {"ImageFilesystemFillingUp": {"severity": "page"}}}}, "severity"),
        ({"config": {"bases": [{"name": "x"}]}}, "/config/bases/0"),
    ],
)
def test_schema_rejects_bad_values_readably(chart, values, message):
    with pytest.raises(HelmValuesError, match=message.replace("(", r"\(")):
        chart.render(values, name="lse", namespace="monitoring")


def test_notes_say_how_to_see_metrics_and_df(chart):
    notes = chart.render({}, name="lse", namespace="monitoring")["layer-sharing-exporter/templates/NOTES.txt"]
    assert "port-forward" in notes and "layer-sharing-exporter df" in notes


def test_readme_values_table_is_in_sync():
    result = subprocess.run(
        [sys.executable, "-m", "scripts.gen_chart_docs", "--check"], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
