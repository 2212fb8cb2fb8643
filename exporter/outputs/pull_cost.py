"""Pull cost as a table or as JSON (`pull-cost --output json`), and the node's answer to
GET /pull-cost (its wire format: exporter.pull_cost_wire)."""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Sequence

from exporter.core.pull_cost import NodeHoldings, PullCost, holdings_for
from exporter.formatting import human_bytes, table
from exporter.pull_cost_wire import holdings_dict, images_from_query

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


def answer(holdings: NodeHoldings | None, query: str) -> tuple[int, str]:
    """The endpoint's status and JSON body for a query string: 200 and the node's holdings
    restricted to the images asked; 400 for a bad question; 503 before the runtime answered."""
    try:
        images = images_from_query(urllib.parse.parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query)))
    except ValueError as exc:
        return 400, json.dumps({"error": str(exc)})
    if holdings is None:
        return 503, json.dumps({"error": "the runtime has not answered yet (see layer_sharing_up)"})
    return 200, json.dumps(holdings_dict(holdings_for(holdings, images)))
