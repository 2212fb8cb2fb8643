"""The demo: a real, sandboxed containerd with sample images and pods, the
exporter serving against it, and the `df` tables printed.

    make demo              # or: .venv/bin/python -m scripts.demo [--port 9877] [--keep-serving]

Needs root (containerd). Serves until Ctrl-C when run from a terminal.
"""

from __future__ import annotations

import argparse
import contextlib
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from tests.harness.containerd import Containerd
from tests.harness.scenario import populate

ROOT = Path(__file__).resolve().parent.parent
EXPORTER = [sys.executable, "-m", "exporter"]


def wait_ready(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200 and b"runtime answering" in response.read():
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"demo: exporter not ready at {url} after {timeout}s")


def main() -> int:
    parser = argparse.ArgumentParser(description="run the exporter against a sandboxed containerd")
    parser.add_argument("--port", type=int, default=9877)
    parser.add_argument(
        "--keep-serving",
        action="store_true",
        default=sys.stdin.isatty(),
        help="serve until Ctrl-C (default when run from a terminal)",
    )
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="lse-demo-"))
    containerd = Containerd(workdir / "containerd")
    exporter = None
    try:
        print(f"demo: starting containerd {containerd.binaries.version()} in {workdir}", flush=True)
        containerd.start()
        node = populate(containerd, ROOT / ".cache" / "demo-images")
        print(f"demo: imported {len(node.images)} images, started {len(node.pods)} pods", flush=True)
        config = workdir / "config.yaml"
        config.write_text(node.catalog_yaml())
        common = ["--runtime-endpoint", containerd.endpoint, "--config", str(config)]
        exporter = subprocess.Popen(
            [
                *EXPORTER,
                "serve",
                *common,
                "--listen-address",
                f"127.0.0.1:{args.port}",
                "--refresh-interval",
                "5",
                "--node-name",
                "demo-node",
            ],
        )
        base = f"http://127.0.0.1:{args.port}"
        wait_ready(base + "/readyz")
        with urllib.request.urlopen(base + "/metrics", timeout=5) as response:
            lines = response.read().decode().splitlines()
        wanted = (
            "layer_sharing_up",
            "layer_sharing_logical_bytes",
            "layer_sharing_physical_bytes",
            "layer_sharing_shared_bytes",
            "layer_sharing_unique_bytes",
            "layer_sharing_reclaimable_bytes",
            "layer_sharing_content_bytes",
            "layer_sharing_pod_attributed_bytes",
        )
        print(f"\n$ curl -s {base}/metrics | grep ...")
        print("\n".join(line for line in lines if line.startswith(wanted)))
        for extra in ([], ["--pods"], ["--image", "localhost/app-a:1"]):
            print(f"\n$ layer-sharing-exporter df {' '.join(extra)}".rstrip(), flush=True)
            subprocess.run([*EXPORTER, "df", *common, *extra], check=True)
        if args.keep_serving:
            print(f"\ndemo: exporter serving on {base}/metrics; Ctrl-C to stop and clean up", flush=True)
            with contextlib.suppress(KeyboardInterrupt):
                exporter.wait()
        return 0
    finally:
        if exporter is not None and exporter.poll() is None:
            exporter.terminate()
            exporter.wait(timeout=10)
        containerd.cleanup()


if __name__ == "__main__":
    sys.exit(main())
