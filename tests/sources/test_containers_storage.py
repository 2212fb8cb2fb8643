"""The containers/storage layer store: podman's real layers.json/images.json, TOC layers,
change detection, files rewritten mid-read, and fuzzed input (nothing escapes, every bad
record is skipped and counted)."""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import exporter.sources.containers_storage as cs
from exporter.core.chain import chain_ids
from exporter.core.facts import ImageFacts, SnapshotUsage
from exporter.errors import ParseError
from exporter.sources.containers_storage import (
    STAGE,
    ContainersStorageLayerStore,
    ContainersStorageOptions,
    parse_layers,
    storage_layer_ids,
)

H = "sha256:"
D_HELLO = H + "d27797be47d841995e0b75fdcd84a81e38e9655bd250106dddcbd4db5df71eca"
D_WORLD = H + "53a321d930a6b6c25ff8c47faa5af09cda1e69940975519544a3f4881a9678b7"
D_THREE = H + "7294222440eea6a3b69b374347f05d7e7cad693b7223af6cbd84e6dfd6235bc6"
D_FOUR = H + "4ea70b96ce161188f3960d3d6e3cd113f13be11b04fba1f04b0d9266770259ea"
D_EMPTY_TAR = H + "84ff92691f909a05b224e1c56abb4864f01b4f8e3c854e4bb4c7baf1d3f6d652"
D_ZERO = H + "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

