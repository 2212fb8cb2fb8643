import logging
import os
import struct
import threading

import pytest

from exporter.core.wasted import TarEntry, summarize
from exporter.sources import layer_state

DIFF_ID = "sha256:" + "ab" * 32
OTHER_ID = "sha256:" + "cd" * 32


def sample(files=3, big=False):
    entries = [TarEntry("etc", "dir"), TarEntry(".wh.old", "file"), TarEntry("bin/sh", "symlink")]
    entries += [TarEntry(f"usr/lib/f{n}", "file", n * 10) for n in range(files)]
    entries += [TarEntry("x/.wh..wh..opq", "file")]
    if big:
        entries.append(TarEntry("huge", "file", 6 * 1024**3))
    return summarize(entries)


@pytest.mark.parametrize("summary", [sample(), sample(0), sample(70_000, big=True)], ids=["small", "empty", "big"])
def test_round_trip(tmp_path, summary):
    layer_state.save(tmp_path, DIFF_ID, summary)
    assert os.listdir(tmp_path) == ["ab" * 32]
    assert layer_state.load(tmp_path, DIFF_ID) == summary


def test_missing_is_none_and_quiet(tmp_path, caplog):
    assert layer_state.load(tmp_path, DIFF_ID) is None
    assert layer_state.load(tmp_path / "nonexistent", DIFF_ID) is None
    assert not caplog.records


def _saved(tmp_path):
    layer_state.save(tmp_path, DIFF_ID, sample())
    return tmp_path / ("ab" * 32)


def _bump_version(data):
    patched = bytearray(data)
    struct.pack_into("<H", patched, 8, layer_state.VERSION + 1)
    return bytes(patched)


def _flip(data):
    patched = bytearray(data)
    patched[len(patched) // 2] ^= 1
    return bytes(patched)


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda data: data[:-1], id="truncated"),
        pytest.param(lambda data: data[:20], id="truncated-header"),
        pytest.param(lambda data: b"", id="empty"),
        pytest.param(_flip, id="corrupt"),
        pytest.param(lambda data: b"PK\x03\x04 some zip file" * 10, id="foreign"),
        pytest.param(_bump_version, id="other-version"),
        pytest.param(lambda data: data + b"\0", id="trailing"),
    ],
)
def test_unusable_files_are_discarded_with_one_warning(tmp_path, caplog, damage):
    path = _saved(tmp_path)
    path.write_bytes(damage(path.read_bytes()))
    with caplog.at_level(logging.WARNING):
        assert layer_state.load(tmp_path, DIFF_ID) is None
        assert layer_state.load(tmp_path, DIFF_ID) is None
    assert [r.levelno for r in caplog.records] == [logging.WARNING]
    assert "discarded" in caplog.records[0].getMessage()
    assert not path.exists()


def test_summary_of_another_layer_is_discarded(tmp_path, caplog):
    path = _saved(tmp_path)
    os.rename(path, tmp_path / ("cd" * 32))
    assert layer_state.load(tmp_path, OTHER_ID) is None
    assert "another layer" in caplog.text


def test_unreadable_file_and_bad_diff_id_do_not_raise(tmp_path):
    (tmp_path / ("ab" * 32)).mkdir()
    assert layer_state.load(tmp_path, DIFF_ID) is None
    assert layer_state.load(tmp_path, "not-a-diff-id") is None


def test_save_is_atomic_for_concurrent_readers(tmp_path):
    small, large = sample(1), sample(20_000)
    layer_state.save(tmp_path, DIFF_ID, small)
    stop, seen = threading.Event(), []

    def reader():
        while not stop.is_set():
            seen.append(layer_state.load(tmp_path, DIFF_ID))

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for _ in range(30):
            layer_state.save(tmp_path, DIFF_ID, large)
            layer_state.save(tmp_path, DIFF_ID, small)
    finally:
        stop.set()
        thread.join()
    assert seen and all(s in (small, large) for s in seen)
    assert os.listdir(tmp_path) == ["ab" * 32]  # no temporary file left behind


def test_failed_save_leaves_nothing(tmp_path, monkeypatch):
    def fail(*_):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError):
        layer_state.save(tmp_path, DIFF_ID, sample())
    assert os.listdir(tmp_path) == []


def test_prune(tmp_path):
    layer_state.save(tmp_path, DIFF_ID, sample())
    layer_state.save(tmp_path, OTHER_ID, sample())
    (tmp_path / "README").write_text("not ours")
    fresh_tmp = tmp_path / f".{'ab' * 32}.x.tmp"
    fresh_tmp.write_bytes(b"in progress")
    stale_tmp = tmp_path / f".{'cd' * 32}.y.tmp"
    stale_tmp.write_bytes(b"left by a crash")
    now = 1_800_000_000.0
    os.utime(fresh_tmp, (now - 60, now - 60))
    os.utime(stale_tmp, (now - 2 * 3600, now - 2 * 3600))
    assert layer_state.prune(tmp_path, {DIFF_ID}, now) == 2
    assert sorted(os.listdir(tmp_path)) == sorted([fresh_tmp.name, "README", "ab" * 32])
    assert layer_state.prune(tmp_path / "missing", set(), now) == 0


def test_the_summary_store_keeps_summaries_in_memory_and_in_the_directory(tmp_path):
    store = layer_state.SummaryStore(tmp_path / "state")
    store.put(DIFF_ID, sample())
    store.put(OTHER_ID, sample())
    assert DIFF_ID in store and store[DIFF_ID] == sample()
    again = layer_state.SummaryStore(tmp_path / "state")  # a restart
    again.load([DIFF_ID, OTHER_ID, "sha256:" + "e" * 64])
    assert set(again.summaries) == {DIFF_ID, OTHER_ID}
    again.keep_only([OTHER_ID])
    assert set(again.summaries) == {OTHER_ID}
    assert os.listdir(tmp_path / "state") == [OTHER_ID.removeprefix("sha256:")]


def test_a_state_directory_that_cannot_be_written_leaves_the_summaries_in_memory(tmp_path, caplog):
    (tmp_path / "file").write_text("not a directory")
    store = layer_state.SummaryStore(tmp_path / "file" / "state")
    with caplog.at_level("WARNING"):
        store.put(DIFF_ID, sample())
        store.put(OTHER_ID, sample())
    assert set(store.summaries) == {DIFF_ID, OTHER_ID}
    assert sum("not usable" in r.getMessage() for r in caplog.records) == 1
