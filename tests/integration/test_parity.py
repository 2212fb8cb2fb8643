"""The exporter's figures equal containerd's own accounting, byte for byte."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
import yaml

from tests.harness.scenario import SampleNode
from tests.integration.conftest import ServedExporter, run_cli, start_with_catalog, stop_exporter
from tests.integration.oracle import expected


@pytest.fixture(scope="module")
def served(sample_node: SampleNode, tmp_path_factory: pytest.TempPathFactory):
    workdir = tmp_path_factory.mktemp("exporter")
    exporter = start_with_catalog(
        sample_node,
        workdir,
        "--refresh-interval",
        "1",
        "--node-name",
        "itest-node",
        config_extra="metrics: {layers_top_n: 50}\nwritable_refresh_seconds: 1\n",
    )
    yield exporter
    assert stop_exporter(exporter) == 0


def df_json(node: SampleNode, *extra: str) -> dict[str, Any]:
    result = run_cli("df", "--runtime-endpoint", node.containerd.endpoint, "--output", "json", *extra)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_node_figures_equal_ctr_snapshot_usage(sample_node, served: ServedExporter):
    want = expected(sample_node)
    got = df_json(sample_node)["totals"]
    assert got["images"] == len(sample_node.images)
    assert got["layers"] == sum(1 for k in want.usage if k.startswith("sha256:"))
    assert (got["physical"], got["logical"], got["shared"], got["reclaimable"]) == (
        want.physical,
        want.logical,
        want.shared,
        want.reclaimable,
    )
    assert got["unique"] == want.physical - want.shared
    assert got["content"] == want.content > 0
    metrics = served.metrics()
    for name, value in [
        ("physical", want.physical),
        ("logical", want.logical),
        ("shared", want.shared),
        ("unique", want.physical - want.shared),
        ("reclaimable", want.reclaimable),
        ("content", want.content),
    ]:
        assert metrics[(f"layer_sharing_{name}_bytes", ())] == value, name


def test_image_figures_equal_ctr_snapshot_usage(sample_node, served: ServedExporter):
    want = expected(sample_node)
    images = {i["image_id"]: i for i in df_json(sample_node)["images"]}
    assert set(images) == set(want.image_size)
    for image_id, size in want.image_size.items():
        assert (images[image_id]["size"], images[image_id]["shared"]) == (size, want.image_shared[image_id])
        labels = (("image", images[image_id]["name"]), ("image_id", image_id))
        assert served.metrics()[("layer_sharing_image_size_bytes", labels)] == size
        assert served.metrics()[("layer_sharing_image_unique_bytes", labels)] == size - want.image_shared[image_id]


def test_pod_figures_equal_ctr_snapshot_usage(sample_node, served: ServedExporter):
    want = expected(sample_node)
    pods = {(p["namespace"], p["name"]): p for p in df_json(sample_node)["pods"]}
    assert set(pods) == set(want.pod_bytes)
    for key, size in want.pod_bytes.items():
        assert (pods[key]["bytes"], pods[key]["unique"]) == (size, want.pod_unique[key])
        labels = (("namespace", key[0]), ("pod", key[1]))
        assert served.metrics()[("layer_sharing_pod_bytes", labels)] == size
    # fair share adds up to the layers pods use, to the byte
    used = set()
    for p in pods.values():
        for image_id in p["image_ids"]:
            used |= set(next(i for i in df_json(sample_node)["images"] if i["image_id"] == image_id)["chain"])
    assert sum(p["attributed"] for p in pods.values()) == sum(want.usage[c][0] for c in used)


def test_writable_layers_and_image_fs_match_containerd(sample_node, served: ServedExporter):
    # containerd refreshes these cached figures every 10 s (stats_collect_period).
    containers = {c: v[0] for c, v in expected(sample_node).usage.items() if not c.startswith("sha256:")}
    pod_container_ids = {cid for pod in sample_node.pods for cid in pod.container_ids}
    want_writable = sum(v for c, v in containers.items() if c in pod_container_ids)
    assert want_writable > 0
    served.wait_for(
        lambda: served.value("layer_sharing_writable_bytes") == want_writable,
        timeout=40,
        what=f"writable bytes {want_writable}",
    )
    total = sum(v[0] for v in expected(sample_node).usage.values())
    mount = json.loads(run_cli("df", "--runtime-endpoint", sample_node.containerd.endpoint, "-o", "json").stdout)[
        "filesystems"
    ][0]["mountpoint"]
    served.wait_for(
        lambda: served.value("layer_sharing_image_fs_used_bytes", mountpoint=mount) == total,
        timeout=40,
        what="image fs used bytes",
    )
    assert served.value("layer_sharing_image_fs_capacity_bytes", mountpoint=mount) > total


def test_bases_from_the_catalog(sample_node, served: ServedExporter):
    metrics = served.metrics()
    base_os = (("base", "base-os"), ("source", "catalog"), ("version", ""))
    assert metrics[("layer_sharing_base_images", base_os)] == 4
    assert metrics[("layer_sharing_base_pods", base_os)] == 2
    assert metrics[("layer_sharing_base_images", (("base", "other-os"), ("source", "catalog"), ("version", "")))] == 2
    want = expected(sample_node)
    base_chain = [c for c in df_json(sample_node)["images"] if c["name"] == "localhost/base:1"][0]["chain"]
    assert metrics[("layer_sharing_base_stack_bytes", base_os)] == sum(want.usage[c][0] for c in base_chain)
    # The busybox layer under it is the pause image's whole (detected) base: it counts there, once.
    assert metrics[("layer_sharing_base_bytes", base_os)] == want.usage[base_chain[1]][0]
    base_bytes = sum(v for (name, _), v in metrics.items() if name == "layer_sharing_base_bytes")
    assert base_bytes <= want.physical


def test_per_layer_series_match_ctr(sample_node, served: ServedExporter):
    want = expected(sample_node).usage
    metrics = served.metrics()
    layer_values = {
        dict(labels)["chain_id"]: v for (name, labels), v in metrics.items() if name == "layer_sharing_layer_bytes"
    }
    assert layer_values and all(want[c][0] == v for c, v in layer_values.items())


def test_df_image_shows_layers_with_history(sample_node):
    data = df_json(sample_node, "--image", "localhost/app-a:latest")
    assert [layer["created_by"] for layer in data["layers"]] == [
        "/bin/sh -c #(nop) ADD file:busybox in /",
        "COPY base-os.bin /data/",
        "COPY app-a.bin /data/",
    ]
    usage = expected(sample_node).usage
    assert [layer["size"] for layer in data["layers"]] == [usage[layer["chain_id"]][0] for layer in data["layers"]]
    assert [layer["images"] for layer in data["layers"]] == [7, 4, 1]
    table = run_cli("df", "--runtime-endpoint", sample_node.containerd.endpoint, "--image", "localhost/app-a:1")
    assert "COPY app-a.bin" in table.stdout and table.returncode == 0


def test_df_tables(sample_node):
    images = run_cli("df", "--runtime-endpoint", sample_node.containerd.endpoint)
    pods = run_cli("df", "--runtime-endpoint", sample_node.containerd.endpoint, "--pods")
    assert "SHARED SIZE" in images.stdout and "localhost/app-b:1" in images.stdout
    assert "ATTRIBUTED" in pods.stdout and "web-1" in pods.stdout


def test_df_formats_as_kubectl_has_them(sample_node):
    endpoint = ("--runtime-endpoint", sample_node.containerd.endpoint)
    as_json = json.loads(run_cli("df", *endpoint, "-o", "json").stdout)
    as_yaml = yaml.safe_load(run_cli("df", *endpoint, "-o", "yaml").stdout)
    # Two runs: writable layers and filesystem usage may move between them, images and bases do not.
    assert (as_yaml["images"], as_yaml["bases"]) == (as_json["images"], as_json["bases"])
    wide = run_cli("df", *endpoint, "-o", "wide", "--no-trunc")
    assert wide.returncode == 0, wide.stderr
    assert "COMPRESSED" in wide.stdout and as_json["images"][0]["image_id"] in wide.stdout


def test_health_and_the_exporter_only_reads(sample_node, served: ServedExporter):
    before = sample_node.containerd.ctr("images", "ls", "-q"), sample_node.containerd.ctr("containers", "ls", "-q")
    time.sleep(1.5)  # a few refreshes
    assert served.get("/healthz")[0] == 200
    assert served.value("layer_sharing_up") == 1
    assert (
        served.value(
            "layer_sharing_runtime_info",
            runtime="containerd",
            runtime_version=sample_node.containerd.binaries.version(),
            snapshotter="overlayfs",
            layer_store="containerd",
        )
        == 1
    )
    requests = {
        dict(labels)["method"] for (name, labels) in served.metrics() if name == "layer_sharing_runtime_requests_total"
    }
    assert requests and all(
        m.rsplit("/", 1)[1].startswith(
            ("List", "Version", "Status", "PodSandboxStatus", "Image", "Usage", "Stat", "Read")
        )
        for m in requests
    )
    after = sample_node.containerd.ctr("images", "ls", "-q"), sample_node.containerd.ctr("containers", "ls", "-q")
    assert before == after