# Written by podman 4.3.1 (Debian bookworm, c/storage overlay driver) loading
# five OCI archives: a:1=[hello, world], b:1=[hello, three], c:1=[four, world]
# (world again, on another parent), d:1=[hello, empty tar], e:1=[hello, 0-byte
# blob]. Note c:1's world layer: podman 4.3 recorded compressed-size 10240 (the
# uncompressed size) for the gzip blob that is 101 bytes on the a:1 layer.
PODMAN_LAYERS = json.loads(
    """[
{"id":"d27797be47d841995e0b75fdcd84a81e38e9655bd250106dddcbd4db5df71eca","created":"2026-11-23T10:35:29.453884258Z","compressed-diff-digest":"sha256:bfcb0129dfd69a08f5d8857fdedd66787bef4100fde88f6d9f16eeef6dbca8e2","compressed-size":102,"diff-digest":"sha256:d27797be47d841995e0b75fdcd84a81e38e9655bd250106dddcbd4db5df71eca","diff-size":10240,"compression":2,"uidset":[0],"gidset":[0]},
{"id":"366696ffb087d59937b454e0badae54e59a5880eb4ac1521a5d715789f9429ba","parent":"d27797be47d841995e0b75fdcd84a81e38e9655bd250106dddcbd4db5df71eca","created":"2026-11-23T10:35:29.486819967Z","compressed-diff-digest":"sha256:c4e0a33a5063deddb7f26b98bf98e0a49ede588a96b2ae0ac5d814aaa1991105","compressed-size":101,"diff-digest":"sha256:53a321d930a6b6c25ff8c47faa5af09cda1e69940975519544a3f4881a9678b7","diff-size":10240,"compression":2,"uidset":[0],"gidset":[0]},
{"id":"b8c23d031351f6ffd4baa2d4ee0210d55f7633516af1aa513f0b461f5a1ecd06","parent":"d27797be47d841995e0b75fdcd84a81e38e9655bd250106dddcbd4db5df71eca","created":"2026-11-23T10:35:40.397102831Z","compressed-diff-digest":"sha256:2f343a9f1a0c04360ceb7454d56fde1887546c25ee90ebd9f5416a83b62d8537","compressed-size":100,"diff-digest":"sha256:7294222440eea6a3b69b374347f05d7e7cad693b7223af6cbd84e6dfd6235bc6","diff-size":10240,"compression":2,"uidset":[0],"gidset":[0]},
{"id":"4ea70b96ce161188f3960d3d6e3cd113f13be11b04fba1f04b0d9266770259ea","created":"2026-11-23T10:35:40.510950872Z","compressed-diff-digest":"sha256:d65abbe4f6bf24a7c4880d6c558757393c78c7da54a2ce17c58ab9c07af30a4f","compressed-size":98,"diff-digest":"sha256:4ea70b96ce161188f3960d3d6e3cd113f13be11b04fba1f04b0d9266770259ea","diff-size":10240,"compression":2,"uidset":[0],"gidset":[0]},
{"id":"18afcc33ec5ff49efb50cf85ea2e73c78353dd473c92fd1494bb0768e17ef659","parent":"4ea70b96ce161188f3960d3d6e3cd113f13be11b04fba1f04b0d9266770259ea","created":"2026-11-23T10:35:40.568417191Z","compressed-diff-digest":"sha256:c4e0a33a5063deddb7f26b98bf98e0a49ede588a96b2ae0ac5d814aaa1991105","compressed-size":10240,"diff-digest":"sha256:53a321d930a6b6c25ff8c47faa5af09cda1e69940975519544a3f4881a9678b7","diff-size":10240,"uidset":[0],"gidset":[0]},
{"id":"27520cfe15a34d62f28340482c64c35729502ecc1ffb307c41a9a634e2e92117","parent":"d27797be47d841995e0b75fdcd84a81e38e9655bd250106dddcbd4db5df71eca","created":"2026-11-23T10:35:40.695727097Z","compressed-diff-digest":"sha256:b1dd88cdd8bf09af2539d0b345e647129d8fd55c92b6d824b6ecc53efd531028","compressed-size":45,"diff-digest":"sha256:84ff92691f909a05b224e1c56abb4864f01b4f8e3c854e4bb4c7baf1d3f6d652","diff-size":10240,"compression":2},
{"id":"e7ad41e00eb0534c563921d4384b0d8c15d3b2b28a6259ab8941125bbdc5334c","parent":"d27797be47d841995e0b75fdcd84a81e38e9655bd250106dddcbd4db5df71eca","created":"2026-11-23T10:36:01.336112807Z","compressed-diff-digest":"sha256:f61f27bd17de546264aa58f40f3aafaac7021e0ef69c17f6b1b4cd7664a037ec","compressed-size":20,"diff-digest":"sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855","compression":2}
]"""
)
# images.json from the same run: image ID (the config digest's hex) -> top layer.
PODMAN_IMAGES = [
    {
        "id": "e5b178a6f86ab1cc48ff08b73baaa477db845dccb25b14a1030bb42f26b87b30",
        "digest": "sha256:ecfda3d8ef6c6a6e053c45b225b5d1641fe0c405e7184c692c85552858b9aedf",
        "names": ["localhost/a:1", "example.com/foo/bar:v2", "localhost/a-alias:latest"],
        "layer": "366696ffb087d59937b454e0badae54e59a5880eb4ac1521a5d715789f9429ba",
        "metadata": '{"signatures-sizes":{}}',
        "created": "2024-01-01T00:00:00Z",
    },
    {
        "id": "27d29ee1624cd3f2c0bc018c72801f6b5023a34ae37d36f5c3bcd3b14ecae066",
        "layer": "b8c23d031351f6ffd4baa2d4ee0210d55f7633516af1aa513f0b461f5a1ecd06",
    },
    {
        "id": "be1146caa3e0dde496587f27b7a7eef97a558c25e997f24ac279d41f2306b3f1",
        "layer": "18afcc33ec5ff49efb50cf85ea2e73c78353dd473c92fd1494bb0768e17ef659",
    },
    {
        "id": "bdaba949a318a1fb8b026a483df69cd44f946926dda18df7e1bd4739c29829d5",
        "layer": "27520cfe15a34d62f28340482c64c35729502ecc1ffb307c41a9a634e2e92117",
    },
    {
        "id": "e6940836761c7efdfb03c291cf53117fc5b1d6fa7b2b75ae1381d24c611b473d",
        "layer": "e7ad41e00eb0534c563921d4384b0d8c15d3b2b28a6259ab8941125bbdc5334c",
    },
]
IMAGE_DIFFS = {
    "e5b178a6f86ab1cc48ff08b73baaa477db845dccb25b14a1030bb42f26b87b30": (D_HELLO, D_WORLD),
    "27d29ee1624cd3f2c0bc018c72801f6b5023a34ae37d36f5c3bcd3b14ecae066": (D_HELLO, D_THREE),
    "be1146caa3e0dde496587f27b7a7eef97a558c25e997f24ac279d41f2306b3f1": (D_FOUR, D_WORLD),
    "bdaba949a318a1fb8b026a483df69cd44f946926dda18df7e1bd4739c29829d5": (D_HELLO, D_EMPTY_TAR),
    "e6940836761c7efdfb03c291cf53117fc5b1d6fa7b2b75ae1381d24c611b473d": (D_HELLO, D_ZERO),
}


