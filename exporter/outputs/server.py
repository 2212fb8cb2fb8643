"""HTTP serving: /metrics (from the metrics store), /healthz, /readyz and a landing page."""

from __future__ import annotations

import gzip
import logging
import socket
import ssl
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from exporter import __version__
from exporter.outputs.metrics_store import MetricsStore
from exporter.outputs.webconfig import TlsFiles, WebConfig

logger = logging.getLogger(__name__)


_LANDING = """<!doctype html>
<html><head><title>layer-sharing-exporter</title></head>
<body><h1>layer-sharing-exporter {version}</h1>
<p>Shared versus unique container image layer bytes on this node.</p>
<ul><li><a href="metrics">/metrics</a></li><li><a href="healthz">/healthz</a></li>
<li><a href="readyz">/readyz</a></li></ul></body></html>
"""


# Open without credentials so the kubelet's probes work; they only say "ok".
_UNAUTHENTICATED = frozenset({"/healthz", "/readyz"})


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # A client that stalls (or never finishes a TLS handshake) holds only its own thread.
    request_timeout = 30.0
    tls: TlsFiles | None = None

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        super().__init__(address, handler)

    def get_request(self) -> tuple[Any, Any]:
        conn, addr = super().get_request()
        conn.settimeout(self.request_timeout)
        if self.tls is not None:
            # The handshake runs in the request's thread (on first read), not in the accept loop.
            # context() reloads the certificate when its files changed.
            conn = self.tls.context().wrap_socket(conn, server_side=True, do_handshake_on_connect=False)
        return conn, addr


class MetricsServer:
    """A threaded HTTP(S) server in front of one refresher."""

    def __init__(
        self,
        store: MetricsStore,
        loop_alive: Callable[[], bool],
        host: str,
        port: int,
        web: WebConfig | None = None,
    ) -> None:
        self.store = store
        self._loop_alive = loop_alive
        self.web = web or WebConfig()
        handler = _handler_class(self)
        self.httpd = _Server((host, port), handler)
        self.httpd.tls = self.web.tls

    @property
    def port(self) -> int:
        return int(self.httpd.server_address[1])

    def serve_forever(self) -> None:
        self.httpd.serve_forever(poll_interval=0.2)

    def shutdown(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def health(self) -> tuple[int, str]:
        if not self._loop_alive():
            return 503, "refresh loop stuck\n"
        return 200, "ok\n"

    def readiness(self) -> tuple[int, str]:
        status = self.store.status
        if status.generation == 0:
            return 503, "not ready: first refresh has not finished\n"
        if status.up:
            return 200, "ready: runtime answering\n"
        # Still serving (layer_sharing_up 0 tells Prometheus); say why here.
        return 200, f"ready, but {status.last_error}\n"


def _handler_class(server: MetricsServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = f"layer-sharing-exporter/{__version__}"
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            self._respond(send_body=True)

        def do_HEAD(self) -> None:  # noqa: N802
            self._respond(send_body=False)

        def _respond(self, send_body: bool) -> None:
            path = self.path.split("?", 1)[0]
            if path not in _UNAUTHENTICATED and not server.web.authorized(self.headers.get("Authorization")):
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="layer-sharing-exporter"')
                self.send_header("Content-Length", "13")
                self.end_headers()
                if send_body:
                    self.wfile.write(b"unauthorized\n")
                return
            try:
                if path == "/metrics":
                    body, content_type = server.store.render(self.headers.get("Accept", ""))
                    status = 200
                elif path == "/healthz":
                    status, text = server.health()
                    body, content_type = text.encode(), "text/plain; charset=utf-8"
                elif path == "/readyz":
                    status, text = server.readiness()
                    body, content_type = text.encode(), "text/plain; charset=utf-8"
                elif path == "/":
                    status, body = 200, _LANDING.format(version=__version__).encode()
                    content_type = "text/html; charset=utf-8"
                else:
                    status, body, content_type = 404, b"not found\n", "text/plain; charset=utf-8"
            except Exception:  # a rendering bug must not take the server down
                logger.exception("error serving %s", path)
                status, body, content_type = 500, b"internal error\n", "text/plain; charset=utf-8"
            headers = {"Content-Type": content_type}
            if "gzip" in self.headers.get("Accept-Encoding", "") and len(body) > 1024:
                body = gzip.compress(body, compresslevel=1)
                headers["Content-Encoding"] = "gzip"
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if send_body:
                self.wfile.write(body)

        def handle(self) -> None:
            try:
                super().handle()
            except (ssl.SSLError, OSError) as exc:  # a bad handshake or a dropped client
                logger.debug("connection from %s ended: %s", self.client_address[0], exc)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            logger.debug("%s %s", self.address_string(), format % args)

    return Handler
