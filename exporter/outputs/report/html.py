"""The report as one self-contained HTML page with SVG charts: nothing is fetched at view time, no JavaScript."""

from __future__ import annotations

import html
from collections import defaultdict
from collections.abc import Sequence

from exporter.core.cluster import ClusterReport, ImageRow, NodeRow
from exporter.formatting import human_bytes
from exporter.outputs.report.views import BYTE_HEADERS, cell_text, rows

_PALETTE = [
    "#4e79a7",
    "#f28e2b",
    "#59a14f",
    "#e15759",
    "#76b7b2",
    "#edc948",
    "#b07aa1",
    "#ff9da7",
    "#9c755f",
    "#bab0ac",
]


def _esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def stacked_bars_svg(nodes: Sequence[NodeRow], width: int = 900) -> str:
    """Horizontal bars per node: shared and unique physical bytes."""
    bar, gap, label_w = 22, 8, 180
    height = max(1, len(nodes)) * (bar + gap) + 40
    peak = max((n.physical for n in nodes), default=0) or 1
    scale = (width - label_w - 120) / peak
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{width}" height="{height}" '
        f'role="img" aria-label="Image bytes per node, shared and unique">'
    ]
    for i, n in enumerate(nodes):
        y = 10 + i * (bar + gap)
        shared_w, unique_w = n.shared * scale, n.unique * scale
        parts.append(f'<text x="{label_w - 8}" y="{y + bar * 0.7}" text-anchor="end">{_esc(n.node)}</text>')
        parts.append(
            f'<rect class="shared" x="{label_w}" y="{y}" width="{shared_w:.1f}" height="{bar}">'
            f"<title>{_esc(n.node)} shared {human_bytes(n.shared)}</title></rect>"
        )
        parts.append(
            f'<rect class="unique" x="{label_w + shared_w:.1f}" y="{y}" width="{unique_w:.1f}" '
            f'height="{bar}"><title>{_esc(n.node)} unique {human_bytes(n.unique)}</title></rect>'
        )
        parts.append(
            f'<text x="{label_w + shared_w + unique_w + 6:.1f}" y="{y + bar * 0.7}">{human_bytes(n.physical)}</text>'
        )
    legend_y = height - 16
    parts.append(
        f'<rect class="shared" x="{label_w}" y="{legend_y - 10}" width="12" height="12"/>'
        f'<text x="{label_w + 16}" y="{legend_y}">shared (layers used by 2+ images)</text>'
        f'<rect class="unique" x="{label_w + 280}" y="{legend_y - 10}" width="12" height="12"/>'
        f'<text x="{label_w + 296}" y="{legend_y}">unique</text>'
    )
    parts.append("</svg>")
    return "".join(parts)


def squarify(
    values: Sequence[float], x: float, y: float, w: float, h: float
) -> list[tuple[float, float, float, float]]:
    """Squarified treemap layout (Bruls et al.) of values, largest first, into a rectangle."""
    total = sum(values)
    if total <= 0 or not values:
        return [(x, y, 0.0, 0.0) for _ in values]
    areas = [v * w * h / total for v in values]
    rects: list[tuple[float, float, float, float]] = []
    row: list[float] = []
    i = 0

    def worst(row_areas: list[float], side: float) -> float:
        s = sum(row_areas)
        return max(max(side * side * a / (s * s), (s * s) / (side * side * a)) for a in row_areas if a > 0)

    while i < len(areas):
        side = min(w, h)
        candidate = [*row, areas[i]]
        if not row or worst(candidate, side) <= worst(row, side):
            row = candidate
            i += 1
            continue
        x, y, w, h = _lay_row(row, x, y, w, h, rects)
        row = []
    if row:
        _lay_row(row, x, y, w, h, rects)
    return rects


def _lay_row(
    row: list[float], x: float, y: float, w: float, h: float, rects: list[tuple[float, float, float, float]]
) -> tuple[float, float, float, float]:
    s = sum(row)
    if w >= h:  # a column on the left
        col_w = s / h if h else 0
        cy = y
        for a in row:
            rh = a / col_w if col_w else 0
            rects.append((x, cy, col_w, rh))
            cy += rh
        return x + col_w, y, w - col_w, h
    row_h = s / w if w else 0
    cx = x
    for a in row:
        rw = a / row_h if row_h else 0
        rects.append((cx, y, rw, row_h))
        cx += rw
    return x, y + row_h, w, h - row_h


