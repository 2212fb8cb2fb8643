"""`report --view pull-cost` and `--view locality`: rows, summaries, JSON and an HTML heatmap.

Bytes are exact integers (JSON, CSV) or human-readable (table, HTML); an unknown
figure (unpack bytes no node knows) is null or "-", never 0.
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence

from exporter.core.pull_cost import NodeRollout, RolloutReport, WorkloadLocality
from exporter.formatting import human_bytes
from exporter.outputs.pull_cost import cost_dict

ROLLOUT_HEADERS = ["NODE", "FETCH", "FETCH LAYERS", "UNPACK LAYERS", "UNPACK", "WARM", "IMAGELOCALITY ASSUMES"]
LOCALITY_HEADERS = ["WORKLOAD", "IMAGES", "WARM NODES", "NODES", "MEDIAN COLD START", "P90 COLD START", "REGISTRY"]
# Columns of bytes in these views (human-readable in tables).
BYTE_HEADERS = frozenset(
    {"FETCH", "UNPACK", "IMAGELOCALITY ASSUMES", "MEDIAN COLD START", "P90 COLD START", "REGISTRY"}
)


def cell_text(value: object, is_bytes: bool) -> str:
    """A cell as people read it: bytes human-readable, unknown "-" (never 0)."""
    if value is None:
        return "-"
    if is_bytes and isinstance(value, int) and not isinstance(value, bool):
        return human_bytes(value)
    return str(value)


def byte_columns(headers: Sequence[str]) -> list[bool]:
    """Which columns hold bytes: the named ones, and every workload column of the matrix."""
    matrix = headers[:1] == ["NODE"] and headers != ROLLOUT_HEADERS
    return [h in BYTE_HEADERS or (matrix and i > 0) for i, h in enumerate(headers)]


def _node_row(n: NodeRollout) -> list[object]:
    t = n.total
    return [n.node, t.fetch_bytes, t.fetch_layers, t.unpack_layers, t.unpack_bytes, n.warm, n.assumed]


def rollout_rows(report: RolloutReport, top: int = 0) -> tuple[list[str], list[list[object]]]:
    """Per node (the most fetched first): what it would pull, and what ImageLocality assumes."""
    ordered = sorted(report.nodes, key=lambda n: (-n.total.fetch_bytes, n.node))
    return ROLLOUT_HEADERS, [_node_row(n) for n in (ordered[:top] if top else ordered)]


def rollout_summary(refs: Sequence[str], report: RolloutReport) -> str:
    return (
        f"Rollout of {' '.join(refs)}: {human_bytes(report.registry_bytes)} ({report.registry_bytes}) leaving the "
        f"registry; {report.warm_nodes} of {len(report.nodes)} nodes warm (pull nothing); ImageLocality assumes "
        f"{human_bytes(report.assumed_registry_bytes)} ({report.assumed_registry_bytes}) (whole images by name)"
    )


def rollout_json(refs: Sequence[str], report: RolloutReport, unreachable: Sequence[tuple[str, str]]) -> str:
    doc = {
        "refs": list(refs),
        "registry_bytes": report.registry_bytes,
        "warm_nodes": report.warm_nodes,
        "nodes_answered": len(report.nodes),
        "image_locality_assumed_bytes": report.assumed_registry_bytes,
        "nodes": [
            {
                "node": n.node,
                "warm": n.warm,
                "images": [cost_dict(c) for c in n.costs],
                "total": cost_dict(n.total, with_ref=False),
                "image_locality_assumed_bytes": n.assumed,
            }
            for n in report.nodes
        ],
        "unreachable": [{"node": n, "error": e} for n, e in unreachable],
    }
    return json.dumps(doc, indent=2)


def _workload_row(w: WorkloadLocality) -> list[object]:
    r = w.rollout
    return [
        w.workload,
        " ".join(w.refs),
        r.warm_nodes,
        len(r.nodes),
        cold_start_bytes(r, 0.5),
        cold_start_bytes(r, 0.9),
        r.registry_bytes,
    ]


def cold_start_bytes(report: RolloutReport, fraction: float) -> int | None:
    """A quantile of the nodes' fetched bytes; None (unknown, never 0) when no node counts
    (none answering may run the workload's pods)."""
    return report.fetch_percentile(fraction) if report.nodes else None


def locality_rows(workloads: Sequence[WorkloadLocality], top: int = 0) -> tuple[list[str], list[list[object]]]:
    """Per workload (the coldest p90 first): warm nodes of those answering, cold-start bytes."""
    ordered = sorted(workloads, key=lambda w: (-w.rollout.fetch_percentile(0.9), w.workload))
    return LOCALITY_HEADERS, [_workload_row(w) for w in (ordered[:top] if top else ordered)]


def locality_matrix(workloads: Sequence[WorkloadLocality]) -> tuple[list[str], list[list[object]]]:
    """Node x workload: the bytes each node would fetch to start a pod of each workload."""
    nodes = sorted({n.node for w in workloads for n in w.rollout.nodes})
    fetch = {(w.workload, n.node): n.total.fetch_bytes for w in workloads for n in w.rollout.nodes}
    headers = ["NODE", *(w.workload for w in workloads)]
    return headers, [[node, *(fetch.get((w.workload, node)) for w in workloads)] for node in nodes]


def locality_json(workloads: Sequence[WorkloadLocality], unreachable: Sequence[tuple[str, str]]) -> str:
    doc = {
        "workloads": [
            {
                "workload": w.workload,
                "refs": list(w.refs),
                "warm_nodes": w.rollout.warm_nodes,
                "nodes": len(w.rollout.nodes),
                "median_cold_start_bytes": cold_start_bytes(w.rollout, 0.5),
                "p90_cold_start_bytes": cold_start_bytes(w.rollout, 0.9),
                "registry_bytes": w.rollout.registry_bytes,
                "image_locality_assumed_bytes": w.rollout.assumed_registry_bytes,
                "per_node": {
                    n.node: cost_dict(n.total, with_ref=False) | {"image_locality_assumed_bytes": n.assumed}
                    for n in w.rollout.nodes
                },
            }
            for w in workloads
        ],
        "unreachable": [{"node": n, "error": e} for n, e in unreachable],
    }
    return json.dumps(doc, indent=2)


_STYLE = (
    "<style>body{font-family:sans-serif}table{border-collapse:collapse}"
    "td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}</style>"
)


def locality_html(workloads: Sequence[WorkloadLocality], title: str = "Cold-start bytes per node and workload") -> str:
    """A self-contained page: the workload table and a node x workload heatmap (white: warm)."""
    headers, data = locality_rows(workloads)
    m_headers, matrix = locality_matrix(workloads)
    peak = max((v for row in matrix for v in row[1:] if isinstance(v, int)), default=0) or 1

    def cell(value: object) -> str:
        if not isinstance(value, int):
            return '<td class="none">-</td>'
        shade = round(255 - 200 * value / peak)
        return (
            f'<td style="background:rgb(255,{shade},{shade})" title="{value} bytes">'
            f"{'warm' if value == 0 else html.escape(human_bytes(value))}</td>"
        )

    m_head = "".join(f"<th>{html.escape(h)}</th>" for h in m_headers)
    m_body = "".join(
        f"<tr><th>{html.escape(str(row[0]))}</th>" + "".join(cell(v) for v in row[1:]) + "</tr>" for row in matrix
    )
    return (
        f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"{_STYLE}</head><body>"
        f"<h1>{html.escape(title)}</h1>{_table_html(headers, data)}"
        f'<h2>Heatmap: bytes fetched to start each workload on each node</h2><table class="heatmap">'
        f"<tr>{m_head}</tr>{m_body}</table></body></html>"
    )


def _table_html(headers: Sequence[str], data: Sequence[Sequence[object]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>"
        + "".join(f"<td>{html.escape(cell_text(v, b))}</td>" for b, v in zip(byte_columns(headers), row, strict=True))
        + "</tr>"
        for row in data
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def page_html(summary: str, headers: Sequence[str], data: Sequence[Sequence[object]]) -> str:
    """A self-contained page: a summary line and one table."""
    return (
        f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>{html.escape(summary)}</title>{_STYLE}</head>'
        f"<body><p>{html.escape(summary)}</p>{_table_html(headers, data)}</body></html>"
    )
