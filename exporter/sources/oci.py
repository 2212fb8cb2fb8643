"""OCI image formats (config, manifest, index) into core facts: pure, and strict about shape.

Every runtime hands these JSON documents over in some wrapper; this module
reads the documents themselves. Every function either returns well-formed
values or raises `ParseError` with a message that says what was wrong; callers
skip the one bad item and go on.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from exporter.core.bases import declared_base_from_labels
from exporter.core.chain import chain_ids
from exporter.core.facts import DeclaredBase, HistoryEntry, LayerBlob
from exporter.errors import ParseError

DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
# The runtime's hard limit on layers per image (moby layer_store maxLayerDepth).
MAX_LAYERS = 125
# Manifests and indexes are small; anything larger is not one.
MAX_MANIFEST_BYTES = 4 * 1024 * 1024

INDEX_MEDIA_TYPES = frozenset(
    {
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
    }
)


@dataclass(frozen=True, slots=True)
class ImageDetails:
    """What an image config says about its layers."""

    diff_ids: tuple[str, ...]
    history: tuple[HistoryEntry, ...]
    chain_ids: tuple[str, ...] = ()
    # `created` in Unix seconds (None: absent or not RFC 3339).
    created: float | None = None
    # The base declared in the config's labels (org.opencontainers.image.base.*).
    declared_base: DeclaredBase | None = None

    def __post_init__(self) -> None:
        if len(self.chain_ids) != len(self.diff_ids):
            object.__setattr__(self, "chain_ids", chain_ids(self.diff_ids))


@dataclass(frozen=True, slots=True)
class Manifest:
    """An image manifest: its config digest and compressed layer blobs."""

    config_digest: str
    layers: tuple[LayerBlob, ...]
    # The base its annotations declare (org.opencontainers.image.base.*), if any.
    declared_base: DeclaredBase | None = None


@dataclass(frozen=True, slots=True)
class Index:
    """An image index (multi-platform): the manifests it points to."""

    manifests: tuple[str, ...]


def _digest(value: object, what: str) -> str:
    if not isinstance(value, str) or not DIGEST_RE.match(value):
        raise ParseError(f"{what} is not a sha256 digest: {str(value)[:80]!r}")
    return value


def load_json(text: str | bytes, what: str) -> Any:
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise ParseError(f"{what} is not valid JSON: {exc}") from None


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
    # Both are informational: malformed values are left out, not fatal.
    inner = config.get("config")
    labels = inner.get("Labels") if isinstance(inner, dict) else None
    return ImageDetails(
        diff_ids=parsed,
        history=_history(config.get("history")),
        created=parse_created(config.get("created")),
        declared_base=declared_base_from_labels(_string_map(labels)),
    )


def parse_created(value: object) -> float | None:
    """RFC 3339 time (Go's, with up to nanoseconds) as Unix seconds; None if absent or malformed.

    >>> parse_created("2024-01-02T03:04:05.123456789Z")
    1704164645.123456
    >>> parse_created("yesterday") is None
    True
    """
    if not isinstance(value, str) or not value:
        return None
    text = value.strip()
    # Python takes at most 6 fractional digits: cut Go's nanoseconds to microseconds.
    text = re.sub(r"(\.\d{6})\d+", r"\1", text)
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    # No zone is not RFC 3339; before 1970 is Go's zero time (unset), not a build time.
    if parsed.tzinfo is None or parsed.timestamp() < 0:
        return None
    return parsed.timestamp()


def _string_map(value: object) -> dict[str, str]:
    if not isinstance(value, dict):
        return {}
    return {k: _text(v) for k, v in value.items() if isinstance(k, str) and isinstance(v, str)}


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
            )
        )
    return tuple(entries)


def _text(value: object, limit: int = 4096) -> str:
    return value[:limit] if isinstance(value, str) else ""


def parse_manifest_or_index(blob: bytes) -> Manifest | Index:
    """Parse an OCI/Docker manifest or index read from the content store."""
    if len(blob) > MAX_MANIFEST_BYTES:
        raise ParseError(f"manifest blob of {len(blob)} bytes is too large")
    doc = load_json(blob, "manifest")
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
    return Manifest(
        _digest(config.get("digest"), "manifest config digest"),
        tuple(blobs),
        declared_base_from_labels(_string_map(doc.get("annotations"))),
    )


def _field(obj: object, key: str) -> object:
    if not isinstance(obj, dict):
        raise ParseError(f"descriptor is not an object: {str(obj)[:80]!r}")
    return obj.get(key)
