"""Settings real clusters use, each on its own real containerd (1.6): images
pulled through CRI from a loopback registry with discard_unpacked_layers,
multi-platform indexes, another snapshotter, a fresh node, bare socket paths."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness.containerd import PAUSE_REF, Containerd
from tests.harness.images import ImageSpec, busybox_layer, data_layer
from tests.harness.pods import ContainerSpec, PodMaker
from tests.harness.registry import Registry
from tests.integration.conftest import run_cli, start_exporter, stop_exporter

KIB = 1024


@pytest.fixture
def registry() -> Iterator[Registry]:
    served = Registry().start()
    yield served
    served.stop()


def containerd_with(tmp_path: Path, **kwargs: Any) -> Containerd:
    containerd = Containerd(tmp_path / "containerd", **kwargs)
    containerd.start()
    return containerd


def df_json(containerd: Containerd, *extra: str) -> dict[str, Any]:
    result = run_cli("df", "--runtime-endpoint", containerd.endpoint, "--output", "json", *extra)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def committed_usage(containerd: Containerd) -> int:
    return sum(size for key, (size, _) in containerd.snapshot_usage().items() if key.startswith("sha256:"))


def push_app(registry: Registry, name: str) -> tuple[str, list[str]]:
    image = ImageSpec([f"x/{name}:1"], [busybox_layer(), data_layer(f"{name}-data", 200 * KIB)]).build()
    return registry.push(name, "1", image), [b.digest for b in image.layers]


@pytest.mark.parametrize("discard", [False, True], ids=["keep-blobs", "discard-unpacked-layers"])
def test_cri_pull_with_and_without_discard_unpacked_layers(tmp_path, registry, discard):
    containerd = containerd_with(tmp_path, discard_unpacked_layers=discard)
    try:
        ref, layer_digests = push_app(registry, "app")
        maker = PodMaker(containerd.endpoint, str(containerd.pod_logs))
        try:
            maker.pull_image(ref)
        finally:
            maker.close()
        if discard:  # containerd's GC removes the unpacked blobs shortly after the pull
            deadline = time.monotonic() + 20
            while set(layer_digests) & containerd.content_digests() and time.monotonic() < deadline:
                time.sleep(0.2)
        data = df_json(containerd)
        present = containerd.content_digests()
        assert data["totals"]["physical"] == committed_usage(containerd) > 0
        layer_sizes = {b.digest: len(b.data) for b in (registry.blobs[d] for d in layer_digests)}
        assert data["totals"]["content"] == sum(size for d, size in layer_sizes.items() if d in present)
        if discard:
            assert not set(layer_digests) & present  # garbage-collected after unpack
            assert data["totals"]["content"] == 0
        else:
            assert data["totals"]["content"] == sum(layer_sizes.values())
        exporter = start_exporter(containerd.endpoint, tmp_path, "--refresh-interval", "1")
        try:
            assert exporter.value("layer_sharing_content_bytes") == data["totals"]["content"]
            assert exporter.value("layer_sharing_errors_total", stage="content") == 0
            assert exporter.value("layer_sharing_errors_total", stage="snapshot_usage") == 0
        finally:
            assert stop_exporter(exporter) == 0
    finally:
        containerd.cleanup()


def test_multi_platform_index_is_counted_once_by_config_digest(tmp_path, registry):
    amd64 = ImageSpec(["x/multi:1"], [busybox_layer(), data_layer("multi-amd64", 100 * KIB)]).build()
    arm64 = ImageSpec(["x/multi:1"], [data_layer("multi-arm64", 120 * KIB)], architecture="arm64").build()
    ref, _ = registry.push_index("multi", "1", {"amd64": amd64, "arm64": arm64})
    containerd = containerd_with(tmp_path)
    try:
        maker = PodMaker(containerd.endpoint, str(containerd.pod_logs))
        try:
            image_id = maker.pull_image(ref)
        finally:
            maker.close()
        assert image_id == amd64.image_id
        data = df_json(containerd)
        assert [i["image_id"] for i in data["images"]] == [amd64.image_id]
        assert data["totals"]["physical"] == committed_usage(containerd)
        assert data["totals"]["content"] == sum(len(b.data) for b in amd64.layers)
        assert data["totals"]["missing_layers"] == 0
    finally:
        containerd.cleanup()


def test_an_image_not_unpacked_here_is_counted_and_reported_missing(tmp_path):
    # An arm64 image imported without unpacking, as for another platform or snapshotter.
    containerd = containerd_with(tmp_path)
    try:
        other = ImageSpec(["localhost/other-arch:1"], [data_layer("arm-only", 50 * KIB)], architecture="arm64").build()
        native = ImageSpec(["localhost/native:1"], [busybox_layer()]).build()
        containerd.import_image(native.write_tar(tmp_path / "native.tar"))
        containerd.ctr(
            "images", "import", "--platform", "linux/arm64", "--no-unpack", str(other.write_tar(tmp_path / "other.tar"))
        )
        data = df_json(containerd)
        ids = sorted(i["image_id"] for i in data["images"])
        assert ids == sorted([native.image_id, other.image_id])
        assert data["totals"]["missing_layers"] == 1  # never unpacked here
        assert data["totals"]["physical"] == committed_usage(containerd)
        exporter = start_exporter(containerd.endpoint, tmp_path, "--refresh-interval", "0.5")
        try:
            exporter.wait_for(lambda: (exporter.value("layer_sharing_refreshes_total") or 0) >= 3, what="refreshes")
            assert exporter.value("layer_sharing_missing_layers") == 1
            assert exporter.value("layer_sharing_errors_total", stage="snapshot_usage") == 1  # once, not per refresh
            assert exporter.value("layer_sharing_physical_bytes") == committed_usage(containerd)
        finally:
            assert stop_exporter(exporter) == 0
    finally:
        containerd.cleanup()


def test_native_snapshotter_selected_by_configuration(tmp_path):
    containerd = containerd_with(tmp_path, snapshotter="native")
    try:
        pause = ImageSpec([PAUSE_REF], [busybox_layer()], entrypoint=("/bin/sleep", "1000000")).build()
        app = ImageSpec(["localhost/app:1"], [busybox_layer(), data_layer("native-app", 150 * KIB)]).build()
        for image in (pause, app):
            containerd.import_image(image.write_tar(tmp_path / f"{image.image_id[7:19]}.tar"))
        maker = PodMaker(containerd.endpoint, str(containerd.pod_logs))
        try:
            maker.run_pod("default", "on-native", [ContainerSpec("app", "localhost/app:1")])
        finally:
            maker.close()
        usage = containerd.snapshot_usage()  # the native snapshotter's own figures
        data = df_json(containerd, "--snapshotter", "native")
        assert data["runtime"]["snapshotter"] == "native"
        assert data["totals"]["physical"] == sum(v[0] for k, v in usage.items() if k.startswith("sha256:"))
        assert data["totals"]["missing_layers"] == 0
        assert data["pods"][0]["bytes"] == sum(
            v[0]
            for k, v in usage.items()
            if k in set(next(i for i in data["images"] if i["name"] == "localhost/app:1")["chain"])
        )
        # Without a setting the runtime's own snapshotter is read.
        assert df_json(containerd)["totals"] == data["totals"]
        # A wrong one (overlayfs) finds none of these layers: reported, not fatal.
        wrong = df_json(containerd, "--snapshotter", "overlayfs")
        assert wrong["totals"]["missing_layers"] == wrong["totals"]["layers"] > 0
        assert wrong["runtime"]["runtime_snapshotter"] == "native"
    finally:
        containerd.cleanup()


def test_fresh_node_exports_zeros_not_nothing(tmp_path):
    containerd = containerd_with(tmp_path)
    try:
        data = df_json(containerd)
        assert all(value == 0 for value in data["totals"].values())
        exporter = start_exporter(containerd.endpoint, tmp_path, "--refresh-interval", "1")
        try:
            metrics = exporter.metrics()
            node_families = [
                "images",
                "layers",
                "logical_bytes",
                "physical_bytes",
                "shared_bytes",
                "unique_bytes",
                "reclaimable_bytes",
                "content_bytes",
                "writable_bytes",
                "missing_layers",
                "pods",
            ]
            for family in node_families:
                assert metrics[(f"layer_sharing_{family}", ())] == 0, family
            assert not any(math.isnan(v) for v in metrics.values())
            assert metrics[("layer_sharing_up", ())] == 1
        finally:
            assert stop_exporter(exporter) == 0
    finally:
        containerd.cleanup()


def test_runtime_endpoint_accepts_a_bare_path(sample_node):
    bare = str(sample_node.containerd.socket)
    result = run_cli("df", "--runtime-endpoint", bare, "--output", "json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["totals"]["images"] == len(sample_node.images)
