"""Benchmark: series per node at the defaults and in the fleet profile, on a real busy node.

    .venv/bin/python -m benchmarks.series_budget [--images 300 --pods 110]

Builds benchmarks/busy_node.py's busy node on a real containerd (300 images,
110 pods of 30 Deployments over 12 namespaces), runs the exporter with workload
attribution (`--kubernetes`, against the stand-in for the Kubernetes API,
tests/harness/kube_api.py) and `--capacity-dir`, waits until the wasted-bytes
analysis is done and counts the series of one whole /metrics body, per family,
at the defaults and in the fleet profile of docs/performance.md. Writes
benchmarks/results/series_budget.json. Needs root (containerd).
"""

from __future__ import annotations

import argparse
import functools
import json
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from benchmarks.busy_node import build_node, kube_api_for, scrape, start_exporter
from tests.harness.containerd import Containerd
from tests.integration.conftest import stop_exporter

RESULTS = Path(__file__).resolve().parent / "results"
TARGETS = {"defaults": 1000, "fleet": 150}
PROFILES = {
    "defaults": "{}\n",
    "fleet": "metrics: {pods: false, workloads: false, workload_bases: false, images_top_n: 5, bases_top_n: 5}\n",
}


def families(body: bytes) -> Counter[str]:
    lines = [line for line in body.decode().splitlines() if line and not line.startswith("#")]
    return Counter(line.split("{")[0].split(" ")[0] for line in lines)


def complete(url: str, profile: str) -> bytes | None:
    """The /metrics body once every layer is analysed (and, at the defaults, workloads attributed)."""
    body = scrape(url)[1]
    done = b"layer_sharing_analysis_pending_layers 0.0" in body and b"layer_sharing_wasted_bytes " in body
    attributed = profile == "fleet" or b'workload_kind="Deployment"' in body
    return body if done and attributed else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--pods", type=int, default=110)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="lse-series-"))
    containerd = Containerd(workdir / "containerd")
    results: dict[str, Any] = {"node": {"images": args.images, "pods": args.pods}, "targets": TARGETS}
    try:
        containerd.start()
        _, handles = build_node(containerd, workdir, args.images, args.pods)
        api = kube_api_for(handles)
        capacity_dir = workdir / "state"
        capacity_dir.mkdir()
        try:
            for profile, config in PROFILES.items():
                exporter = start_exporter(
                    containerd.endpoint,
                    workdir,
                    config,
                    1.0,
                    extra=(
                        "--kubernetes",
                        "--kubeconfig",
                        str(api.kubeconfig(workdir / "kubeconfig")),
                        "--node-name",
                        "bench-node",
                        "--capacity-dir",
                        str(capacity_dir),
                        "--state-dir",
                        str(capacity_dir),
                        "--analysis-cpu",
                        "2",
                    ),
                )
                try:
                    started = time.perf_counter()

                    url = exporter.base_url + "/metrics"
                    body = exporter.wait_for(
                        functools.partial(complete, url, profile), timeout=600, what="the analysis"
                    )
                    assert isinstance(body, bytes)
                    counted = families(body)
                    results[profile] = {
                        "series": sum(counted.values()),
                        "layer_sharing": sum(n for name, n in counted.items() if name.startswith("layer_sharing_")),
                        "bytes": len(body),
                        "families": dict(counted.most_common()),
                        "seconds_to_complete": round(time.perf_counter() - started, 1),
                    }
                    print(f"bench: {profile}: {results[profile]['series']} series", flush=True)
                finally:
                    stop_exporter(exporter)
        finally:
            api.stop()
    finally:
        containerd.cleanup()
        shutil.rmtree(workdir, ignore_errors=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "series_budget.json").write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    for profile, target in TARGETS.items():
        top = ", ".join(f"{name} {n}" for name, n in list(results[profile]["families"].items())[:6])
        print(f"{profile}: {results[profile]['series']} series (target <= {target}); largest: {top}")
    return 0 if all(results[p]["series"] <= t for p, t in TARGETS.items()) else 1


if __name__ == "__main__":
    sys.exit(main())
