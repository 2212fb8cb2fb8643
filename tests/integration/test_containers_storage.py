"""A CRI-O-shaped node from real parts: containerd serves CRI (images, pods,
containers), podman writes a real containers/storage holding the same images,
and the exporter reads its layers from that store (`--layer-store
containers-storage`). Every node, image, pod and base figure must equal the
sums over the layers.json and images.json podman wrote, to the byte.

The sample node holds the traps: one image under two names (app-a), the same
diff on two parents (app-a's top layer again on app-c: two c/storage layers),
an empty layer (tool: a tar with no entries, 10240 bytes as c/storage counts
it), a pod of two images, an exited container, an unused image.

The expected figures are computed here from podman's files alone: layers are
c/storage layer IDs walked down from each image's top layer, never OCI chain
IDs, so the exporter's ID mapping is checked, not repeated.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest

from tests.harness.containers_storage import Podman
from tests.harness.scenario import SAMPLE_PODS, SampleNode
from tests.integration.conftest import ServedExporter, run_cli, start_exporter, stop_exporter


@pytest.fixture(scope="module")
def podman(sample_node: SampleNode, tmp_path_factory: pytest.TempPathFactory) -> Any:
    store = Podman(tmp_path_factory.mktemp("containers-storage"))
    try:
        for image in sample_node.images.values():
            store.load(image)
        yield store
    finally:
        store.cleanup()


def store_flags(podman: Podman) -> list[str]:
    return ["--layer-store", "containers-storage", "--storage-root", str(podman.root)]


@pytest.fixture(scope="module")
def served(sample_node: SampleNode, podman: Podman, tmp_path_factory: pytest.TempPathFactory) -> Any:
    workdir = tmp_path_factory.mktemp("exporter-cs")
    config = workdir / "config.yaml"
    config.write_text(sample_node.catalog_yaml())
    exporter = start_exporter(
        sample_node.containerd.endpoint,
        workdir,
        "--config",
        str(config),
        "--refresh-interval",
        "1",
        *store_flags(podman),
    )
    yield exporter
    assert stop_exporter(exporter) == 0


@dataclass
class Expected:
    """The figures, from podman's files (layer bytes = diff-size, the tar stream size)."""

    image_layers: dict[str, set[str]]  # image ID (sha256:hex, as CRI says) -> c/storage layer IDs
    diff_size: dict[str, int]
    blob_size: dict[str, int]  # compressed digest -> bytes
    blobs_of: dict[str, list[str]]  # image ID -> its layers' compressed digests, bottom-up

    def size(self, layers: set[str]) -> int:
        return sum(self.diff_size[layer] for layer in layers)


def expected(node: SampleNode, podman: Podman) -> Expected:
    layers = {record["id"]: record for record in podman.layers()}
    tops = {record["id"]: record["layer"] for record in podman.images()}
    image_layers: dict[str, set[str]] = {}
    blobs_of: dict[str, list[str]] = {}
    for image in node.images.values():
        chain: list[str] = []
        layer_id = tops[image.image_id.removeprefix("sha256:")]  # c/storage's image ID is the config digest's hex
        while layer_id:
            chain.append(layer_id)
            layer_id = layers[layer_id].get("parent", "")
        chain.reverse()
        # The walk is right: each stored layer holds the image's diff at that position.
        assert [layers[i]["diff-digest"] for i in chain] == list(image.diff_ids)
        image_layers[image.image_id] = set(chain)
        blobs_of[image.image_id] = [layers[i]["compressed-diff-digest"] for i in chain]
    # A blob's size: the records that say how it was compressed. (podman 4.3 records
    # the uncompressed size on a layer it rebuilt from another layer's diff.)
    blob_size: dict[str, int] = {}
    for record in layers.values():
        if record.get("compression") and record.get("compressed-diff-digest"):
            blob_size.setdefault(record["compressed-diff-digest"], record["compressed-size"])
    # ... which are the bytes of the blobs the harness built.
    built = {blob.digest: len(blob.data) for image in node.images.values() for blob in image.layers}
    assert blob_size == built
    return Expected(
        image_layers=image_layers,
        diff_size={layer_id: record.get("diff-size", 0) for layer_id, record in layers.items()},
        blob_size=blob_size,
        blobs_of=blobs_of,
    )


def df_json(node: SampleNode, podman: Podman, *extra: str) -> dict[str, Any]:
    result = run_cli(
        "df", "--runtime-endpoint", node.containerd.endpoint, "--output", "json", *store_flags(podman), *extra
    )
    assert result.returncode == 0, result.stderr
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def pods_images(node: SampleNode) -> dict[tuple[str, str], set[str]]:
    ids = {ref: image.image_id for image in node.images.values() for ref in image.spec.refs}
    return {(ns, name): {ids[c.image] for c in containers} for ns, name, containers in SAMPLE_PODS}


