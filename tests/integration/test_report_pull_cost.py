"""`report --view pull-cost` and `--view locality` over real exporters serving real containerd
nodes, read through the stand-in for the Kubernetes API server (tests/harness/kube_api.py; no
real API server can be had here) and its pod proxy, with a loopback registry counting what
it serves.

Two containerd nodes: node-a runs app:1, node-b holds only a base image. The report's
per-node figures must equal the `pull-cost` command's on each node (where the node knows
the bytes; the report fills in what another node knows), and node-b's real CRI pull
(exactly as the kubelet pulls) must fetch, unpack and grow exactly as the report said.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from tests.harness.containerd import Containerd
from tests.harness.image_env import image_python_env
from tests.harness.images import BuiltImage, ImageSpec, data_layer
from tests.harness.kube_api import KubeApiStandIn, exporter_pod, pod
from tests.harness.kube_api import node as node_object
from tests.harness.pods import PodMaker
from tests.harness.registry import Registry
from tests.integration.conftest import ServedExporter, free_port, run_cli, start_exporter, stop_exporter
from tests.integration.test_prometheus import dashboard_targets, running_prometheus, substitute

SIZE = 150_000


@dataclass
class Cluster:
    registry: Registry
    nodes: dict[str, Containerd]
    exporters: dict[str, ServedExporter]
    api: KubeApiStandIn
    kubeconfig: Path
    images: dict[str, BuiltImage]
    refs: dict[str, str]


def _images_exported(exporter: ServedExporter, count: int) -> bool:
    return exporter.value("layer_sharing_images") == count


def _committed(containerd: Containerd) -> dict[str, int]:
    return {k: size for k, (size, _) in containerd.snapshot_usage().items() if k.startswith("sha256:")}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    tmp = tmp_path_factory.mktemp("report-pull-cost")
    base, a, b, c = (data_layer(f"rpc-{n}", SIZE + i * 1000) for i, n in enumerate("xabc"))
    images = {
        "base:1": ImageSpec(["x/base"], [base]).build(),
        "app:1": ImageSpec(["x/app"], [base, a, b]).build(),
        "app:2": ImageSpec(["x/app"], [base, a, c]).build(),
    }
    registry = Registry().start()
    refs = {name: registry.push(name.split(":")[0], name.split(":")[1], image) for name, image in images.items()}
    nodes = {name: Containerd(tmp / name) for name in ("node-a", "node-b")}
    exporters: dict[str, ServedExporter] = {}
    api = KubeApiStandIn("unused").start()
    try:
        for name, held in (("node-a", "app:1"), ("node-b", "base:1")):
            nodes[name].start()
            maker = PodMaker(nodes[name].endpoint, str(nodes[name].pod_logs))
            try:
                assert maker.pull_image(refs[held]) == images[held].image_id
            finally:
                maker.close()
            workdir = tmp / f"exporter-{name}"
            workdir.mkdir()
            exporters[name] = start_exporter(nodes[name].endpoint, workdir, "--refresh-interval", "0.5")
            exporter = exporters[name]
            exporter.wait_for(partial(_images_exported, exporter, 1), what="images")
            api.exporter_pods.append(exporter_pod("monitoring", f"lse-{name}", name))
            api.proxied[("monitoring", f"lse-{name}", 9877)] = exporters[name].base_url
        yield Cluster(registry, nodes, exporters, api, api.kubeconfig(tmp / "kubeconfig"), images, refs)
    finally:
        for exporter in exporters.values():
            stop_exporter(exporter)
        for node in nodes.values():
            node.cleanup()
        api.stop()
        registry.stop()


def _report(cluster: Cluster, *args: str) -> dict[str, object]:
    result = run_cli("report", "--kubeconfig", str(cluster.kubeconfig), *args, "-o", "json")
    assert result.returncode == 0, result.stderr
    doc: dict[str, object] = json.loads(result.stdout)
    return doc


def _node_pull_cost(cluster: Cluster, node: str, *refs: str) -> dict[str, object]:
    result = run_cli("pull-cost", "--runtime-endpoint", cluster.nodes[node].endpoint, "-o", "json", *refs)
    assert result.returncode == 0, result.stderr
    total: dict[str, object] = json.loads(result.stdout)["total"]
    return total


def test_the_report_equals_each_nodes_pull_cost_and_a_real_pull(cluster: Cluster):
    ref = cluster.refs["app:1"]
    doc = _report(cluster, "--view", "pull-cost", ref)
    by_node = {n["node"]: n for n in doc["nodes"]}  # type: ignore[attr-defined]
    assert set(by_node) == {"node-a", "node-b"} and doc["unreachable"] == []
    for node in ("node-a", "node-b"):
        on_node = _node_pull_cost(cluster, node, ref)
        reported = by_node[node]["total"]
        for figure in ("fetch_bytes", "fetch_layers", "unpack_layers"):
            assert reported[figure] == on_node[figure], (node, figure)
        if on_node["unpack_bytes"] is not None:
            assert reported["unpack_bytes"] == on_node["unpack_bytes"], node
    # node-a runs app:1: warm, and ImageLocality agrees (it lists app:1 by name).
    assert by_node["node-a"]["warm"] and by_node["node-a"]["total"]["fetch_bytes"] == 0
    assert by_node["node-a"]["image_locality_assumed_bytes"] == 0
    # node-b does not know a and b's bytes; node-a holds those chains: the report fills them in.
    assert _node_pull_cost(cluster, "node-b", ref)["unpack_bytes"] is None
    predicted = by_node["node-b"]["total"]
    assert predicted["unpack_layers"] == 2 and predicted["unpack_bytes"] is not None
    app = cluster.images["app:1"]
    whole = len(app.config.data) + sum(len(blob.data) for blob in app.layers)
    assert by_node["node-b"]["image_locality_assumed_bytes"] == whole
    assert predicted["fetch_bytes"] == whole - len(app.layers[0].data)  # the base is there
    assert doc["registry_bytes"] == predicted["fetch_bytes"] and doc["warm_nodes"] == 1

    # The real pull on node-b, as the kubelet pulls: exactly what the report said.
    node_b = cluster.nodes["node-b"]
    before, chains_before = cluster.registry.served(), _committed(node_b)
    maker = PodMaker(node_b.endpoint, str(node_b.pod_logs))
    try:
        assert maker.pull_image(ref) == app.image_id
    finally:
        maker.close()
    served = cluster.registry.served() - before
    new = {k: v for k, v in _committed(node_b).items() if k not in chains_before}
    assert served.blob_bytes == predicted["fetch_bytes"] and served.layer_gets == predicted["fetch_layers"]
    assert len(new) == predicted["unpack_layers"] and sum(new.values()) == predicted["unpack_bytes"]
    exporter = cluster.exporters["node-b"]
    exporter.wait_for(lambda: exporter.value("layer_sharing_images") == 2, what="node-b's exporter sees the pull")


def _run_web_on_node_a(cluster: Cluster) -> None:
    """A running StatefulSet pod of app:2 on node-a, as the API lists it."""
    if ("default", "web-1") not in cluster.api.pods:
        web = pod("default", "web-1", "node-a", ("StatefulSet", "web"))
        web["spec"]["containers"] = [{"name": "web", "image": cluster.refs["app:2"]}]
        cluster.api.add_pod(web)


def test_locality_over_the_running_workloads(cluster: Cluster):
    _run_web_on_node_a(cluster)
    doc = _report(cluster, "--view", "locality")
    workloads: list[dict[str, Any]] = doc["workloads"]  # type: ignore[assignment]
    (workload,) = workloads
    assert workload["workload"] == "default/StatefulSet/web" and workload["nodes"] == 2
    for node, figures in workload["per_node"].items():
        on_node = _node_pull_cost(cluster, node, cluster.refs["app:2"])
        assert figures["fetch_bytes"] == on_node["fetch_bytes"], node
    app2 = cluster.images["app:2"]
    # Each node lacks app:2's top layer and config; node-a (and node-b, once it pulled app:1) no more:
    # the nearest-rank median of two nodes is the smaller figure either way.
    assert workload["warm_nodes"] == 0
    assert workload["median_cold_start_bytes"] == len(app2.config.data) + len(app2.layers[2].data)


def _locality_service(cluster: Cluster, workdir: Path) -> ServedExporter:
    """`report --view locality` served as metrics (what the chart's locality Deployment runs)."""
    port = free_port()
    log_path = workdir / "locality.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "exporter", "report", "--view", "locality", "--kubeconfig",
             str(cluster.kubeconfig), "--listen-address", "127.0.0.1", "--listen-port", str(port), "--every", "1"],
            stdout=log, stderr=subprocess.STDOUT, env=image_python_env(),
        )  # fmt: skip
    served = ServedExporter(process, f"http://127.0.0.1:{port}", log_path)
    served.wait_for(lambda: served.get("/readyz")[0] == 200, what="locality service ready")
    return served


