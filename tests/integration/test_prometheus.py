"""A real Prometheus (Debian package) scrapes the exporter on the real
containerd with the recording rules loaded: every dashboard query and every
recording rule returns data, and the dashboards' main figures equal the
exporter's own numbers; the same with the labels OpenShift's user-workload
monitoring rewrites (namespace/pod -> exported_namespace/exported_pod), with
the rules rendered from the chart at that one setting (measuredPodLabels)."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from helm_python import Chart

from tests.harness.kube_api import KubeApiStandIn, owned, pod
from tests.harness.scenario import SampleNode
from tests.integration.conftest import ServedExporter, free_port, start_exporter, stop_exporter
from tests.integration.oracle import duplicates, expected

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "rules" / "layer-sharing.rules.yml"
VARIABLES = {
    "$cluster": ".*",
    "$job": ".*",
    "$node": ".*",
    "$namespace": ".*",
    "$top": "3",
    "$__rate_interval": "1m",
    # The hidden constants, at their defaults (the chart sets them from clusterLabel and measuredPodLabels).
    "${cluster_label}": "cluster",
    "${namespace_label}": "namespace",
    "${pod_label}": "pod",
}
# OpenShift user-workload monitoring: the constants as the chart sets them there.
OPENSHIFT_VARIABLES = VARIABLES | {"${namespace_label}": "exported_namespace", "${pod_label}": "exported_pod"}


class Prometheus:
    def __init__(self, url: str) -> None:
        self.url = url

    def query(self, expr: str) -> list[dict[str, Any]]:
        params = urllib.parse.urlencode({"query": expr})
        with urllib.request.urlopen(f"{self.url}/api/v1/query?{params}", timeout=10) as response:
            body = json.load(response)
        assert body["status"] == "success", body
        return body["data"]["result"]

    def scalar(self, expr: str) -> float:
        result = self.query(expr)
        assert len(result) == 1, (expr, result)
        return float(result[0]["value"][1])


@pytest.fixture(scope="module")
def exporter(sample_node: SampleNode, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedExporter]:
    # Workload attribution on (a stand-in API knows the sample pods' owners), and
    # a catalog naming only base-os, so some workloads are off the catalog and
    # every dashboard panel has something to show.
    workdir = tmp_path_factory.mktemp("exporter-prom")
    api = KubeApiStandIn("itest-node").start()
    api.add_owner(owned("ReplicaSet", "default", "web-5d8f", ("Deployment", "web")))
    api.add_owner(owned("Job", "batch", "job-1-2911", ("CronJob", "nightly")))
    api.add_pod(pod("default", "web-1", "itest-node", ("ReplicaSet", "web-5d8f")))
    api.add_pod(pod("default", "web-2", "itest-node", ("ReplicaSet", "web-5d8f")))
    api.add_pod(pod("batch", "job-1", "itest-node", ("Job", "job-1-2911")))
    api.add_pod(pod("other", "solo", "itest-node"))
    config = workdir / "config.yaml"
    config.write_text("bases:\n  - name: base-os\n    image: localhost/base:1\n")
    served = start_exporter(
        sample_node.containerd.endpoint,
        workdir,
        "--config",
        str(config),
        "--refresh-interval",
        "1",
        "--node-name",
        "itest-node",
        "--kubernetes",
        "--kubeconfig",
        str(api.kubeconfig(workdir / "kubeconfig")),
    )
    served.wait_for(
        lambda: (
            served.value("layer_sharing_workload_pods", namespace="default", workload="web", workload_kind="Deployment")
            == 2
        ),
        what="workload attribution",
    )
    yield served
    assert stop_exporter(served) == 0
    api.stop()


@contextlib.contextmanager
def running_prometheus(
    workdir: Path, scrape_configs: list[dict[str, Any]], rules: Path = RULES
) -> Iterator[Prometheus]:
    """A real Prometheus scraping every second with the recording rules loaded,
    yielded once it has evaluated them."""
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("prometheus not found: run scripts/setup.sh (Debian package prometheus)")
    (workdir / "prometheus.yml").write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "rule_files": [str(rules)],
                "scrape_configs": scrape_configs,
            }
        )
    )
    port = free_port()
    with open(workdir / "prometheus.log", "wb") as log:
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={workdir / 'prometheus.yml'}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    prom = Prometheus(f"http://127.0.0.1:{port}")
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and process.poll() is None:
            try:
                if prom.query("job:layer_sharing_physical_bytes:sum") and prom.query(
                    "rate(layer_sharing_refreshes_total[1m])"
                ):
                    break
            except OSError:
                pass
            time.sleep(0.5)
        else:
            pytest.fail("Prometheus never evaluated the rules:\n" + (workdir / "prometheus.log").read_text()[-3000:])
        yield prom
    finally:
        process.terminate()
        process.wait(timeout=20)


@pytest.fixture(scope="module")
def prometheus(exporter: ServedExporter, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    target = exporter.base_url.removeprefix("http://")
    scrape = {
        "job_name": "layer-sharing-exporter",
        # What the chart's ServiceMonitor relabelling adds: the node name.
        "static_configs": [{"targets": [target], "labels": {"node": "itest-node"}}],
    }
    with running_prometheus(tmp_path_factory.mktemp("prometheus"), [scrape]) as prom:
        yield prom


LOCALITY_RULES = "workload:layer_sharing_locality_"


def dashboard_targets(locality: bool = False) -> list[tuple[str, str, str]]:
    """Every panel's query (board, title, expr); the pull-cost panels, which read the locality
    service's rules, only with `locality` (tests/integration/test_report_pull_cost.py runs that
    service: it needs a registry and exporters behind the pod proxy)."""
    out = []
    for path in sorted((ROOT / "dashboards").glob("*.json")):
        board = json.loads(path.read_text())
        for panel in board["panels"]:
            for target in panel.get("targets", []):
                if locality == (LOCALITY_RULES in target["expr"]):
                    out.append((path.stem, panel["title"], target["expr"]))
    return out


def substitute(expr: str, variables: dict[str, str] = VARIABLES) -> str:
    """What Grafana sends for `expr`: every variable replaced by its value."""
    for name, value in variables.items():
        expr = expr.replace(name, value)
    return expr


def variable_queries() -> list[tuple[str, str, str]]:
    """Each dashboard's query variables, `label_values(SERIES, LABEL)`: (board, name, query)."""
    out = []
    for path in sorted((ROOT / "dashboards").glob("*.json")):
        for variable in json.loads(path.read_text())["templating"]["list"]:
            if variable["type"] == "query":
                out.append((path.stem, variable["name"], variable["query"]))
    return out


