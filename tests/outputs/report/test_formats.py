"""The report as JSON and CSV: exact integers of bytes."""

from __future__ import annotations

import csv
import io
import json

import pytest

from exporter.core.cluster import ClusterReport
from exporter.outputs.report.formats import to_csv, to_json
from exporter.outputs.report.views import rows
from tests.sample_cluster import sample_cluster


@pytest.fixture
def cluster() -> ClusterReport:
    return sample_cluster()


def test_json_and_csv(cluster: ClusterReport):
    doc = json.loads(to_json(cluster))
    assert doc["totals"] == {
        "nodes": 2,
        "physical": 4900,
        "logical": 16700,
        "saved": 11800,
        "reclaimable": 200,
        "content": 0,
        "unused_logical": 5400,
        "duplicate_bytes": 400,
        "duplicate_layers": 2,
    }
    assert doc["unreachable"] == [{"node": "node-c", "error": "503 Service Unavailable"}]
    table = list(csv.reader(io.StringIO(to_csv(*rows(cluster, "bases")))))
    assert table[0] == ["base", "version", "source", "nodes", "images", "pods", "bytes", "versions", "drift"]