def test_the_store_has_the_traps(sample_node: SampleNode, podman: Podman) -> None:
    want = expected(sample_node, podman)
    app_a, app_c = sample_node.images["app-a"], sample_node.images["app-c"]
    # The same diff on two parents: two c/storage layers with one diff-digest.
    assert app_a.diff_ids[-1] == app_c.diff_ids[-1]
    assert len({i for i in want.image_layers[app_a.image_id] ^ want.image_layers[app_c.image_id]}) >= 2
    # The empty layer is a real 10240-byte tar in c/storage.
    tool = sample_node.images["tool"]
    assert sorted(want.diff_size[i] for i in want.image_layers[tool.image_id])[0] == 10240
    # One image under two names.
    names = {n for record in podman.images() for n in record.get("names", [])}
    assert {"localhost/app-a:1", "localhost/app-a:latest"} <= names


def test_node_figures_equal_the_sums_over_layers_json(
    sample_node: SampleNode, podman: Podman, served: ServedExporter
) -> None:
    want = expected(sample_node, podman)
    refcount = Counter(layer for layers in want.image_layers.values() for layer in layers)
    physical = want.size(set(refcount))
    shared = want.size({layer for layer, n in refcount.items() if n >= 2})
    logical = sum(want.size(layers) for layers in want.image_layers.values())
    pause_id = sample_node.images["pause"].image_id
    in_use = {pause_id} | set().union(*pods_images(sample_node).values())
    in_use_layers = set().union(*(want.image_layers[i] for i in in_use))
    reclaimable = want.size(set(refcount) - in_use_layers)
    content = sum(want.blob_size.values())
    got = df_json(sample_node, podman)
    assert got["runtime"]["layer_store"] == "containers-storage"
    totals = got["totals"]
    assert (totals["images"], totals["layers"], totals["missing_layers"]) == (len(sample_node.images), len(refcount), 0)
    expected_totals = {
        "physical": physical,
        "logical": logical,
        "shared": shared,
        "unique": physical - shared,
        "reclaimable": reclaimable,
        "content": content,
    }
    assert {k: totals[k] for k in expected_totals} == expected_totals
    assert reclaimable > 0 and shared > 0 and logical > physical
    metrics = served.wait_for(lambda: served.metrics().get(("layer_sharing_physical_bytes", ())) and served.metrics())
    assert isinstance(metrics, dict)
    for name, value in expected_totals.items():
        assert metrics[(f"layer_sharing_{name}_bytes", ())] == value, name
    assert metrics[("layer_sharing_missing_layers", ())] == 0
    assert metrics[("layer_sharing_errors_total", (("stage", "layer_store"),))] == 0
    info = {labels: v for (name, labels), v in metrics.items() if name == "layer_sharing_runtime_info"}
    assert [dict(labels)["layer_store"] for labels in info] == ["containers-storage"]
    assert [dict(labels)["snapshotter"] for labels in info] == ["overlay"]


def test_image_figures_equal_the_sums_over_layers_json(
    sample_node: SampleNode, podman: Podman, served: ServedExporter
) -> None:
    want = expected(sample_node, podman)
    refcount = Counter(layer for layers in want.image_layers.values() for layer in layers)
    images = {i["image_id"]: i for i in df_json(sample_node, podman)["images"]}
    assert set(images) == set(want.image_layers)
    metrics = served.metrics()
    for image_id, layers in want.image_layers.items():
        size = want.size(layers)
        shared = want.size({layer for layer in layers if refcount[layer] >= 2})
        compressed = sum(want.blob_size[d] for d in want.blobs_of[image_id])
        got = images[image_id]
        assert (got["size"], got["shared"], got["unique"], got["compressed_size"]) == (
            size,
            shared,
            size - shared,
            compressed,
        ), got["name"]
        labels = (("image", got["name"]), ("image_id", image_id))
        assert metrics[("layer_sharing_image_size_bytes", labels)] == size
        assert metrics[("layer_sharing_image_shared_bytes", labels)] == shared
        assert metrics[("layer_sharing_image_unique_bytes", labels)] == size - shared
        assert metrics[("layer_sharing_image_compressed_bytes", labels)] == compressed


