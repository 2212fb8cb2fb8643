"""Realistic images (tests/harness/realistic.py): real Debian layers and reference figures.

Needs mmdebstrap and the machine's Debian mirror; the first run builds the
root filesystems (~35 s) and the layers (~12 s), later runs read the cache.
"""

from __future__ import annotations

import hashlib
import io
import json
import urllib.request

import pytest

from tests.harness.realistic import (
    OPAQUE,
    ZSTD_MEDIA_TYPE,
    Entry,
    RealisticImage,
    RealisticLayers,
    decompress,
    hidden_entries,
    realistic_images,
    realistic_layers,
    tar_entries,
    wasted_bytes,
)
from tests.harness.registry import Registry

LISTS = "var/lib/apt/lists"


@pytest.fixture(scope="module")
def layers() -> RealisticLayers:
    return realistic_layers()


@pytest.fixture(scope="module", params=["gzip", "zstd"])
def images(request: pytest.FixtureRequest) -> dict[str, RealisticImage]:
    return realistic_images(request.param)


def _files(entries: tuple[Entry, ...]) -> dict[str, int]:
    return {e.path: e.size for e in entries if e.kind == "file"}


def test_base_is_a_real_tree_and_apt_brings_its_lists_and_caches(layers):
    base = _files(layers.base.entries)
    assert len(base) > 3000
    assert {"usr/bin/dpkg", "etc/debian_version", "etc/motd"} <= set(base)
    assert not [e for e in layers.base.entries if e.kind in ("char", "block")]
    apt = _files(layers.apt.entries)
    assert "usr/bin/curl" in apt
    assert any(p.startswith(f"{LISTS}/") and p.endswith("_Packages") for p in apt)
    assert apt["var/cache/apt/pkgcache.bin"] > 1_000_000
    assert "var/lib/dpkg/status" in apt  # changed by the install, so it is in both layers
    assert "usr/bin/dpkg" not in apt  # unchanged files stay in the base


def test_cleanup_layer_has_whiteouts_an_opaque_directory_and_replacements(layers):
    paths = {e.path: e for e in layers.cleanup.entries}
    whiteouts = {p for p, e in paths.items() if e.is_whiteout}
    assert {"var/cache/apt/.wh.pkgcache.bin", f"{LISTS}/.wh.partial", "etc/.wh.cron.daily"} <= whiteouts
    assert any(p.startswith(f"{LISTS}/.wh.") and p.endswith("_Packages") for p in whiteouts)
    assert f"usr/share/doc/{OPAQUE}" in whiteouts
    assert paths["etc/update-motd.d"].kind == "file"  # was a directory
    assert paths["etc/motd"].kind == "file"


def test_gzip_and_zstd_blobs_hold_the_same_tar(layers):
    for layer in vars(layers).values():
        assert layer.gzip.digest != layer.zstd.digest
        assert layer.zstd.media_type == ZSTD_MEDIA_TYPE
        raw = decompress(layer.gzip)
        assert decompress(layer.zstd) == raw
        assert "sha256:" + hashlib.sha256(raw).hexdigest() == layer.diff_id
        assert len(raw) == layer.size
        assert tuple(tar_entries(io.BytesIO(raw))) == layer.entries


def test_layers_are_deterministic(layers):
    assert realistic_layers() is layers  # held for the process
    assert [lay.diff_id for lay in vars(realistic_layers()).values()] == [lay.diff_id for lay in vars(layers).values()]


