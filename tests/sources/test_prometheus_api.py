"""The report's Prometheus source against a loopback stand-in answering
Prometheus-API-shaped JSON: which queries it asks, and how it reads the answers
(the PromQL itself is evaluated by a real Prometheus in
tests/integration/test_report.py)."""

from __future__ import annotations

import json
import re
import threading
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest

from exporter.core.cluster import NODE_FIGURES, OPENSHIFT_USER_WORKLOAD, MeasuredPodLabels, build_report_from_aggregates
from exporter.sources.prometheus_api import (
    EITHER,
    ClientOptions,
    PrometheusError,
    PrometheusUnreachableError,
    fetch,
    image_queries,
    queries,
)
from tests.harness.loopback import LoopbackServer

# The target labels a ServiceMonitor scrape adds, and an external label.
TARGET = {
    "namespace": "monitoring",
    "pod": "lse-x7k2",
    "service": "layer-sharing-exporter",
    "endpoint": "metrics",
    "container": "exporter",
    "job": "layer-sharing-exporter",
    "instance": "10.0.0.7:9877",
    "cluster": "east",
}


SERVER_NOW = 1_600_000_000.25  # the stand-in Prometheus's clock, far from this machine's


class StandIn:
    """Answers each query with the canned rows of the figure it asks for."""

    def __init__(
        self,
        answers: dict[str, list[dict[str, Any]]],
        selector: str = "",
        pod_labels: MeasuredPodLabels = EITHER,
    ) -> None:
        names = {row["metric"]["image"] for row in answers.get("image_rank", [])}
        exprs = queries(selector, pod_labels=pod_labels) | image_queries(selector, names)
        self.by_expr = {expr: answers.get(key, []) for key, expr in exprs.items()}
        self.seen: list[dict[str, str]] = []
        self.headers: list[dict[str, str]] = []
        self.status = 200
        self.body: dict[str, Any] | None = None
        lock = threading.Lock()
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                assert urllib.parse.urlsplit(self.path).path == "/api/v1/query"
                length = int(self.headers["Content-Length"])
                params = dict(urllib.parse.parse_qsl(self.rfile.read(length).decode()))
                with lock:
                    stand_in.seen.append(params)
                    # Header names are case-insensitive (urllib sends them capitalised).
                    stand_in.headers.append({k.lower(): v for k, v in self.headers.items()})
                if params["query"] == "time()" and stand_in.body is None:
                    self.reply({"status": "success", "data": {"resultType": "scalar", "result": [SERVER_NOW, "x"]}})
                    return
                self.reply(
                    stand_in.body
                    or {
                        "status": "success",
                        "data": {
                            "resultType": "vector",
                            "result": [
                                {"metric": labels, "value": [float(params["time"]), value]}
                                for labels, value in stand_in.rows(params["query"])
                            ],
                        },
                    }
                )

            def reply(self, body: dict[str, Any]) -> None:
                payload = json.dumps(body).encode()
                self.send_response(stand_in.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: object) -> None:
                pass

        self.server = LoopbackServer(Handler)

    def rows(self, expr: str) -> list[tuple[dict[str, str], str]]:
        return [(row["metric"], row["value"]) for row in self.by_expr.get(expr, [])]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.port}"


def row(value: int | str, **labels: str) -> dict[str, Any]:
    return {"metric": labels, "value": str(value)}


ANSWERS = {
    **{f"node:{figure}": [row(1 if figure == "up" else 100, node="node-a")] for figure in NODE_FIGURES},
    "node:physical": [row(7184384, node="node-a"), row(2450, node="node-b")],
    "node:up": [row(1, node="node-a"), row(0, node="node-b")],
    "base_nodes": [row(2, base="debian", source="catalog")],
    "base_images": [row(8, base="debian", source="catalog")],
    "base_pods": [row(4, base="debian", source="catalog")],
    "base_bytes": [row(2600, base="debian", source="catalog")],
    "workload_nodes": [row(2, namespace="default", workload_kind="Deployment", workload="web")],
    "workload_pods": [row(4, namespace="default", workload_kind="Deployment", workload="web")],
    "workload_attributed": [row(1234, namespace="default", workload_kind="Deployment", workload="web")],
    "workload_bases": [
        row(2, namespace="default", workload_kind="Deployment", workload="web", base="debian", source="catalog")
    ],
    "image_nodes": [row(2, image="localhost/app:1", base="debian")],
    "image_rank": [row(9007199254740991, image="localhost/app:1")],  # 2**53 - 1: still exact
    "image_unique": [row(10, image="localhost/app:1")],
}


@pytest.fixture
def stand_in() -> Iterator[StandIn]:
    server = StandIn(ANSWERS)
    server.server.start()
    yield server
    server.server.stop()


