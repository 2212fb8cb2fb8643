"""Pull cost as a table or as JSON (`pull-cost --output json`)."""

from __future__ import annotations

import json
from collections.abc import Sequence

from exporter.core.pull_cost import NodeHoldings, PullCost
from exporter.formatting import human_bytes, table

FIGURES = ("fetch_bytes", "fetch_layers", "unpack_layers", "unpack_bytes")


def cost_dict(cost: PullCost, with_ref: bool = True) -> dict[str, object]:
    figures: dict[str, object] = {name: getattr(cost, name) for name in FIGURES}
    return {"ref": cost.ref, **figures} if with_ref else figures


def to_json(costs: Sequence[PullCost], total: PullCost) -> str:
    """`{"images": [{ref, fetch_bytes, fetch_layers, unpack_layers, unpack_bytes}...], "total": {...}}`."""
    return json.dumps({"images": [cost_dict(c) for c in costs], "total": cost_dict(total, with_ref=False)}, indent=2)


def _bytes(value: int | None) -> str:
    # Exact bytes beside the readable figure: these are compared with what the registry served.
    return "unknown" if value is None else f"{human_bytes(value)} ({value})"


def to_table(costs: Sequence[PullCost], total: PullCost, platform: str, store: str) -> str:
    rows = [
        (c.ref, _bytes(c.fetch_bytes), c.fetch_layers, c.unpack_layers, _bytes(c.unpack_bytes)) for c in (*costs, total)
    ]
    heading = f"Pull cost on this node ({store}, platform {platform}), references pulled in order"
    headers = ("REFERENCE", "FETCH", "FETCH LAYERS", "UNPACK LAYERS", "UNPACK")
    return heading + "\n" + table(headers, rows)


def holdings_dict(holdings: NodeHoldings) -> dict[str, object]:
    """What a node answers for a layer list (`holdings_for`): JSON for the report to rebuild NodeHoldings."""
    return {
        "model": holdings.model,
        "chains": dict(sorted(holdings.chains.items())),
        "blobs": sorted(holdings.blobs),
        "diff_bytes": dict(sorted(holdings.diff_bytes.items())),
        "diff_sized": holdings.diff_sized,
        "keeps_layer_blobs": holdings.keeps_layer_blobs,
    }
