"""The /metrics body, kept ready: layer figures rendered once per publish, health per scrape.

Producers (the refresh loop, the layer analysis) publish plain data here; the
layer figures are rendered to bytes at once, in the producer's thread, for both
exposition formats, as kube-state-metrics' metrics store keeps its families. A
scrape then joins those bytes with the exporter's health and process metrics,
which it renders itself: they are small and move on every scrape.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, PlatformCollector, ProcessCollector, generate_latest
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from exporter.core.accounting import NodeReport
from exporter.core.pull_cost import NodeHoldings
from exporter.core.state import RefreshStatus, WasteReport
from exporter.outputs.collector import HealthCollector, LayerSharingCollector, MetricsOptions

_EOF = b"# EOF\n"
_OPENMETRICS, _ = choose_encoder("application/openmetrics-text; version=1.0.0")


@dataclass(frozen=True, slots=True)
class _Published:
    """One moment of the node: the refresh status and the layer families in both
    exposition formats (OpenMetrics without its EOF), swapped in as one object so
    a scrape never mixes two moments."""

    status: RefreshStatus = RefreshStatus()
    text: bytes = b""
    openmetrics: bytes = b""


def _registry(*collectors: Collector) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    for collector in collectors:
        registry.register(collector)
    return registry


def _without_eof(body: bytes) -> bytes:
    """A part of the body: OpenMetrics has one EOF, at the very end."""
    return body[: -len(_EOF)] if body.endswith(_EOF) else body


class MetricsStore:
    """The latest refresh status and rendered layer figures, for the HTTP server to serve."""

    def __init__(self, options: MetricsOptions, runtime_calls: Callable[[], Mapping[str, int]] | None = None) -> None:
        self._options = options
        # Runtime call counts move between refreshes too (the analysis reads blobs): read at each scrape.
        self._runtime_calls = runtime_calls
        self._lock = threading.Lock()  # one publisher at a time: refresh loop or analysis
        self._report: NodeReport | None = None
        self._waste: WasteReport | None = None
        self._published = _Published()
        self._holdings: NodeHoldings | None = None
        self._process = _registry()
        ProcessCollector(registry=self._process)
        PlatformCollector(registry=self._process)

    @property
    def status(self) -> RefreshStatus:
        return self._published.status

    def publish_refresh(self, status: RefreshStatus, report: NodeReport | None) -> None:
        """A refresh's outcome; `report` None when the runtime did not answer (no layer figures then)."""
        with self._lock:
            if report is not self._report:
                self._report = report
                self._published = self._render(status)
            else:
                self._published = dataclasses.replace(self._published, status=status)

    @property
    def holdings(self) -> NodeHoldings | None:
        """What the node holds for a pull (GET /pull-cost answers from it); None while the runtime does not answer."""
        return self._holdings

    def publish_holdings(self, holdings: NodeHoldings | None) -> None:
        """The last refresh's holdings (an immutable object, swapped in whole)."""
        self._holdings = holdings

    def publish_waste(self, waste: WasteReport | None) -> None:
        """New wasted-bytes figures (None: the analysis is off)."""
        with self._lock:
            if waste is not self._waste:
                self._waste = waste
                self._published = self._render(self._published.status)

    def _render(self, status: RefreshStatus) -> _Published:
        if self._report is None:
            return _Published(status)
        registry = _registry(LayerSharingCollector(self._report, self._waste, self._options))
        return _Published(status, generate_latest(registry), _without_eof(_OPENMETRICS(registry)))

    def render(self, accept: str) -> tuple[bytes, str]:
        """The /metrics body and its content type, as the Accept header asks."""
        encoder, content_type = choose_encoder(accept)
        published = self._published
        status = published.status
        if self._runtime_calls is not None:
            status = dataclasses.replace(status, calls=self._runtime_calls())
        health = encoder(_registry(HealthCollector(status)))
        if content_type.startswith("application/openmetrics-text"):
            # Layer metric names need no escaping, so one rendering serves every OpenMetrics variant.
            return _without_eof(health) + published.openmetrics + encoder(self._process), content_type
        return health + published.text + encoder(self._process), content_type
