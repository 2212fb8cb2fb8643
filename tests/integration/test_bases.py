"""Bases on a real containerd: images pulled through CRI from the loopback registry,
declaring their base in manifest annotations and config labels, with config
`created`; a rollout (old and new versions) and the old version's removal
(`ctr images rm`); two catalog versions of one family; a layer duplicated on two
parents. Every figure exact against `ctr snapshots usage` (tests/integration/oracle.py)."""

from __future__ import annotations

import calendar
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.harness.containerd import Containerd
from tests.harness.images import BuiltImage, ImageSpec, Layer, data_layer
from tests.harness.pods import PodMaker
from tests.harness.registry import Registry
from tests.integration.conftest import ServedExporter, run_cli, start_exporter, stop_exporter
from tests.integration.oracle import duplicates, stack_bytes, top_layer_bytes

KIB = 1024
BASE_NAME = "org.opencontainers.image.base.name"
BASE_DIGEST = "org.opencontainers.image.base.digest"
UBI_DIGEST = "sha256:" + "ab" * 32  # a base image never pulled here


def _layers() -> dict[str, Layer]:
    sizes = {
        "root": 60,
        "deb12": 30,
        "dep": 40,
        "a1": 5,
        "a2": 6,
        "wdep": 20,
        "w1": 3,
        "w2": 4,
        "ubi": 50,
        "s": 7,
        "j": 8,
        "alp19": 30,
        "alp20": 35,
        "cuda": 80,
        "ma": 2,
        "mb": 9,
    }
    return {name: data_layer(f"bases-{name}", size * KIB) for name, size in sizes.items()}


@dataclass
class BasesNode:
    containerd: Containerd
    registry: Registry
    images: dict[str, BuiltImage]  # "repository:tag" (without the registry host) -> image
    created: dict[str, float]  # same keys -> Unix seconds of the config's created
    exporter: ServedExporter
    config: str

    def ref(self, key: str) -> str:
        return f"{self.registry.host}/{key}"

    def diff_ids(self, key: str, depth: int | None = None) -> tuple[str, ...]:
        return self.images[key].diff_ids[:depth]


def _chain_label(diff_ids: tuple[str, ...]) -> str:
    chain = diff_ids[0]
    for diff_id in diff_ids[1:]:
        chain = "sha256:" + hashlib.sha256(f"{chain} {diff_id}".encode()).hexdigest()
    return "chain:" + chain.removeprefix("sha256:")[:12]


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BasesNode]:
    containerd = Containerd(tmp_path_factory.mktemp("containerd"))
    registry = Registry().start()
    maker: PodMaker | None = None
    exporter: ServedExporter | None = None
    try:
        containerd.start()
        maker = PodMaker(containerd.endpoint, str(containerd.pod_logs))
        layer = _layers()
        host = registry.host
        created = {}
        images: dict[str, BuiltImage] = {}

        def build(key: str, names: list[str], stamp: tuple[int, ...], **extra: object) -> BuiltImage:
            # Go writes nanoseconds; the exporter keeps microseconds.
            year, month, day, hour, minute, second = stamp
            text = f"{year:04d}-{month:02d}-{day:02d}T{hour:02d}:{minute:02d}:{second:02d}.123456789Z"
            created[key] = calendar.timegm((*stamp, 0, 0, 0)) + 0.123456
            image = ImageSpec([key], [layer[n] for n in names], created=text, **extra).build()  # type: ignore[arg-type]
            images[key] = image
            return image

        debian = build("debian:12", ["root", "deb12"], (2024, 1, 10, 8, 0, 0))
        declared_debian = {BASE_NAME: f"{host}/debian:12", BASE_DIGEST: debian.manifest.digest}
        declared_ubi = {BASE_NAME: f"{host}/ubi:9.4", BASE_DIGEST: UBI_DIGEST}
        build("team/app:1", ["root", "deb12", "dep", "a1"], (2024, 2, 1, 9, 0, 0), annotations=declared_debian)
        build("team/app:2", ["root", "deb12", "dep", "a2"], (2024, 3, 1, 9, 0, 0), annotations=declared_debian)
        build("team/web:1", ["root", "deb12", "wdep", "w1"], (2024, 2, 2, 9, 0, 0))
        build("team/web:2", ["root", "deb12", "wdep", "w2"], (2024, 3, 2, 9, 0, 0))
        build("team/svc:1", ["ubi", "s"], (2024, 4, 1, 0, 0, 0), labels=declared_ubi)
        build("team/job:1", ["ubi", "j"], (2024, 4, 2, 0, 0, 0), annotations=declared_ubi)
        build("tools/ml-a:1", ["alp19", "cuda", "ma"], (2023, 12, 24, 18, 30, 5))
        build("tools/ml-b:1", ["alp20", "cuda", "mb"], (2025, 6, 30, 23, 59, 59))
        for key, image in images.items():
            repository, tag = key.rsplit(":", 1)
            assert maker.pull_image(registry.push(repository, tag, image)) == image.image_id
        # The catalog from the registry: two versions of one family (never pulled), by `catalog`.
        alpine = {
            tag: ImageSpec([f"tools/alpine:{tag}"], [layer[name]]).build()
            for tag, name in (("3.19", "alp19"), ("3.20", "alp20"))
        }
        refs = [f"alpine={registry.push('tools/alpine', tag, image)}" for tag, image in alpine.items()]
        made = run_cli("catalog", *refs)
        assert made.returncode == 0, made.stderr
        workdir = tmp_path_factory.mktemp("exporter")
        config = workdir / "config.yaml"
        config.write_text(made.stdout)
        exporter = start_exporter(containerd.endpoint, workdir, "--config", str(config), "--refresh-interval", "0.3")
        yield BasesNode(containerd, registry, images, created, exporter, str(config))
    finally:
        if exporter is not None:
            assert stop_exporter(exporter) == 0
        if maker is not None:
            maker.close()
        registry.stop()
        containerd.cleanup()


