"""`df`: the report as terminal tables, JSON or YAML (pure formatting).

The `docker system df -v` of a Kubernetes node: images with SIZE, SHARED SIZE
and UNIQUE SIZE, pods with fair-share attribution, bases, and one image's
layers bottom-up with the history step that made each and who shares it.
`Style` says what kubectl's `-o wide` and `--no-trunc` say: more columns, and
digests and history steps in full.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import yaml

from exporter.core.accounting import ImageReport, NodeReport
from exporter.core.facts import NodeFacts, history_per_layer
from exporter.core.state import ImageWasteDetail
from exporter.formatting import human_bytes, one_line, short_digest, table


@dataclass(frozen=True, slots=True)
class Style:
    wide: bool = False  # -o wide: the compressed size, base source and image reference; pods' workloads
    full: bool = False  # --no-trunc: whole digests and history steps

    def digest(self, digest: str) -> str:
        return digest if self.full else short_digest(digest)

    def step(self, text: str) -> str:
        return " ".join(text.split()) if self.full else one_line(text)


TABLE = Style()


def summary(report: NodeReport) -> str:
    t = report.totals
    saved = t.logical - t.physical
    node = report.node_name or "this node"
    warnings = ""
    if report.snapshotter_mismatch:
        warnings += (
            f"\nWARNING: layers read from snapshotter {report.snapshotter} but the runtime unpacks images with "
            f"{report.runtime_snapshotter}: {t.missing_layers} layers missing"
        )
    elif t.missing_layers:
        warnings += f"\n{t.missing_layers} layers have no {report.snapshotter} snapshot (not unpacked): bytes unknown"
    if t.remote_layers:
        warnings += f"\n{t.remote_layers} layers are lazily pulled (remote snapshots): 0 bytes on this node"
    return (
        f"Node {node} ({report.runtime_name} {report.runtime_version}, {report.snapshotter}): "
        f"{t.images} images, {t.layers} layers, {t.pods} pods, {t.containers} containers\n"
        f"Unpacked on disk: {human_bytes(t.physical)} physical for {human_bytes(t.logical)} logical "
        f"(sharing saves {human_bytes(saved)}); shared {human_bytes(t.shared)}, unique {human_bytes(t.unique)}, "
        f"reclaimable {human_bytes(t.reclaimable)}\n"
        f"Compressed layers in the content store: {human_bytes(t.content)}; "
        f"container writable layers: {human_bytes(t.writable)}\n"
        f"Unused images: {human_bytes(t.unused_logical)} by their sizes (what image GC assumes it frees), "
        f"{human_bytes(t.reclaimable)} really freed; duplicate layer copies: {t.duplicate_layers} "
        f"({human_bytes(t.duplicate_bytes)})"
        f"{warnings}"
    )


def created_text(created: float | None) -> str:
    """An image's build time in UTC to the minute ("" when unknown).

    >>> created_text(1704164645.5)
    '2024-01-02 03:04'
    """
    if created is None:
        return ""
    return datetime.fromtimestamp(created, UTC).strftime("%Y-%m-%d %H:%M")


def images_table(report: NodeReport, style: Style = TABLE) -> str:
    headers = ("IMAGE", "IMAGE ID", "SIZE", "SHARED SIZE", "UNIQUE SIZE", "CONTAINERS", "CREATED", "BASE")
    wide = ("COMPRESSED", "BASE SOURCE", "IMAGE REF") if style.wide else ()
    rows = [
        (
            i.name,
            style.digest(i.image_id),
            human_bytes(i.size),
            human_bytes(i.shared),
            human_bytes(i.unique),
            i.containers,
            created_text(i.created),
            i.base + (f":{i.base_version}" if i.base_version else ""),
            *((human_bytes(i.compressed_size), i.base_source, i.image_ref) if style.wide else ()),
        )
        for i in report.images
    ]
    return table((*headers, *wide), rows)


def pods_table(report: NodeReport, style: Style = TABLE) -> str:
    headers = ("NAMESPACE", "POD", "CONTAINERS", "SIZE", "SHARED SIZE", "UNIQUE SIZE", "ATTRIBUTED", "WRITABLE")
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
            *((f"{p.workload.kind}/{p.workload.name}" if p.workload else "",) if style.wide else ()),
        )
        for p in report.pods
    ]
    return table((*headers, *(("WORKLOAD",) if style.wide else ())), rows)


def bases_table(report: NodeReport) -> str:
    """Bases with their versions; SIZE adds up over bases, STACK is everything under the base;
    VERSIONS and DRIFT are the family's."""
    families = {f.name: f for f in report.families}
    rows = [
        (
            b.name,
            b.version,
            b.source,
            b.layers,
            human_bytes(b.bytes),
            human_bytes(b.stack_bytes),
            b.images,
            b.pods,
            len(families[b.name].versions) if b.name in families else "",
            human_bytes(families[b.name].drift) if b.name in families else "",
        )
        for b in report.bases
    ]
    return table(("BASE", "VERSION", "SOURCE", "LAYERS", "SIZE", "STACK", "IMAGES", "PODS", "VERSIONS", "DRIFT"), rows)


