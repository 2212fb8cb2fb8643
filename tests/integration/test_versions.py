"""The accounting and metrics parity on containerd 1.7 (Debian trixie) and 2.x
(Debian sid), fetched by package name (tests/harness/releases.py). The full
suite runs on bookworm's 1.6 (the session containerd)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.harness.containerd import Containerd
from tests.harness.releases import ReleaseUnavailableError, containerd_release
from tests.harness.scenario import SampleNode, populate
from tests.integration.conftest import run_cli, start_exporter, stop_exporter
from tests.integration.oracle import expected


@pytest.fixture(scope="module", params=["1.7", "2"], ids=lambda v: f"containerd-{v}")
def versioned_node(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SampleNode]:
    try:
        binaries = containerd_release(request.param)
    except ReleaseUnavailableError as exc:
        pytest.fail(f"could not get containerd {request.param} from Debian: {exc}")
    assert binaries.version().startswith(request.param)
    containerd = Containerd(tmp_path_factory.mktemp(f"containerd-{request.param}"), binaries=binaries)
    try:
        containerd.start()
        yield populate(containerd, tmp_path_factory.mktemp("images"))
    finally:
        containerd.cleanup()


def test_df_and_metrics_equal_ctr_on_this_version(versioned_node: SampleNode, tmp_path):
    node = versioned_node
    want = expected(node)
    result = run_cli("df", "--runtime-endpoint", node.containerd.endpoint, "--output", "json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    totals = data["totals"]
    assert (totals["images"], totals["physical"], totals["logical"], totals["shared"], totals["reclaimable"]) == (
        len(node.images),
        want.physical,
        want.logical,
        want.shared,
        want.reclaimable,
    )
    assert totals["content"] == want.content
    assert {i["image_id"]: i["size"] for i in data["images"]} == want.image_size
    assert {(p["namespace"], p["name"]): p["bytes"] for p in data["pods"]} == want.pod_bytes
    assert data["runtime"]["version"].lstrip("v").startswith(node.containerd.binaries.version().split("~")[0][:3])

    exporter = start_exporter(node.containerd.endpoint, tmp_path, "--refresh-interval", "1")
    try:
        for name in ("physical", "logical", "shared", "unique", "reclaimable", "content"):
            assert exporter.value(f"layer_sharing_{name}_bytes") == totals[name], name
        assert exporter.value("layer_sharing_images") == totals["images"]
        for (namespace, pod), size in want.pod_bytes.items():
            assert exporter.value("layer_sharing_pod_bytes", namespace=namespace, pod=pod) == size
        assert (
            sum(
                exporter.value("layer_sharing_errors_total", stage=s) or 0
                for s in ("image_status", "image_parse", "snapshot_usage", "content")
            )
            == 0
        )
    finally:
        assert stop_exporter(exporter) == 0
