"""`report --view pull-cost REF...` and `--view locality`: the report's side, against the
loopback registry, the stand-in for the Kubernetes API server (tests/harness/kube_api.py)
and stand-in exporters answering GET /pull-cost from recorded holdings
(tests/harness/pull_cost_nodes.py). Real exporters on real containerd:
tests/integration/test_report_pull_cost.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from exporter.cli.main import main
from exporter.core.chain import chain_ids
from exporter.core.pull_cost import CONTAINERD, NodeHoldings, RemoteImage, RemoteLayer, pull_costs
from tests.harness.images import BuiltImage, ImageSpec, data_layer
from tests.harness.kube_api import KubeApiStandIn, exporter_pod, pod
from tests.harness.pull_cost_nodes import PullCostNodes
from tests.harness.registry import Registry

BASE, APP1, APP2 = data_layer("rep-base", 3000), data_layer("rep-app1", 500), data_layer("rep-app2", 700)


@pytest.fixture
def registry() -> Iterator[Registry]:
    served = Registry().start()
    yield served
    served.stop()


@pytest.fixture
def api() -> Iterator[KubeApiStandIn]:
    standin = KubeApiStandIn("unused").start()
    yield standin
    standin.stop()


def _remote(ref: str, image: BuiltImage) -> RemoteImage:
    layers = tuple(RemoteLayer(b.digest, len(b.data), d) for b, d in zip(image.layers, image.diff_ids, strict=True))
    return RemoteImage(ref, image.manifest.digest, image.config.digest, len(image.config.data), layers)


class Cluster:
    def __init__(self, api: KubeApiStandIn, registry: Registry, tmp_path: Path) -> None:
        self.api, self.registry = api, registry
        self.kubeconfig = str(api.kubeconfig(tmp_path / "kubeconfig"))
        self.v1 = ImageSpec(["x"], [BASE, APP1]).build()
        self.v2 = ImageSpec(["x"], [BASE, APP2]).build()
        self.ref1 = registry.push("team/app", "1", self.v1)
        self.ref2 = registry.push("team/app", "2", self.v2)
        c1 = chain_ids(self.v1.diff_ids)
        size1 = sum(len(b.data) for b in self.v1.layers) + len(self.v1.config.data)
        self.holdings = {
            # Runs app:1 (its chains with their bytes; blobs kept): shares the base with app:2.
            "node-a": NodeHoldings(
                CONTAINERD,
                chains={c1[0]: 3100, c1[1]: 600},
                blobs=frozenset({self.v1.config.digest, *(b.digest for b in self.v1.layers)}),
                diff_bytes={self.v1.diff_ids[0]: 3100, self.v1.diff_ids[1]: 600},
                diff_sized=True,
                listed={self.ref1: size1},
            ),
            "node-b": NodeHoldings(CONTAINERD, diff_sized=True),  # empty
        }
        self.nodes = PullCostNodes(dict(self.holdings)).start()
        api.exporter_pods = [exporter_pod("monitoring", f"lse-{n}", n) for n in self.holdings]
        for n in self.holdings:
            api.proxied[("monitoring", f"lse-{n}", 9877)] = self.nodes.url(n)

    def report(self, *args: str) -> int:
        return main(["report", "--kubeconfig", self.kubeconfig, *args])


@pytest.fixture
def cluster(api: KubeApiStandIn, registry: Registry, tmp_path: Path) -> Iterator[Cluster]:
    made = Cluster(api, registry, tmp_path)
    yield made
    made.nodes.stop()


def test_a_rollout_per_node_equals_the_node_accounting(cluster: Cluster, capsys):
    assert cluster.report("--view", "pull-cost", cluster.ref2, "-o", "json") == 0
    doc = json.loads(capsys.readouterr().out)
    remote = _remote(cluster.ref2, cluster.v2)
    by_node = {n["node"]: n for n in doc["nodes"]}
    for node, holdings in cluster.holdings.items():
        costs, total = pull_costs([remote], holdings)
        assert by_node[node]["total"]["fetch_bytes"] == total.fetch_bytes
        assert by_node[node]["total"]["fetch_layers"] == total.fetch_layers
    v2_bytes = len(cluster.v2.config.data) + sum(len(b.data) for b in cluster.v2.layers)
    # node-a fetches the new config and top layer only; ImageLocality sees no app:2 anywhere.
    assert by_node["node-a"]["total"]["fetch_bytes"] == len(cluster.v2.config.data) + len(cluster.v2.layers[1].data)
    assert by_node["node-b"]["total"]["fetch_bytes"] == v2_bytes
    assert by_node["node-a"]["image_locality_assumed_bytes"] == v2_bytes
    # node-b's base chain bytes come from node-a, which holds that chain; the new top diff is unknown.
    assert by_node["node-b"]["total"]["unpack_layers"] == 2 and by_node["node-b"]["total"]["unpack_bytes"] is None
    assert doc["registry_bytes"] == sum(n["total"]["fetch_bytes"] for n in doc["nodes"])
    assert doc["warm_nodes"] == 0 and doc["nodes_answered"] == 2 and doc["unreachable"] == []


def test_warm_nodes_and_image_locality_for_a_present_image(cluster: Cluster, capsys):
    assert cluster.report("--view", "pull-cost", cluster.ref1, "-o", "csv") == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "node,fetch,fetch_layers,unpack_layers,unpack,warm,imagelocality_assumes"
    rows = {line.split(",")[0]: line.split(",") for line in out[1:]}
    assert rows["node-a"][1:] == ["0", "0", "0", "0", "True", "0"]
    assert rows["node-b"][5] == "False"


def test_the_table_says_what_leaves_the_registry(cluster: Cluster, capsys, tmp_path: Path):
    assert cluster.report("--view", "pull-cost", cluster.ref1) == 0
    out = capsys.readouterr().out
    assert "1 of 2 nodes warm" in out and "leaving the registry" in out and "ImageLocality assumes" in out
    page = tmp_path / "rollout.html"
    assert cluster.report("--view", "pull-cost", cluster.ref1, "-o", "html", str(page)) == 0
    assert "1 of 2 nodes warm" in page.read_text() and "<td>node-b</td>" in page.read_text()


def test_locality_over_running_workloads(cluster: Cluster, capsys, tmp_path: Path):
    web = pod("default", "web-1", "node-a", ("ReplicaSet", "web-7f"))
    web["metadata"]["labels"] = {"pod-template-hash": "7f"}
    web["spec"]["containers"] = [{"name": "web", "image": cluster.ref1}]
    worker = pod("default", "worker-0", "node-b", ("StatefulSet", "worker"))
    worker["spec"]["containers"] = [{"name": "w", "image": cluster.ref2}]
    cluster.api.add_pod(web)
    cluster.api.add_pod(worker)
    assert cluster.report("--view", "locality", "-o", "json") == 0
    doc = {w["workload"]: w for w in json.loads(capsys.readouterr().out)["workloads"]}
    assert set(doc) == {"default/Deployment/web", "default/StatefulSet/worker"}
    web_doc = doc["default/Deployment/web"]
    v1_bytes = len(cluster.v1.config.data) + sum(len(b.data) for b in cluster.v1.layers)
    assert web_doc["warm_nodes"] == 1 and web_doc["nodes"] == 2
    assert (
        web_doc["per_node"]["node-a"]["fetch_bytes"] == 0 and web_doc["per_node"]["node-b"]["fetch_bytes"] == v1_bytes
    )
    assert web_doc["median_cold_start_bytes"] == 0 and web_doc["p90_cold_start_bytes"] == v1_bytes
    page = tmp_path / "locality.html"
    assert cluster.report("--view", "locality", "-o", "html", str(page)) == 0
    assert "Heatmap" in page.read_text() and "default/StatefulSet/worker" in page.read_text()
    assert cluster.report("--view", "locality") == 0
    assert "Node x workload" in capsys.readouterr().out


def test_refusals(cluster: Cluster, capsys):
    assert cluster.report("--view", "pull-cost") == 2
    assert "needs image references" in capsys.readouterr().err
    assert cluster.report("--view", "locality", cluster.ref1) == 2
    assert cluster.report("--view", "nodes", cluster.ref1) == 2
    assert main(["report", "--prometheus-url", "http://127.0.0.1:9", "--view", "pull-cost", "a:1"]) == 2
    assert cluster.report("--view", "pull-cost", "Bad/Ref:1") == 2
    capsys.readouterr()
    absent = f"{cluster.registry.host}/team/app:absent"
    assert cluster.report("--view", "pull-cost", absent) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and absent in err


def test_an_unreachable_node_is_listed_and_the_rest_reported(cluster: Cluster, capsys):
    cluster.api.exporter_pods.append(exporter_pod("monitoring", "lse-gone", "node-gone"))
    assert cluster.report("--view", "pull-cost", cluster.ref1, "-o", "json") == 1
    captured = capsys.readouterr()
    assert json.loads(captured.out)["nodes_answered"] == 2 and "node node-gone unreachable" in captured.err
