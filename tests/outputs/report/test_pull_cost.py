"""The pull-cost and locality views: rows of exact bytes, JSON, the node x workload matrix and its heatmap."""

from __future__ import annotations

import json

from exporter.core.pull_cost import CONTAINERD, NodeHoldings, RemoteImage, RemoteLayer, rollout, workload_locality
from exporter.outputs.report.pull_cost import (
    byte_columns,
    cell_text,
    locality_html,
    locality_json,
    locality_matrix,
    locality_rows,
    page_html,
    rollout_json,
    rollout_rows,
    rollout_summary,
)


def d(name: str) -> str:
    return "sha256:" + name.encode().hex().ljust(64, "0")


LAYERS = tuple(RemoteLayer(d("b-" + n), size, d("d-" + n)) for n, size in (("base", 1000), ("app", 30)))
APP = RemoteImage("app:1", d("m"), d("c"), 7, LAYERS)
WARM = NodeHoldings(CONTAINERD, chains=dict.fromkeys(APP.chain_ids, 5), blobs=frozenset({d("c")}))
NODES = {"n-warm": WARM, "n-cold": NodeHoldings(CONTAINERD, listed={"app:1": 1037})}


def test_rollout_rows_most_fetched_first_with_image_locality_beside():
    headers, rows = rollout_rows(rollout([APP], NODES))
    assert headers[0] == "NODE" and headers[-1] == "IMAGELOCALITY ASSUMES"
    # n-cold's new chains take the bytes n-warm holds them with (5 each).
    assert rows == [["n-cold", 1037, 2, 2, 10, False, 0], ["n-warm", 0, 0, 0, 0, True, 1037]]
    assert rollout_rows(rollout([APP], NODES), top=1)[1] == rows[:1]
    summary = rollout_summary(["app:1"], rollout([APP], NODES))
    assert "1.04kB (1037) leaving the registry; 1 of 2 nodes warm" in summary


def test_rollout_json_has_exact_figures_per_node_and_reference():
    doc = json.loads(rollout_json(["app:1"], rollout([APP], NODES), [("gone", "503")]))
    assert doc["registry_bytes"] == 1037 and doc["warm_nodes"] == 1 and doc["image_locality_assumed_bytes"] == 1037
    cold = next(n for n in doc["nodes"] if n["node"] == "n-cold")
    assert cold["images"] == [
        {"ref": "app:1", "fetch_bytes": 1037, "fetch_layers": 2, "unpack_layers": 2, "unpack_bytes": 10}
    ]
    assert cold["total"]["unpack_bytes"] == 10 and doc["unreachable"] == [{"node": "gone", "error": "503"}]


def test_locality_rows_matrix_json_and_heatmap():
    localities = workload_locality({"ns/Deployment/<app>": [APP]}, NODES)
    headers, rows = locality_rows(localities)
    assert rows == [["ns/Deployment/<app>", "app:1", 1, 2, 0, 1037, 1037]]
    m_headers, matrix = locality_matrix(localities)
    assert m_headers == ["NODE", "ns/Deployment/<app>"] and matrix == [["n-cold", 1037], ["n-warm", 0]]
    assert byte_columns(m_headers) == [False, True] and byte_columns(headers)[4:] == [True, True, True]
    doc = json.loads(locality_json(localities, []))
    (workload,) = doc["workloads"]
    assert workload["median_cold_start_bytes"] == 0 and workload["p90_cold_start_bytes"] == 1037
    assert workload["per_node"]["n-cold"]["image_locality_assumed_bytes"] == 0
    page = locality_html(localities)
    assert "ns/Deployment/&lt;app&gt;" in page and "<app>" not in page
    assert 'title="1037 bytes"' in page and ">warm</td>" in page


def test_cells_say_unknown_and_bytes_as_people_read_them():
    assert cell_text(None, True) == "-" and cell_text(1037, True) == "1.04kB" and cell_text(True, True) == "True"
    assert cell_text(3, False) == "3"
    assert "<table>" in page_html("s <x>", ["NODE", "FETCH"], [["n", 5]]) and "s &lt;x&gt;" in page_html(
        "s <x>", [], []
    )
