import dataclasses
import gzip
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from exporter.outputs.collector import LayerSharingCollector
from tests.sample_facts import sample_facts
from tests.serving import serving


@pytest.fixture
def served():
    with serving() as served:
        yield served.base, served.refresher, served.source


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


def test_layer_figures_are_rendered_once_per_report_and_health_every_scrape(served, monkeypatch):
    base, refresher, source = served
    collected = []
    real = LayerSharingCollector.collect

    def counted(self):
        collected.append(1)
        return real(self)

    monkeypatch.setattr(LayerSharingCollector, "collect", counted)
    refresher.refresh_once()
    first = get(base + "/metrics")[2]
    refresher.refresh_once()  # the same facts: the same report
    second = get(base + "/metrics", {"Accept-Encoding": "identity"})[2]
    assert len(collected) == 2  # once per exposition format
    assert b"layer_sharing_refreshes_total 2.0" in second
    assert first.split(b"layer_sharing_build_info")[1] == second.split(b"layer_sharing_build_info")[1]
    source.facts = dataclasses.replace(sample_facts(), runtime_version="9.9.9")
    refresher.refresh_once()  # a new report
    third = get(base + "/metrics")[2]
    assert len(collected) == 4 and b'runtime_version="9.9.9"' in third
    assert b"layer_sharing_refreshes_total 3.0" in third


def test_landing_page_and_404(served):
    base, _, _ = served
    assert b"/metrics" in get(base + "/")[2]
    assert get(base + "/nope")[0] == 404


def test_pull_cost_answers_what_the_node_holds_behind_the_metrics_auth(tmp_path):
    """GET /pull-cost: the node's holdings for the layers asked, as /metrics is guarded."""
    import base64
    import json
    import urllib.parse

    import bcrypt

    from exporter.core.pull_cost import RemoteImage, RemoteLayer, holdings_for, holdings_from_facts
    from exporter.outputs import webconfig
    from exporter.pull_cost_wire import holdings_dict, holdings_queries

    password_hash = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=4)).decode()
    config = tmp_path / "web.yml"
    config.write_text(f"basic_auth_users:\n  prometheus: '{password_hash}'\n")
    facts = sample_facts()
    stored = facts.images[0]
    layers = tuple(RemoteLayer("sha256:" + "b" * 64, 1, diff_id) for diff_id in stored.diff_ids)
    asked = RemoteImage(stored.repo_tags[0], "", stored.image_id, 1, layers)
    path = "/pull-cost?" + urllib.parse.urlencode(holdings_queries([asked])[0])
    auth = {"Authorization": "Basic " + base64.b64encode(b"prometheus:s3cret").decode()}
    with serving(webconfig.load(config)) as s:
        assert get(s.base + path)[0] == 401
        assert get(s.base + path, auth)[0] == 503  # the runtime has not answered yet
        s.refresher.refresh_once()
        status, headers, body = get(s.base + path, auth)
        assert status == 200 and headers["Content-Type"].startswith("application/json")
        answer = json.loads(body)
        assert answer == holdings_dict(holdings_for(holdings_from_facts(facts), [asked]))
        assert set(answer["chains"]) == set(stored.chain_ids) and stored.image_id in answer["blobs"]
        status, _, body = get(s.base + "/pull-cost?image=nodigest", auth)
        assert status == 400 and "REF,CONFIG_DIGEST" in json.loads(body)["error"]
