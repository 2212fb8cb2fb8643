"""Benchmark: `pull-cost` for 10 references on the busy node, against `ctr images ls`.

    .venv/bin/python -m benchmarks.pull_cost [--images 300 --pods 110 --repeat 5]

Builds the busy node of benchmarks.busy_node on a real containerd (300 images
of 8-14 layers over 5 bases and 15 runtimes, 110 pods), serves 10 new images
over the same bases and runtimes from the loopback registry, then times, in the
same run and alternately, the whole command (`python -m exporter pull-cost` for
the 10 references, process start included) and the reference: one
`ctr -n k8s.io images ls` (which lists the images and sizes each from its
manifests). Also checks the bounded work: each run reads each manifest and
config once, and no layer. And in-process, alternately too: the command's
runtime read (`RuntimeSource.pull_holdings`, asking only about the references'
layers) against the whole refresh it made before (`RuntimeSource.snapshot`),
their runtime calls, and that both give the same holdings. Writes
benchmarks/results/pull_cost.json. Needs root.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.busy_node import RESULTS, build_node, image_specs
from exporter.cli.args import build_parser
from exporter.cli.runtime import runtime_source
from exporter.config import resolve as resolve_config
from exporter.config import with_settings
from exporter.core.pull_cost import NodeHoldings, RemoteImage, RemoteLayer, holdings_for, holdings_from_facts
from tests.harness.containerd import Containerd
from tests.harness.image_env import image_python_env
from tests.harness.images import BuiltImage
from tests.harness.pods import PodMaker
from tests.harness.registry import Registry

REFERENCES = 10


def timed(command: list[str], env: dict[str, str] | None = None) -> tuple[float, str]:
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command[:4])} ... failed: {result.stderr.strip()}")
    return elapsed, result.stdout


def remote_image(ref: str, image: BuiltImage) -> RemoteImage:
    """An image as the registry resolves it (what the command hands the runtime read)."""
    layers = tuple(RemoteLayer(b.digest, len(b.data), d) for b, d in zip(image.layers, image.diff_ids, strict=True))
    return RemoteImage(ref, image.manifest.digest, image.config.digest, len(image.config.data), layers)


def runtime_reads(endpoint: str, images: list[RemoteImage], repeat: int) -> dict[str, Any]:
    """The command's read against the whole refresh it made before, alternately, each by a
    fresh runtime source (as each run of the command starts cold): seconds, calls, and
    whether they hold the same for `images`."""
    config = resolve_config(build_parser().parse_args(["df", "--runtime-endpoint", endpoint]))
    config = with_settings(config, {"collect_writable_layers": False})  # as the command set it
    seconds: dict[str, list[float]] = {"targeted": [], "whole_refresh": []}
    calls: dict[str, dict[str, int]] = {}
    held: dict[str, NodeHoldings] = {}
    for _ in range(repeat):
        for kind in seconds:
            runtime = runtime_source(config)
            try:
                started = time.perf_counter()
                if kind == "targeted":
                    held[kind] = runtime.pull_holdings(images).holdings
                else:
                    held[kind] = holdings_for(holdings_from_facts(runtime.snapshot()), images)
                seconds[kind].append(time.perf_counter() - started)
                calls[kind] = runtime.calls
            finally:
                runtime.close()
    assert held["targeted"] == held["whole_refresh"], "the targeted read holds what a whole refresh holds"
    return {
        kind: {
            "seconds": {"median": statistics.median(seconds[kind]), "all": seconds[kind]},
            "calls": sum(calls[kind].values()),
            "calls_by_method": dict(sorted(calls[kind].items())),
        }
        for kind in seconds
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--pods", type=int, default=110)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench: needs root (containerd)", file=sys.stderr)
        return 1
    workdir = Path(tempfile.mkdtemp(prefix="lse-pull-cost-bench-"))
    containerd = Containerd(workdir / "containerd")
    registry = Registry().start()
    try:
        containerd.start()
        node, handles = build_node(containerd, workdir, args.images, args.pods)
        # New versions: their bases and runtimes are on the node, their app layers are not.
        upcoming = [spec.build() for spec in image_specs(REFERENCES, seed=7, prefix="next")]
        refs = [registry.push(f"next-{i}", "1", image) for i, image in enumerate(upcoming)]
        command = [sys.executable, "-m", "exporter", "pull-cost", "--runtime-endpoint", containerd.endpoint]
        command += ["--output", "json", *refs]
        ctr = [containerd.binaries.path("ctr"), "-a", str(containerd.socket), "-n", "k8s.io", "images", "ls"]
        env = image_python_env()
        load_before = os.getloadavg()
        timed(command, env)  # warm the page cache for both, once
        timed(ctr)
        pull_cost_s, ctr_s, gets = [], [], []
        output = ""
        for _ in range(args.repeat):
            registry.requests.clear()
            elapsed, output = timed(command, env)
            pull_cost_s.append(elapsed)
            gets.append([r for r in registry.requests if r.startswith("GET ") and r != "GET /v2/"])
            ctr_s.append(timed(ctr)[0])
        listed = len(timed(ctr)[1].splitlines()) - 1
        reads = runtime_reads(
            containerd.endpoint, [remote_image(r, i) for r, i in zip(refs, upcoming, strict=True)], args.repeat
        )
        load_after = os.getloadavg()
        totals = json.loads(output)["total"]
        # Bounded work: each manifest and config once per run, no layer.
        configs = {image.config.digest for image in upcoming}
        for run in gets:
            assert sorted(r.rsplit("/", 1)[1] for r in run if "/blobs/" in r) == sorted(configs), run
            assert len([r for r in run if "/manifests/" in r]) == REFERENCES, run
        # And the prediction holds: pull them as the kubelet would and count.
        before = registry.served()
        maker = PodMaker(containerd.endpoint, str(containerd.pod_logs))
        try:
            for ref in refs:
                maker.pull_image(ref)
        finally:
            maker.close()
        served = registry.served() - before
        results: dict[str, Any] = {
            "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
            "containerd": containerd.binaries.version(),
            "node": {"images": len(node.refs), "pods": len(handles), "ctr_images_ls_records": listed},
            "references": REFERENCES,
            "pull_cost_seconds": {"median": statistics.median(pull_cost_s), "all": pull_cost_s},
            "ctr_images_ls_seconds": {"median": statistics.median(ctr_s), "all": ctr_s},
            "ratio_pull_cost_to_ctr": statistics.median(pull_cost_s) / statistics.median(ctr_s),
            "runtime_read": reads,
            # Other work on the machine (2 cores, shared) during the timed runs: 1, 5, 15 minute load averages.
            "load_average": {"before_runs": load_before, "after_runs": load_after},
            "registry_gets_per_run": len(gets[0]),
            "predicted": totals,
            "served_by_the_registry": {"blob_bytes": served.blob_bytes, "layer_gets": served.layer_gets},
        }
        assert (totals["fetch_bytes"], totals["fetch_layers"]) == (served.blob_bytes, served.layer_gets)
    finally:
        registry.stop()
        containerd.cleanup()
        shutil.rmtree(workdir, ignore_errors=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "pull_cost.json").write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    print(
        f"pull-cost, {REFERENCES} references, busy node ({results['node']['images']} images, "
        f"{results['node']['pods']} pods): {results['pull_cost_seconds']['median'] * 1000:.0f} ms median "
        f"(process start included); one `ctr images ls`: {results['ctr_images_ls_seconds']['median'] * 1000:.0f} ms; "
        f"ratio {results['ratio_pull_cost_to_ctr']:.2f}; {results['registry_gets_per_run']} registry GETs per run; "
        f"predicted {totals['fetch_bytes']} B in {totals['fetch_layers']} layers = served; runtime read "
        f"{reads['targeted']['calls']} calls, {reads['targeted']['seconds']['median'] * 1000:.0f} ms "
        f"(a whole refresh: {reads['whole_refresh']['calls']} calls, "
        f"{reads['whole_refresh']['seconds']['median'] * 1000:.0f} ms)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
