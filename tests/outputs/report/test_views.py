"""The report's views: sorted, cut rows of raw values."""

from __future__ import annotations

import pytest

from exporter.core.cluster import ClusterReport
from exporter.outputs.report.views import rows
from tests.sample_cluster import sample_cluster


@pytest.fixture
def cluster() -> ClusterReport:
    return sample_cluster()


def test_views_sort_and_cut(cluster: ClusterReport):
    headers, data = rows(cluster, "images", sort="unique", top=2)
    assert headers[0] == "IMAGE" and len(data) == 2
    assert data[0][4] >= data[1][4]
    _, by_name = rows(cluster, "nodes", sort="node")
    assert [r[0] for r in by_name] == ["node-a", "node-b"]
    with pytest.raises(ValueError, match="cannot sort"):
        rows(cluster, "nodes", sort="colour")


def test_images_by_wasted_bytes_unknown_last():
    from exporter.core.cluster import ImageRow

    report = ClusterReport(
        images=[ImageRow("a", "", 1, 10, 5, None), ImageRow("b", "", 1, 10, 5, 70), ImageRow("c", "", 1, 10, 5, 900)]
    )
    headers, data = rows(report, "images", sort="wasted")
    assert headers[-1] == "WASTED" and [row[0] for row in data] == ["c", "b", "a"]


def test_cells_read_bytes_human_and_unknown_as_a_dash():
    from exporter.outputs.report.views import cell_text

    assert cell_text("SIZE", 1_500_000) == "1.5MB" and cell_text("NODES", 3) == "3"
    assert cell_text("WASTED", None) == "-"  # not analysed yet: unknown, never 0
    assert cell_text("UP", True) == "True"
