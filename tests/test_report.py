"""The cluster report (pure): exporters' expositions in, tables, JSON, CSV and
HTML out."""

from __future__ import annotations

import csv
import dataclasses
import io
import json

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from exporter import report as rep
from exporter.accounting import account
from exporter.bases import BaseSpec
from exporter.collector import LayerSharingCollector
from exporter.config import MetricsOptions
from exporter.facts import Workload
from exporter.service import ExporterState
from tests.fakes import digest
from tests.sample_facts import sample_facts


def exposition(node: str, with_workloads: bool = True) -> str:
    facts = sample_facts()
    if with_workloads:
        facts = dataclasses.replace(
            facts,
            workloads={
                ("default", "web-1"): Workload("Deployment", "web"),
                ("default", "web-2"): Workload("Deployment", "web"),
                ("other", "solo"): Workload("Pod", "solo"),
            },
        )
    catalog = [BaseSpec("debian", diff_ids=(digest("B"), digest("OS")))]
    state = ExporterState(generation=1, up=True, report=account(facts, catalog), facts=facts)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(LayerSharingCollector(lambda: state, MetricsOptions()))
    return generate_latest(registry).decode()


@pytest.fixture
def cluster() -> rep.ClusterReport:
    nodes = [
        rep.samples_from_exposition("node-a", exposition("node-a")),
        rep.samples_from_exposition("node-b", exposition("node-b")),
    ]
    return rep.build_report(nodes, [("node-c", "503 Service Unavailable")])


def test_totals_add_up_over_nodes(cluster: rep.ClusterReport):
    assert [n.node for n in cluster.nodes] == ["node-a", "node-b"]
    assert cluster.physical == 2 * 2450 and cluster.logical == 2 * 8350
    assert cluster.reclaimable == 200
    assert cluster.unreachable == [("node-c", "503 Service Unavailable")]


def test_bases_and_workloads_merge_across_nodes(cluster: rep.ClusterReport):
    debian = next(b for b in cluster.bases if b.base == "debian")
    assert (debian.source, debian.nodes, debian.images, debian.pods, debian.bytes) == ("catalog", 2, 8, 4, 2600)
    web = next(w for w in cluster.workloads if w.name == "web")
    assert (web.kind, web.nodes, web.pods, web.on_catalog) == ("Deployment", 2, 4, True)
    solo = next(w for w in cluster.workloads if w.name == "solo")
    assert not solo.on_catalog and solo.bases and solo.bases[0].startswith("chain:")


def test_views_sort_and_cut(cluster: rep.ClusterReport):
    headers, data = rep.rows(cluster, "images", sort="unique", top=2)
    assert headers[0] == "IMAGE" and len(data) == 2
    assert data[0][4] >= data[1][4]
    _, by_name = rep.rows(cluster, "nodes", sort="node")
    assert [r[0] for r in by_name] == ["node-a", "node-b"]
    with pytest.raises(ValueError, match="cannot sort"):
        rep.rows(cluster, "nodes", sort="colour")


def test_json_and_csv(cluster: rep.ClusterReport):
    doc = json.loads(rep.to_json(cluster))
    assert doc["totals"] == {
        "nodes": 2,
        "physical": 4900,
        "logical": 16700,
        "saved": 11800,
        "reclaimable": 200,
        "content": 0,
    }
    assert doc["unreachable"] == [{"node": "node-c", "error": "503 Service Unavailable"}]
    table = list(csv.reader(io.StringIO(rep.to_csv(*rep.rows(cluster, "bases")))))
    assert table[0] == ["base", "source", "nodes", "images", "pods", "bytes"]


def test_html_is_self_contained_with_charts(cluster: rep.ClusterReport):
    page = rep.to_html(cluster)
    assert page.count("<svg") == 2 and page.count('class="shared"') >= 2 and page.count('class="image"') >= 5
    assert "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "<script" not in page and "node-c" in page


def test_squarify_fills_the_rectangle():
    rects = rep.squarify([6, 6, 4, 3, 2, 2, 1], 0, 0, 600, 400)
    assert sum(w * h for _, _, w, h in rects) == pytest.approx(600 * 400)
    assert all(x >= 0 and y >= 0 and x + w <= 600.001 and y + h <= 400.001 for x, y, w, h in rects)
    assert rep.squarify([], 0, 0, 10, 10) == [] and rep.squarify([0, 0], 0, 0, 10, 10) == [(0, 0, 0, 0)] * 2
