"""`df`: the report as terminal tables or JSON (pure formatting).

The `docker system df -v` of a Kubernetes node: images with SIZE, SHARED SIZE
and UNIQUE SIZE, pods with fair-share attribution, bases, and one image's
layers bottom-up with the history step that made each and who shares it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from exporter.accounting import ImageReport, NodeReport
from exporter.facts import NodeFacts
from exporter.parse import history_per_layer


def human_bytes(n: int) -> str:
    """Sizes the way `docker system df` prints them (SI units).

    >>> human_bytes(0), human_bytes(999), human_bytes(1_500_000)
    ('0B', '999B', '1.5MB')
    """
    value = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(value) < 1000 or unit == "TB":
            return f"{int(value)}{unit}" if unit == "B" else f"{value:.3g}{unit}"
        value /= 1000
    return f"{n}B"


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [[str(c) for c in headers], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return "\n".join("   ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells)


def summary(report: NodeReport) -> str:
    t = report.totals
    saved = t.logical - t.physical
    node = report.node_name or "this node"
    return (
        f"Node {node} ({report.runtime_name} {report.runtime_version}, {report.snapshotter}): "
        f"{t.images} images, {t.layers} layers, {t.pods} pods, {t.containers} containers\n"
        f"Unpacked on disk: {human_bytes(t.physical)} physical for {human_bytes(t.logical)} logical "
        f"(sharing saves {human_bytes(saved)}); shared {human_bytes(t.shared)}, unique {human_bytes(t.unique)}, "
        f"reclaimable {human_bytes(t.reclaimable)}\n"
        f"Compressed layers in the content store: {human_bytes(t.content)}; "
        f"container writable layers: {human_bytes(t.writable)}"
    )


def images_table(report: NodeReport) -> str:
    rows = [
        (
            i.name,
            _short(i.image_id),
            human_bytes(i.size),
            human_bytes(i.shared),
            human_bytes(i.unique),
            i.containers,
            i.base,
        )
        for i in report.images
    ]
    return table(("IMAGE", "IMAGE ID", "SIZE", "SHARED SIZE", "UNIQUE SIZE", "CONTAINERS", "BASE"), rows)


def pods_table(report: NodeReport) -> str:
    rows = [
        (
            p.namespace,
            p.name,
            p.containers,
            human_bytes(p.bytes),
            human_bytes(p.shared),
            human_bytes(p.unique),
            human_bytes(p.attributed),
            human_bytes(p.writable),
        )
        for p in report.pods
    ]
    return table(
        ("NAMESPACE", "POD", "CONTAINERS", "SIZE", "SHARED SIZE", "UNIQUE SIZE", "ATTRIBUTED", "WRITABLE"), rows
    )


def bases_table(report: NodeReport) -> str:
    rows = [(b.name, b.source, b.layers, human_bytes(b.bytes), b.images, b.pods) for b in report.bases]
    return table(("BASE", "SOURCE", "LAYERS", "SIZE", "IMAGES", "PODS"), rows)


def image_layers(report: NodeReport, facts: NodeFacts, image: ImageReport) -> list[dict[str, Any]]:
    """One image's layers bottom-up, with the history step and who shares each."""
    image_facts = next(f for f in facts.images if f.image_id == image.image_id)
    steps = history_per_layer(image_facts.diff_ids, image_facts.history)
    rows = []
    for chain_id, step in zip(image.chain, steps, strict=True):
        layer = report.layers[chain_id]
        rows.append(
            {
                "chain_id": chain_id,
                "diff_id": layer.diff_id,
                "size": layer.size,
                "present": layer.present,
                "created_by": step.created_by if step else "",
                "images": layer.images,
                "pods": layer.pods,
            }
        )
    return rows


def image_layers_table(rows: list[dict[str, Any]]) -> str:
    return table(
        ("#", "SIZE", "CHAIN ID", "IMAGES", "PODS", "CREATED BY"),
        [
            (
                i,
                human_bytes(r["size"]) if r["present"] else "missing",
                _short(r["chain_id"]),
                r["images"],
                r["pods"],
                _one_line(r["created_by"]),
            )
            for i, r in enumerate(rows)
        ],
    )


def report_dict(report: NodeReport) -> dict[str, Any]:
    """Everything, exact integers of bytes, for `--output json`."""
    return {
        "node": report.node_name,
        "runtime": {"name": report.runtime_name, "version": report.runtime_version, "snapshotter": report.snapshotter},
        "totals": asdict(report.totals),
        "images": [{**asdict(i), "chain": list(i.chain), "repo_tags": list(i.repo_tags)} for i in report.images],
        "pods": [{**asdict(p), "image_ids": list(p.image_ids)} for p in report.pods],
        "bases": [asdict(b) for b in report.bases],
        "filesystems": [asdict(f) for f in report.filesystems],
    }


def to_json(data: Any) -> str:
    return json.dumps(data, indent=2, sort_keys=True)


def _short(digest: str) -> str:
    return digest.removeprefix("sha256:")[:12]


def _one_line(text: str, limit: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
