"""The exporter's HTTP server over a fake runtime, wired as `serve` wires it (for unit tests)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from exporter.outputs.collector import MetricsOptions
from exporter.outputs.metrics_store import MetricsStore
from exporter.outputs.server import MetricsServer
from exporter.outputs.webconfig import WebConfig
from exporter.service import Refresher
from tests.fakes import FakeSource
from tests.sample_facts import sample_facts


@dataclass
class Served:
    base: str
    port: int
    refresher: Refresher
    source: FakeSource
    server: MetricsServer


@contextmanager
def serving(web: WebConfig | None = None, refreshed: bool = False) -> Iterator[Served]:
    """A server on a free loopback port, in a thread; `refreshed`: after one refresh."""
    source = FakeSource(sample_facts())
    store = MetricsStore(MetricsOptions())
    refresher = Refresher(source, store, interval=30)
    if refreshed:
        refresher.refresh_once()
    server = MetricsServer(store, refresher.loop_alive, "127.0.0.1", 0, web)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    scheme = "https" if web is not None and web.tls is not None else "http"
    try:
        yield Served(f"{scheme}://127.0.0.1:{server.port}", server.port, refresher, source, server)
    finally:
        server.shutdown()
        thread.join(timeout=10)
