"""The cluster view (pure): two exporters' samples (or the same figures aggregated by
Prometheus) in, node, base, workload and image rows out."""

from __future__ import annotations

from collections import Counter

import pytest

from exporter.core.cluster import (
    NODE_FIGURES,
    Aggregate,
    ClusterAggregates,
    ClusterReport,
    NodeSamples,
    Sample,
    build_report,
    build_report_from_aggregates,
)
from exporter.sources.exposition import samples_from_exposition
from tests.sample_cluster import exposition, sample_cluster


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


# What a ServiceMonitor scrape adds to every series (see test_prometheus_api.py).
TARGET = {"namespace": "monitoring", "pod": "lse-x7k2", "job": "lse", "instance": "10.0.0.7:9877", "cluster": "east"}


def with_target_labels(node: NodeSamples) -> NodeSamples:
    # honor_labels: the exporter's own labels win over the target's.
    return NodeSamples(node.node, tuple(Sample(s.name, TARGET | dict(s.labels), s.value) for s in node.samples))


def test_node_figures_whatever_labels_the_samples_carry():
    plain = [samples_from_exposition("node-a", exposition("node-a"))]
    labelled = build_report([with_target_labels(plain[0])])
    assert labelled.nodes == build_report(plain).nodes
    node = labelled.nodes[0]
    assert node.up and (node.physical, node.logical) == (2450, 8350)


def test_a_node_read_twice_counts_once():
    node = samples_from_exposition("node-a", exposition("node-a"))
    twice = NodeSamples("node-a", node.samples + with_target_labels(node).samples)
    assert build_report([twice]).nodes == build_report([node]).nodes


def aggregate(nodes: list[NodeSamples]) -> ClusterAggregates:
    """What the Prometheus source's queries compute, done by hand over per-node samples."""

    def by(name: str, labels: tuple[str, ...], count: bool = False, positive: bool = False) -> list[Aggregate]:
        out: Counter[tuple[str, ...]] = Counter()
        for node in nodes:
            for s in node.samples:
                if s.name == name and (s.value > 0 or not positive):
                    out[tuple(s.labels[label] for label in labels)] += 1 if count else int(s.value)
        return [Aggregate(dict(zip(labels, key, strict=True)), value) for key, value in out.items()]

    workload = ("namespace", "workload_kind", "workload")
    return ClusterAggregates(
        node_figures={
            figure: [
                Aggregate({"node": n.node}, v)
                for n in nodes
                for s in n.samples
                if s.name == name
                for v in [int(s.value)]
            ]
            for figure, name in NODE_FIGURES.items()
        },
        base_nodes=by("layer_sharing_base_images", ("base", "version", "source"), count=True),
        base_images=by("layer_sharing_base_images", ("base", "version", "source")),
        base_pods=by("layer_sharing_base_pods", ("base", "version", "source")),
        base_bytes=by("layer_sharing_base_bytes", ("base", "version", "source")),
        family_drift=by("layer_sharing_base_drift_bytes", ("base",)),
        workload_nodes=by("layer_sharing_workload_pods", workload, count=True),
        workload_pods=by("layer_sharing_workload_pods", workload),
        workload_attributed=by("layer_sharing_workload_attributed_bytes", workload),
        workload_bases=by(
            "layer_sharing_workload_base_pods", (*workload, "base", "version", "source"), count=True, positive=True
        ),
        image_nodes=by("layer_sharing_image_info", ("image", "base"), count=True),
        image_size=by("layer_sharing_image_size_bytes", ("image",)),
        image_unique=by("layer_sharing_image_unique_bytes", ("image",)),
    )


def test_prometheus_aggregates_give_the_same_report_as_per_node_samples():
    nodes = [samples_from_exposition(n, exposition(n)) for n in ("node-a", "node-b")]
    unreachable = [("node-c", "503 Service Unavailable")]
    from_aggregates = build_report_from_aggregates(aggregate(nodes), unreachable)
    assert from_aggregates == build_report(nodes, unreachable)
    assert from_aggregates.physical == 2 * 2450


def test_aggregates_with_a_down_node_and_an_image_whose_base_differs():
    aggregates = ClusterAggregates(
        node_figures={
            "up": [Aggregate({"node": "a"}, 1), Aggregate({"node": "b"}, 0)],
            "physical": [Aggregate({"node": "a"}, 9)],
        },
        image_nodes=[Aggregate({"image": "app:1", "base": "debian"}, 3), Aggregate({"image": "app:1", "base": ""}, 1)],
        image_size=[Aggregate({"image": "app:1"}, 40)],
    )
    report = build_report_from_aggregates(aggregates)
    assert [(n.node, n.up, n.physical) for n in report.nodes] == [("a", True, 9), ("b", False, 0)]
    assert [(i.image, i.base, i.nodes, i.size, i.unique) for i in report.images] == [("app:1", "debian", 4, 40, 0)]


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
