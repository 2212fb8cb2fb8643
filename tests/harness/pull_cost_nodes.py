"""Stand-in exporters for the report's pull-cost views: each answers GET /pull-cost from
recorded holdings with the exporter's own answer function (exporter.outputs.pull_cost.answer),
so many nodes cost a thread each, not a containerd each. The real endpoint is
proven against real containerd in tests/integration/test_report_pull_cost.py.
"""

from __future__ import annotations

import urllib.parse
from http.server import BaseHTTPRequestHandler
from typing import Any

from exporter.core.pull_cost import NodeHoldings
from exporter.outputs.pull_cost import answer
from exporter.pull_cost_wire import PATH
from tests.harness.loopback import LoopbackServer, send_json


class PullCostNodes(LoopbackServer):
    """One loopback server for many stand-in exporters: /<node>/pull-cost answers for <node>."""

    def __init__(self, holdings: dict[str, NodeHoldings | None]) -> None:
        self.holdings = holdings
        self.questions: list[str] = []
        super().__init__(_handler(self))

    def url(self, node: str) -> str:
        return f"http://127.0.0.1:{self.port}/{node}"


def _handler(nodes: PullCostNodes) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:  # noqa: N802
            url = urllib.parse.urlsplit(self.path)
            node, _, path = url.path.strip("/").partition("/")
            nodes.questions.append(self.path)
            if "/" + path != PATH or node not in nodes.holdings:
                status, body = 404, '{"error": "not found"}'
            else:
                status, body = answer(nodes.holdings[node], url.query)
            send_json(self, status, body.encode())

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass

    return Handler
