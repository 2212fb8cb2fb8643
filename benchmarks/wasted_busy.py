"""Benchmark: the wasted-bytes analysis on the busy node of benchmarks/busy_node.py.

    .venv/bin/python -m benchmarks.wasted_busy

The same 300 images and 110 pods (about 1,900 small layers) on a real
containerd; the exporter at defaults, once as `pip install` gives it (its own
virtualenv with only the locked runtime dependencies, the package installed and
byte-compiled, Python's default settings) and once as the image runs it: time until every layer is
analysed, peak RSS meanwhile, RSS once done (after one more refresh), series.
Writes a table and benchmarks/results/wasted_busy.json. Needs root.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.busy_node import (
    RESULTS,
    SCRAPE_INTERVAL,
    build_node,
    layer_sharing_series,
    proc_peak_rss_mib,
    scrape,
    series_in,
    start_exporter,
)
from benchmarks.wasted import proc_rss_mib
from tests.harness.containerd import Containerd
from tests.harness.image_env import compile_like_image, default_python_env, pip_installed_python
from tests.integration.conftest import stop_exporter


def analysed(
    containerd: Containerd, workdir: Path, env: dict[str, str] | None, python: str = sys.executable
) -> dict[str, Any]:
    started = time.perf_counter()
    exporter = start_exporter(containerd.endpoint, workdir, "{}\n", interval=SCRAPE_INTERVAL, env=env, python=python)
    try:

        def done() -> bool:
            body = scrape(exporter.base_url + "/metrics")[1]
            return b"layer_sharing_analysis_pending_layers 0.0" in body and b"layer_sharing_wasted_bytes " in body

        exporter.wait_for(done, timeout=1800, what="the analysis of every layer")
        seconds = time.perf_counter() - started
        time.sleep(SCRAPE_INTERVAL + 2)  # one more refresh: steady state
        _, body = scrape(exporter.base_url + "/metrics")
        return {
            "seconds_to_figures": seconds,
            "peak_rss_mib": proc_peak_rss_mib(exporter.process.pid),
            "rss_done_mib": proc_rss_mib(exporter.process.pid),
            "series": series_in(body),
            "layer_sharing_series": layer_sharing_series(body),
        }
    finally:
        stop_exporter(exporter)


def main() -> int:
    compile_like_image()
    workdir = Path(tempfile.mkdtemp(prefix="lse-bench-wasted-busy-"))
    containerd = Containerd(workdir / "containerd")
    results: dict[str, Any] = {}
    try:
        containerd.start()
        build_node(containerd, workdir, 300, 110)
        results["pip_install"] = analysed(containerd, workdir, default_python_env(), pip_installed_python())
        results["image"] = analysed(containerd, workdir, None)
    finally:
        containerd.cleanup()
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "wasted_busy.json").write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    for name, r in results.items():
        print(
            f"{name}: every layer analysed in {r['seconds_to_figures']:.1f} s; peak RSS {r['peak_rss_mib']:.1f} MiB, "
            f"RSS once done {r['rss_done_mib']:.1f} MiB; {r['layer_sharing_series']} layer_sharing_* series "
            f"({r['series']} in all)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