def duplicates_table(report: NodeReport, style: Style = TABLE) -> str:
    """Layer content stored more than once: each copy, and the images holding it."""
    rows = [
        (
            style.digest(d.diff_id) if i == 0 else "",
            human_bytes(d.bytes) if i == 0 else "",
            style.digest(copy.chain_id),
            human_bytes(copy.size),
            ", ".join(copy.images),
        )
        for d in report.duplicates
        for i, copy in enumerate(d.copies)
    ]
    return table(("DIFF ID", "DUPLICATE", "CHAIN ID", "SIZE", "IMAGES"), rows)


def image_layers(
    report: NodeReport, facts: NodeFacts, image: ImageReport, waste: ImageWasteDetail | None = None
) -> list[dict[str, Any]]:
    """One image's layers bottom-up, with the history step, who shares each and its wasted bytes."""
    image_facts = next(f for f in facts.images if f.image_id == image.image_id)
    steps = history_per_layer(image_facts.diff_ids, image_facts.history)
    rows = []
    for index, (chain_id, step) in enumerate(zip(image.chain, steps, strict=True)):
        layer = report.layers[chain_id]
        wasted = {"wasted_bytes": waste.layer_wasted_bytes[index]} if waste is not None else {}
        rows.append(
            {
                **wasted,
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


def _wasted(value: int | None) -> str:
    return "unknown" if value is None else human_bytes(value)


def image_layers_table(rows: list[dict[str, Any]], style: Style = TABLE) -> str:
    with_waste = any("wasted_bytes" in r for r in rows)
    return table(
        ("#", "SIZE", *(("WASTED",) if with_waste else ()), "CHAIN ID", "IMAGES", "PODS", "CREATED BY"),
        [
            (
                i,
                human_bytes(r["size"]) if r["present"] else "missing",
                *((_wasted(r.get("wasted_bytes")),) if with_waste else ()),
                style.digest(r["chain_id"]),
                r["images"],
                r["pods"],
                style.step(r["created_by"]),
            )
            for i, r in enumerate(rows)
        ],
    )


HIDDEN_FILES_SHOWN = 10


def image_waste_text(waste: ImageWasteDetail, shown: int = HIDDEN_FILES_SHOWN) -> str:
    """The largest hidden files (or why the figure is unknown)."""
    if waste.wasted_bytes is None:
        return "Wasted bytes unknown: " + "; ".join(
            f"layer {short_digest(diff_id)} unavailable ({reason})" for diff_id, reason in waste.unavailable
        )
    if not waste.hidden_files:
        return "No file of this image is hidden by a later layer: nothing wasted."
    rows = [(human_bytes(h.size), h.layer, h.hidden_by, h.path) for h in waste.hidden_files[:shown]]
    text = f"Largest hidden files (stored in layer #, hidden by a later layer; {waste.hidden_file_count} in all):\n"
    text += table(("SIZE", "IN LAYER", "HIDDEN BY", "PATH"), rows)
    if waste.hidden_file_count > shown:
        text += f"\n... and {waste.hidden_file_count - shown} more (--output json lists them all)"
    return text


def image_dict(image: ImageReport, rows: list[dict[str, Any]], waste: ImageWasteDetail | None) -> dict[str, Any]:
    """`df --image --output json`: the layers and, when the blobs could be read, every hidden file."""
    data: dict[str, Any] = {"image": image.name, "image_id": image.image_id, "layers": rows}
    if waste is not None:
        data["wasted_bytes"] = waste.wasted_bytes
        data["hidden_files"] = [asdict(h) for h in waste.hidden_files]
        data["unavailable_layers"] = [{"diff_id": d, "reason": r} for d, r in waste.unavailable]
    return data


def report_dict(report: NodeReport) -> dict[str, Any]:
    """Everything, exact integers of bytes, for `--output json`."""
    return {
        "node": report.node_name,
        "runtime": {
            "name": report.runtime_name,
            "version": report.runtime_version,
            "snapshotter": report.snapshotter,
            "runtime_snapshotter": report.runtime_snapshotter,
            "layer_store": report.layer_store,
        },
        "totals": asdict(report.totals),
        "images": [{**asdict(i), "chain": list(i.chain), "repo_tags": list(i.repo_tags)} for i in report.images],
        "pods": [{**asdict(p), "image_ids": list(p.image_ids)} for p in report.pods],
        "bases": [asdict(b) for b in report.bases],
        "families": [{**asdict(f), "versions": list(f.versions), "drift": f.drift} for f in report.families],
        "duplicates": [
            {
                "diff_id": d.diff_id,
                "bytes": d.bytes,
                "copies": [{**asdict(c), "images": list(c.images)} for c in d.copies],
            }
            for d in report.duplicates
        ],
        "filesystems": [asdict(f) for f in report.filesystems],
    }


def to_json(data: Any) -> str:
    return json.dumps(data, indent=2, sort_keys=True)


def to_yaml(data: Any) -> str:
    """The same document as to_json, as YAML (kubectl's -o yaml)."""
    return yaml.safe_dump(data, sort_keys=True, allow_unicode=True)


def serialize(data: Any, output: str) -> str:
    """`--output json` or `--output yaml`."""
    return to_yaml(data).rstrip("\n") if output == "yaml" else to_json(data)
