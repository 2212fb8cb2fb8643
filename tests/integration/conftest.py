"""One real containerd per test session, with the sample images and pods.

Integration tests need root (containerd, overlayfs, CNI). They fail, not skip,
when that is missing: CI runs them as root after scripts/setup.sh.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.harness.containerd import Containerd
from tests.harness.image_env import image_python_env
from tests.harness.scenario import SampleNode, populate


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "integration" in str(item.path):
            item.add_marker(pytest.mark.integration)


def _require_real_containerd() -> None:
    problems = []
    if os.geteuid() != 0:
        problems.append("not running as root")
    for tool in ("containerd", "ctr", "runc"):
        if not shutil.which(tool):
            problems.append(f"{tool} not installed")
    if not Path("/bin/busybox").exists():
        problems.append("busybox-static not installed")
    if problems:
        pytest.fail(
            "integration tests need a real containerd: " + "; ".join(problems) + " (run scripts/setup.sh as root)"
        )


@pytest.fixture(scope="session")
def sample_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SampleNode]:
    _require_real_containerd()
    containerd = Containerd(tmp_path_factory.mktemp("containerd"))
    try:
        containerd.start()
        yield populate(containerd, tmp_path_factory.mktemp("images"))
    finally:
        containerd.cleanup()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ServedExporter:
    process: subprocess.Popen[bytes]
    base_url: str
    log_path: Path

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(self.base_url + path, timeout=5) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        status, text = self.get("/metrics")
        assert status == 200
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }

    def value(self, name: str, **labels: str) -> float | None:
        return self.metrics().get((name, tuple(sorted(labels.items()))))

    def wait_for(self, predicate: Callable[[], object], timeout: float = 30.0, what: str = "condition") -> object:
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            try:
                last = predicate()
                if last:
                    return last
            except (OSError, AssertionError):
                pass
            time.sleep(0.2)
        raise AssertionError(f"timed out waiting for {what}; last={last!r}; log:\n{self.log_path.read_text()[-3000:]}")

    def log(self) -> str:
        return self.log_path.read_text()


def start_exporter(
    endpoint: str, workdir: Path, *extra: str, env: dict[str, str] | None = None, python: str = sys.executable
) -> ServedExporter:
    """The exporter as a process, with the image's environment (tests.harness.image_env)
    unless `env` says otherwise, run by `python` (another environment's)."""
    port = free_port()
    log_path = workdir / f"exporter-{port}.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [
                python,
                "-m",
                "exporter",
                "serve",
                "--runtime-endpoint",
                endpoint,
                "--listen-address",
                f"127.0.0.1:{port}",
                *extra,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=image_python_env() if env is None else env,
            # Another environment's Python must not import the package from this checkout (-m puts the cwd first).
            cwd=workdir if python != sys.executable else None,
        )
    served = ServedExporter(process, f"http://127.0.0.1:{port}", log_path)
    served.wait_for(lambda: served.get("/readyz")[0] == 200, what="exporter ready")
    return served


def start_with_catalog(node: SampleNode, workdir: Path, *extra: str, config_extra: str = "") -> ServedExporter:
    """The exporter on the sample node, with its base catalog (and more config)."""
    config = workdir / "config.yaml"
    config.write_text(node.catalog_yaml() + config_extra)
    return start_exporter(node.containerd.endpoint, workdir, "--config", str(config), *extra)


def stop_exporter(served: ServedExporter) -> int:
    served.process.terminate()
    return served.process.wait(timeout=10)


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "exporter", *args], capture_output=True, text=True, timeout=60, env=image_python_env()
    )
