"""The report as one self-contained HTML page with SVG charts."""

from __future__ import annotations

import pytest

from exporter.core.cluster import ClusterReport
from exporter.outputs.report.html import squarify, to_html
from tests.sample_cluster import sample_cluster


@pytest.fixture
def cluster() -> ClusterReport:
    return sample_cluster()


def test_html_is_self_contained_with_charts(cluster: ClusterReport):
    page = to_html(cluster)
    assert page.count("<svg") == 2 and page.count('class="shared"') >= 2 and page.count('class="image"') >= 5
    assert "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "<script" not in page and "node-c" in page
    assert "Base versions and drift" in page and "Duplicate layer copies" in page


def test_squarify_fills_the_rectangle():
    rects = squarify([6, 6, 4, 3, 2, 2, 1], 0, 0, 600, 400)
    assert sum(w * h for _, _, w, h in rects) == pytest.approx(600 * 400)
    assert all(x >= 0 and y >= 0 and x + w <= 600.001 and y + h <= 400.001 for x, y, w, h in rects)
    assert squarify([], 0, 0, 10, 10) == [] and squarify([0, 0], 0, 0, 10, 10) == [(0, 0, 0, 0)] * 2
