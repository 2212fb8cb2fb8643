"""The report as JSON (everything) and CSV (one view): exact integers of bytes."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from dataclasses import asdict

from exporter.core.cluster import ClusterReport


def to_json(report: ClusterReport) -> str:
    doc = {
        "totals": {
            "nodes": len(report.nodes),
            "physical": report.physical,
            "logical": report.logical,
            "saved": report.logical - report.physical,
            "reclaimable": report.reclaimable,
            "content": report.content,
            "unused_logical": report.unused_logical,
            "duplicate_bytes": report.duplicate_bytes,
            "duplicate_layers": report.duplicate_layers,
        },
        "nodes": [asdict(n) | {"saved": n.saved} for n in report.nodes],
        "bases": [asdict(b) for b in report.bases],
        "families": [asdict(f) for f in report.families],
        "workloads": [asdict(w) for w in report.workloads],
        "images": [asdict(i) for i in report.images],
        "unreachable": [{"node": n, "error": e} for n, e in report.unreachable],
    }
    return json.dumps(doc, indent=2, sort_keys=True)


def to_csv(headers: Sequence[str], data: Sequence[Sequence[object]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow([h.lower().replace(" ", "_") for h in headers])
    writer.writerows(data)
    return out.getvalue()