def _base(node: BasesNode, name: str, base: str, version: str, source: str) -> float | None:
    return node.exporter.value(name, base=base, version=version, source=source)


def _df(node: BasesNode, *extra: str) -> dict[str, Any]:
    result = run_cli(
        "df", "--runtime-endpoint", node.containerd.endpoint, "--config", node.config, "--output", "json", *extra
    )
    assert result.returncode == 0, result.stderr
    doc: dict[str, Any] = json.loads(result.stdout)
    return doc


def test_declared_catalog_and_detected_bases_are_exact_and_add_up(node: BasesNode):
    usage = node.containerd.snapshot_usage()
    committed = {k: v for k, v in usage.items() if k.startswith("sha256:")}
    physical = sum(v[0] for v in committed.values())
    exporter = node.exporter
    exporter.wait_for(lambda: exporter.value("layer_sharing_physical_bytes") == physical, what="physical exact")
    host = node.registry.host
    debian_stack = stack_bytes(usage, node.diff_ids("debian:12"))

    # Declared, base on the node: the base image's chain.
    declared = (f"{host}/debian", "12", "annotation")
    assert _base(node, "layer_sharing_base_images", *declared) == 2
    assert _base(node, "layer_sharing_base_stack_bytes", *declared) == debian_stack
    assert _base(node, "layer_sharing_base_bytes", *declared) == debian_stack
    # The same layers, detected for the images declaring nothing: counted once, toward the declared base.
    detected = (_chain_label(node.diff_ids("debian:12")), "", "detected")
    assert _base(node, "layer_sharing_base_images", *detected) == 3
    assert _base(node, "layer_sharing_base_stack_bytes", *detected) == debian_stack
    assert _base(node, "layer_sharing_base_bytes", *detected) == 0
    # Declared, base not on the node (one in a config label, one in manifest annotations): the shared prefix.
    ubi = (f"{host}/ubi", "9.4", "annotation")
    ubi_bytes = stack_bytes(usage, node.diff_ids("team/svc:1", 1))
    assert _base(node, "layer_sharing_base_images", *ubi) == 2
    assert _base(node, "layer_sharing_base_bytes", *ubi) == ubi_bytes
    # Two catalog versions of one family, and what converging would free.
    alp19 = top_layer_bytes(usage, node.diff_ids("tools/ml-a:1", 1))
    alp20 = top_layer_bytes(usage, node.diff_ids("tools/ml-b:1", 1))
    assert _base(node, "layer_sharing_base_bytes", "alpine", "3.19", "catalog") == alp19
    assert _base(node, "layer_sharing_base_bytes", "alpine", "3.20", "catalog") == alp20
    assert exporter.value("layer_sharing_base_versions", base="alpine") == 2
    assert exporter.value("layer_sharing_base_drift_bytes", base="alpine") == alp19 + alp20 - max(alp19, alp20)
    assert exporter.value("layer_sharing_base_versions", base=f"{host}/debian") == 1
    assert exporter.value("layer_sharing_base_drift_bytes", base=f"{host}/debian") == 0
    assert exporter.value("layer_sharing_base_versions", base=f"{host}/ubi") == 1
    # Every image has one base, and the bases' bytes add up.
    metrics = exporter.metrics()
    assert sum(v for (name, _), v in metrics.items() if name == "layer_sharing_base_images") == len(node.images)
    base_bytes = sum(v for (name, _), v in metrics.items() if name == "layer_sharing_base_bytes")
    assert base_bytes == debian_stack + ubi_bytes + alp19 + alp20 <= physical

    # The CUDA-like layer on two parents is stored twice.
    want_dups = duplicates(usage, [image.diff_ids for image in node.images.values()])
    assert want_dups[0] == 1
    assert exporter.value("layer_sharing_duplicate_layers") == want_dups[0]
    assert exporter.value("layer_sharing_duplicate_bytes") == want_dups[1]
    # No container uses anything: image GC assumes it frees the logical bytes, it really frees the physical ones.
    logical = sum(stack_bytes(usage, image.diff_ids) for image in node.images.values())
    assert exporter.value("layer_sharing_unused_logical_bytes") == logical
    assert exporter.value("layer_sharing_reclaimable_bytes") == physical
    for key, image in node.images.items():
        labels = {"image_id": image.image_id, "image": node.ref(key)}
        assert exporter.value("layer_sharing_image_created_timestamp_seconds", **labels) == node.created[key]

    # df shows the same: versions and drift, the duplicated layer and who holds each copy, CREATED.
    doc = _df(node)
    families = {f["name"]: f for f in doc["families"]}
    assert families["alpine"]["versions"] == ["3.19", "3.20"]
    assert families["alpine"]["drift"] == alp19 + alp20 - max(alp19, alp20)
    [dup] = doc["duplicates"]
    assert dup["bytes"] == want_dups[1]
    assert sorted(c["images"][0] for c in dup["copies"]) == [node.ref("tools/ml-a:1"), node.ref("tools/ml-b:1")]
    table = run_cli("df", "--runtime-endpoint", node.containerd.endpoint, "--config", node.config)
    assert table.returncode == 0, table.stderr
    assert "CREATED" in table.stdout and "2023-12-24 18:30" in table.stdout
    assert "DRIFT" in table.stdout and "DIFF ID" in table.stdout


