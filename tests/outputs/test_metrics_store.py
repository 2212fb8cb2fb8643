"""The metrics store: layer figures rendered once per publish, health and live counters per scrape."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from exporter.core.accounting import account
from exporter.core.pull_cost import holdings_from_facts
from exporter.core.state import RefreshStatus, WasteReport
from exporter.outputs.collector import LayerSharingCollector, MetricsOptions
from exporter.outputs.metrics_store import MetricsStore
from tests.sample_facts import sample_facts

UP = RefreshStatus(generation=1, up=True, refreshes=1)


def values(body: bytes) -> dict[str, float]:
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
        if not sample.labels
    }


def test_nothing_published_is_not_up_and_has_no_layer_figures():
    body, content_type = MetricsStore(MetricsOptions()).render("")
    assert content_type.startswith("text/plain")
    assert values(body)["layer_sharing_up"] == 0 and "layer_sharing_physical_bytes" not in values(body)


def test_a_published_report_is_served_until_the_runtime_is_down():
    store = MetricsStore(MetricsOptions())
    report = account(sample_facts())
    store.publish_refresh(UP, report)
    assert values(store.render("")[0])["layer_sharing_physical_bytes"] == 2450
    store.publish_refresh(RefreshStatus(generation=2, up=False, refreshes=2, last_error="down"), None)
    after = values(store.render("")[0])
    assert after["layer_sharing_up"] == 0 and "layer_sharing_physical_bytes" not in after
    assert store.status.last_error == "down"


def test_layer_figures_are_rendered_once_per_report_or_waste(monkeypatch: pytest.MonkeyPatch):
    rendered: list[int] = []
    collect = LayerSharingCollector.collect

    def counted(self: LayerSharingCollector):
        rendered.append(1)
        return collect(self)

    monkeypatch.setattr(LayerSharingCollector, "collect", counted)
    store = MetricsStore(MetricsOptions())
    report = account(sample_facts())
    store.publish_refresh(UP, report)
    assert len(rendered) == 2  # text and OpenMetrics, at once
    for _ in range(3):
        store.render("")
        store.render("application/openmetrics-text; version=1.0.0")
    store.publish_refresh(RefreshStatus(generation=2, up=True, refreshes=2), report)  # the same report
    assert len(rendered) == 2
    assert values(store.render("")[0])["layer_sharing_refreshes_total"] == 2
    store.publish_waste(WasteReport(pending_layers=3))
    assert len(rendered) == 4
    assert values(store.render("")[0])["layer_sharing_analysis_pending_layers"] == 3


def test_openmetrics_has_one_eof_at_the_end():
    store = MetricsStore(MetricsOptions())
    store.publish_refresh(UP, account(sample_facts()))
    body, content_type = store.render("application/openmetrics-text; version=1.0.0")
    assert content_type.startswith("application/openmetrics-text")
    assert body.endswith(b"# EOF\n") and body.count(b"# EOF") == 1


def test_runtime_call_counts_are_read_at_each_scrape():
    """The analysis reads blobs between refreshes: its calls show without waiting for one."""
    counts = {"/containerd.services.content.v1.Content/Read": 1}
    store = MetricsStore(MetricsOptions(), lambda: dict(counts))
    store.publish_refresh(UP, None)
    counts["/containerd.services.content.v1.Content/Read"] = 7
    text = store.render("")[0].decode()
    assert 'layer_sharing_runtime_requests_total{method="containerd.services.content.v1.Content/Read"} 7.0' in text


def test_holdings_are_kept_for_the_pull_cost_endpoint_until_withdrawn():
    store = MetricsStore(MetricsOptions())
    assert store.holdings is None
    holdings = holdings_from_facts(sample_facts())
    store.publish_holdings(holdings)
    assert store.holdings is holdings
    store.publish_holdings(None)
    assert store.holdings is None