def test_locality_service_figures_equal_the_report_and_feed_the_dashboard_panels(
    cluster: Cluster, tmp_path: Path
) -> None:
    """The locality service's metrics equal `report --view locality`, and a real Prometheus
    with the chart's recording rules shows them in the cluster dashboard's pull-cost panels."""
    _run_web_on_node_a(cluster)
    workloads: list[dict[str, Any]] = _report(cluster, "--view", "locality")["workloads"]  # type: ignore[assignment]
    (workload,) = workloads
    service = _locality_service(cluster, tmp_path)
    try:
        labels = {"namespace": "default", "workload_kind": "StatefulSet", "workload": "web"}
        service.wait_for(lambda: service.value("layer_sharing_locality_workload_nodes", **labels) == 2,
                         what="the workload's figures")  # fmt: skip
        assert service.value("layer_sharing_locality_up") == 1
        assert service.value("layer_sharing_locality_nodes_answering") == 2
        assert service.value("layer_sharing_locality_workload_warm_nodes", **labels) == workload["warm_nodes"]
        p50 = service.value("layer_sharing_locality_workload_cold_start_bytes", **labels, quantile="0.5")
        p90 = service.value("layer_sharing_locality_workload_cold_start_bytes", **labels, quantile="0.9")
        assert (p50, p90) == (workload["median_cold_start_bytes"], workload["p90_cold_start_bytes"])
        rollout = service.value("layer_sharing_locality_workload_rollout_bytes", **labels)
        assert rollout == workload["registry_bytes"]
        # Bounded: per workload, never per layer or node.
        label_names = {name for (_, pairs) in service.metrics() for name, _ in pairs}
        assert label_names <= {"namespace", "workload_kind", "workload", "quantile", "result"}

        exporters = [
            {"targets": [e.base_url.removeprefix("http://")], "labels": {"node": n}}
            for n, e in cluster.exporters.items()
        ]
        scrapes = [
            {"job_name": "layer-sharing-exporter", "static_configs": exporters},
            {"job_name": "layer-sharing-exporter-locality",
             "static_configs": [{"targets": [service.base_url.removeprefix("http://")]}]},
        ]  # fmt: skip
        (tmp_path / "prometheus").mkdir()
        with running_prometheus(tmp_path / "prometheus", scrapes) as prom:
            panels = {title: expr for _, title, expr in dashboard_targets(locality=True)}
            assert len(panels) == 2
            warm = prom.query(substitute(panels["Warm nodes per workload (least warm first)"]))
            cold = prom.query(substitute(panels["Cold-start bytes per workload (p90 over nodes)"]))
            assert [r["metric"]["workload"] for r in warm] == ["web"]
            assert float(warm[0]["value"][1]) == workload["warm_nodes"] / 2
            assert [(r["metric"]["namespace"], float(r["value"][1])) for r in cold] == [("default", p90)]
    finally:
        assert stop_exporter(service) == 0


def test_locality_prices_a_workload_only_where_its_pods_may_go(cluster: Cluster) -> None:
    """node-b tainted NoSchedule, which web does not tolerate: web is priced on node-a alone,
    with node-a's own figure; untainted again, on both."""
    _run_web_on_node_a(cluster)
    tainted = node_object("node-b", taints=({"key": "dedicated", "effect": "NoSchedule"},))
    cluster.api.nodes = [node_object("node-a"), tainted]
    try:
        workload = _one_workload(cluster)
        assert set(workload["per_node"]) == {"node-a"} and workload["nodes"] == 1
        on_node = _node_pull_cost(cluster, "node-a", cluster.refs["app:2"])
        assert workload["per_node"]["node-a"]["fetch_bytes"] == on_node["fetch_bytes"]
    finally:
        cluster.api.nodes = []
    assert set(_one_workload(cluster)["per_node"]) == {"node-a", "node-b"}


def _one_workload(cluster: Cluster) -> dict[str, Any]:
    workloads: list[dict[str, Any]] = _report(cluster, "--view", "locality")["workloads"]  # type: ignore[assignment]
    (workload,) = workloads
    return workload
