"""capacity_dir: the image filesystem's size from statvfs of a small directory, never another
filesystem's (real directories; the CRI side is the in-process fake runtime of tests/sources).
tests/integration/test_capacity.py does the same against a real containerd."""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import pytest

from exporter.sources.cri import _capacity_dir_statvfs
from tests.fake_grpc import FakeRuntime, source_for


def test_a_directory_on_the_image_filesystem_gives_its_statvfs(tmp_path: Path):
    (tmp_path / "images").mkdir()
    st = os.statvfs(tmp_path)
    capacity, available, elsewhere = _capacity_dir_statvfs(str(tmp_path), "", str(tmp_path / "images"), 0)
    assert (capacity, elsewhere) == (st.f_blocks * st.f_frsize, "")
    assert available is not None and abs(available - st.f_bavail * st.f_frsize) < 64 * 1024 * 1024


def test_another_device_than_a_visible_mountpoint_is_elsewhere(tmp_path: Path):
    with tempfile.TemporaryDirectory(dir="/dev/shm") as other:  # a tmpfs
        capacity, available, why = _capacity_dir_statvfs(other, "", str(tmp_path), 0)
    assert (capacity, available) == (None, None)
    assert why.startswith("device ") and "the image filesystem's is" in why


def test_images_larger_than_the_whole_filesystem_are_elsewhere_when_the_mountpoint_is_not_visible(tmp_path: Path):
    """In a pod the ImageFsInfo mountpoint is a host path the exporter cannot see: the bytes
    CRI counts for images still tell a filesystem too small to hold them."""
    st = os.statvfs(tmp_path)
    used = (st.f_blocks - st.f_bfree) * st.f_frsize
    gone = "/no/such/host/path/io.containerd.snapshotter.v1.overlayfs"
    assert _capacity_dir_statvfs(str(tmp_path), "", gone, used // 2)[2] == ""
    capacity, _, why = _capacity_dir_statvfs(str(tmp_path), "", gone, st.f_blocks * st.f_frsize + 1)
    assert capacity is None and "the directory's filesystem only" in why


def test_a_missing_directory_is_an_error_not_elsewhere(tmp_path: Path):
    with pytest.raises(OSError):
        _capacity_dir_statvfs(str(tmp_path / "missing"), "", "", 0)


def test_the_source_says_elsewhere_once_and_exports_no_capacity(fake: FakeRuntime, tmp_path: Path, caplog):
    fake.imagefs_mountpoint = str(tmp_path)
    with tempfile.TemporaryDirectory(dir="/dev/shm") as other:
        runtime = source_for(fake, capacity_dir=other)
        with caplog.at_level(logging.INFO):
            for _ in range(3):
                (fs,) = runtime.snapshot().filesystems
        runtime.close()
    assert (fs.capacity_bytes, fs.available_bytes, fs.capacity_dir_elsewhere) == (None, None, True)
    said = [r.getMessage() for r in caplog.records if "capacity_dir" in r.getMessage()]
    assert len(said) == 1 and "is not on the image filesystem" in said[0]
    runtime = source_for(fake, capacity_dir=str(tmp_path))
    (fs,) = runtime.snapshot().filesystems
    runtime.close()
    assert fs.capacity_bytes == os.statvfs(tmp_path).f_blocks * os.statvfs(tmp_path).f_frsize
    assert not fs.capacity_dir_elsewhere


def test_a_missing_capacity_dir_is_counted_and_said(fake: FakeRuntime, tmp_path: Path):
    fake.imagefs_mountpoint = str(tmp_path)
    runtime = source_for(fake, capacity_dir=str(tmp_path / "missing"))
    facts = runtime.snapshot()
    errors = dict(runtime.errors)
    runtime.close()
    (fs,) = facts.filesystems
    assert fs.capacity_bytes is None and not fs.capacity_dir_elsewhere
    assert errors["imagefs"] == 1