def test_every_query_groups_by_the_labels_its_view_needs():
    exprs = queries('cluster="east"') | image_queries('cluster="east"', ["localhost/app:1"], "nodes")
    for figure in NODE_FIGURES:
        assert exprs[f"node:{figure}"].startswith("max by (node) (")
    assert exprs["base_bytes"].startswith("sum by (base, version, source) (max by (node, base, version, source) (")
    assert exprs["base_nodes"].startswith("count by (base, version, source) (")
    workload = "namespace, exported_namespace, workload_kind, workload"
    assert exprs["workload_pods"].startswith(f"sum by ({workload}) (max by (node, {workload}) (")
    assert exprs["workload_bases"].startswith(f"group by ({workload}, base, version, source) (")
    assert exprs["image_rank"].startswith("topk(500, sum by (image) (max by (node, image) (")
    assert exprs["image_unique"].startswith("sum by (image) (max by (node, image) (")
    # The selector narrows every series the queries read.
    for expr in exprs.values():
        selectors = re.findall(r"layer_sharing_\w+\{(.*?)\}", expr)
        assert selectors and all('cluster="east"' in s for s in selectors), expr


def test_a_table_asks_only_for_its_view():
    assert set(queries(views=("nodes",))) == {f"node:{figure}" for figure in NODE_FIGURES}
    assert set(queries(views=("bases",))) - set(queries(views=("nodes",))) == {
        "base_nodes",
        "base_images",
        "base_pods",
        "base_bytes",
        "family_drift",
    }


def test_images_ranked_by_the_sorted_column_and_capped():
    assert queries(images_cap=20, image_rank="nodes")["image_rank"].startswith("topk(20, count by (image) (")
    assert "layer_sharing_image_unique_bytes" in queries(image_rank="unique")["image_rank"]
    # The ranked figure is not asked twice; ranking by nodes counts images, not (image, base) pairs.
    assert set(image_queries("", ["a"], "unique")) == {"image_nodes", "image_size", "image_wasted"}
    assert set(image_queries("", ["a"], "nodes")) == {"image_nodes", "image_size", "image_unique", "image_wasted"}


def test_ranked_images_are_matched_exactly_whatever_their_characters():
    names = ["registry.example/app:1.2+build", "a|b", "x(y)[z]{1}^$*?", "back\\slash", 'quote"d', "plain"]
    expr = image_queries("", names)["image_unique"]
    literal = re.search(r'image=~("(?:[^"\\]|\\.)*")', expr)
    assert literal is not None
    pattern = json.loads(literal.group(1))  # PromQL double-quoted strings unescape as JSON ones here
    assert all(re.fullmatch(pattern, name) for name in names)
    assert not any(re.fullmatch(pattern, other) for other in ["registry.example/app:1.2build", "a", "plai", "ab"])


def test_fetch_asks_every_query_at_one_instant(stand_in: StandIn):
    aggregates = fetch(stand_in.url, timeout=5, at=1_700_000_000.0)
    assert sorted(p["query"] for p in stand_in.seen) == sorted(stand_in.by_expr)
    assert {p["time"] for p in stand_in.seen} == {"1700000000.000"}
    report = build_report_from_aggregates(aggregates)
    assert [(n.node, n.up, n.physical) for n in report.nodes] == [("node-a", True, 7184384), ("node-b", False, 2450)]
    assert [(i.image, i.base, i.nodes, i.size, i.unique) for i in report.images] == [
        ("localhost/app:1", "debian", 2, 9007199254740991, 10)
    ]
    assert (report.workloads[0].pods, report.workloads[0].on_catalog) == (4, True)


def test_the_instant_is_prometheus_own_now(stand_in: StandIn):
    fetch(stand_in.url, timeout=5, views=("nodes",))
    assert stand_in.seen[0] == {"query": "time()", "timeout": "5s"}
    assert {p["time"] for p in stand_in.seen[1:]} == {"1600000000.250"}
    assert len(stand_in.seen) == 1 + len(NODE_FIGURES)


def test_extra_labels_in_answers_are_ignored():
    # A remote store may keep external labels on aggregated rows it answers; only the grouping labels count.
    answers = {
        "node:up": [row(1, node="node-a", **TARGET)],
        "node:physical": [row(500, node="node-a", **TARGET)],
        "base_bytes": [row(70, base="debian", source="catalog", **TARGET)],
        # Scraped without honor_labels: the exporter's namespace is exported_namespace.
        "workload_pods": [
            row(3, namespace="monitoring", exported_namespace="default", workload_kind="Deployment", workload="web")
        ],
    }
    server = StandIn(answers)
    server.server.start()
    try:
        report = build_report_from_aggregates(fetch(server.url, timeout=5))
    finally:
        server.server.stop()
    assert [(n.node, n.up, n.physical) for n in report.nodes] == [("node-a", True, 500)]
    assert [(b.base, b.source, b.bytes) for b in report.bases] == [("debian", "catalog", 70)]
    assert [(w.namespace, w.kind, w.name, w.pods) for w in report.workloads] == [("default", "Deployment", "web", 3)]


