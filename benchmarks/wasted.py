"""Benchmark: the wasted-bytes analysis on the realistic images, on a real containerd.

    make bench-wasted                # or: .venv/bin/python -m benchmarks.wasted

For gzip and for zstd layers (tests/harness/realistic.py: real Debian layers,
about 108 MB compressed, 330 MB of tar), pulled through CRI from the loopback
registry, it measures:

- the analysis of every layer as the exporter does it (Content.Read streamed
  through the tar reader, unthrottled) against `tar -tvzf` (zstd: `zstd -dc |
  tar -tv`) over the same blobs in the same run;
- the exporter as a process at the default CPU budget: time to the figures,
  CPU used against the budget, scrape p99 while the analysis runs, peak RSS
  against the same exporter with the analysis off, and RSS once done.

Writes a table and benchmarks/results/wasted.json. Needs root (containerd).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.busy_node import percentile, proc_cpu_seconds, proc_peak_rss_mib, scrape
from exporter.analysis import DEFAULT_CPU_FRACTION, AnalysisOptions, LayerAnalyzer
from exporter.core.wasted import layer_sources
from exporter.sources.node import RuntimeOptions, RuntimeSource
from tests.harness.containerd import Containerd
from tests.harness.image_env import compile_like_image
from tests.harness.pods import PodMaker
from tests.harness.realistic import Compression, realistic_images
from tests.harness.registry import Registry
from tests.integration.conftest import ServedExporter, start_exporter, stop_exporter

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
REPEATS = 7  # medians of these


def proc_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def blob_path(containerd: Containerd, digest: str) -> Path:
    return containerd.root / "io.containerd.content.v1.content" / "blobs" / "sha256" / digest.removeprefix("sha256:")


def tar_listing_seconds(paths: list[Path], compression: Compression) -> float:
    """`tar -tv` over the blobs, as a shell user would list them."""
    started = time.perf_counter()
    for path in paths:
        command = f"tar -tvzf {path}" if compression == "gzip" else f"zstd -dc {path} | tar -tv"
        command += " > /dev/null"
        subprocess.run(["sh", "-c", command], check=True)
    return time.perf_counter() - started


def analysis_seconds(endpoint: str) -> tuple[float, int]:
    """Every layer of the node analysed as the exporter does it, unthrottled, in this process."""
    runtime = RuntimeSource(RuntimeOptions(endpoint=endpoint, rpc_timeout=30))
    try:
        facts = runtime.snapshot()
        analyzer = LayerAnalyzer(runtime, AnalysisOptions(cpu_fraction=64), publish=lambda report: None)
        started = time.perf_counter()
        report = analyzer.analyse(facts)
        elapsed = time.perf_counter() - started
        assert report.pending_layers == report.unavailable_layers == 0
        return elapsed, len(layer_sources(facts))
    finally:
        runtime.close()


def wait_figures(exporter: ServedExporter, started: float) -> float:
    while exporter.process.poll() is None:
        try:
            _, body = scrape(exporter.base_url + "/metrics")
            if b"layer_sharing_analysis_pending_layers 0.0" in body and b"layer_sharing_wasted_bytes " in body:
                return time.perf_counter() - started
        except OSError:
            pass
        time.sleep(0.05)
    raise SystemExit("bench: exporter exited")


def scraped_while(exporter: ServedExporter, busy: Callable[[], object]) -> list[float]:
    """Scrape latencies (every 20 ms) while `busy()` runs."""
    latencies: list[float] = []
    done = threading.Event()

    def scraper() -> None:
        while not done.is_set():
            latencies.append(scrape(exporter.base_url + "/metrics")[0])
            time.sleep(0.02)

    thread = threading.Thread(target=scraper)
    thread.start()
    try:
        busy()
    finally:
        done.set()
        thread.join()
    return latencies


def measure_exporter(containerd: Containerd, workdir: Path) -> dict[str, Any]:
    """The exporter as the DaemonSet runs it: analysis off, then at the default budget.

    The CPU the analysis used is the process's CPU minus what the same process
    uses with the analysis off under the same scrapes (refreshes, HTTP).
    """
    idle = start_exporter(containerd.endpoint, workdir, "--analysis-cpu", "0", "--log-level", "warning")
    try:
        cpu_before, wall_before = proc_cpu_seconds(idle.process.pid), time.perf_counter()
        idle_latencies = scraped_while(idle, lambda: time.sleep(5))
        baseline_cpu_rate = (proc_cpu_seconds(idle.process.pid) - cpu_before) / (time.perf_counter() - wall_before)
        idle_peak = proc_peak_rss_mib(idle.process.pid)
        idle_rss = proc_rss_mib(idle.process.pid)
    finally:
        stop_exporter(idle)
    started = time.perf_counter()
    exporter = start_exporter(containerd.endpoint, workdir, "--log-level", "warning")
    try:
        pid = exporter.process.pid
        cpu_before = proc_cpu_seconds(pid)
        wall_before = time.perf_counter()
        figures: list[float] = []
        latencies = scraped_while(exporter, lambda: figures.append(wait_figures(exporter, started)))
        seconds_to_figures = figures[0]
        wall = time.perf_counter() - wall_before
        cpu_used = proc_cpu_seconds(pid) - cpu_before - baseline_cpu_rate * wall
        peak = proc_peak_rss_mib(pid)
        time.sleep(2)
        rss_done = proc_rss_mib(pid)
    finally:
        stop_exporter(exporter)
    return {
        "seconds_to_figures": seconds_to_figures,
        "cpu_seconds": cpu_used,
        "baseline_cpu_rate": baseline_cpu_rate,
        "cpu_fraction_used": cpu_used / wall,
        "cpu_budget": DEFAULT_CPU_FRACTION,
        "scrapes_during_analysis": len(latencies),
        "scrape_p50_ms": statistics.median(latencies) * 1000,
        "scrape_p99_ms": percentile(latencies, 0.99) * 1000,
        "scrape_p99_ms_analysis_off": percentile(idle_latencies, 0.99) * 1000,
        "idle_peak_rss_mib": idle_peak,
        "idle_rss_mib": idle_rss,
        "peak_rss_mib": peak,
        "peak_rss_over_idle_mib": peak - idle_peak,
        "rss_done_mib": rss_done,
    }


def run(compression: Compression, registry: Registry, workdir: Path) -> dict[str, Any]:
    containerd = Containerd(workdir / f"containerd-{compression}")
    try:
        containerd.start()
        images = realistic_images(compression)
        maker = PodMaker(containerd.endpoint, str(containerd.pod_logs))
        try:
            for name, image in images.items():
                maker.pull_image(registry.push(f"realistic-{name}", compression, image.image))
        finally:
            maker.close()
        layers = {layer.diff_id: layer for image in images.values() for layer in image.layers}
        blobs = [blob_path(containerd, layer.blob(compression).digest) for layer in layers.values()]
        assert all(path.exists() for path in blobs)
        # Taken in turns, so that a busier moment of a shared machine falls on both.
        analysis: list[tuple[float, int]] = []
        tar: list[float] = []
        for _ in range(REPEATS):
            analysis.append(analysis_seconds(containerd.endpoint))
            tar.append(tar_listing_seconds(blobs, compression))
        result: dict[str, Any] = {
            "layers": len(layers),
            "entries": sum(len(layer.entries) for layer in layers.values()),
            "compressed_bytes": sum(path.stat().st_size for path in blobs),
            "tar_bytes": sum(layer.size for layer in layers.values()),
            "analysis_seconds": statistics.median(seconds for seconds, _ in analysis),
            "tar_seconds": statistics.median(tar),
        }
        result["ratio_to_tar"] = result["analysis_seconds"] / result["tar_seconds"]
        result["exporter"] = measure_exporter(containerd, workdir)
        return result
    finally:
        containerd.cleanup()


def report(results: dict[str, Any]) -> str:
    lines = ["| measure | gzip | zstd | target |", "|---|---|---|---|"]
    g, z = results["gzip"], results["zstd"]
    ge, ze = g["exporter"], z["exporter"]
    lines += [
        f"| layers analysed (entries; compressed / tar bytes) | {g['layers']} ({g['entries']:,}; "
        f"{g['compressed_bytes'] / 1e6:.0f} / {g['tar_bytes'] / 1e6:.0f} MB) | {z['layers']} ({z['entries']:,}; "
        f"{z['compressed_bytes'] / 1e6:.0f} / {z['tar_bytes'] / 1e6:.0f} MB) | |",
        f"| analysis, unthrottled, vs `tar -tv` on the same blobs | {g['analysis_seconds']:.2f} s vs "
        f"{g['tar_seconds']:.2f} s ({g['ratio_to_tar']:.2f}×) | {z['analysis_seconds']:.2f} s vs "
        f"{z['tar_seconds']:.2f} s ({z['ratio_to_tar']:.2f}×) | ≤ 1.5× |",
        f"| exporter at the default budget: time to the figures | {ge['seconds_to_figures']:.1f} s | "
        f"{ze['seconds_to_figures']:.1f} s | |",
        f"| CPU the analysis used (budget {ge['cpu_budget']} core) | {ge['cpu_seconds']:.2f} s, "
        f"{ge['cpu_fraction_used']:.2f} core | {ze['cpu_seconds']:.2f} s, {ze['cpu_fraction_used']:.2f} core | "
        f"≤ budget |",
        f"| scrape p50 / p99 while it runs (p99 with the analysis off) | {ge['scrape_p50_ms']:.1f} / "
        f"{ge['scrape_p99_ms']:.1f} ms ({ge['scrape_p99_ms_analysis_off']:.1f}) | {ze['scrape_p50_ms']:.1f} / "
        f"{ze['scrape_p99_ms']:.1f} ms ({ze['scrape_p99_ms_analysis_off']:.1f}) | p99 ≤ 20 ms |",
        f"| peak RSS over the exporter with the analysis off | +{ge['peak_rss_over_idle_mib']:.1f} MiB "
        f"({ge['peak_rss_mib']:.1f} vs {ge['idle_peak_rss_mib']:.1f}) | +{ze['peak_rss_over_idle_mib']:.1f} MiB "
        f"({ze['peak_rss_mib']:.1f} vs {ze['idle_peak_rss_mib']:.1f}) | ≤ 15 MiB |",
        f"| RSS once done (analysis off: {ge['idle_rss_mib']:.1f} MiB) | {ge['rss_done_mib']:.1f} MiB | "
        f"{ze['rss_done_mib']:.1f} MiB | |",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.parse_args()
    compile_like_image()
    workdir = Path(tempfile.mkdtemp(prefix="lse-bench-wasted-"))
    registry = Registry().start()
    results: dict[str, Any] = {
        "machine": {"python": platform.python_version(), "platform": platform.platform()},
    }
    try:
        for compression in ("gzip", "zstd"):
            results[compression] = run(compression, registry, workdir)
    finally:
        registry.stop()
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "wasted.json").write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    print(report(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
