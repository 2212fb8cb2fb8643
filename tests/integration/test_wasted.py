"""Wasted bytes on a real containerd: the realistic images (real Debian layers, gzip and
zstd) pulled through CRI from the loopback registry; every image's and the node's figure
exact against the layer contents the harness wrote; a restart with --state-dir reads no
blob; discard_unpacked_layers gives unavailable layers and no figures rather than wrong ones."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.harness.containerd import Containerd
from tests.harness.kube_api import KubeApiStandIn, exporter_pod
from tests.harness.pods import PodMaker
from tests.harness.realistic import Compression, Entry, RealisticImage, realistic_images
from tests.harness.registry import Registry
from tests.integration.conftest import ServedExporter, run_cli, start_exporter, stop_exporter

CONTENT_READ = "containerd.services.content.v1.Content/Read"


@dataclass
class PulledNode:
    containerd: Containerd
    images: dict[str, RealisticImage]
    compression: Compression


def chain_ids(diff_ids: tuple[str, ...]) -> list[str]:
    chain = [diff_ids[0]]
    for diff_id in diff_ids[1:]:
        chain.append("sha256:" + hashlib.sha256(f"{chain[-1]} {diff_id}".encode()).hexdigest())
    return chain


def node_wasted_reference(images: Mapping[str, RealisticImage]) -> int:
    """Σ file bytes, over distinct layers (chain IDs), hidden in every image using the layer."""
    hidden_in: dict[str, list[set[Entry]]] = {}
    for image in images.values():
        chain = chain_ids(image.image.diff_ids)
        per_layer: list[set[Entry]] = [set() for _ in chain]
        for index, entry in image.hidden:
            if entry.kind == "file":
                per_layer[index].add(entry)
        for chain_id, hidden in zip(chain, per_layer, strict=True):
            hidden_in.setdefault(chain_id, []).append(hidden)
    return sum(entry.size for sets in hidden_in.values() for entry in set.intersection(*sets))


def pull_realistic(containerd: Containerd, registry: Registry, compression: Compression) -> dict[str, RealisticImage]:
    images = realistic_images(compression)
    maker = PodMaker(containerd.endpoint, str(containerd.pod_logs))
    try:
        for name, image in images.items():
            ref = registry.push(f"realistic-{name}", compression, image.image)
            assert maker.pull_image(ref) == image.image.image_id
    finally:
        maker.close()
    return images


@pytest.fixture(scope="module")
def registry() -> Iterator[Registry]:
    served = Registry().start()
    yield served
    served.stop()


@pytest.fixture(scope="module", params=["gzip", "zstd"])
def pulled(
    request: pytest.FixtureRequest, registry: Registry, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PulledNode]:
    compression: Compression = request.param
    containerd = Containerd(tmp_path_factory.mktemp(f"containerd-{compression}"))
    try:
        containerd.start()
        yield PulledNode(containerd, pull_realistic(containerd, registry, compression), compression)
    finally:
        containerd.cleanup()


def analysed(exporter: ServedExporter) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    def done() -> dict[tuple[str, tuple[tuple[str, str], ...]], float] | None:
        metrics = exporter.metrics()
        finished = metrics.get(("layer_sharing_analysis_pending_layers", ())) == 0
        return metrics if finished and ("layer_sharing_wasted_bytes", ()) in metrics else None

    result = exporter.wait_for(done, timeout=120, what="the layer analysis to finish")
    assert isinstance(result, dict)
    return result


def image_wasted(metrics: Mapping[tuple[str, tuple[tuple[str, str], ...]], float]) -> dict[str, float]:
    return {
        dict(labels)["image_id"]: value
        for (name, labels), value in metrics.items()
        if name == "layer_sharing_image_wasted_bytes"
    }


def content_reads(
    metrics: Mapping[tuple[str, tuple[tuple[str, str], ...]], float],
) -> float:
    return metrics.get(("layer_sharing_runtime_requests_total", (("method", CONTENT_READ),)), 0.0)


def test_every_image_and_the_node_are_exact_and_a_restart_reads_no_blob(pulled: PulledNode, tmp_path: Path):
    images = pulled.images
    expected_images = {image.image.image_id: image.wasted_bytes for image in images.values()}
    assert expected_images == {images["clean"].image.image_id: 133_324_989, images["apt"].image.image_id: 1_620_180}
    expected_node = node_wasted_reference(images)
    state_dir = tmp_path / "state"
    # The default CPU budget (a quarter of a core): slower, and the figures the same.
    first = start_exporter(
        pulled.containerd.endpoint, tmp_path, "--refresh-interval", "1", "--state-dir", str(state_dir)
    )
    try:
        metrics = analysed(first)
        assert image_wasted(metrics) == expected_images
        assert metrics[("layer_sharing_wasted_bytes", ())] == expected_node
        assert metrics[("layer_sharing_analysis_unavailable_layers", ())] == 0
        assert metrics[("layer_sharing_errors_total", (("stage", "content"),))] == 0
        first_reads = content_reads(metrics)
    finally:
        assert stop_exporter(first) == 0
    manifests = len(images)  # one manifest each: the only content a restarted exporter reads
    # The first time, also the 4 distinct layers' blobs: a call each (or more, where a read
    # paced by the CPU budget outlasted its call's deadline and was continued by another).
    blobs = {layer.blob(pulled.compression).digest for image in images.values() for layer in image.layers}
    assert len(blobs) == 4
    assert first_reads >= manifests + len(blobs)
    assert len(list(state_dir.iterdir())) == 4
    second = start_exporter(
        pulled.containerd.endpoint,
        tmp_path,
        "--refresh-interval",
        "1",
        "--state-dir",
        str(state_dir),
        "--analysis-cpu",
        "2",
    )
    try:
        metrics = analysed(second)
        assert image_wasted(metrics) == expected_images
        assert metrics[("layer_sharing_wasted_bytes", ())] == expected_node
        assert content_reads(metrics) == manifests
    finally:
        assert stop_exporter(second) == 0


def test_a_paced_read_that_outlasts_its_calls_deadline_goes_on_in_new_calls(pulled: PulledNode, tmp_path: Path):
    """A small CPU budget and short deadlines: each big blob takes several seconds to
    read, each call lasts one second, and the figures are still exact."""
    images = pulled.images
    exporter = start_exporter(
        pulled.containerd.endpoint, tmp_path, "--analysis-cpu", "0.15", "--rpc-timeout", "1", "--refresh-interval", "1"
    )
    try:
        metrics = analysed(exporter)
        assert image_wasted(metrics) == {image.image.image_id: image.wasted_bytes for image in images.values()}
        assert metrics[("layer_sharing_wasted_bytes", ())] == node_wasted_reference(images)
        assert metrics[("layer_sharing_analysis_unavailable_layers", ())] == 0
        blobs = {layer.blob(pulled.compression).digest for image in images.values() for layer in image.layers}
        assert content_reads(metrics) > len(images) + len(blobs)  # manifests, blobs, and continuations
    finally:
        assert stop_exporter(exporter) == 0


def test_df_image_shows_wasted_bytes_per_layer_and_the_largest_hidden_files(pulled: PulledNode):
    image = pulled.images["clean"]
    result = run_cli(
        "df", "--runtime-endpoint", pulled.containerd.endpoint, "--image", image.image.image_id, "--output", "json"
    )
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["wasted_bytes"] == image.wasted_bytes
    assert [layer["wasted_bytes"] for layer in data["layers"]] == list(image.wasted_by_layer)
    hidden_files = {(i, e.path): e.size for i, e in image.hidden if e.kind == "file"}
    largest = sorted(hidden_files.values(), reverse=True)[: len(data["hidden_files"])]
    assert [f["size"] for f in data["hidden_files"]] == largest
    for hidden in data["hidden_files"]:
        assert hidden_files[(hidden["layer"], hidden["path"])] == hidden["size"]
        assert hidden["hidden_by"] > hidden["layer"]
    table = run_cli("df", "--runtime-endpoint", pulled.containerd.endpoint, "--image", image.image.image_id)
    assert table.returncode == 0, table.stderr
    assert "WASTED" in table.stdout and data["hidden_files"][0]["path"] in table.stdout


def test_discard_unpacked_layers_gives_unavailable_layers_and_no_figures(registry: Registry, tmp_path: Path):
    containerd = Containerd(tmp_path / "containerd", discard_unpacked_layers=True)
    try:
        containerd.start()
        images = pull_realistic(containerd, registry, "gzip")
        layer_digests = {blob.digest for image in images.values() for blob in image.image.layers}
        deadline = time.monotonic() + 30  # containerd's GC removes unpacked blobs shortly after the pull
        while layer_digests & containerd.content_digests() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not layer_digests & containerd.content_digests()
        exporter = start_exporter(containerd.endpoint, tmp_path, "--refresh-interval", "1")
        try:
            metrics = exporter.wait_for(
                lambda: (m := exporter.metrics()).get(("layer_sharing_analysis_unavailable_layers", ())) == 4 and m,
                what="4 unavailable layers",
            )
            assert isinstance(metrics, dict)
            assert metrics[("layer_sharing_analysis_pending_layers", ())] == 0
            assert not image_wasted(metrics)
            assert ("layer_sharing_wasted_bytes", ()) not in metrics
            assert metrics[("layer_sharing_physical_bytes", ())] > 0  # the rest is exported as before
            # One line for the node, naming the cause, and none per layer.
            assert exporter.log().count("discard_unpacked_layers = true") == 1
            assert "the blobs of 4 of the node's" in exporter.log()
            assert "unavailable for the wasted-bytes analysis" not in exporter.log()
        finally:
            assert stop_exporter(exporter) == 0
        data = run_cli(
            "df",
            "--runtime-endpoint",
            containerd.endpoint,
            "--image",
            images["clean"].image.image_id,
            "--output",
            "json",
        )
        assert data.returncode == 0, data.stderr
        assert json.loads(data.stdout)["wasted_bytes"] is None
    finally:
        containerd.cleanup()


def test_the_cluster_report_lists_images_by_wasted_bytes(pulled: PulledNode, registry: Registry, tmp_path: Path):
    exporter = start_exporter(pulled.containerd.endpoint, tmp_path, "--refresh-interval", "1", "--analysis-cpu", "2")
    api = KubeApiStandIn("wasted-node").start()
    try:
        analysed(exporter)
        api.exporter_pods = [exporter_pod("monitoring", "lse-wasted", "wasted-node")]
        api.proxied[("monitoring", "lse-wasted", 9877)] = exporter.base_url
        kubeconfig = api.kubeconfig(tmp_path / "kubeconfig")
        result = run_cli("report", "--kubeconfig", str(kubeconfig), "--output", "json")
        assert result.returncode == 0, result.stderr
        wasted = {image["image"]: image["wasted"] for image in json.loads(result.stdout)["images"]}
        assert wasted == {
            f"{registry.host}/realistic-{name}:{pulled.compression}": image.wasted_bytes
            for name, image in pulled.images.items()
        }
        table = run_cli("report", "--kubeconfig", str(kubeconfig), "--view", "images", "--sort", "wasted")
        assert table.returncode == 0 and "WASTED" in table.stdout
        csv_out = run_cli(
            "report", "--kubeconfig", str(kubeconfig), "--view", "images", "--sort", "wasted", "--output", "csv"
        )
        lines = csv_out.stdout.splitlines()
        assert lines[0] == "image,base,nodes,size,unique,wasted"
        assert [line.split(",")[-1] for line in lines[1:]] == ["133324989", "1620180"]
    finally:
        api.stop()
        assert stop_exporter(exporter) == 0


def registry_refs(registry: Registry, images: Mapping[str, RealisticImage], compression: Compression) -> list[str]:
    return [f"{registry.host}/realistic-{name}:{compression}" for name in images]


def test_wasted_from_the_registry_equals_the_nodes_figures_and_a_second_run_fetches_nothing(
    pulled: PulledNode, registry: Registry, tmp_path: Path
):
    exporter = start_exporter(pulled.containerd.endpoint, tmp_path, "--refresh-interval", "1", "--analysis-cpu", "2")
    try:
        metrics = analysed(exporter)
    finally:
        assert stop_exporter(exporter) == 0
    node_images, node_total = image_wasted(metrics), metrics[("layer_sharing_wasted_bytes", ())]
    refs = registry_refs(registry, pulled.images, pulled.compression)
    command = ("wasted", *refs, "--cache-dir", str(tmp_path / "cache"), "--output", "json")
    registry.reset_counts()
    result = run_cli(*command)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert {row["image_id"]: row["wasted_bytes"] for row in data["images"]} == node_images
    assert data["wasted_bytes"] == node_total
    blobs = {layer.blob(pulled.compression).digest for image in pulled.images.values() for layer in image.layers}
    assert data["layers_fetched"] == len(blobs) == 4
    assert all(registry.served().gets[digest] == 1 for digest in blobs)  # each distinct layer once
    registry.reset_counts()
    again = run_cli(*command)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["images"] == data["images"]
    assert registry.served().layer_gets == 0


def test_discarded_blobs_figures_come_from_the_registry(registry: Registry, tmp_path: Path):
    """On a node with discard_unpacked_layers = true the registry gives the figures a node with blobs computes."""
    containerd = Containerd(tmp_path / "containerd", discard_unpacked_layers=True)
    try:
        containerd.start()
        images = pull_realistic(containerd, registry, "gzip")
        result = run_cli("wasted", *registry_refs(registry, images, "gzip"), "--no-cache", "--output", "json")
        assert result.returncode == 0, result.stderr
        data = json.loads(result.stdout)
        assert {row["image_id"]: row["wasted_bytes"] for row in data["images"]} == {
            image.image.image_id: image.wasted_bytes for image in images.values()
        }
        assert data["wasted_bytes"] == node_wasted_reference(images)
    finally:
        containerd.cleanup()


def test_the_report_fills_in_from_the_registry_what_nodes_without_blobs_cannot_analyse(
    registry: Registry, tmp_path: Path
):
    """`report --view wasted` on a node with discard_unpacked_layers = true: the node analyses
    nothing, the report reads each distinct layer once from the registry, and a second run
    (the summaries cached by diff ID) reads none."""
    containerd = Containerd(tmp_path / "containerd", discard_unpacked_layers=True)
    api = KubeApiStandIn("discarding-node").start()
    exporter: ServedExporter | None = None
    try:
        containerd.start()
        images = pull_realistic(containerd, registry, "gzip")
        exporter = start_exporter(containerd.endpoint, tmp_path, "--refresh-interval", "1")
        served = exporter
        served.wait_for(
            lambda: served.metrics().get(("layer_sharing_analysis_unavailable_layers", ())) == 4,
            what="4 unavailable layers",
        )
        api.exporter_pods = [exporter_pod("monitoring", "lse-discarding", "discarding-node")]
        api.proxied[("monitoring", "lse-discarding", 9877)] = exporter.base_url
        kubeconfig = str(api.kubeconfig(tmp_path / "kubeconfig"))
        command = ("report", "--kubeconfig", kubeconfig, "--view", "wasted", "--cache-dir", str(tmp_path / "cache"))
        registry.reset_counts()
        result = run_cli(*command, "--output", "json")
        assert result.returncode == 0, result.stderr
        rows = {row["image"]: (row["wasted"], row["wasted_from"]) for row in json.loads(result.stdout)["images"]}
        assert rows == {
            f"{registry.host}/realistic-{name}:gzip": (image.wasted_bytes, "registry") for name, image in images.items()
        }
        blobs = {blob.digest for image in images.values() for blob in image.image.layers}
        assert len(blobs) == 4 and all(registry.served().gets[digest] == 1 for digest in blobs)
        registry.reset_counts()
        table = run_cli(*command, "--output", "csv")
        assert table.returncode == 0, table.stderr
        lines = table.stdout.splitlines()
        assert lines[0] == "image,nodes,size,wasted,from"
        assert [line.split(",")[-2:] for line in lines[1:]] == [["133324989", "registry"], ["1620180", "registry"]]
        assert registry.served().layer_gets == 0  # every summary from the cache
    finally:
        api.stop()
        if exporter is not None:
            assert stop_exporter(exporter) == 0
        containerd.cleanup()