def variable_values(prom: Prometheus, query: str, variables: dict[str, str]) -> set[str]:
    """The values Grafana offers for a `label_values(SERIES, LABEL)` variable, asked as PromQL."""
    inner = substitute(query, variables).removeprefix("label_values(").removesuffix(")")
    series, _, label = inner.rpartition(",")
    label = label.strip()
    return {r["metric"].get(label, "") for r in prom.query(f"count by ({label}) ({series})")} - {""}


def test_every_dashboard_query_returns_data(prometheus: Prometheus):
    targets = dashboard_targets()
    assert len(targets) > 30
    empty = [(board, title, expr) for board, title, expr in targets if not prometheus.query(substitute(expr))]
    assert empty == []


def test_every_recording_rule_returns_data(prometheus: Prometheus):
    groups = yaml.safe_load(RULES.read_text())["groups"]
    records = [
        rule["record"]
        for group in groups
        if group["name"] != "layer-sharing-locality.rules"  # test_report_pull_cost.py runs that service
        for rule in group["rules"]
        if "record" in rule
    ]
    assert len(records) == 17
    assert [r for r in records if not prometheus.query(r)] == []


def test_dashboard_figures_equal_the_exporter(
    sample_node: SampleNode, prometheus: Prometheus, exporter: ServedExporter
):
    want = expected(sample_node)
    node_board = {title: expr for board, title, expr in dashboard_targets() if board == "layer-sharing-node"}
    cluster_board = {title: expr for board, title, expr in dashboard_targets() if board == "layer-sharing-cluster"}
    assert prometheus.scalar(substitute(node_board["Physical bytes"])) == want.physical
    assert prometheus.scalar(substitute(node_board["Logical bytes"])) == want.logical
    assert prometheus.scalar(substitute(node_board["Saved by sharing"])) == want.logical - want.physical
    assert prometheus.scalar(substitute(node_board["Reclaimable"])) == want.reclaimable
    assert prometheus.scalar(substitute(node_board["Compressed content"])) == want.content
    assert prometheus.scalar(substitute(node_board["Sharing ratio"])) == pytest.approx(1 - want.physical / want.logical)
    assert prometheus.scalar(substitute(cluster_board["Physical image bytes"])) == want.physical
    assert prometheus.scalar(substitute(cluster_board["Held back by unused images"])) == want.reclaimable
    assert prometheus.scalar(substitute(node_board["Images"])) == exporter.value("layer_sharing_images")
    bases_board = {title: expr for board, title, expr in dashboard_targets() if board == "layer-sharing-bases"}
    for title, metric in [
        ("Duplicate layer bytes", "layer_sharing_duplicate_bytes"),
        ("Image GC assumes it frees", "layer_sharing_unused_logical_bytes"),
        ("Version drift", "layer_sharing_base_drift_bytes"),
    ]:
        assert prometheus.scalar(substitute(bases_board[title])) == sum(
            v for (name, _), v in exporter.metrics().items() if name == metric
        ), title
    # app-a's top diff is unpacked again on other-os under app-c: one redundant copy.
    dups = duplicates(want.usage, [image.diff_ids for image in sample_node.images.values()])
    assert dups[0] == 1
    assert prometheus.scalar(substitute(bases_board["Duplicate layer bytes"])) == dups[1]
    pods = {
        (r["metric"]["namespace"], r["metric"]["pod"]): float(r["value"][1])
        for r in prometheus.query("layer_sharing_pod_bytes")
    }
    assert pods == {k: float(v) for k, v in want.pod_bytes.items()}


