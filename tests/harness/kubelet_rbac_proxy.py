"""A STAND-IN for kube-rbac-proxy, run as the chart's sidecar in the image tests.

The real image (quay.io/brancz/kube-rbac-proxy) cannot be had here. This one is
built locally on the exporter's runtime base (tests/harness/image_build.py) under
the reference the chart renders, and takes the same arguments: it serves HTTPS on
--secure-listen-address (with the certificate baked into its image, as the real
one generates a self-signed one when given none, or --tls-cert-file and
--tls-private-key-file), passes --ignore-paths without authentication, refuses
other requests without a bearer token (401) and forwards the rest to --upstream.
What it does NOT do is the real proxy's TokenReview and SubjectAccessReview
against the API server: any bearer token passes.

Standard library only: it runs on the image's Python.
"""

from __future__ import annotations

import http.client
import ssl
import sys
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

DEFAULT_CERT = "/standin/tls.crt"
DEFAULT_KEY = "/standin/tls.key"


def parse(argv: list[str]) -> dict[str, str]:
    options = {}
    for arg in argv:
        if arg.startswith("--") and "=" in arg:
            key, value = arg[2:].split("=", 1)
            options[key] = value
    return options


def main(argv: list[str]) -> None:
    options = parse(argv)
    host, _, port = options["secure-listen-address"].rpartition(":")
    upstream = urllib.parse.urlsplit(options["upstream"])
    ignored = {p for p in options.get("ignore-paths", "").split(",") if p}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            path = urllib.parse.urlsplit(self.path).path
            if path not in ignored and not self.headers.get("Authorization", "").startswith("Bearer "):
                self.send_response(401)
                self.end_headers()
                self.wfile.write(b"Unauthorized\n")
                return
            connection = http.client.HTTPConnection(upstream.hostname or "127.0.0.1", upstream.port or 80, timeout=30)
            try:
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "authorization")}
                connection.request("GET", self.path, headers=headers)
                response = connection.getresponse()
                body = response.read()
            except OSError as exc:
                self.send_response(502)
                self.end_headers()
                self.wfile.write(f"upstream: {exc}\n".encode())
                return
            finally:
                connection.close()
            self.send_response(response.status)
            for key, value in response.getheaders():
                if key.lower() not in ("transfer-encoding", "connection", "content-length"):
                    self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass

    server = ThreadingHTTPServer((host or "0.0.0.0", int(port)), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(
        options.get("tls-cert-file", DEFAULT_CERT), options.get("tls-private-key-file", DEFAULT_KEY)
    )
    server.socket = context.wrap_socket(server.socket, server_side=True)
    print(f"kube-rbac-proxy STAND-IN on https://{host}:{port} -> {options['upstream']}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main(sys.argv[1:])
