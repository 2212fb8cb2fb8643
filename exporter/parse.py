"""Parsers for what the runtime hands over (pure, and strict about shape).

Every function either returns well-formed values or raises `ParseError` with a
message that says what was wrong; callers skip the one bad item and go on.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from exporter.chain import chain_ids
from exporter.facts import HistoryEntry, LayerBlob

DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
# The runtime's hard limit on layers per image (moby layer_store maxLayerDepth).
MAX_LAYERS = 125
# Manifests and indexes are small; anything larger is not one.
MAX_MANIFEST_BYTES = 4 * 1024 * 1024

POD_NAME_LABEL = "io.kubernetes.pod.name"
POD_NAMESPACE_LABEL = "io.kubernetes.pod.namespace"
POD_UID_LABEL = "io.kubernetes.pod.uid"
CONTAINER_NAME_LABEL = "io.kubernetes.container.name"

INDEX_MEDIA_TYPES = frozenset(
    {
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
    }
)


class ParseError(ValueError):
    """The runtime returned something that is not the expected shape."""


@dataclass(frozen=True, slots=True)
class ImageDetails:
    """What an image config says about its layers."""

    diff_ids: tuple[str, ...]
    history: tuple[HistoryEntry, ...]
    chain_ids: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if len(self.chain_ids) != len(self.diff_ids):
            object.__setattr__(self, "chain_ids", chain_ids(self.diff_ids))


@dataclass(frozen=True, slots=True)
class Manifest:
    """An image manifest: its config digest and compressed layer blobs."""

    config_digest: str
    layers: tuple[LayerBlob, ...]


@dataclass(frozen=True, slots=True)
class Index:
    """An image index (multi-platform): the manifests it points to."""

    manifests: tuple[str, ...]


def _digest(value: object, what: str) -> str:
    if not isinstance(value, str) or not DIGEST_RE.match(value):
        raise ParseError(f"{what} is not a sha256 digest: {str(value)[:80]!r}")
    return value


def _load_json(text: str | bytes, what: str) -> Any:
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise ParseError(f"{what} is not valid JSON: {exc}") from None


def image_details_from_verbose_info(info: Mapping[str, str]) -> ImageDetails:
    """Diff IDs and history from CRI `ImageStatus(verbose=true).info`.

    containerd puts `{"chainID": ..., "imageSpec": <OCI image config>}` under
    the key "info" (CRI-O puts the config there too, without chainID).
    """
    raw = info.get("info")
    if raw is None:
        raise ParseError("verbose image status has no 'info' key")
    doc = _load_json(raw, "verbose image info")
    if not isinstance(doc, dict):
        raise ParseError("verbose image info is not a JSON object")
    spec = doc.get("imageSpec")
    if not isinstance(spec, dict):
        raise ParseError("verbose image info has no imageSpec object")
    return image_details_from_config(spec)


def image_details_from_config(config: Mapping[str, Any]) -> ImageDetails:
    """Diff IDs and history from an OCI image config object."""
    rootfs = config.get("rootfs")
    if not isinstance(rootfs, dict):
        raise ParseError("image config has no rootfs object")
    diff_ids = rootfs.get("diff_ids")
    if not isinstance(diff_ids, list):
        raise ParseError("image config rootfs.diff_ids is not a list")
    if len(diff_ids) > MAX_LAYERS:
        raise ParseError(f"image config has {len(diff_ids)} layers, more than {MAX_LAYERS}")
    parsed = tuple(_digest(d, "rootfs.diff_ids entry") for d in diff_ids)
    return ImageDetails(diff_ids=parsed, history=_history(config.get("history")))


def _history(value: object) -> tuple[HistoryEntry, ...]:
    # History is informational: a malformed entry is shown blank, not fatal.
    if not isinstance(value, list):
        return ()
    entries = []
    for item in value[: MAX_LAYERS * 4]:
        if not isinstance(item, dict):
            continue
        entries.append(
            HistoryEntry(
                created_by=_text(item.get("created_by")),
                empty_layer=item.get("empty_layer") is True,
                created=_text(item.get("created")),
                comment=_text(item.get("comment")),
            )
        )
    return tuple(entries)


def _text(value: object, limit: int = 4096) -> str:
    return value[:limit] if isinstance(value, str) else ""


def history_per_layer(diff_ids: tuple[str, ...], history: tuple[HistoryEntry, ...]) -> tuple[HistoryEntry | None, ...]:
    """The history entry that created each layer, bottom-up.

    Entries with `empty_layer: true` (ENV, CMD, ...) made no layer and are
    skipped. If the counts disagree the history cannot be trusted, and every
    layer gets None.
    """
    made_layers = [entry for entry in history if not entry.empty_layer]
    if len(made_layers) != len(diff_ids):
        return tuple(None for _ in diff_ids)
    return tuple(made_layers)


def parse_manifest_or_index(blob: bytes) -> Manifest | Index:
    """Parse an OCI/Docker manifest or index read from the content store."""
    if len(blob) > MAX_MANIFEST_BYTES:
        raise ParseError(f"manifest blob of {len(blob)} bytes is too large")
    doc = _load_json(blob, "manifest")
    if not isinstance(doc, dict):
        raise ParseError("manifest is not a JSON object")
    if doc.get("mediaType") in INDEX_MEDIA_TYPES or "manifests" in doc:
        manifests = doc.get("manifests")
        if not isinstance(manifests, list):
            raise ParseError("index has no manifests list")
        return Index(tuple(_digest(_field(m, "digest"), "index manifest digest") for m in manifests))
    config = doc.get("config")
    layers = doc.get("layers")
    if not isinstance(config, dict) or not isinstance(layers, list):
        raise ParseError("manifest has no config or layers")
    blobs = []
    for layer in layers[:MAX_LAYERS]:
        size = _field(layer, "size")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise ParseError(f"manifest layer size is not a non-negative integer: {size!r}")
        blobs.append(LayerBlob(_digest(_field(layer, "digest"), "manifest layer digest"), size))
    return Manifest(_digest(config.get("digest"), "manifest config digest"), tuple(blobs))


def _field(obj: object, key: str) -> object:
    if not isinstance(obj, dict):
        raise ParseError(f"descriptor is not an object: {str(obj)[:80]!r}")
    return obj.get(key)


@dataclass(frozen=True, slots=True)
class PodIdentity:
    namespace: str
    name: str
    uid: str


def pod_identity(labels: Mapping[str, str], namespace: str = "", name: str = "", uid: str = "") -> PodIdentity:
    """Which pod an object belongs to: the kubelet's labels, else CRI metadata."""
    return PodIdentity(
        namespace=labels.get(POD_NAMESPACE_LABEL) or namespace,
        name=labels.get(POD_NAME_LABEL) or name,
        uid=labels.get(POD_UID_LABEL) or uid,
    )