def test_pod_figures_equal_the_sums_over_layers_json(
    sample_node: SampleNode, podman: Podman, served: ServedExporter
) -> None:
    want = expected(sample_node, podman)
    pod_layers = {
        key: set().union(*(want.image_layers[i] for i in ids)) for key, ids in pods_images(sample_node).items()
    }
    pod_refcount = Counter(layer for layers in pod_layers.values() for layer in layers)
    pods = {(p["namespace"], p["name"]): p for p in df_json(sample_node, podman)["pods"]}
    assert set(pods) == set(pod_layers)
    metrics = served.metrics()
    for key, layers in pod_layers.items():
        size = want.size(layers)
        unique = want.size({layer for layer in layers if pod_refcount[layer] == 1})
        exact_share = sum(Fraction(want.diff_size[layer], pod_refcount[layer]) for layer in layers)
        got = pods[key]
        assert (got["bytes"], got["unique"], got["shared"]) == (size, unique, size - unique), key
        assert abs(got["attributed"] - exact_share) < 1, key  # whole bytes, largest remainder
        labels = (("namespace", key[0]), ("pod", key[1]))
        assert metrics[("layer_sharing_pod_bytes", labels)] == size
        assert metrics[("layer_sharing_pod_unique_bytes", labels)] == unique
    assert sum(p["attributed"] for p in pods.values()) == want.size(set(pod_refcount))


def test_base_figures_equal_the_sums_over_layers_json(
    sample_node: SampleNode, podman: Podman, served: ServedExporter
) -> None:
    want = expected(sample_node, podman)
    bases = {b["name"]: b for b in df_json(sample_node, podman, "--config", str(served_config(served)))["bases"]}
    base_os = want.size(want.image_layers[sample_node.images["base"].image_id])
    job = sample_node.images["job"]
    # other-os is the catalog's first two diff IDs of job: its two bottom stored layers.
    other_os = sum(
        size
        for layer, size in want.diff_size.items()
        if layer in want.image_layers[job.image_id] and layer not in _top(podman, job.image_id)
    )
    # The whole stack under each base; `bytes` counts a layer of nested bases toward the innermost one
    # only (base-os and other-os share the busybox layer, which a detected base then owns).
    stacks = (bases["base-os"]["stack_bytes"], bases["other-os"]["stack_bytes"])
    assert stacks == (base_os, other_os)
    shared_bottom = want.size(
        set(want.image_layers[sample_node.images["base"].image_id]) & set(want.image_layers[job.image_id])
    )
    assert (bases["base-os"]["bytes"], bases["other-os"]["bytes"]) == (
        base_os - shared_bottom,
        other_os - shared_bottom,
    )
    metrics = served.metrics()
    labels = (("base", "base-os"), ("source", "catalog"), ("version", ""))
    assert metrics[("layer_sharing_base_stack_bytes", labels)] == base_os
    assert metrics[("layer_sharing_base_bytes", labels)] == base_os - shared_bottom


def served_config(served: ServedExporter) -> Path:
    return served.log_path.parent / "config.yaml"


def _top(podman: Podman, image_id: str) -> set[str]:
    return {record["layer"] for record in podman.images() if record["id"] == image_id.removeprefix("sha256:")}


def test_the_exporter_only_reads_the_store(sample_node: SampleNode, podman: Podman, served: ServedExporter) -> None:
    files = [
        podman.root / "overlay-layers" / "layers.json",
        podman.root / "overlay-images" / "images.json",
        podman.root / "overlay-layers" / "layers.lock",
    ]
    before = [(os.stat(f).st_ino, os.stat(f).st_mtime_ns) for f in files]
    served.wait_for(lambda: (served.value("layer_sharing_refreshes_total") or 0) >= 3, what="three refreshes")
    assert [(os.stat(f).st_ino, os.stat(f).st_mtime_ns) for f in files] == before


def test_the_store_is_reread_when_podman_rewrites_it(
    sample_node: SampleNode, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """An image removed from c/storage (CRI still lists it) shows as missing layers, not as
    zero bytes; loaded again, it is whole again: layers.json is re-read when it changes."""
    workdir = tmp_path_factory.mktemp("reread")
    store = Podman(workdir)
    exporter = None
    try:
        for image in sample_node.images.values():
            store.load(image)
        exporter = start_exporter(
            sample_node.containerd.endpoint, workdir, "--refresh-interval", "0.5", *store_flags(store)
        )
        exporter.wait_for(lambda: exporter.value("layer_sharing_missing_layers") == 0, what="all layers found")
        tool = sample_node.images["tool"]
        store.run("rmi", "localhost/tool:1")
        # tool's own layers (the empty one and its data) are gone from layers.json.
        exporter.wait_for(lambda: exporter.value("layer_sharing_missing_layers") == 2, what="two missing layers")
        store.load(tool)
        exporter.wait_for(lambda: exporter.value("layer_sharing_missing_layers") == 0, what="found again")
        assert exporter.value("layer_sharing_errors_total", stage="layer_store") == 0
    finally:
        if exporter is not None:
            assert stop_exporter(exporter) == 0
        store.cleanup()
