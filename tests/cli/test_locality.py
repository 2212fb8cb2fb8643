"""`report --view locality`, measured once and served as metrics (`--listen-port`), against the
loopback registry, the stand-in for the Kubernetes API server (tests/harness/kube_api.py; no real
API server can be had here) and stand-in exporters answering GET /pull-cost from recorded
holdings. Real exporters on real containerd, and a real Prometheus with the chart's rules:
tests/integration/test_report_pull_cost.py.
"""

from __future__ import annotations

import argparse
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from exporter.cli.args import build_kubectl_parser
from exporter.cli.locality import LocalityFailedError, measure
from exporter.outputs.locality_metrics import LocalityStore
from tests.cli.test_report import BASE, Cluster, api, registry  # noqa: F401 - the fixtures Cluster needs
from tests.harness.images import ImageSpec, data_layer
from tests.harness.kube_api import node, owned, pod
from tests.integration.conftest import ServedExporter, free_port

WEB = {"namespace": "default", "workload_kind": "Deployment", "workload": "web"}


@pytest.fixture
def cluster(api, registry, tmp_path: Path) -> Iterator[Cluster]:  # noqa: F811 - pytest's fixture injection
    made = Cluster(api, registry, tmp_path)
    web = pod("default", "web-1", "node-a", ("ReplicaSet", "web-7f"))
    web["metadata"]["labels"] = {"pod-template-hash": "7f"}
    web["spec"]["containers"] = [{"name": "web", "image": made.ref1}]
    api.add_pod(web)
    yield made
    made.nodes.stop()


def _args(cluster: Cluster, *extra: str) -> argparse.Namespace:
    return build_kubectl_parser().parse_args(["--kubeconfig", cluster.kubeconfig, "--view", "locality", *extra])


def test_a_run_prices_each_workload_on_each_node_and_lists_what_is_unknown(cluster: Cluster):
    absent = f"{cluster.registry.host}/team/app:absent"
    gone = pod("default", "gone-1", "node-b", ("StatefulSet", "gone"))
    gone["spec"]["containers"] = [{"name": "g", "image": absent}]
    cluster.api.add_pod(gone)
    run = measure(_args(cluster))
    (web,) = run.workloads  # the workload whose image did not resolve is left out, and said
    assert web.workload == "default/Deployment/web" and web.rollout.warm_nodes == 1
    assert run.nodes_answering == 2 and run.unreachable == ()
    assert any(absent in problem for problem in run.problems)
    assert any("workload default/StatefulSet/gone" in problem for problem in run.problems)


def test_only_nodes_its_pods_may_be_scheduled_on_count_for_a_workload(cluster: Cluster):
    """node-b cordoned: web is priced on node-a alone; a DaemonSet tolerating the cordon on both,
    though its controller pins each of its pods to its own node."""
    cluster.api.nodes = [node("node-a"), node("node-b", unschedulable=True)]
    agent = pod("kube-system", "agent-x", "node-a", ("DaemonSet", "agent"))
    agent["spec"]["containers"] = [{"name": "a", "image": cluster.ref2}]
    agent["spec"]["tolerations"] = [{"operator": "Exists"}]  # as DaemonSets tolerate the cordon
    # As the DaemonSet controller makes its pods: a required affinity to its node by name.
    pinned = {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["node-a"]}]}
    agent["spec"]["affinity"] = {
        "nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [pinned]}}
    }
    cluster.api.add_pod(agent)
    run = measure(_args(cluster))
    by_name = {w.workload: w.rollout for w in run.workloads}
    assert [n.node for n in by_name["default/Deployment/web"].nodes] == ["node-a"]
    assert by_name["default/Deployment/web"].warm_nodes == 1
    assert [n.node for n in by_name["kube-system/DaemonSet/agent"].nodes] == ["node-a", "node-b"]
    # A taint web does not tolerate on node-a too: no node for it; its cold start is unknown, not 0.
    cluster.api.nodes[0]["spec"]["taints"] = [{"key": "dedicated", "value": "db", "effect": "NoSchedule"}]
    store = LocalityStore()
    store.publish(measure(_args(cluster)))
    body = store.render("text/plain")[0].decode()
    web = 'namespace="default",workload="web",workload_kind="Deployment"'
    assert f"layer_sharing_locality_workload_nodes{{{web}}} 0.0" in body
    assert [line for line in body.splitlines() if web in line] == [
        f"layer_sharing_locality_workload_nodes{{{web}}} 0.0"
    ]


