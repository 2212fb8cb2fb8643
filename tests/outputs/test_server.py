import gzip
import threading
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from exporter.outputs.collector import MetricsOptions
from exporter.outputs.server import MetricsServer
from exporter.service import Refresher
from tests.fakes import FakeSource
from tests.sample_facts import sample_facts


@pytest.fixture
def served():
    source = FakeSource(sample_facts())
    refresher = Refresher(source, interval=30)
    server = MetricsServer(refresher, MetricsOptions(), "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.port}", refresher, source
    server.shutdown()


def get(url: str, headers: dict[str, str] | None = None):
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def test_not_ready_before_first_refresh_then_ready(served):
    base, refresher, _ = served
    assert get(base + "/readyz")[0] == 503
    assert get(base + "/healthz")[0] == 200
    refresher.refresh_once()
    status, _, body = get(base + "/readyz")
    assert status == 200 and b"runtime answering" in body


def test_metrics_text_and_openmetrics(served):
    base, refresher, _ = served
    refresher.refresh_once()
    status, headers, body = get(base + "/metrics")
    assert status == 200 and headers["Content-Type"].startswith("text/plain; version=0.0.4")
    names = {f.name for f in text_string_to_metric_families(body.decode())}
    assert {"layer_sharing_physical_bytes", "process_resident_memory_bytes"} <= names
    status, headers, body = get(base + "/metrics", {"Accept": "application/openmetrics-text; version=1.0.0"})
    assert headers["Content-Type"].startswith("application/openmetrics-text")
    assert body.endswith(b"# EOF\n") and body.count(b"# EOF") == 1


def test_metrics_gzip(served):
    base, refresher, _ = served
    refresher.refresh_once()
    status, headers, body = get(base + "/metrics", {"Accept-Encoding": "gzip"})
    assert headers["Content-Encoding"] == "gzip"
    assert b"layer_sharing_up 1.0" in gzip.decompress(body)


def test_runtime_down_is_served_and_said(served):
    base, refresher, source = served
    source.down = True
    refresher.refresh_once()
    status, _, body = get(base + "/metrics")
    assert status == 200 and b"layer_sharing_up 0.0" in body
    status, _, body = get(base + "/readyz")
    assert status == 200 and b"runtime unreachable" in body


def test_scrapes_follow_new_refreshes(served):
    base, refresher, _ = served
    refresher.refresh_once()
    first = get(base + "/metrics")[2]
    refresher.refresh_once()
    second = get(base + "/metrics")[2]
    assert b"layer_sharing_refreshes_total 1.0" in first and b"layer_sharing_refreshes_total 2.0" in second


def test_landing_page_and_404(served):
    base, _, _ = served
    assert b"/metrics" in get(base + "/")[2]
    assert get(base + "/nope")[0] == 404
