"""The Grafana dashboards: generated from code, and linted."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
DASHBOARDS = sorted((ROOT / "dashboards").glob("*.json"))


def load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def panels(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in board["panels"]:
        yield panel
        yield from panel.get("panels", [])


def data_panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in panels(board) if p["type"] != "row"]


def test_three_dashboards_are_generated_and_not_stale():
    assert [p.name for p in DASHBOARDS] == [
        "layer-sharing-bases.json",
        "layer-sharing-cluster.json",
        "layer-sharing-node.json",
    ]
    result = subprocess.run(
        [sys.executable, "-m", "dashboards.generate", "--check"], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


def test_uids_are_unique():
    uids = [load(p)["uid"] for p in DASHBOARDS]
    assert len(set(uids)) == len(uids)
    for path in DASHBOARDS:
        ids = [p.get("id") for p in panels(load(path)) if p.get("id") is not None]
        assert len(set(ids)) == len(ids)


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_variables(path):
    variables = {v["name"]: v for v in load(path)["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    assert variables["cluster"]["hide"] == 2  # hidden unless used
    assert variables["node"]["includeAll"] and variables["node"]["allValue"] == ".*"
    # kubernetes-mixin's conventions: a job selector, a configurable cluster label, a namespace variable.
    assert variables["job"]["type"] == "query" and variables["job"]["includeAll"]
    assert variables["cluster"]["query"] == "label_values(layer_sharing_up, ${cluster_label})"
    assert variables["namespace"]["query"].endswith(", ${namespace_label})")
    # The label names are hidden constants the chart sets (tests/test_chart.py), defaulting to the exporter's own.
    for name, default in [("cluster_label", "cluster"), ("namespace_label", "namespace"), ("pod_label", "pod")]:
        assert variables[name]["type"] == "constant" and variables[name]["hide"] == 2
        assert variables[name]["query"] == default


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_tags_and_links_fit_every_runtime_and_drill_down(path):
    board = load(path)
    assert "containerd" not in board["tags"] and "cri-o" not in board["tags"]
    (dropdown,) = board["links"]
    assert dropdown["type"] == "dashboards" and dropdown["tags"] == ["layer-sharing-exporter"]
    assert dropdown["includeVars"] and dropdown["keepTime"]


def _data_links(board: dict[str, Any]) -> dict[str, list[str]]:
    return {
        p["title"]: [link["url"] for link in p["fieldConfig"]["defaults"].get("links", [])]
        for p in data_panels(board)
        if p["fieldConfig"]["defaults"].get("links")
    }


def test_drill_down_cluster_to_node_to_bases():
    cluster = _data_links(load(ROOT / "dashboards" / "layer-sharing-cluster.json"))
    node = _data_links(load(ROOT / "dashboards" / "layer-sharing-node.json"))
    uids = {load(p)["uid"] for p in DASHBOARDS}
    assert len(cluster) >= 3
    for title, urls in cluster.items():
        (url,) = urls
        # Per-node figures open that node; the showback opens the namespace's pods.
        field = "namespace" if "showback" in title else "node"
        assert url.startswith("/d/layer-sharing-node/?") and f"var-{field}=${{__field.labels.{field}}}" in url
    assert node and all(
        u.startswith("/d/layer-sharing-bases/?") and "${node:queryparam}" in u for us in node.values() for u in us
    )
    for urls in [*cluster.values(), *node.values()]:
        for url in urls:
            assert url.split("/")[2] in uids
            assert "${__url_time_range}" in url and "${datasource:queryparam}" in url


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_every_panel_uses_the_datasource_variable_and_has_a_description(path):
    for panel in data_panels(load(path)):
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel.get("description"), panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}"


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_queries_filter_by_variables_and_hard_code_no_node(path):
    for panel in data_panels(load(path)):
        for target in panel["targets"]:
            expr = target["expr"]
            # The locality service's rules drop `job` (the service is not an exporter).
            locality = "workload:layer_sharing_locality_" in expr
            assert '${cluster_label}=~"$cluster"' in expr, (panel["title"], expr)
            assert 'job=~"$job"' in expr or locality, (panel["title"], expr)
            assert not re.search(r"\bcluster=~", expr), expr
            # The measured pod's labels only through the constants (OpenShift renames them).
            # (The showback and locality recording rules record `namespace` whatever label they read.)
            if "namespace:layer_sharing_pod_attributed_bytes:sum" not in expr and not locality:
                assert not re.search(r"\b(namespace|pod)\s*=~", expr), expr
                assert not re.search(r"by \([^)]*\b(namespace|pod)\b", expr), expr
            assert not re.search(r'node\s*=~?\s*"(?!\$node)', expr), expr
            assert not re.search(r'instance\s*=~?\s*"', expr), expr


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_units_are_set(path):
    for panel in data_panels(load(path)):
        unit = panel["fieldConfig"]["defaults"].get("unit")
        assert unit, panel["title"]
        exprs = " ".join(t["expr"] for t in panel["targets"])
        if unit not in ("percentunit", "s", "ops", "short") and "bytes" in exprs:
            assert unit == "bytes", panel["title"]


def test_chart_carries_the_same_dashboards():
    chart_dir = ROOT / "charts" / "layer-sharing-exporter" / "dashboards"
    for path in DASHBOARDS:
        assert (chart_dir / path.name).read_text() == path.read_text()


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_stat_panels_say_no_data_rather_than_zero(path):
    """A missing recording rule or a down exporter must not read as 0 bytes."""
    stats = [p for p in data_panels(load(path)) if p["type"] == "stat"]
    assert stats
    for panel in stats:
        assert panel["fieldConfig"]["defaults"].get("noValue") == "No data", panel["title"]


def test_cluster_sharing_ratio_is_total_physical_over_total_logical():
    board = load(ROOT / "dashboards" / "layer-sharing-cluster.json")
    (panel,) = [p for p in data_panels(board) if p["title"] == "Sharing ratio"]
    (target,) = panel["targets"]
    expr = target["expr"]
    assert "avg" not in expr and "sharing:ratio" not in expr
    assert expr.startswith("1 - sum(job:layer_sharing_physical_bytes:sum{")
    assert "/ sum(job:layer_sharing_logical_bytes:sum{" in expr


def test_namespace_showback_panel_reads_the_recording_rule():
    board = load(ROOT / "dashboards" / "layer-sharing-cluster.json")
    (panel,) = [p for p in data_panels(board) if "showback" in p["title"]]
    assert "namespace:layer_sharing_pod_attributed_bytes:sum" in panel["targets"][0]["expr"]
    rules = (ROOT / "rules" / "layer-sharing.rules.yml").read_text()
    assert "record: namespace:layer_sharing_pod_attributed_bytes:sum" in rules
