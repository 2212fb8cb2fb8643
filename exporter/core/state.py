"""What a scrape shows besides the node report: the exporter's health and the wasted-bytes figures (plain data)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class WasteReport:
    """Where the layer analysis stands, and the wasted bytes it could compute.

    `images` has a figure only for images whose every layer is analysed;
    `node_wasted_bytes` is None until every layer of every image in `image_ids`
    is (a partial figure would be a wrong one).
    """

    image_ids: frozenset[str] = frozenset()
    images: Mapping[str, int] = field(default_factory=dict)
    node_wasted_bytes: int | None = None
    pending_layers: int = 0
    unavailable_layers: int = 0


@dataclass(frozen=True, slots=True)
class HiddenFileDetail:
    """A hidden file, with its path: the layers are indexes into the image's layers, bottom-up."""

    path: str
    size: int
    layer: int
    hidden_by: int


@dataclass(frozen=True, slots=True)
class ImageWasteDetail:
    """One image's wasted bytes, per layer, and its hidden files largest first.

    None figures: some layer could not be read (`unavailable` says which and why).
    """

    wasted_bytes: int | None
    layer_wasted_bytes: tuple[int | None, ...]
    hidden_files: tuple[HiddenFileDetail, ...]
    hidden_file_count: int
    unavailable: tuple[tuple[str, str], ...]  # (diff ID, reason)


@dataclass(frozen=True, slots=True)
class RefreshStatus:
    """How the last refresh went: the exporter's own health, as /metrics and /readyz say it."""

    generation: int = 0
    up: bool = False
    last_error: str = "no refresh yet"
    last_duration_seconds: float = 0.0
    last_success_timestamp: float = 0.0
    refreshes: int = 0
    errors: Mapping[str, int] = field(default_factory=dict)
    calls: Mapping[str, int] = field(default_factory=dict)