def test_a_cron_jobs_runs_are_one_workload_and_static_pods_none(cluster: Cluster):
    cluster.api.add_owner(owned("Job", "batch", "nightly-2911", ("CronJob", "nightly")))
    for job in ("nightly-2911", "one-off"):
        run_pod = pod("batch", f"{job}-x", "node-b", ("Job", job))
        run_pod["spec"]["containers"] = [{"name": "j", "image": cluster.ref1}]
        cluster.api.add_pod(run_pod)
    mirror = pod("kube-system", "etcd-node-a", "node-a", ("Node", "node-a"))
    mirror["spec"]["containers"] = [{"name": "etcd", "image": cluster.ref2}]
    cluster.api.add_pod(mirror)
    names = {w.workload for w in measure(_args(cluster)).workloads}
    assert names == {"default/Deployment/web", "batch/CronJob/nightly", "batch/Job/one-off"}


def test_the_pod_list_is_read_a_page_at_a_time(cluster: Cluster):
    for i in range(1200):
        extra = pod("load", f"p-{i}", "node-a", ("StatefulSet", "load"))
        extra["spec"]["containers"] = [{"name": "c", "image": cluster.ref1}]
        cluster.api.add_pod(extra)
    names = {w.workload for w in measure(_args(cluster)).workloads}
    assert names == {"default/Deployment/web", "load/StatefulSet/load"}
    assert cluster.api.pod_pages == 3  # 1,201 running pods and 2 exporters, 500 a page


def test_each_node_is_priced_with_its_own_platforms_image(cluster: Cluster):
    """An arm64 node prices the arm64 image of a multi-platform index, an amd64 node the amd64 one."""
    amd64 = ImageSpec(["x"], [BASE, data_layer("rep-amd64", 800)]).build()
    arm64 = ImageSpec(["x"], [BASE, data_layer("rep-arm64", 900)], architecture="arm64").build()
    ref, _ = cluster.registry.push_index("team/multi", "1", {"amd64": amd64, "arm64": arm64})
    cluster.api.nodes = [node("node-a", {"kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64"}),
                         node("node-b", {"kubernetes.io/os": "linux", "kubernetes.io/arch": "arm64"})]  # fmt: skip
    multi = pod("default", "multi-0", "node-a", ("StatefulSet", "multi"))
    multi["spec"]["containers"] = [{"name": "m", "image": ref}]
    cluster.api.add_pod(multi)
    (workload,) = [w for w in measure(_args(cluster)).workloads if w.workload == "default/StatefulSet/multi"]
    fetched = {n.node: n.total.fetch_bytes for n in workload.rollout.nodes}
    # node-a holds the base (under app:1): the amd64 config and top layer; node-b holds nothing.
    assert fetched["node-a"] == len(amd64.config.data) + len(amd64.layers[1].data)
    assert fetched["node-b"] == len(arm64.config.data) + sum(len(b.data) for b in arm64.layers)


def test_a_run_whose_images_all_fail_to_resolve_says_so(cluster: Cluster):
    cluster.registry.fail_with["team/app"] = 503
    with pytest.raises(LocalityFailedError, match="no running workload's image resolved") as failed:
        measure(_args(cluster))
    assert "503" in failed.value.message and failed.value.exit_code == 3


def test_nodes_not_readable_count_every_node_and_say_so(cluster: Cluster):
    cluster.api.nodes = [node("node-a"), node("node-b", unschedulable=True)]
    cluster.api.forbidden_paths.add("/api/v1/nodes")  # no RBAC for nodes (an older chart's role)
    run = measure(_args(cluster))
    (web,) = run.workloads
    assert len(web.rollout.nodes) == 2
    assert any("nodes not readable" in p and "nodes is forbidden" in p for p in run.problems)