def sandbox_image_from_status_info(info: Mapping[str, str]) -> str:
    """The pause image reference from CRI `Status(verbose=true).info`.

    containerd 1.x: info["config"] is its CRI config with "sandboxImage";
    2.x keeps it under pinned images ("pinnedImages": {"sandbox": ...}).
    Returns "" when the runtime does not say.
    """
    raw = info.get("config")
    if not raw:
        return ""
    try:
        doc = json.loads(raw)
    except ValueError:
        return ""
    if not isinstance(doc, dict):
        return ""
    for holder in (doc, doc.get("containerd"), doc.get("pinnedImages")):
        if isinstance(holder, dict):
            for key in ("sandboxImage", "sandbox"):
                value = holder.get(key)
                if isinstance(value, str) and value:
                    return value
    return ""


def normalize_endpoint(endpoint: str) -> str:
    """A gRPC target for the runtime socket: `unix://` URLs and bare paths.

    >>> normalize_endpoint("/run/containerd/containerd.sock")
    'unix:///run/containerd/containerd.sock'
    >>> normalize_endpoint("unix:///run/k3s/containerd/containerd.sock")
    'unix:///run/k3s/containerd/containerd.sock'
    """
    endpoint = endpoint.strip()
    if endpoint.startswith("unix://"):
        path = endpoint[len("unix://") :]
    elif endpoint.startswith("/"):
        path = endpoint
    else:
        raise ParseError(f"runtime endpoint must be unix:///path or /path, got {endpoint!r}")
    if not path.startswith("/"):
        raise ParseError(f"runtime endpoint path must be absolute, got {endpoint!r}")
    return "unix://" + path


def socket_path(endpoint: str) -> str:
    """The filesystem path of a normalized `unix://` endpoint."""
    return normalize_endpoint(endpoint)[len("unix://") :]