def test_report_through_prometheus_matches_the_exporter(sample_node: SampleNode, prometheus: Prometheus):
    import sys

    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "exporter",
            "report",
            "--prometheus-url",
            prometheus.url,
            "--prometheus-selector",
            'job="layer-sharing-exporter"',
            "--output",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    want = expected(sample_node)
    assert [n["node"] for n in doc["nodes"]] == ["itest-node"]
    assert (
        doc["totals"]["physical"],
        doc["totals"]["logical"],
        doc["totals"]["reclaimable"],
        doc["totals"]["content"],
    ) == (want.physical, want.logical, want.reclaimable, want.content)
    assert {(b["base"], b["source"]) for b in doc["bases"]} >= {("base-os", "catalog")}
    assert {w["name"] for w in doc["workloads"] if not w["on_catalog"]} == {"nightly", "solo"}
    unreachable = subprocess.run(
        [sys.executable, "-m", "exporter", "report", "--prometheus-url", "http://127.0.0.1:9", "--timeout", "2"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    # Refused, not "no data": the connection error code and the reason.
    assert unreachable.returncode == 4 and "connection refused" in unreachable.stderr


def test_promtool_check_metrics_finds_no_problem(exporter: ServedExporter):
    status, text = exporter.get("/metrics")
    assert status == 200
    result = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.strip() == "" and result.stderr.strip() == "", (
        result.stdout + result.stderr
    )


# Two nodes scraped as the Prometheus Operator scrapes the chart's ServiceMonitor:
# the target labels it adds (namespace, pod, service, endpoint, container, the
# node from the chart's relabelling, a cluster label), with honor_labels as the
# chart sets it.
TWO_NODES = ("itest-node", "itest-node-2")


@pytest.fixture(scope="module")
def second_exporter(sample_node: SampleNode, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedExporter]:
    """Another node's exporter (same containerd, so the same figures), without workload attribution."""
    workdir = tmp_path_factory.mktemp("exporter-prom-2")
    config = workdir / "config.yaml"
    config.write_text("bases:\n  - name: base-os\n    image: localhost/base:1\n")
    served = start_exporter(
        sample_node.containerd.endpoint, workdir, "--config", str(config), "--refresh-interval", "1"
    )
    yield served
    assert stop_exporter(served) == 0


@pytest.fixture(scope="module")
def two_node_prometheus(
    exporter: ServedExporter, second_exporter: ServedExporter, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Prometheus]:
    targets = []
    for node, served in zip(TWO_NODES, (exporter, second_exporter), strict=True):
        labels = {
            "namespace": "monitoring",
            "pod": f"lse-layer-sharing-exporter-{node[-1]}",
            "service": "lse-layer-sharing-exporter",
            "endpoint": "metrics",
            "container": "exporter",
            "node": node,
            "cluster": "itest",
        }
        targets.append({"targets": [served.base_url.removeprefix("http://")], "labels": labels})
    scrape = {"job_name": "layer-sharing-exporter", "honor_labels": True, "static_configs": targets}
    with running_prometheus(tmp_path_factory.mktemp("prometheus-2"), [scrape]) as prom:

        def both_scraped() -> bool:
            up = prom.query("sum(layer_sharing_up)")
            # ... and the rules evaluated since: the recorded sums cover both nodes.
            return (
                bool(up)
                and float(up[0]["value"][1]) == len(TWO_NODES)
                and bool(prom.query("sum(job:layer_sharing_physical_bytes:sum) == sum(layer_sharing_physical_bytes)"))
                and bool(
                    prom.query(
                        "sum(namespace:layer_sharing_pod_attributed_bytes:sum)"
                        " == sum(layer_sharing_pod_attributed_bytes)"
                    )
                )
            )

        deadline = time.monotonic() + 60
        while not both_scraped():
            if time.monotonic() > deadline:
                pytest.fail(f"Prometheus never saw both exporters up: {prom.query('layer_sharing_up')}")
            time.sleep(0.5)
        yield prom


def test_two_nodes_every_dashboard_query_returns_data(two_node_prometheus: Prometheus):
    targets = dashboard_targets()
    empty = [(b, title, e) for b, title, e in targets if not two_node_prometheus.query(substitute(e))]
    assert empty == []
    # The variables offer what the Operator-shaped series hold: the cluster label, the job, both nodes.
    offered = {(b, name): variable_values(two_node_prometheus, q, VARIABLES) for b, name, q in variable_queries()}
    for (board, name), values in offered.items():
        assert values, (board, name)
        if name in ("cluster", "job", "node"):
            assert values == {"cluster": {"itest"}, "job": {"layer-sharing-exporter"}, "node": set(TWO_NODES)}[name]


def test_two_nodes_headline_figures_are_the_sums_over_nodes(sample_node: SampleNode, two_node_prometheus: Prometheus):
    prom = two_node_prometheus
    want = expected(sample_node)
    nodes = len(TWO_NODES)
    boards: dict[str, dict[str, str]] = {}
    for board, title, expr in dashboard_targets():
        boards.setdefault(board, {}).setdefault(title, expr)
    cluster, node = boards["layer-sharing-cluster"], boards["layer-sharing-node"]
    assert prom.scalar(substitute(cluster["Nodes reporting"])) == nodes
    assert prom.scalar(substitute(cluster["Physical image bytes"])) == nodes * want.physical
    assert prom.scalar(substitute(cluster["Logical image bytes"])) == nodes * want.logical
    assert prom.scalar(substitute(cluster["Held back by unused images"])) == nodes * want.reclaimable
    assert prom.scalar(substitute(cluster["Compressed content"])) == nodes * want.content
    assert prom.scalar(substitute(cluster["Sharing ratio"])) == pytest.approx(1 - want.physical / want.logical)
    per_node = {
        r["metric"]["node"]: float(r["value"][1])
        for r in prom.query(substitute(cluster["Physical image bytes per node"]))
    }
    assert per_node == dict.fromkeys(TWO_NODES, float(want.physical))
    assert prom.scalar(substitute(node["Physical bytes"])) == nodes * want.physical
    # Showback: each namespace's fair shares over both nodes add up to the bytes pods use there.
    showback = {
        r["metric"]["namespace"]: float(r["value"][1])
        for r in prom.query(substitute(cluster["Image bytes by namespace (showback)"]))
    }
    assert set(showback) == {ns for ns, _ in want.pod_bytes}
    pods_use = prom.scalar("sum(layer_sharing_pod_attributed_bytes)")
    assert sum(showback.values()) == pods_use
    # The exporter's namespace/pod labels name the measured pods (honor_labels), not the exporter's pod.
    pods = {(r["metric"]["namespace"], r["metric"]["pod"]) for r in prom.query("layer_sharing_pod_bytes")}
    assert pods == set(want.pod_bytes)


# OpenShift user-workload monitoring: the Prometheus Operator there forces honorLabels off
# and enforces the monitor's namespace, so the exporter's pod series arrive with the
# exporter's own namespace/pod as `namespace`/`pod` and the measured pods' as
# `exported_namespace`/`exported_pod`. The rules come from the chart rendered at
# measuredPodLabels (the one setting), the dashboards' constants take the same names,
# and `report` is told the same with --prometheus-namespace-label.
OPENSHIFT_VALUES = {
    "runtime": {"type": "crio"},
    "prometheusRule": {"enabled": True},
    "serviceMonitor": {"enabled": True},
    "nameOverride": "layer-sharing-exporter",
    "measuredPodLabels": {"namespace": "exported_namespace", "pod": "exported_pod"},
}
EXPORTER_NAMESPACE = "openshift-layer-sharing"


def chart_rules(values: dict[str, Any], path: Path) -> Path:
    chart = Chart.load(ROOT / "charts" / "layer-sharing-exporter")
    try:
        rendered = chart.render(values, name="lse", namespace=EXPORTER_NAMESPACE)
    finally:
        chart.close()
    rule = yaml.safe_load(rendered["layer-sharing-exporter/templates/prometheusrule.yaml"])
    path.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    return path


@pytest.fixture(scope="module")
def openshift_prometheus(
    exporter: ServedExporter, second_exporter: ServedExporter, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Prometheus]:
    workdir = tmp_path_factory.mktemp("prometheus-openshift")
    targets = []
    for node, served in zip(TWO_NODES, (exporter, second_exporter), strict=True):
        labels = {
            "namespace": EXPORTER_NAMESPACE,
            "pod": f"lse-layer-sharing-exporter-{node[-1]}",
            "service": "lse-layer-sharing-exporter",
            "endpoint": "metrics",
            "container": "exporter",
            "node": node,
            "cluster": "ocp",
        }
        targets.append({"targets": [served.base_url.removeprefix("http://")], "labels": labels})
    scrape = {"job_name": "layer-sharing-exporter", "honor_labels": False, "static_configs": targets}
    rules = chart_rules(OPENSHIFT_VALUES, workdir / "rules.yml")
    with running_prometheus(workdir, [scrape], rules) as prom:
        deadline = time.monotonic() + 60
        while not prom.query(
            "sum(namespace:layer_sharing_pod_attributed_bytes:sum) == sum(layer_sharing_pod_attributed_bytes)"
            " and sum(layer_sharing_up) == 2"
        ):
            if time.monotonic() > deadline:
                pytest.fail(f"Prometheus never saw both exporters: {prom.query('layer_sharing_up')}")
            time.sleep(0.5)
        yield prom


def test_openshift_labels_are_rewritten_as_user_workload_monitoring_does(openshift_prometheus: Prometheus):
    """The premise: the measured pods' namespace is exported_namespace; `namespace` is the exporter's."""
    series = openshift_prometheus.query("layer_sharing_pod_bytes")
    assert series
    assert {s["metric"]["namespace"] for s in series} == {EXPORTER_NAMESPACE}
    assert {s["metric"]["exported_namespace"] for s in series} >= {"default"}


def test_openshift_showback_by_namespace_is_right(sample_node: SampleNode, openshift_prometheus: Prometheus):
    prom = openshift_prometheus
    want = expected(sample_node)
    recorded = {
        r["metric"]["namespace"]: float(r["value"][1])
        for r in prom.query("namespace:layer_sharing_pod_attributed_bytes:sum")
    }
    # The measured pods' namespaces, never the exporter's; each namespace's fair share over both nodes.
    assert set(recorded) == {ns for ns, _ in want.pod_bytes}
    assert EXPORTER_NAMESPACE not in recorded
    truth = {
        r["metric"]["exported_namespace"]: float(r["value"][1])
        for r in prom.query("sum by (exported_namespace) (layer_sharing_pod_attributed_bytes)")
    }
    assert recorded == truth
    assert sum(recorded.values()) == prom.scalar("sum(layer_sharing_pod_attributed_bytes)")
    (panel_expr,) = [e for b, title, e in dashboard_targets() if b == "layer-sharing-cluster" and "showback" in title]
    shown = {
        r["metric"]["namespace"]: float(r["value"][1]) for r in prom.query(substitute(panel_expr, OPENSHIFT_VARIABLES))
    }
    assert shown == recorded


def test_openshift_every_dashboard_query_and_variable_returns_the_measured_pods(
    sample_node: SampleNode, openshift_prometheus: Prometheus
):
    prom = openshift_prometheus
    empty = [(b, title, e) for b, title, e in dashboard_targets() if not prom.query(substitute(e, OPENSHIFT_VARIABLES))]
    assert empty == []
    namespaces = {ns for ns, _ in expected(sample_node).pod_bytes}
    for board, name, query in variable_queries():
        values = variable_values(prom, query, OPENSHIFT_VARIABLES)
        assert values, (board, name, query)
        if name == "namespace":
            assert values == namespaces, board
    # The pods panel names the measured pods, under `namespace` and `pod` for its legend.
    (pods_expr,) = [
        e
        for b, title, e in dashboard_targets()
        if b == "layer-sharing-node" and title == "Top pods by attributed bytes"
    ]
    named = {
        (r["metric"]["namespace"], r["metric"]["pod"]) for r in prom.query(substitute(pods_expr, OPENSHIFT_VARIABLES))
    }
    assert named == set(expected(sample_node).pod_bytes)
    # Read with the defaults instead (namespace/pod), the same panel would show the exporter's own pods.
    wrong = {(r["metric"]["namespace"], r["metric"]["pod"]) for r in prom.query(substitute(pods_expr))}
    assert {ns for ns, _ in wrong} == {EXPORTER_NAMESPACE}


def test_openshift_report_reads_the_same_label(sample_node: SampleNode, openshift_prometheus: Prometheus):
    import sys

    want = expected(sample_node)
    for flags in (["--prometheus-namespace-label", "exported_namespace"], []):
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "exporter",
                "report",
                "--prometheus-url",
                openshift_prometheus.url,
                "--output",
                "json",
                *flags,
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        doc = json.loads(result.stdout)
        assert doc["totals"]["physical"] == len(TWO_NODES) * want.physical
        namespaces = {w["namespace"] for w in doc["workloads"]}
        assert namespaces == {"default", "batch", "other"}, flags
        web = next(w for w in doc["workloads"] if w["name"] == "web")
        assert (web["namespace"], web["pods"]) == ("default", 2)
    # Told the wrong label, the workloads would land in the exporter's namespace: the flag matters.
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "exporter",
            "report",
            "--prometheus-url",
            openshift_prometheus.url,
            "--output",
            "json",
            "--prometheus-namespace-label",
            "namespace",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert {w["namespace"] for w in json.loads(result.stdout)["workloads"]} == {EXPORTER_NAMESPACE}
