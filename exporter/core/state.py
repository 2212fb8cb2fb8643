"""What a scrape shows: the latest node report and the exporter's own health (plain data)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from exporter.core.accounting import NodeReport
from exporter.core.facts import NodeFacts


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
    layers_read: int = 0
    layers_loaded: int = 0


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
class ExporterState:
    """One published refresh: the report, the facts it came from, and how the refresh went."""

    generation: int = 0
    up: bool = False
    report: NodeReport | None = None
    facts: NodeFacts | None = None
    last_error: str = "no refresh yet"
    last_duration_seconds: float = 0.0
    last_success_timestamp: float = 0.0
    refreshes: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    calls: dict[str, int] = field(default_factory=dict)
    # None when the layer analysis is off.
    waste: WasteReport | None = None
    # Changes only when `report` or `waste` does (a new object): /metrics renders
    # their series again only then.
    figures_generation: int = 0