def test_removing_the_old_version_of_a_rollout_keeps_the_new_versions_base(node: BasesNode):
    exporter = node.exporter
    host = node.registry.host
    app2 = {"image_id": node.images["team/app:2"].image_id, "image": node.ref("team/app:2")}
    web2 = {"image_id": node.images["team/web:2"].image_id, "image": node.ref("team/web:2")}
    detected = _chain_label(node.diff_ids("debian:12"))

    def base_labels(labels: dict[str, str]) -> tuple[str, str, str]:
        for (name, key), _ in exporter.metrics().items():
            found = dict(key)
            if name == "layer_sharing_image_info" and found["image_id"] == labels["image_id"]:
                return found["base"], found["base_version"], found["base_source"]
        raise AssertionError(f"no image_info for {labels}")

    before = (base_labels(app2), base_labels(web2))
    assert before == ((f"{host}/debian", "12", "annotation"), (detected, "", "detected"))
    node.containerd.remove_image(node.ref("team/app"), "1")
    node.containerd.remove_image(node.ref("team/web"), "1")
    usage = node.containerd.snapshot_usage()
    physical = sum(v[0] for k, v in usage.items() if k.startswith("sha256:"))
    exporter.wait_for(lambda: exporter.value("layer_sharing_images") == len(node.images) - 2, what="two removed")
    exporter.wait_for(lambda: exporter.value("layer_sharing_physical_bytes") == physical, what="physical exact")
    assert (base_labels(app2), base_labels(web2)) == before
    debian_stack = stack_bytes(usage, node.diff_ids("debian:12"))
    assert _base(node, "layer_sharing_base_images", f"{host}/debian", "12", "annotation") == 1
    assert _base(node, "layer_sharing_base_bytes", f"{host}/debian", "12", "annotation") == debian_stack
    assert _base(node, "layer_sharing_base_images", detected, "", "detected") == 2
    # The rollout's dependency layers were never a base, before or after.
    for key in ("team/app:2", "team/web:2"):
        assert _chain_label(node.diff_ids(key, 3)) not in {dict(k).get("base") for _, k in exporter.metrics()}
