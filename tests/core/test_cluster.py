"""The cluster view (pure): two exporters' samples in, node, base, workload and image rows out."""

from __future__ import annotations

import pytest

from exporter.core.cluster import ClusterReport, NodeSamples, Sample, build_report
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
    # B (1000) lies under debian and under the detected pause base [B]: it counts toward the innermost.
    assert (debian.source, debian.nodes, debian.images, debian.pods, debian.bytes) == ("catalog", 2, 8, 4, 600)
    assert sum(b.bytes for b in cluster.bases) <= cluster.physical
    web = next(w for w in cluster.workloads if w.name == "web")
    assert (web.kind, web.nodes, web.pods, web.on_catalog) == ("Deployment", 2, 4, True)
    solo = next(w for w in cluster.workloads if w.name == "solo")
    assert not solo.on_catalog and solo.bases and solo.bases[0].startswith("chain:")


def _base(name: str, node_value: int, base: str, version: str, source: str = "catalog") -> Sample:
    return Sample(name, {"base": base, "version": version, "source": source}, node_value)


def test_versions_drift_duplicates_and_unused_sum_across_nodes():
    a = NodeSamples(
        "a",
        (
            Sample("layer_sharing_duplicate_bytes", {}, 70),
            Sample("layer_sharing_duplicate_layers", {}, 2),
            Sample("layer_sharing_unused_logical_bytes", {}, 500),
            _base("layer_sharing_base_images", 2, "debian", "11"),
            _base("layer_sharing_base_bytes", 900, "debian", "11"),
            _base("layer_sharing_base_images", 1, "debian", "12"),
            _base("layer_sharing_base_bytes", 1000, "debian", "12"),
            _base("layer_sharing_base_images", 1, "chain:abc", "", "detected"),
            Sample("layer_sharing_base_versions", {"base": "debian"}, 2),
            Sample("layer_sharing_base_drift_bytes", {"base": "debian"}, 900),
        ),
    )
    b = NodeSamples(
        "b",
        (
            Sample("layer_sharing_duplicate_bytes", {}, 30),
            Sample("layer_sharing_duplicate_layers", {}, 1),
            Sample("layer_sharing_unused_logical_bytes", {}, 5),
            _base("layer_sharing_base_images", 4, "debian", "13"),
            _base("layer_sharing_base_bytes", 1100, "debian", "13"),
            _base("layer_sharing_base_images", 1, "debian", "12"),
            _base("layer_sharing_base_bytes", 1000, "debian", "12"),
            Sample("layer_sharing_base_versions", {"base": "debian"}, 2),
            Sample("layer_sharing_base_drift_bytes", {"base": "debian"}, 1000),
        ),
    )
    cluster = build_report([a, b])
    assert (cluster.duplicate_bytes, cluster.duplicate_layers, cluster.unused_logical) == (100, 3, 505)
    rows = {(r.base, r.version): (r.nodes, r.images, r.bytes, r.versions, r.drift) for r in cluster.bases}
    assert rows[("debian", "12")] == (2, 2, 2000, 3, 1900)
    assert rows[("debian", "11")] == (1, 2, 900, 3, 1900)
    assert rows[("chain:abc", "")][3:] == (0, 0)
    assert [(f.base, f.versions, f.drift) for f in cluster.families] == [("debian", ("11", "12", "13"), 1900)]
