"""Capacity from a small directory, and the kubelet's image GC, on a real containerd.

`--capacity-dir` on the image filesystem gives its statvfs figures and the GC
model; on another filesystem (a tmpfs) the exporter says so in a metric and one
log line, and exports no capacity. What the model says deleting every unused
image frees is what CRI RemoveImage (the kubelet's call) then really frees:
the snapshots and layer blobs that disappear, to the byte.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness.containerd import PAUSE_REF, Containerd
from tests.harness.images import BuiltImage, ImageSpec, busybox_layer, data_layer, write_images_tar
from tests.harness.pods import ContainerSpec, PodMaker
from tests.integration.conftest import ServedExporter, start_exporter, stop_exporter

Metrics = dict[tuple[str, tuple[tuple[str, str], ...]], float]


class Node:
    def __init__(self, containerd: Containerd, images: dict[str, BuiltImage], maker: PodMaker) -> None:
        self.containerd = containerd
        self.images = images
        self.maker = maker


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    workdir = tmp_path_factory.mktemp("capacity")
    containerd = Containerd(workdir / "containerd")
    maker: PodMaker | None = None
    try:
        containerd.start()
        images = {
            "pause": ImageSpec([PAUSE_REF], [busybox_layer()], entrypoint=("/bin/sleep", "1000000")).build(),
            # app runs; old shares busybox with it and has two layers of its own.
            "app": ImageSpec(["localhost/app:1"], [busybox_layer(), data_layer("app", 200_000)]).build(),
            "old": ImageSpec(
                ["localhost/old:1"], [busybox_layer(), data_layer("old", 300_000), data_layer("old-2", 50_000)]
            ).build(),
        }
        containerd.import_image(write_images_tar(list(images.values()), workdir / "images.tar"))
        maker = PodMaker(containerd.endpoint, str(containerd.pod_logs))
        maker.run_pod("default", "web", [ContainerSpec("app", "localhost/app:1")])
        yield Node(containerd, images, maker)
    finally:
        if maker is not None:
            maker.close()
        containerd.cleanup()


def metrics_once_refreshed(exporter: ServedExporter) -> Metrics:
    result = exporter.wait_for(
        lambda: (m := exporter.metrics()).get(("layer_sharing_images", ())) == 3 and m, what="the node's images"
    )
    assert isinstance(result, dict)
    return result


def by_name(metrics: Metrics, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {labels: value for (metric, labels), value in metrics.items() if metric == name}


def test_a_capacity_dir_on_another_filesystem_is_said_once_and_gives_no_capacity(node: Node, tmp_path: Path):
    with tempfile.TemporaryDirectory(dir="/dev/shm") as elsewhere:  # a tmpfs: not the image filesystem
        exporter = start_exporter(
            node.containerd.endpoint, tmp_path, "--refresh-interval", "0.5", "--capacity-dir", elsewhere
        )
        try:
            metrics = metrics_once_refreshed(exporter)
            exporter.wait_for(lambda: exporter.metrics()[("layer_sharing_refreshes_total", ())] >= 4, what="refreshes")
            metrics = exporter.metrics()
        finally:
            assert stop_exporter(exporter) == 0
    assert list(by_name(metrics, "layer_sharing_capacity_dir_elsewhere").values()) == [1]
    assert not by_name(metrics, "layer_sharing_image_fs_capacity_bytes")
    assert not by_name(metrics, "layer_sharing_image_fs_available_bytes")
    assert not by_name(metrics, "layer_sharing_image_gc_bytes_to_free")  # no capacity, no model
    assert exporter.log().count("is not on the image filesystem") == 1


def test_capacity_from_the_dir_and_gc_frees_exactly_what_the_model_says(node: Node, tmp_path: Path):
    state = tmp_path / "state"  # the chart's hostPath: capacity and analysis state in one directory
    state.mkdir()
    exporter = start_exporter(
        node.containerd.endpoint,
        tmp_path,
        "--refresh-interval",
        "0.5",
        "--capacity-dir",
        str(state),
        "--state-dir",
        str(state),
    )
    try:
        metrics = metrics_once_refreshed(exporter)
    finally:
        assert stop_exporter(exporter) == 0
    ((labels, capacity),) = by_name(metrics, "layer_sharing_image_fs_capacity_bytes").items()
    st = os.statvfs(state)
    assert capacity == st.f_blocks * st.f_frsize
    assert by_name(metrics, "layer_sharing_capacity_dir_elsewhere") == {labels: 0}
    # This disk is far from 85% full: the kubelet would free nothing, and could reach 80%.
    assert by_name(metrics, "layer_sharing_image_gc_bytes_to_free") == {labels: 0}
    assert by_name(metrics, "layer_sharing_image_gc_can_reach_low_threshold") == {labels: 1}
    freeable = by_name(metrics, "layer_sharing_image_gc_freeable_bytes")[labels]

    # Delete every unused image as the kubelet does (CRI RemoveImage), and measure what went.
    containerd = node.containerd
    snapshots_before, blobs_before = containerd.snapshot_usage(), containerd.content_digests()
    node.maker.remove_image(node.images["old"].image_id)
    snapshots_after, blobs_after = containerd.snapshot_usage(), containerd.content_digests()
    layer_blobs = {blob.digest: len(blob.data) for image in node.images.values() for blob in image.layers}
    freed_snapshots = sum(snapshots_before[key][0] for key in snapshots_before.keys() - snapshots_after.keys())
    freed_blobs = sum(size for digest, size in layer_blobs.items() if digest in blobs_before - blobs_after)
    assert freed_snapshots > 300_000 and freed_blobs > 300_000  # old's own two layers, not busybox
    assert freeable == freed_snapshots + freed_blobs