def test_a_run_without_exporters_or_api_fails_with_why(cluster: Cluster):
    cluster.api.exporter_pods.clear()
    with pytest.raises(LocalityFailedError, match="no running exporter pods"):
        measure(_args(cluster))
    cluster.api.forbidden = True
    with pytest.raises(LocalityFailedError, match="forbidden") as failed:
        measure(_args(cluster))
    assert failed.value.exit_code == 4


def _serve(cluster: Cluster, tmp_path: Path, *extra: str) -> ServedExporter:
    port = free_port()
    log_path = tmp_path / "locality.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "exporter", "report", "--kubeconfig", cluster.kubeconfig, "--view", "locality",
             "--listen-address", "127.0.0.1", "--listen-port", str(port), *extra],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    return ServedExporter(process, f"http://127.0.0.1:{port}", log_path)


def test_served_figures_follow_the_cluster_and_a_failing_api_is_said_not_zeroed(cluster: Cluster, tmp_path: Path):
    served = _serve(cluster, tmp_path, "--every", "0.3")
    try:
        served.wait_for(lambda: served.get("/readyz")[0] == 200, what="ready after the first run")
        served.wait_for(lambda: served.value("layer_sharing_locality_workload_nodes", **WEB) == 2, what="figures")
        assert served.value("layer_sharing_locality_workload_warm_nodes", **WEB) == 1
        assert served.value("layer_sharing_locality_up") == 1

        cluster.api.forbidden = True  # RBAC taken away: the runs fail, the service stays up and says so
        served.wait_for(lambda: served.value("layer_sharing_locality_up") == 0, what="up 0")
        metrics = served.metrics()
        assert not any(name.startswith("layer_sharing_locality_workload_") for name, _ in metrics)
        assert metrics[("layer_sharing_locality_runs_total", (("result", "failed"),))] >= 1
        assert served.get("/healthz")[0] == 200
        status, text = served.get("/readyz")
        assert status == 200 and "forbidden" in text
        # Timestamped log lines, as serve's: the reason with the API's own words.
        assert re.search(r"^\d{4}-\d\d-\d\d .* ERROR .*locality run failed: .*forbidden", served.log(), re.M)
        assert "INFO" in served.log() and "serving the locality view" in served.log()

        cluster.api.forbidden = False
        served.wait_for(lambda: served.value("layer_sharing_locality_up") == 1, what="recovered")
        assert served.get("/pull-cost?image=x")[0] in (400, 503)  # it holds no layers of its own
    finally:
        served.process.send_signal(signal.SIGTERM)
        assert served.process.wait(timeout=10) == 0


def test_serving_refusals(cluster: Cluster, capsys):
    from exporter.cli.main import main

    base = ["report", "--kubeconfig", cluster.kubeconfig]
    assert main([*base, "--view", "pull-cost", cluster.ref1, "--listen-port", "0"]) == 2
    assert "--view locality only" in capsys.readouterr().err
    assert main([*base, "--view", "locality", "--listen-port", "0", "--every", "0"]) == 2
    assert "--every must be positive" in capsys.readouterr().err


def test_an_image_not_built_for_a_platform_is_not_priced_on_its_nodes(cluster: Cluster):
    ref, _ = cluster.registry.push_index("team/amd-only", "1", {"amd64": ImageSpec(["y"], [BASE]).build()})
    cluster.api.nodes = [node("node-a", {"kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64"}),
                         node("node-b", {"kubernetes.io/os": "linux", "kubernetes.io/arch": "arm64"})]  # fmt: skip
    amd = pod("default", "amd-0", "node-a", ("StatefulSet", "amd"))
    amd["spec"]["containers"] = [{"name": "a", "image": ref}]
    cluster.api.add_pod(amd)
    run = measure(_args(cluster))
    by_name = {w.workload: w.rollout for w in run.workloads}
    assert [n.node for n in by_name["default/StatefulSet/amd"].nodes] == ["node-a"]
    assert any("no linux/arm64 image" in p for p in run.problems)
