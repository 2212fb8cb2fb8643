"""Workload attribution end to end: the exporter on the real containerd, with a
stand-in Kubernetes API (tests/harness/kube_api.py; no API server can be had
here) that knows the sample pods' owners."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness.kube_api import KubeApiStandIn, owned, pod
from tests.harness.scenario import SampleNode
from tests.integration.conftest import ServedExporter, start_exporter, start_with_catalog, stop_exporter
from tests.integration.oracle import expected

NODE = "itest-node"


@pytest.fixture
def api() -> Iterator[KubeApiStandIn]:
    standin = KubeApiStandIn(NODE).start()
    standin.add_owner(owned("ReplicaSet", "default", "web-5d8f", ("Deployment", "web")))
    standin.add_owner(owned("Job", "batch", "job-1-29110", ("CronJob", "nightly")))
    standin.add_pod(pod("default", "web-1", NODE, ("ReplicaSet", "web-5d8f")))
    standin.add_pod(pod("default", "web-2", NODE, ("ReplicaSet", "web-5d8f")))
    standin.add_pod(pod("batch", "job-1", NODE, ("Job", "job-1-29110")))
    standin.add_pod(pod("other", "solo", NODE))
    yield standin
    standin.stop()


def serve(sample_node: SampleNode, api: KubeApiStandIn, tmp_path: Path) -> ServedExporter:
    kubeconfig = str(api.kubeconfig(tmp_path / "kubeconfig"))
    return start_with_catalog(
        sample_node,
        tmp_path,
        "--refresh-interval",
        "0.5",
        "--kubernetes",
        "--kubeconfig",
        kubeconfig,
        "--node-name",
        NODE,
    )


def test_pods_carry_their_workload_and_workloads_are_summed(
    sample_node: SampleNode, api: KubeApiStandIn, tmp_path: Path
):
    exporter = serve(sample_node, api, tmp_path)
    try:
        want = expected(sample_node)
        labels = {"namespace": "default", "pod": "web-1", "workload": "web", "workload_kind": "Deployment"}
        exporter.wait_for(
            lambda: exporter.value("layer_sharing_pod_bytes", **labels) is not None,
            what="pod series with workload labels",
        )
        assert exporter.value("layer_sharing_pod_bytes", **labels) == want.pod_bytes[("default", "web-1")]
        assert (
            exporter.value(
                "layer_sharing_pod_bytes", namespace="batch", pod="job-1", workload="nightly", workload_kind="CronJob"
            )
            == want.pod_bytes[("batch", "job-1")]
        )
        assert (
            exporter.value(
                "layer_sharing_pod_bytes", namespace="other", pod="solo", workload="solo", workload_kind="Pod"
            )
            == want.pod_bytes[("other", "solo")]
        )
        web = {"namespace": "default", "workload": "web", "workload_kind": "Deployment"}
        assert exporter.value("layer_sharing_workload_pods", **web) == 2
        attributed = [
            exporter.value(
                "layer_sharing_pod_attributed_bytes",
                namespace="default",
                pod=p,
                workload="web",
                workload_kind="Deployment",
            )
            for p in ("web-1", "web-2")
        ]
        assert exporter.value("layer_sharing_workload_attributed_bytes", **web) == sum(a or 0 for a in attributed)
        assert (
            exporter.value("layer_sharing_workload_base_pods", **web, base="base-os", version="", source="catalog") == 2
        )
        assert "workload attribution on" in exporter.log()
    finally:
        assert stop_exporter(exporter) == 0


@pytest.mark.parametrize("failure", ["forbidden", "down"])
def test_the_exporter_keeps_exporting_when_the_api_fails(
    sample_node: SampleNode, api: KubeApiStandIn, tmp_path: Path, failure: str
):
    if failure == "forbidden":
        api.forbidden = True
    kubeconfig = api.kubeconfig(tmp_path / "kubeconfig")
    if failure == "down":
        api.stop()
    exporter = start_exporter(
        sample_node.containerd.endpoint,
        tmp_path,
        "--refresh-interval",
        "0.5",
        "--kubernetes",
        "--kubeconfig",
        str(kubeconfig),
        "--node-name",
        NODE,
    )
    try:
        want = expected(sample_node)
        exporter.wait_for(lambda: "attribution" in exporter.log(), what="a log line about attribution")
        assert exporter.value("layer_sharing_up") == 1
        assert exporter.value("layer_sharing_physical_bytes") == want.physical
        # Pods keep their series; their workload is simply unknown.
        assert (
            exporter.value("layer_sharing_pod_bytes", namespace="default", pod="web-1", workload="", workload_kind="")
            == want.pod_bytes[("default", "web-1")]
        )
        assert exporter.log().count("attribution off" if failure == "forbidden" else "attribution paused") == 1
    finally:
        assert stop_exporter(exporter) == 0