def test_images_share_base_and_apt_layers_and_hide_different_files(images, layers):
    clean, apt = images["clean"], images["apt"]
    assert clean.image.diff_ids == (layers.base.diff_id, layers.apt.diff_id, layers.cleanup.diff_id, layers.app.diff_id)
    assert apt.image.diff_ids == (layers.base.diff_id, layers.apt.diff_id, layers.app.diff_id)
    hidden_clean = {e.path for _, e in clean.hidden}
    hidden_apt = {e.path for _, e in apt.hidden}
    packages = next(p for p in _files(layers.apt.entries) if p.startswith(f"{LISTS}/") and p.endswith("_Packages"))
    assert packages in hidden_clean and packages not in hidden_apt
    assert "etc/ssl/certs/ca-certificates.crt" in hidden_clean & hidden_apt  # the app layer's own bundle
    assert "usr/share/doc/dpkg/copyright" in hidden_clean  # under the opaque directory
    assert clean.wasted_bytes > apt.wasted_bytes > 0
    apt_files = _files(layers.apt.entries)
    assert clean.wasted_bytes > apt_files[packages] + apt_files["var/cache/apt/pkgcache.bin"]
    assert sum(clean.wasted_by_layer) == clean.wasted_bytes
    assert clean.wasted_by_layer[2:] == (0, 0)  # nothing hides the top layers


def test_the_registry_serves_them(images):
    registry = Registry().start()
    try:
        image = images["clean"].image
        ref = registry.push("realistic", "clean", image)
        assert ref == f"{registry.host}/realistic:clean"
        with urllib.request.urlopen(f"http://{registry.host}/v2/realistic/manifests/clean") as response:
            manifest = json.loads(response.read())
        assert [layer["digest"] for layer in manifest["layers"]] == [blob.digest for blob in image.layers]
        top = manifest["layers"][-1]
        with urllib.request.urlopen(f"http://{registry.host}/v2/realistic/blobs/{top['digest']}") as response:
            assert response.headers["Content-Type"] == top["mediaType"]
            assert "sha256:" + hashlib.sha256(response.read()).hexdigest() == top["digest"]
    finally:
        registry.stop()


# --- the reference computation, on a stack small enough to check by hand ---


def _d(path: str) -> Entry:
    return Entry(path, 0, "dir")


def _f(path: str, size: int) -> Entry:
    return Entry(path, size, "file")


SYNTHETIC = [
    [
        _d("a"),
        _f("a/x", 10),
        _f("a/y", 20),
        _f("b", 30),
        _d("c"),
        _d("c/d"),
        _f("c/d/e", 40),
        _f("f", 50),
        _d("g"),
        _f("g/h", 60),
        _f("k", 70),
        _d("m"),
        _f("m/n", 80),
        _f("keep", 1000),
        Entry("link", 0, "symlink"),
    ],
    [
        _f(".wh.b", 0),  # whiteout of a file: 30
        _f("c/.wh.d", 0),  # whiteout of a directory: 40 below it
        _f("a/z", 5),  # before the opaque marker in tar order: still this layer's own
        _d("a"),
        _f(f"a/{OPAQUE}", 0),  # hides 10 + 20, not a/z
        _f("f", 55),  # overwritten: 50
        _f("g", 1),  # a file where a directory was: 60 below it
        _d("k"),  # a directory where a file was: 70
        _f("m/n/o", 2),  # under a path that was a file (no directory entry): 80
        Entry("link", 0, "symlink"),  # replaced, but a symlink has no file bytes
    ],
    [
        _f("f", 7),  # overwrites layer 1's 55
        _f("a/.wh.z", 0),  # 5
    ],
]


def test_reference_wasted_bytes_by_hand():
    assert wasted_bytes(SYNTHETIC) == 30 + 40 + 10 + 20 + 50 + 60 + 70 + 80 + 55 + 5
    hidden = hidden_entries(SYNTHETIC)
    assert {(i, e.path) for i, e in hidden} == {
        (0, "b"),
        (0, "c/d"),
        (0, "c/d/e"),
        (0, "a/x"),
        (0, "a/y"),
        (0, "f"),
        (0, "g"),
        (0, "g/h"),
        (0, "k"),
        (0, "m/n"),
        (0, "link"),
        (1, "f"),
        (1, "a/z"),
    }
    assert wasted_bytes(SYNTHETIC[:1]) == 0
    assert wasted_bytes([SYNTHETIC[0], SYNTHETIC[2]]) == 50  # a/.wh.z hides nothing there


def test_reference_counts_a_path_repeated_in_one_layer():
    assert wasted_bytes([[_f("x", 3), _f("x", 4)]]) == 3
