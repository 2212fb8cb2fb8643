"""Benchmark: the containers-storage layer store (CRI-O) on a busy node's store.

    .venv/bin/python -m benchmarks.containers_storage [--images 300]

Loads the busy node's images (the same 300 images of 8-14 layers over 5 bases
as benchmarks.busy_node) into a real containers/storage with podman, then
measures what the exporter adds per refresh on a CRI-O node (reading
layers.json and images.json and mapping them to chain IDs), against the
reference on the same store, in the same run: `podman system df -v`, which
answers the same shared/unique question with c/storage's own code, and
`podman images`. Writes benchmarks/results/containers_storage.json. Needs root
and podman.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from benchmarks.busy_node import RESULTS, image_specs
from exporter.core.facts import ImageFacts
from exporter.sources.containers_storage import ContainersStorageLayerStore, ContainersStorageOptions
from tests.harness.containers_storage import Podman


def timed(fn: Any, repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        out.append(time.perf_counter() - started)
    return out


def ms(values: list[float]) -> float:
    return round(statistics.median(values) * 1000, 3)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=300)
    args = parser.parse_args()
    if os.geteuid() != 0 or shutil.which("podman") is None:
        print("bench: needs root and podman (scripts/setup.sh --test)", file=sys.stderr)
        return 1
    workdir = Path(tempfile.mkdtemp(prefix="lse-cs-bench-"))
    podman = Podman(workdir)
    try:
        built = [spec.build() for spec in image_specs(args.images, seed=1)]
        started = time.perf_counter()
        for image in built:
            podman.load(image)
        load_seconds = time.perf_counter() - started
        print(f"bench: loaded {len(built)} images into c/storage in {load_seconds:.1f}s", flush=True)
        images = [ImageFacts(image_id=image.image_id, diff_ids=image.diff_ids) for image in built]
        options = ContainersStorageOptions(storage_root=str(podman.root))

        def cold() -> None:
            ContainersStorageLayerStore(options, Counter()).read(images)

        store = ContainersStorageLayerStore(options, Counter())
        facts = store.read(images)
        layers_json = podman.root / "overlay-layers" / "layers.json"
        layers_text = layers_json.read_bytes()

        def rewritten() -> None:
            # As c/storage writes: a new file renamed over the old one.
            tmp = layers_json.with_suffix(".bench")
            tmp.write_bytes(layers_text)
            os.replace(tmp, layers_json)
            store.read(images)

        results: dict[str, Any] = {
            "images": len(built),
            "layers_json_records": len(podman.layers()),
            "layers_json_bytes": len(layers_text),
            "distinct_layers_found": len(facts.layer_usage),
            "errors": dict(store.errors),
            "cold_read_ms": ms(timed(cold, 7)),
            "unchanged_read_ms": ms(timed(lambda: store.read(images), 1000)),
            "layers_json_rewritten_read_ms": ms(timed(rewritten, 7)),
            "reference_podman_system_df_v_ms": ms(timed(lambda: podman.run("system", "df", "-v"), 3)),
            "reference_podman_images_ms": ms(timed(lambda: podman.run("images", "--format", "json"), 3)),
            "python": platform.python_version(),
            "podman": podman.run("--version").strip(),
        }
    finally:
        podman.cleanup()
        shutil.rmtree(workdir, ignore_errors=True)
    assert results["distinct_layers_found"] > 0 and not results["errors"], results
    for key, value in results.items():
        print(f"{key:36} {value}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "containers_storage.json").write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
