"""The report's pod-proxy source against the stand-in API server proxying to a
real exporter HTTP server, plain and TLS (a real TLS handshake)."""

from __future__ import annotations

import subprocess
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest

from exporter.core.placement import ClusterNode, NodeRequirement, PodPlacement, RunningWorkload, Taint, Toleration
from exporter.core.pull_cost import CONTAINERD, NodeHoldings, RemoteImage, RemoteLayer, holdings_for
from exporter.outputs import webconfig
from exporter.pull_cost_wire import holdings_queries
from exporter.sources.kubernetes.pod_proxy import (
    ExporterPod,
    cluster_nodes,
    exporter_pods,
    fetch_holdings,
    fetch_through_pod_proxy,
    running_workloads,
    workload_of,
)
from tests.harness.kube_api import KubeApiStandIn, exporter_pod, node, pod
from tests.harness.pull_cost_nodes import PullCostNodes
from tests.serving import serving


def _serve(web: webconfig.WebConfig | None) -> Iterator[int]:
    with serving(web, refreshed=True) as served:
        yield served.port


@pytest.fixture
def tls_exporter(tmp_path: Path) -> Iterator[int]:
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=exporter",
         "-keyout", "tls.key", "-out", "tls.crt"],
        cwd=tmp_path, check=True, capture_output=True,
    )  # fmt: skip
    config = tmp_path / "web.yml"
    config.write_text("tls_server_config:\n  cert_file: tls.crt\n  key_file: tls.key\n")
    yield from _serve(webconfig.load(config))


@pytest.fixture
def plain_exporter() -> Iterator[int]:
    yield from _serve(None)


def test_a_tls_exporter_is_read_over_https_through_the_pod_proxy(
    api: KubeApiStandIn, tls_exporter: int, plain_exporter: int, tmp_path: Path
):
    kubeconfig = str(api.kubeconfig(tmp_path / "kubeconfig"))
    api.exporter_pods = [
        exporter_pod("monitoring", "lse-tls", "node-a", tls=True),
        exporter_pod("monitoring", "lse-plain", "node-b"),
    ]
    api.proxied[("monitoring", "lse-tls", 9877)] = f"https://127.0.0.1:{tls_exporter}/"
    api.proxied[("monitoring", "lse-plain", 9877)] = f"http://127.0.0.1:{plain_exporter}/"
    pods = exporter_pods(kubeconfig, "", "app.kubernetes.io/name=layer-sharing-exporter")
    assert pods == [
        ExporterPod("monitoring", "lse-tls", "node-a", "https"),
        ExporterPod("monitoring", "lse-plain", "node-b", "http"),
    ]
    texts, failed = fetch_through_pod_proxy(kubeconfig, pods, 9877, 10)
    assert failed == []
    assert all("layer_sharing_physical_bytes 2450.0" in texts[node] for node in ("node-a", "node-b"))
    assert any("/pods/https:lse-tls:9877/proxy/metrics" in urllib.parse.unquote(r) for r in api.requests)


def test_the_scheme_can_be_forced(api: KubeApiStandIn, tls_exporter: int, tmp_path: Path):
    kubeconfig = str(api.kubeconfig(tmp_path / "kubeconfig"))
    api.exporter_pods = [exporter_pod("monitoring", "lse-tls", "node-a")]  # probes say nothing of TLS
    api.proxied[("monitoring", "lse-tls", 9877)] = f"https://127.0.0.1:{tls_exporter}/"
    selector = "app.kubernetes.io/name=layer-sharing-exporter"
    _, failed = fetch_through_pod_proxy(kubeconfig, exporter_pods(kubeconfig, "", selector), 9877, 10)
    assert [node for node, _ in failed] == ["node-a"]  # plain HTTP to a TLS port
    texts, failed = fetch_through_pod_proxy(kubeconfig, exporter_pods(kubeconfig, "", selector, "https"), 9877, 10)
    assert failed == [] and "layer_sharing_up 1.0" in texts["node-a"]


# -- GET /pull-cost through the pod proxy (stand-in exporters with recorded holdings) ----------


def _d(name: str) -> str:
    return "sha256:" + name.encode().hex().ljust(64, "0")


def _image(ref: str, *names: str) -> RemoteImage:
    layers = tuple(RemoteLayer(_d("blob-" + n), 100, _d("diff-" + n)) for n in names)
    return RemoteImage(ref, _d("m-" + ref), _d("c-" + ref), 7, layers)