def treemap_svg(report: ClusterReport, width: int = 900, height: int = 420) -> str:
    """Bases, each divided into its images, sized by image bytes summed over nodes."""
    by_base: dict[str, list[ImageRow]] = defaultdict(list)
    for image in report.images:
        if image.size > 0:
            by_base[image.base or "unknown"].append(image)
    groups = sorted(by_base.items(), key=lambda kv: -sum(i.size for i in kv[1]))
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{width}" height="{height}" role="img" '
        f'aria-label="Treemap of base images and the images on them, by bytes">'
    ]
    outer = squarify([sum(i.size for i in imgs) for _, imgs in groups], 0, 0, width, height)
    for g, ((base, imgs), (bx, by, bw, bh)) in enumerate(zip(groups, outer, strict=True)):
        color = _PALETTE[g % len(_PALETTE)]
        inner = squarify([i.size for i in imgs], bx + 2, by + 18, max(bw - 4, 0), max(bh - 20, 0))
        parts.append(
            f'<g><rect class="base" x="{bx:.1f}" y="{by:.1f}" width="{bw:.1f}" height="{bh:.1f}" '
            f'fill="{color}" fill-opacity="0.25"><title>{_esc(base)}</title></rect>'
        )
        if bw > 60:
            parts.append(f'<text x="{bx + 4:.1f}" y="{by + 13:.1f}" class="base-label">{_esc(base)}</text>')
        for image, (ix, iy, iw, ih) in zip(imgs, inner, strict=True):
            parts.append(
                f'<rect class="image" x="{ix:.1f}" y="{iy:.1f}" width="{iw:.1f}" height="{ih:.1f}" '
                f'fill="{color}"><title>{_esc(image.image)} {human_bytes(image.size)}</title></rect>'
            )
            if iw > 90 and ih > 14:
                parts.append(
                    f'<text x="{ix + 3:.1f}" y="{iy + 12:.1f}" class="image-label">'
                    f"{_esc(image.image.rsplit('/', 1)[-1][: int(iw / 7)])}</text>"
                )
        parts.append("</g>")
    parts.append("</svg>")
    return "".join(parts)


def _html_table(headers: Sequence[str], data: Sequence[Sequence[object]]) -> str:
    byte_columns = {i for i, header in enumerate(headers) if header in BYTE_HEADERS}
    head = "".join(f"<th>{_esc(h)}</th>" for h in headers)
    body = "".join(
        "<tr>"
        + "".join(
            f"<td class=num>{_esc(cell_text(headers[i], v))}</td>" if i in byte_columns else f"<td>{_esc(v)}</td>"
            for i, v in enumerate(row)
        )
        + "</tr>"
        for row in data
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def to_html(report: ClusterReport, title: str = "Layer sharing report") -> str:
    off = [w for w in report.workloads if not w.on_catalog]
    saved = report.logical - report.physical
    ratio = saved / report.logical if report.logical else 0.0
    node_headers, node_rows = rows(report, "nodes")
    base_headers, base_rows = rows(report, "bases")
    off_rows = [[w.namespace, w.kind, w.name, w.pods, w.attributed, " ".join(w.bases) or "(none)"] for w in off]
    family_rows = [
        [f.base, len(f.versions), " ".join(v or "(none)" for v in f.versions), f.drift] for f in report.families
    ]
    unreachable = "".join(f"<li>{_esc(n)}: {_esc(e)}</li>" for n, e in report.unreachable)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{_esc(title)}</title>
<style>
body {{ font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #222; }}
h1 {{ margin-bottom: 4px; }} h2 {{ margin-top: 32px; }}
.cards {{ display: flex; gap: 16px; flex-wrap: wrap; }}
.card {{ border: 1px solid #ddd; border-radius: 8px; padding: 10px 16px; min-width: 150px; }}
.card b {{ display: block; font-size: 22px; }}
svg.chart text {{ font-size: 12px; fill: #333; }}
rect.shared {{ fill: #4e79a7; }} rect.unique {{ fill: #f28e2b; }}
rect.image {{ stroke: #fff; stroke-width: 1; }} rect.base {{ stroke: #555; stroke-width: 1; }}
.base-label {{ font-weight: bold; }}
table {{ border-collapse: collapse; margin-top: 8px; }}
th, td {{ border-bottom: 1px solid #eee; padding: 4px 10px; text-align: left; }}
td.num {{ text-align: right; font-variant-numeric: tabular-nums; }}
.warn {{ color: #b00; }}
</style></head><body>
<h1>{_esc(title)}</h1>
<p>{len(report.nodes)} node{
        "" if len(report.nodes) == 1 else "s"
    }. Bytes are unpacked layer bytes on disk unless marked compressed.</p>
<div class="cards">
<div class="card">Physical image bytes<b>{human_bytes(report.physical)}</b></div>
<div class="card">Without sharing<b>{human_bytes(report.logical)}</b></div>
<div class="card">Saved by sharing<b>{human_bytes(saved)} ({ratio:.0%})</b></div>
<div class="card">Held back by unused images<b>{human_bytes(report.reclaimable)}</b></div>
<div class="card">Image GC assumes it frees<b>{human_bytes(report.unused_logical)}</b></div>
<div class="card">Duplicate layer copies<b>{human_bytes(report.duplicate_bytes)}</b></div>
<div class="card">Compressed layers kept<b>{human_bytes(report.content)}</b></div>
</div>
{f'<p class="warn">Unreachable nodes:</p><ul class="warn">{unreachable}</ul>' if unreachable else ""}
<h2>Image bytes per node</h2>
{stacked_bars_svg(report.nodes)}
<h2>Base images and the images on them</h2>
{treemap_svg(report)}
<h2>Workloads off the standard bases</h2>
{
        _html_table(["NAMESPACE", "KIND", "WORKLOAD", "PODS", "ATTRIBUTED", "BASES"], off_rows)
        if off_rows
        else "<p>Every attributed workload stands on a catalog base (or attribution is off).</p>"
    }
<h2>Nodes</h2>
{_html_table(node_headers, node_rows)}
<h2>Bases</h2>
{_html_table(base_headers, base_rows)}
<h2>Base versions and drift</h2>
{
        _html_table(["BASE", "VERSIONS", "SEEN", "DRIFT"], family_rows)
        if family_rows
        else "<p>No catalog or declared base family on these nodes.</p>"
    }
</body></html>
"""
