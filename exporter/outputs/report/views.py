"""The report's views (nodes, bases, workloads, images) as sorted rows of raw values."""

from __future__ import annotations

from collections.abc import Sequence

from exporter.core.cluster import BaseRow, ClusterReport, ImageRow, NodeRow, WorkloadRow
from exporter.formatting import human_bytes

VIEWS = ("nodes", "bases", "workloads", "images", "wasted")
# Columns holding bytes (printed human-readable in tables and HTML, raw in JSON and CSV).
BYTE_HEADERS = frozenset(
    {
        "PHYSICAL",
        "LOGICAL",
        "SAVED",
        "SHARED",
        "UNIQUE",
        "RECLAIMABLE",
        "UNUSED LOGICAL",
        "DUPLICATE",
        "COMPRESSED",
        "BYTES",
        "DRIFT",
        "ATTRIBUTED",
        "SIZE",
        "WASTED",
    }
)


def cell_text(header: str, value: object) -> str:
    """A cell as people read it: bytes human-readable, an unknown value "-" (never 0)."""
    if value is None:
        return "-"
    if header in BYTE_HEADERS and isinstance(value, int):
        return human_bytes(value)
    return str(value)


SORT_KEYS = {
    "nodes": (
        "physical",
        "logical",
        "saved",
        "reclaimable",
        "unused_logical",
        "duplicate_bytes",
        "content",
        "images",
        "pods",
        "node",
    ),
    "bases": ("bytes", "pods", "images", "nodes", "drift", "versions", "base"),
    "workloads": ("attributed", "pods", "nodes", "name"),
    "images": ("size", "unique", "wasted", "nodes", "image"),
    "wasted": ("wasted", "size", "nodes", "image"),
}


def rows(report: ClusterReport, view: str, sort: str = "", top: int = 0) -> tuple[list[str], list[list[object]]]:
    """One view as (headers, rows of raw values), sorted and cut to top N."""
    key = sort or SORT_KEYS[view][0]
    if key not in SORT_KEYS[view]:
        raise ValueError(f"cannot sort {view} by {key!r}; use one of {', '.join(SORT_KEYS[view])}")
    numeric = key not in ("node", "base", "name", "image")

    def order(item: object) -> object:
        value = getattr(item, key)
        if value is None:  # unknown (wasted bytes not analysed): last
            return 1
        return -value if numeric else value

    def cut(items: Sequence[object]) -> list[object]:
        ordered = sorted(items, key=order)  # type: ignore[arg-type]
        return ordered[:top] if top else ordered

    if view == "nodes":
        headers = [
            "NODE",
            "UP",
            "IMAGES",
            "PODS",
            "PHYSICAL",
            "LOGICAL",
            "SAVED",
            "SHARED",
            "UNIQUE",
            "RECLAIMABLE",
            "UNUSED LOGICAL",
            "DUPLICATE",
            "COMPRESSED",
        ]
        return headers, [
            [
                n.node,
                n.up,
                n.images,
                n.pods,
                n.physical,
                n.logical,
                n.saved,
                n.shared,
                n.unique,
                n.reclaimable,
                n.unused_logical,
                n.duplicate_bytes,
                n.content,
            ]
            for n in cut(report.nodes)
            if isinstance(n, NodeRow)
        ]
    if view == "bases":
        # VERSIONS and DRIFT are the family's (every version row repeats them).
        return ["BASE", "VERSION", "SOURCE", "NODES", "IMAGES", "PODS", "BYTES", "VERSIONS", "DRIFT"], [
            [b.base, b.version, b.source, b.nodes, b.images, b.pods, b.bytes, b.versions, b.drift]
            for b in cut(report.bases)
            if isinstance(b, BaseRow)
        ]
    if view == "workloads":
        return ["NAMESPACE", "KIND", "WORKLOAD", "NODES", "PODS", "ATTRIBUTED", "BASES", "ON CATALOG"], [
            [w.namespace, w.kind, w.name, w.nodes, w.pods, w.attributed, " ".join(w.bases), w.on_catalog]
            for w in cut(report.workloads)
            if isinstance(w, WorkloadRow)
        ]
    if view == "wasted":
        # FROM: the nodes' analysis, or the registry where no node could read the layers.
        return ["IMAGE", "NODES", "SIZE", "WASTED", "FROM"], [
            [i.image, i.nodes, i.size, i.wasted, i.wasted_from or ("nodes" if i.wasted is not None else None)]
            for i in cut(report.images)
            if isinstance(i, ImageRow)
        ]
    return ["IMAGE", "BASE", "NODES", "SIZE", "UNIQUE", "WASTED"], [
        [i.image, i.base, i.nodes, i.size, i.unique, i.wasted] for i in cut(report.images) if isinstance(i, ImageRow)
    ]