def test_each_node_answers_its_holdings_through_the_pod_proxy(api: KubeApiStandIn, tmp_path: Path):
    kubeconfig = str(api.kubeconfig(tmp_path / "kubeconfig"))
    # Enough images that the question is split in several requests; the answers merge.
    images = [_image(f"reg.example/app:{i}", "base", *(f"l{i}-{j}" for j in range(8))) for i in range(12)]
    warm = NodeHoldings(CONTAINERD, chains=dict.fromkeys(images[0].chain_ids, 5), blobs=frozenset({_d("c-x")}))
    down = NodeHoldings(CONTAINERD)
    nodes = PullCostNodes({"node-a": warm, "node-b": None, "node-c": down}).start()
    try:
        api.exporter_pods = [exporter_pod("monitoring", f"lse-{n}", f"node-{n}") for n in "abcd"]
        for n in "abc":
            api.proxied[("monitoring", f"lse-{n}", 9877)] = nodes.url(f"node-{n}")
        pods = exporter_pods(kubeconfig, "", "app.kubernetes.io/name=layer-sharing-exporter")
        found, failed = fetch_holdings(kubeconfig, pods, 9877, 10, images)
    finally:
        nodes.stop()
    # Split in several questions; node-b's first refusal ends its questions.
    asked = len(holdings_queries(images))
    assert asked > 1 and len(nodes.questions) == 2 * asked + 1
    assert found == {"node-a": holdings_for(warm, images), "node-c": holdings_for(down, images)}
    # Not yet refreshed (503 from the exporter) and no exporter behind the pod: listed, not fatal.
    assert [node for node, _ in failed] == ["node-b", "node-d"]
    assert all("503" in error for _, error in failed)


def test_running_workloads_and_their_images(api: KubeApiStandIn, tmp_path: Path):
    kubeconfig = str(api.kubeconfig(tmp_path / "kubeconfig"))
    for name, on_node, image in (("web-5d8f-a", "n1", "web:1"), ("web-5d8f-b", "n2", "web:2")):
        obj = pod("default", name, on_node, ("ReplicaSet", "web-5d8f"))
        obj["metadata"]["labels"] = {"pod-template-hash": "5d8f"}
        obj["spec"]["initContainers"] = [{"name": "init", "image": "busybox:1"}]
        obj["spec"]["containers"] = [{"name": "web", "image": image}]
        api.add_pod(obj)
    pending = pod("default", "pending", "n1", ("StatefulSet", "db"))
    pending["status"]["phase"] = "Pending"
    pending["spec"]["containers"] = [{"name": "db", "image": "db:1"}]
    api.add_pod(pending)
    solo = pod("other", "solo", "n1")
    solo["spec"]["containers"] = [{"name": "x", "image": "x:1"}]
    solo["spec"]["nodeSelector"] = {"disk": "ssd"}
    solo["spec"]["tolerations"] = [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}]
    term = {
        "matchExpressions": [{"key": "zone", "operator": "In", "values": ["a", "b"]}],
        "matchFields": [{"key": "metadata.name", "operator": "NotIn", "values": ["n9"]}],
    }
    required = {"nodeSelectorTerms": [term]}
    solo["spec"]["affinity"] = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": required}}
    api.add_pod(solo)
    solo_placement = PodPlacement(
        (Toleration("gpu", "Exists", "", "NoSchedule"),),
        (("disk", "ssd"),),
        ((NodeRequirement("zone", "In", ("a", "b")), NodeRequirement("metadata.name", "NotIn", ("n9",), True)),),
    )
    assert running_workloads(kubeconfig) == {
        "default/Deployment/web": RunningWorkload(("busybox:1", "web:1", "web:2")),
        "other/Pod/solo": RunningWorkload(("x:1",), (solo_placement,)),
    }


def test_cluster_nodes_with_their_labels_cordons_and_taints(api: KubeApiStandIn, tmp_path: Path):
    kubeconfig = str(api.kubeconfig(tmp_path / "kubeconfig"))
    api.nodes = [
        node("n1", {"zone": "a"}),
        node("n2", unschedulable=True, taints=({"key": "gpu", "value": "yes", "effect": "NoSchedule"},)),
    ]
    assert cluster_nodes(kubeconfig) == {
        "n1": ClusterNode("n1", {"zone": "a"}),
        "n2": ClusterNode("n2", {}, True, (Taint("gpu", "yes", "NoSchedule"),)),
    }


def test_the_controller_names_the_workload():
    owner = [{"kind": "ReplicaSet", "name": "api-7c9", "controller": True}]
    assert workload_of({"namespace": "a", "ownerReferences": owner, "labels": {"pod-template-hash": "7c9"}}) == (
        "a/Deployment/api"
    )
    assert workload_of({"namespace": "a", "ownerReferences": owner}) == "a/ReplicaSet/api-7c9"
    assert workload_of({"namespace": "a", "name": "p"}) == "a/Pod/p"
