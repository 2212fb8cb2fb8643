"""What the exporter's series cost Prometheus at 100, 1,000 and 5,000 nodes.

    .venv/bin/python -m benchmarks.scale [--results benchmarks/results/latest.json] [--interval 30]

Reads the series per node measured by benchmarks/busy_node.py (defaults and
every optional family on), derives the per-family budget from the default
knobs, and prints series and samples per second for the cluster, with and
without the knobs that cut cardinality. Nothing here is measured at scale: it
is arithmetic on the measured per-node figures, so it can be re-derived.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "latest.json"
NODES = (100, 1_000, 5_000)
# Series per item at the default knobs (tests/outputs/test_collector.py pins the families).
PER_IMAGE, PER_POD, PER_BASE = 6, 5, 3


def variants(per_node_default: int, images_exported: int, pods: int, bases_exported: int) -> dict[str, int]:
    """Series per node for the default set and for each cardinality knob."""
    fixed = per_node_default - PER_IMAGE * images_exported - PER_POD * pods - PER_BASE * bases_exported
    return {
        "defaults": per_node_default,
        "metrics.pods: false": per_node_default - PER_POD * pods,
        "metrics.images_top_n: 10": per_node_default - PER_IMAGE * max(0, images_exported - 10),
        "pods off, images_top_n 10, bases_top_n 5": fixed
        + PER_IMAGE * min(10, images_exported)
        + PER_BASE * min(5, bases_exported),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--interval", type=float, default=30.0, help="scrape interval, seconds")
    parser.add_argument(
        "--bytes-per-series", type=int, default=4096, help="rule-of-thumb Prometheus head memory per active series"
    )
    args = parser.parse_args()
    r = json.loads(args.results.read_text())
    per_node = int(r["series_default"]["total"])
    pods = int(r["node"]["pods"])
    images_exported = min(50, int(r["node"]["images"]))
    bases_exported = max(0, (per_node - 40 - PER_IMAGE * images_exported - PER_POD * pods) // PER_BASE)
    table = variants(per_node, images_exported, pods, min(20, bases_exported))
    print(
        f"Measured: {per_node} series per node at defaults on a node with {r['node']['images']} images and "
        f"{pods} pods; {r['series_everything_on']['total']} with every optional family on."
    )
    print(f"Scrape interval {args.interval:g} s; head memory at ~{args.bytes_per_series} B/series (rule of thumb).\n")
    header = f"{'metric set':44s}" + "".join(f"{n:>26,d} nodes" for n in NODES)
    print(header)
    for name, series in table.items():
        cells = "".join(f"{series * n:>14,d} series {series * n / args.interval:>9,.0f}/s" for n in NODES)
        print(f"{name:44s}{cells}")
    print(
        "\nApprox. Prometheus head memory at defaults: "
        + ", ".join(f"{n:,d} nodes {per_node * n * args.bytes_per_series / 2**30:.1f} GiB" for n in NODES)
    )
    print(
        "Recording rules (rules/layer-sharing.rules.yml) reduce the cluster dashboards to 8 job-level series plus "
        "4 per base, whatever the node count; the per-node series stay for the node dashboard and alerts."
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