def cri_images(prefix: str = "sha256:") -> list[ImageFacts]:
    return [ImageFacts(image_id=prefix + hex_id, diff_ids=diffs) for hex_id, diffs in IMAGE_DIFFS.items()]


def write_storage(root: Path, layers: object, images: object = (), volatile: object = None) -> None:
    (root / "overlay-layers").mkdir(parents=True, exist_ok=True)
    (root / "overlay-images").mkdir(parents=True, exist_ok=True)
    replace(root / "overlay-layers" / "layers.json", json.dumps(layers))
    replace(root / "overlay-images" / "images.json", json.dumps(list(images) if isinstance(images, tuple) else images))
    if volatile is not None:
        replace(root / "overlay-layers" / "volatile-layers.json", json.dumps(volatile))


def replace(path: Path, text: str) -> None:
    """Write as c/storage does: a new file renamed over the old one."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def store_for(root: Path) -> ContainersStorageLayerStore:
    return ContainersStorageLayerStore(ContainersStorageOptions(storage_root=str(root)), Counter())


def test_the_layer_id_formula_gives_podmans_ids():
    assert storage_layer_ids([D_HELLO, D_WORLD]) == (
        "d27797be47d841995e0b75fdcd84a81e38e9655bd250106dddcbd4db5df71eca",
        "366696ffb087d59937b454e0badae54e59a5880eb4ac1521a5d715789f9429ba",
    )
    assert storage_layer_ids([D_FOUR, D_WORLD])[1] == "18afcc33ec5ff49efb50cf85ea2e73c78353dd473c92fd1494bb0768e17ef659"


@pytest.mark.parametrize("prefix", ["sha256:", ""], ids=["containerd-style-id", "crio-bare-hex-id"])
def test_podmans_files_give_each_chain_its_diff_size_and_blob(tmp_path, prefix):
    write_storage(tmp_path, PODMAN_LAYERS, PODMAN_IMAGES)
    store = store_for(tmp_path)
    images = cri_images(prefix)
    facts = store.read(images)
    assert store.errors[STAGE] == 0
    # Every layer of every image is found: 7 distinct chains (world twice, on two parents).
    expected_chains = {c for image in images for c in image.chain_ids}
    assert set(facts.layer_usage) == expected_chains and len(expected_chains) == 7
    world_on_four = chain_ids([D_FOUR, D_WORLD])[1]
    assert facts.layer_usage[world_on_four] == SnapshotUsage(size=10240)
    assert facts.layer_usage[chain_ids([D_HELLO, D_EMPTY_TAR])[1]].size == 10240  # an empty tar is 10240 bytes
    assert facts.layer_usage[chain_ids([D_HELLO, D_ZERO])[1]].size == 0  # a 0-byte blob: diff-size absent
    # The blob recorded twice gets its real size (101), not podman 4.3's 10240.
    assert facts.present_blobs["sha256:c4e0a33a5063deddb7f26b98bf98e0a49ede588a96b2ae0ac5d814aaa1991105"] == 101
    assert sum(facts.present_blobs.values()) == 102 + 101 + 100 + 98 + 45 + 20
    a_id = prefix + "e5b178a6f86ab1cc48ff08b73baaa477db845dccb25b14a1030bb42f26b87b30"
    assert [b.size for b in facts.layer_blobs[a_id]] == [102, 101]
    assert facts.compressed_sizes[a_id] == 203
    assert facts.snapshotter == "overlay"


def test_toc_layers_are_found_by_walking_parents_from_the_top_layer(tmp_path):
    # A zstd:chunked pull names layers by their TOC: no formula finds them.
    toc_root = "1" * 64
    toc_top = "2" * 64
    layers = [
        {"id": toc_root, "diff-digest": D_HELLO, "toc-digest": H + "a" * 64, "diff-size": 500},
        {"id": toc_top, "parent": toc_root, "toc-digest": H + "b" * 64, "diff-size": 700},  # no diff-digest yet
    ]
    image = ImageFacts(image_id=H + "9" * 64, diff_ids=(D_HELLO, D_WORLD))
    write_storage(tmp_path, layers, [{"id": "9" * 64, "layer": toc_top}])
    facts = store_for(tmp_path).read([image])
    assert {c: u.size for c, u in facts.layer_usage.items()} == dict(zip(image.chain_ids, [500, 700], strict=True))
    # No compressed sizes recorded (partial pulls set none): CRI's figure stays.
    assert facts.compressed_sizes == {}


def test_a_toc_layer_of_unknown_size_is_missing_not_zero(tmp_path):
    layers = [{"id": "1" * 64, "toc-digest": H + "a" * 64, "diff-size": -1}]
    image = ImageFacts(image_id=H + "9" * 64, diff_ids=(D_HELLO,))
    write_storage(tmp_path, layers, [{"id": "9" * 64, "layer": "1" * 64}])
    assert store_for(tmp_path).read([image]).layer_usage == {}


def test_incomplete_and_container_layers_are_not_image_bytes(tmp_path):
    layers = [
        {"id": D_HELLO[7:], "diff-digest": D_HELLO, "diff-size": 10, "flags": {"incomplete": True}},
        {"id": "c" * 64, "names": ["t2-layer"], "parent": D_HELLO[7:]},
    ]
    write_storage(tmp_path, layers, [])
    store = store_for(tmp_path)
    assert store.read([ImageFacts(image_id=H + "9" * 64, diff_ids=(D_HELLO,))]).layer_usage == {}
    # The container layer's parent is gone with the incomplete layer: skipped and counted once.
    assert store.errors[STAGE] == 1


def test_volatile_layers_are_read_too(tmp_path):
    write_storage(tmp_path, [], [], volatile=[{"id": D_HELLO[7:], "diff-digest": D_HELLO, "diff-size": 7}])
    facts = store_for(tmp_path).read([ImageFacts(image_id=H + "9" * 64, diff_ids=(D_HELLO,))])
    assert facts.layer_usage == {D_HELLO: SnapshotUsage(size=7)}


def test_files_are_parsed_only_when_they_change(tmp_path, monkeypatch):
    write_storage(tmp_path, PODMAN_LAYERS, PODMAN_IMAGES)
    store = store_for(tmp_path)
    parsed: list[str] = []
    original = json.loads

    def counting_loads(data: Any, **kw: Any) -> Any:
        parsed.append("x")
        return original(data, **kw)

    monkeypatch.setattr("exporter.sources.containers_storage.json.loads", counting_loads)
    store.read(cri_images())
    assert len(parsed) == 2
    store.read(cri_images())
    assert len(parsed) == 2  # unchanged: not parsed again
    replace(tmp_path / "overlay-layers" / "layers.json", json.dumps(PODMAN_LAYERS[:1]))
    facts = store.read(cri_images())
    assert len(parsed) == 3 and set(facts.layer_usage) == {D_HELLO}


def test_a_broken_rewrite_keeps_the_last_good_state_counted_and_logged_once(tmp_path, caplog, monkeypatch):
    monkeypatch.setattr("exporter.sources.containers_storage._RETRY_PAUSE_SECONDS", 0)
    write_storage(tmp_path, PODMAN_LAYERS, PODMAN_IMAGES)
    store = store_for(tmp_path)
    good = store.read(cri_images())
    layers_json = tmp_path / "overlay-layers" / "layers.json"
    replace(layers_json, json.dumps(PODMAN_LAYERS)[:-40])  # truncated
    with caplog.at_level(logging.WARNING):
        for _ in range(3):
            assert store.read(cri_images()).layer_usage == good.layer_usage
    assert store.errors[STAGE] == 1
    assert sum("not valid JSON" in r.getMessage() for r in caplog.records) == 1
    replace(layers_json, json.dumps(PODMAN_LAYERS[:1]))
    assert set(store.read(cri_images()).layer_usage) == {D_HELLO}


def test_a_file_caught_mid_rewrite_is_read_again(tmp_path, monkeypatch):
    write_storage(tmp_path, PODMAN_LAYERS, PODMAN_IMAGES)
    store = store_for(tmp_path)
    layers_json = tmp_path / "overlay-layers" / "layers.json"
    attempts: list[int] = []
    original = cs._read_stable

    def flaky(path: Path) -> Any:
        attempts.append(1)
        if len(attempts) == 1 and path == layers_json:
            raise ParseError("changed while being read")
        return original(path)

    monkeypatch.setattr(cs, "_read_stable", flaky)
    monkeypatch.setattr(cs, "_RETRY_PAUSE_SECONDS", 0)
    facts = store.read(cri_images())
    assert len(facts.layer_usage) == 7 and store.errors[STAGE] == 0
    assert len(attempts) == 3  # layers.json twice, images.json once


def test_a_missing_storage_root_is_said_once_and_layers_are_missing(tmp_path, caplog):
    store = store_for(tmp_path / "nothing")
    with caplog.at_level(logging.WARNING):
        for _ in range(3):
            assert store.read(cri_images()).layer_usage == {}
    assert store.errors[STAGE] == 2  # layers.json and images.json, once each
    assert sum("--storage-root" in r.getMessage() for r in caplog.records) == 2


def test_a_missing_parent_and_a_cycle_are_skipped_and_counted(tmp_path):
    layers = [
        *PODMAN_LAYERS,
        {"id": "a" * 64, "parent": "f" * 64, "diff-digest": D_HELLO, "diff-size": 1},  # parent missing
        {"id": "b" * 64, "parent": "c" * 64, "diff-digest": D_HELLO, "diff-size": 1},  # b -> c -> b
        {"id": "c" * 64, "parent": "b" * 64, "diff-digest": D_HELLO, "diff-size": 1},
    ]
    write_storage(tmp_path, layers, PODMAN_IMAGES)
    store = store_for(tmp_path)
    facts = store.read(cri_images())
    assert len(facts.layer_usage) == 7
    assert store.errors[STAGE] == 2


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ("not a record", "not an object"),
        ({"parent": "x"}, "has no id"),
        ({"id": "e" * 64, "diff-size": "10240", "diff-digest": D_HELLO}, "'diff-size' is str"),
        ({"id": "e" * 64, "diff-size": True, "diff-digest": D_HELLO}, "'diff-size' is bool"),
        ({"id": "e" * 64, "diff-digest": "md5:00"}, "not a sha256 digest"),
        ({"id": "e" * 64, "parent": 7}, "'parent' is int"),
        ({"id": "e" * 64, "flags": []}, "'flags' is list"),
    ],
)
def test_wrong_types_skip_the_record_with_a_reason(bad, message):
    parsed = parse_layers(json.dumps([PODMAN_LAYERS[0], bad]).encode())
    assert list(parsed.records) == [PODMAN_LAYERS[0]["id"]]
    assert len(parsed.problems) == 1 and message in parsed.problems[0]


def test_unknown_fields_are_ignored():
    parsed = parse_layers(json.dumps([{**PODMAN_LAYERS[0], "future-field": {"x": [1]}}]).encode())
    assert parsed.problems == () and len(parsed.records) == 1


# -- fuzzing ---------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=10,
)
layer_ids = st.sampled_from([r["id"] for r in PODMAN_LAYERS] + ["f" * 64, ""])
mutated_layer = st.builds(
    lambda base, key, value: {**base, key: value},
    st.sampled_from(PODMAN_LAYERS),
    st.sampled_from(["id", "parent", "diff-digest", "diff-size", "compressed-size", "flags", "toc-digest", "new"]),
    json_values | layer_ids,
)
layer_files = st.lists(st.sampled_from(PODMAN_LAYERS) | mutated_layer | json_values, max_size=12)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    layers=layer_files,
    images=st.lists(st.sampled_from(PODMAN_IMAGES) | json_values, max_size=6),
    cut=st.integers(0, 400),
)
def test_fuzzed_files_never_crash_and_every_figure_comes_from_a_good_record(
    tmp_path_factory, caplog, monkeypatch, layers, images, cut
):
    monkeypatch.setattr("exporter.sources.containers_storage._RETRY_PAUSE_SECONDS", 0)
    root = tmp_path_factory.mktemp("cs")
    write_storage(root, layers, images)
    layers_json = root / "overlay-layers" / "layers.json"
    if cut:
        replace(layers_json, layers_json.read_text()[:-cut])  # truncated somewhere
    store = store_for(root)
    facts = store.read(cri_images())
    recorded = [r.get("diff-size", 0) for r in [*PODMAN_LAYERS, *layers] if isinstance(r, dict)]
    good_sizes = {size for size in recorded if isinstance(size, int) and not isinstance(size, bool)}
    assert all(usage.size in good_sizes and usage.size >= 0 for usage in facts.layer_usage.values())
    assert all(isinstance(size, int) and size > 0 for size in facts.present_blobs.values())
    try:
        whole_file_ok = isinstance(json.loads(layers_json.read_text()), list)
    except ValueError:
        whole_file_ok = False
    if not whole_file_ok:
        assert store.errors[STAGE] >= 1 and facts.layer_usage == {}
    ids = {r["id"] for r in layers if r in PODMAN_LAYERS}
    all_good = all(r in PODMAN_LAYERS and r.get("parent", "") in {"", *ids} for r in layers)
    if all_good and len(ids) == len(layers) and all(i in PODMAN_IMAGES for i in images) and whole_file_ok:
        assert store.errors[STAGE] == 0
    # Unchanged files: the same facts, nothing counted or logged again.
    errors = store.errors[STAGE]
    caplog.clear()
    assert store.read(cri_images()) == facts
    assert store.errors[STAGE] == errors
    assert not [r for r in caplog.records if r.name.endswith("containers_storage") and "layers.json" in r.getMessage()]


def test_an_unreadable_file_is_counted_once_and_keeps_the_last_good_state(tmp_path, monkeypatch):
    write_storage(tmp_path, PODMAN_LAYERS, PODMAN_IMAGES)
    store = store_for(tmp_path)
    good = store.read(cri_images())
    real_stat = os.stat
    layers_json = tmp_path / "overlay-layers" / "layers.json"

    def denied(path: Any, *args: Any, **kwargs: Any) -> os.stat_result:
        if Path(path) == layers_json:
            raise PermissionError(13, "Permission denied")
        return real_stat(path, *args, **kwargs)

    monkeypatch.setattr("exporter.sources.containers_storage.os.stat", denied)
    for _ in range(3):
        assert store.read(cri_images()).layer_usage == good.layer_usage
    assert store.errors[STAGE] == 1


def test_a_negative_compressed_size_is_unknown_not_counted():
    parsed = parse_layers(json.dumps([{**PODMAN_LAYERS[0], "compressed-size": -3}]).encode())
    layer = parsed.records[PODMAN_LAYERS[0]["id"]]
    assert layer.compressed_size is None and layer.compressed_digest == ""
