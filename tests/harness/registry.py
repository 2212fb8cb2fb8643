"""A minimal OCI distribution registry on loopback, serving images the harness
built, so CRI's real pull path (PullImage) can be tested: unpacking,
discard_unpacked_layers, multi-platform indexes. Read-only. Optionally
protected: basic auth (`auth=(user, password)`), or the bearer-token flow
(`bearer=True`: a token from its /token endpoint, which takes those credentials).

It counts what it serves (`served()`): the body bytes of blob GETs (configs
and layers; manifests are apart), layer GETs, and manifest and config GETs by
digest, so a pull's real transfer can be compared with a prediction.
`fail_with` answers every request for a repository with one HTTP status.

containerd treats `localhost:<port>` registries as plain HTTP by default.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import threading
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.harness.images import Blob, BuiltImage
from tests.harness.loopback import LoopbackServer

_MANIFEST = re.compile(r"^/v2/(?P<name>.+)/manifests/(?P<ref>[^/]+)$")
_BLOB = re.compile(r"^/v2/(?P<name>.+)/blobs/(?P<digest>sha256:[0-9a-f]{64})$")
INDEX_MEDIA_TYPE = "application/vnd.oci.image.index.v1+json"


@dataclass(frozen=True)
class Served:
    """What the registry sent since it started (or since `reset_counts`)."""

    blob_bytes: int = 0  # body bytes of blob GETs: configs and layers
    layer_gets: int = 0  # GETs of layer blobs
    layer_bytes: int = 0
    config_gets: int = 0
    # Digest -> how many times its body was sent (blobs and manifests alike).
    gets: Counter[str] = field(default_factory=Counter)

    def __sub__(self, before: Served) -> Served:
        return Served(
            self.blob_bytes - before.blob_bytes,
            self.layer_gets - before.layer_gets,
            self.layer_bytes - before.layer_bytes,
            self.config_gets - before.config_gets,
            self.gets - before.gets,
        )


class Registry(LoopbackServer):
    def __init__(self, auth: tuple[str, str] | None = None, bearer: bool = False) -> None:
        self.blobs: dict[str, Blob] = {}
        self.tags: dict[tuple[str, str], str] = {}  # (repository, tag) -> manifest or index digest
        self.requests: list[str] = []
        # Repository -> the status every request for it gets (a registry fault on demand).
        self.fail_with: dict[str, int] = {}
        self._counts = Served()
        self._lock = threading.Lock()
        self.auth = auth
        self.bearer = bearer
        self.tokens: set[str] = set()
        super().__init__(_handler(self))

    def basic_ok(self, header: str) -> bool:
        if self.auth is None:
            return True
        return header == "Basic " + base64.b64encode(f"{self.auth[0]}:{self.auth[1]}".encode()).decode()

    def served(self) -> Served:
        with self._lock:
            return Served(
                self._counts.blob_bytes,
                self._counts.layer_gets,
                self._counts.layer_bytes,
                self._counts.config_gets,
                Counter(self._counts.gets),
            )

    def reset_counts(self) -> None:
        with self._lock:
            self._counts = Served()

    def count(self, blob: Blob, is_blob: bool) -> None:
        """One body sent in full."""
        with self._lock:
            c = self._counts
            is_layer = is_blob and "layer" in blob.media_type
            is_config = is_blob and not is_layer
            gets = Counter(c.gets)
            gets[blob.digest] += 1
            self._counts = Served(
                c.blob_bytes + (len(blob.data) if is_blob else 0),
                c.layer_gets + is_layer,
                c.layer_bytes + (len(blob.data) if is_layer else 0),
                c.config_gets + is_config,
                gets,
            )

    @property
    def host(self) -> str:
        return f"localhost:{self.port}"

    def push(self, repository: str, tag: str, image: BuiltImage) -> str:
        """Serve one image; returns its pull reference."""
        for blob in (image.config, image.manifest, *image.layers):
            self.blobs[blob.digest] = blob
        self.tags[(repository, tag)] = image.manifest.digest
        return f"{self.host}/{repository}:{tag}"

    def push_index(self, repository: str, tag: str, images: dict[str, BuiltImage]) -> tuple[str, Blob]:
        """Serve a multi-platform index of {architecture: image}; returns (reference, index blob)."""
        manifests = []
        for architecture, image in images.items():
            for blob in (image.config, image.manifest, *image.layers):
                self.blobs[blob.digest] = blob
            manifests.append(image.manifest.descriptor(platform={"architecture": architecture, "os": "linux"}))
        index = Blob(
            INDEX_MEDIA_TYPE,
            json.dumps(
                {"schemaVersion": 2, "mediaType": INDEX_MEDIA_TYPE, "manifests": manifests}, sort_keys=True
            ).encode(),
        )
        self.blobs[index.digest] = index
        self.tags[(repository, tag)] = index.digest
        return f"{self.host}/{repository}:{tag}", index


def _handler(registry: Registry) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:  # noqa: N802
            self._serve(body=True)

        def do_HEAD(self) -> None:  # noqa: N802
            self._serve(body=False)

        def _serve(self, body: bool) -> None:
            registry.requests.append(f"{self.command} {self.path}")
            blob = None
            header = self.headers.get("Authorization", "")
            if self.path.startswith("/token?"):
                if not registry.basic_ok(header):
                    self._send(401, b"{}", "application/json", None, body)
                    return
                token = secrets.token_hex(16)
                registry.tokens.add(token)
                self._send(200, json.dumps({"token": token}).encode(), "application/json", None, body)
                return
            allowed = (
                header.removeprefix("Bearer ") in registry.tokens if registry.bearer else registry.basic_ok(header)
            )
            if not allowed:
                self.send_response(401)
                if registry.bearer:
                    realm = f"http://{registry.host}/token"
                    self.send_header("WWW-Authenticate", f'Bearer realm="{realm}",service="loopback"')
                else:
                    self.send_header("WWW-Authenticate", 'Basic realm="loopback"')
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if self.path in ("/v2/", "/v2"):
                self._send(200, b"{}", "application/json", None, body)
                return
            name_match = _MANIFEST.match(self.path) or _BLOB.match(self.path)
            if name_match and name_match["name"] in registry.fail_with:
                status = registry.fail_with[name_match["name"]]
                self._send(status, b'{"errors":[{"code":"UNAVAILABLE"}]}', "application/json", None, body)
                return
            if match := _MANIFEST.match(self.path):
                ref = match["ref"]
                digest = ref if ref.startswith("sha256:") else registry.tags.get((match["name"], ref))
                blob = registry.blobs.get(digest or "")
            elif match := _BLOB.match(self.path):
                blob = registry.blobs.get(match["digest"])
            if blob is None:
                self._send(404, b'{"errors":[{"code":"NOT_FOUND"}]}', "application/json", None, body)
                return
            self._send(200, blob.data, blob.media_type, blob.digest, body)
            if body:
                registry.count(blob, is_blob=_BLOB.match(self.path) is not None)

        def _send(self, status: int, data: bytes, media_type: str, digest: str | None, body: bool) -> None:
            self.send_response(status)
            self.send_header("Content-Type", media_type)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Docker-Distribution-API-Version", "registry/2.0")
            if digest:
                self.send_header("Docker-Content-Digest", digest)
            self.end_headers()
            if body:
                self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass

    return Handler
