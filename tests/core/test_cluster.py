"""The cluster view (pure): two exporters' samples in, node, base, workload and image rows out."""

from __future__ import annotations

import pytest

from exporter.core.cluster import ClusterReport
from tests.sample_cluster import sample_cluster


@pytest.fixture
def cluster() -> ClusterReport:
    return sample_cluster()


def test_totals_add_up_over_nodes(cluster: ClusterReport):
    assert [n.node for n in cluster.nodes] == ["node-a", "node-b"]
    assert cluster.physical == 2 * 2450 and cluster.logical == 2 * 8350
    assert cluster.reclaimable == 200
    assert cluster.unreachable == [("node-c", "503 Service Unavailable")]


def test_bases_and_workloads_merge_across_nodes(cluster: ClusterReport):
    debian = next(b for b in cluster.bases if b.base == "debian")
    assert (debian.source, debian.nodes, debian.images, debian.pods, debian.bytes) == ("catalog", 2, 8, 4, 2600)
    web = next(w for w in cluster.workloads if w.name == "web")
    assert (web.kind, web.nodes, web.pods, web.on_catalog) == ("Deployment", 2, 4, True)
    solo = next(w for w in cluster.workloads if w.name == "solo")
    assert not solo.on_catalog and solo.bases and solo.bases[0].startswith("chain:")


def test_image_wasted_bytes_come_from_whichever_node_analysed_the_image():
    from exporter.core.cluster import NodeSamples, Sample, build_report

    def wasted(image: str, value: int) -> Sample:
        return Sample("layer_sharing_image_wasted_bytes", {"image": image, "image_id": "sha256:x"}, value)

    def info(image: str) -> Sample:
        return Sample("layer_sharing_image_info", {"image": image, "base": ""}, 1)

    report = build_report(
        [
            NodeSamples("a", (info("app"), wasted("app", 700), info("tool"))),
            NodeSamples("b", (info("app"),)),  # its analysis not done yet
        ]
    )
    by_name = {i.image: i for i in report.images}
    assert (by_name["app"].wasted, by_name["app"].nodes) == (700, 2)
    assert by_name["tool"].wasted is None  # unknown, not 0