def test_prometheus_errors_are_one_clear_line(stand_in: StandIn):
    stand_in.status = 400
    stand_in.body = {"status": "error", "errorType": "bad_data", "error": "parse error at char 5"}
    with pytest.raises(PrometheusError, match="answered 400: .*parse error"):
        fetch(stand_in.url, 'cluster=="east', timeout=5)
    stand_in.status = 200
    stand_in.body = {"status": "success", "data": {"resultType": "matrix", "result": []}}
    with pytest.raises(PrometheusError, match="expected a scalar for time"):
        fetch(stand_in.url, timeout=5)
    with pytest.raises(PrometheusError, match="expected an instant vector"):
        fetch(stand_in.url, timeout=5, at=SERVER_NOW)
    # No answer at all is told apart (the report exits with its connection error code).
    with pytest.raises(PrometheusUnreachableError, match="cannot connect to http://127.0.0.1:9: connection refused"):
        fetch("http://127.0.0.1:9", timeout=2)
    stand_in.status = 401
    stand_in.body = {"status": "error", "errorType": "unauthorized", "error": "no token"}
    with pytest.raises(PrometheusError, match="answered 401: .*--prometheus-bearer-token-file") as raised:
        fetch(stand_in.url, timeout=5)
    assert not isinstance(raised.value, PrometheusUnreachableError)


def test_a_fractional_figure_is_an_error_not_a_rounded_number(stand_in: StandIn):
    stand_in.by_expr[queries()["node:physical"]] = [row("12.5", node="node-a")]
    with pytest.raises(PrometheusError, match="12.5 .* not a count"):
        fetch(stand_in.url, timeout=5)


def test_credentials_tenant_and_headers_go_with_every_query(stand_in: StandIn, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text("s3cret-from-file\n")
    options = ClientOptions(bearer_token_file=str(token_file), headers={"X-Team": "platform"}, tenant="team-a|team-b")
    fetch(stand_in.url, timeout=5, views=("nodes",), options=options)
    assert len(stand_in.headers) == 1 + len(NODE_FIGURES)
    for headers in stand_in.headers:
        assert headers["authorization"] == "Bearer s3cret-from-file"
        assert headers["x-scope-orgid"] == "team-a|team-b"
        assert headers["x-team"] == "platform"
    stand_in.headers.clear()
    fetch(stand_in.url, timeout=5, views=("nodes",), options=ClientOptions(bearer_token="inline"))
    assert {h["authorization"] for h in stand_in.headers} == {"Bearer inline"}
    assert not any("x-scope-orgid" in h for h in stand_in.headers)


def test_an_unreadable_or_empty_token_file_is_said_before_any_query(stand_in: StandIn, tmp_path):
    with pytest.raises(PrometheusError, match="cannot read the bearer token file"):
        fetch(stand_in.url, timeout=5, options=ClientOptions(bearer_token_file=str(tmp_path / "missing")))
    (tmp_path / "empty").write_text("")
    with pytest.raises(PrometheusError, match="is empty"):
        fetch(stand_in.url, timeout=5, options=ClientOptions(bearer_token_file=str(tmp_path / "empty")))
    assert stand_in.seen == []


def test_the_namespace_label_is_one_setting(stand_in: StandIn):
    """OpenShift's user-workload monitoring: the measured pod's namespace is exported_namespace
    and `namespace` is the exporter's own; told so, the report groups by that label only."""
    workload = "exported_namespace, workload_kind, workload"
    exprs = queries(pod_labels=OPENSHIFT_USER_WORKLOAD)
    assert exprs["workload_pods"].startswith(f"sum by ({workload}) (max by (node, {workload}) (")
    answers = {
        "node:up": [row(1, node="node-a")],
        "workload_pods": [row(3, exported_namespace="shop", workload_kind="Deployment", workload="web")],
    }
    server = StandIn(answers, pod_labels=OPENSHIFT_USER_WORKLOAD)
    server.server.start()
    try:
        report = build_report_from_aggregates(fetch(server.url, timeout=5, pod_labels=OPENSHIFT_USER_WORKLOAD))
    finally:
        server.server.stop()
    assert [(w.namespace, w.name, w.pods) for w in report.workloads] == [("shop", "web", 3)]
