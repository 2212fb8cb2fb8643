"""The background layer analysis over literal layer blobs: each layer read once, figures from
summaries, state across restarts, unavailable layers, the CPU budget."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import logging
import tarfile
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from exporter.analysis import ELSEWHERE, AnalysisOptions, CpuBudget, LayerAnalyzer, analyse_image
from exporter.core.facts import ImageFacts, LayerBlob, NodeFacts
from exporter.core.state import WasteReport
from exporter.core.wasted import layer_sources
from exporter.errors import BlobUnavailableError

Entry = tuple[str, int]  # path, size (-1: a directory)


def layer_tar(entries: Sequence[Entry]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path, size in entries:
            info = tarfile.TarInfo(path)
            if size < 0:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = size
                tar.addfile(info, io.BytesIO(b"x" * size))
    return out.getvalue()


class Blobs:
    """A content store in memory that counts the blobs read."""

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}
        self.reads: Counter[str] = Counter()
        self.keeps_blobs = True

    def add(self, entries: Sequence[Entry]) -> tuple[str, LayerBlob]:
        tar = layer_tar(entries)
        blob = gzip.compress(tar, mtime=0)
        digest = "sha256:" + hashlib.sha256(blob).hexdigest()
        self.data[digest] = blob
        return "sha256:" + hashlib.sha256(tar).hexdigest(), LayerBlob(digest, len(blob))

    def read_blob(self, digest: str, size: int) -> Iterator[bytes]:
        self.reads[digest] += 1
        data = self.data.get(digest)
        if data is None:
            raise BlobUnavailableError(f"{digest} not found", missing=True)
        for start in range(0, len(data), 100):
            yield data[start : start + 100]


BASE: list[Entry] = [("etc", -1), ("etc/motd", 100), ("var/cache/apt.bin", 5000), ("usr/bin/tool", 700)]
CLEANUP: list[Entry] = [("var/cache/.wh.apt.bin", 0), ("etc/motd", 10)]
APP: list[Entry] = [("app/main", 300), ("usr/.wh..wh..opq", 0)]


def node(blobs: Blobs, stacks: dict[str, list[list[Entry]]], present: bool = True) -> NodeFacts:
    images = []
    layer_blobs = {}
    for name, stack in stacks.items():
        layers = [blobs.add(entries) for entries in stack]
        image_id = "sha256:" + hashlib.sha256(name.encode()).hexdigest()
        images.append(ImageFacts(image_id, repo_tags=(name,), diff_ids=tuple(d for d, _ in layers)))
        layer_blobs[image_id] = tuple(blob for _, blob in layers)
    present_blobs = {d: len(b) for d, b in blobs.data.items()} if present else {}
    return NodeFacts(images=tuple(images), layer_blobs=layer_blobs, present_blobs=present_blobs)


def image_id(name: str) -> str:
    return "sha256:" + hashlib.sha256(name.encode()).hexdigest()


def analyzer(blobs: Blobs, **options: object) -> tuple[LayerAnalyzer, list[WasteReport]]:
    published: list[WasteReport] = []
    return LayerAnalyzer(blobs, AnalysisOptions(cpu_fraction=64, **options), published.append), published  # type: ignore[arg-type]


def test_every_layer_is_read_once_and_the_figures_come_from_the_summaries():
    blobs = Blobs()
    facts = node(blobs, {"clean": [BASE, CLEANUP, APP], "fat": [BASE, APP]})
    analysis, published = analyzer(blobs)
    report = analysis.analyse(facts)
    # clean: apt.bin (5000) whited out, motd (100) rewritten, usr/bin/tool (700) under an opaque usr/.
    assert report.images == {image_id("clean"): 5800, image_id("fat"): 700}
    # Node: the base layer's tool is hidden in both images, apt.bin and motd only in "clean".
    assert report.node_wasted_bytes == 700
    assert (report.pending_layers, report.unavailable_layers) == (0, 0)
    assert set(blobs.reads.values()) == {1}
    assert published[0].pending_layers == 3 and published[-1] == report
    # Nothing new: nothing read, nothing published.
    count = len(published)
    assert analysis.analyse(facts) == report and len(published) == count
    assert sum(blobs.reads.values()) == 3


def test_a_restart_with_the_state_dir_reads_no_blob(tmp_path: Path):
    blobs = Blobs()
    facts = node(blobs, {"clean": [BASE, CLEANUP, APP]})
    first, _ = analyzer(blobs, state_dir=tmp_path / "state")
    expected = first.analyse(facts)
    assert len(list((tmp_path / "state").iterdir())) == 3
    reads = sum(blobs.reads.values())
    second, _ = analyzer(blobs, state_dir=tmp_path / "state")
    report = second.analyse(facts)
    assert sum(blobs.reads.values()) == reads
    assert report.images == expected.images and report.node_wasted_bytes == expected.node_wasted_bytes


def test_corrupt_state_is_discarded_and_the_layer_read_again(tmp_path: Path):
    blobs = Blobs()
    facts = node(blobs, {"clean": [BASE, CLEANUP]})
    first, _ = analyzer(blobs, state_dir=tmp_path)
    expected = first.analyse(facts)
    victim = next(tmp_path.iterdir())
    victim.write_bytes(victim.read_bytes()[:-5] + b"xxxxx")
    second, _ = analyzer(blobs, state_dir=tmp_path)
    report = second.analyse(facts)
    assert sorted(blobs.reads.values()) == [1, 2]  # the corrupt summary's layer, read again
    assert report.images == expected.images


def test_a_layer_whose_blob_is_gone_is_unavailable_and_its_images_get_no_figure(caplog):
    blobs = Blobs()
    facts = node(blobs, {"clean": [BASE, CLEANUP], "other": [APP]})
    gone = facts.layer_blobs[image_id("clean")][1].digest
    del blobs.data[gone]
    present = {d: s for d, s in facts.present_blobs.items() if d != gone}
    facts = NodeFacts(images=facts.images, layer_blobs=facts.layer_blobs, present_blobs=present)
    analysis, _ = analyzer(blobs)
    with caplog.at_level(logging.WARNING):
        report = analysis.analyse(facts)
        analysis.analyse(facts)
    assert report.images == {image_id("other"): 0}
    assert report.node_wasted_bytes is None
    assert (report.pending_layers, report.unavailable_layers) == (0, 1)
    assert blobs.reads[gone] == 0  # the store does not list it: not even asked
    # One line for the node naming the cause, however many layers and passes.
    assert [r.getMessage() for r in caplog.records] == [
        "wasted-bytes analysis: the blobs of 1 of the node's 3 layers are not in containerd's content store, "
        "which discards them after unpacking (discard_unpacked_layers = true, as on EKS); images using them "
        f"get no wasted-bytes figures here; {ELSEWHERE}"
    ]


def test_many_discarded_blobs_are_one_line_and_blobs_that_come_back_are_read(caplog):
    blobs = Blobs()
    full = node(blobs, {"clean": [BASE, CLEANUP], "other": [APP]})
    discarded = NodeFacts(images=full.images, layer_blobs=full.layer_blobs, present_blobs={})
    analysis, _ = analyzer(blobs)
    with caplog.at_level(logging.WARNING):
        assert analysis.analyse(discarded).unavailable_layers == 3
        analysis.analyse(discarded)
        report = analysis.analyse(full)  # pulled again with its blobs: read at once
    assert len(caplog.records) == 1 and "3 of the node's 3 layers" in caplog.records[0].getMessage()
    assert report.unavailable_layers == 0 and report.node_wasted_bytes is not None


def test_a_blob_that_disappears_between_listing_and_reading_is_retried_later():
    blobs = Blobs()
    facts = node(blobs, {"clean": [BASE, CLEANUP]})
    data = blobs.data.pop(facts.layer_blobs[image_id("clean")][0].digest)
    now = [0.0]
    published: list[WasteReport] = []
    analysis = LayerAnalyzer(
        blobs, AnalysisOptions(cpu_fraction=64, retry_seconds=60), published.append, lambda: now[0]
    )
    assert analysis.analyse(facts).unavailable_layers == 1
    blobs.data[facts.layer_blobs[image_id("clean")][0].digest] = data
    assert analysis.analyse(facts).unavailable_layers == 1  # not yet
    now[0] = 61.0
    report = analysis.analyse(facts)
    assert (report.unavailable_layers, report.images) == (0, {image_id("clean"): 5100})


def test_a_corrupt_blob_is_unavailable_and_never_read_again():
    blobs = Blobs()
    facts = node(blobs, {"clean": [BASE, CLEANUP]})
    digest = facts.layer_blobs[image_id("clean")][0].digest
    blobs.data[digest] = blobs.data[digest][:-40]  # truncated
    now = [0.0]
    analysis = LayerAnalyzer(blobs, AnalysisOptions(cpu_fraction=64, retry_seconds=1), print, clock=lambda: now[0])
    assert analysis.analyse(facts).unavailable_layers == 1
    now[0] = 100.0
    analysis.analyse(facts)
    assert blobs.reads[digest] == 1


def test_an_image_without_a_manifest_has_unavailable_layers():
    blobs = Blobs()
    facts = node(blobs, {"clean": [BASE, CLEANUP]})
    facts = NodeFacts(images=facts.images, layer_blobs={}, present_blobs=facts.present_blobs)
    assert layer_sources(facts) == dict.fromkeys(facts.images[0].diff_ids)
    analysis, _ = analyzer(blobs)
    report = analysis.analyse(facts)
    assert (report.unavailable_layers, report.images, report.node_wasted_bytes) == (2, {}, None)


def test_layers_of_images_gone_from_the_node_are_forgotten(tmp_path: Path):
    blobs = Blobs()
    facts = node(blobs, {"clean": [BASE, CLEANUP], "other": [APP]})
    analysis, _ = analyzer(blobs, state_dir=tmp_path)
    analysis.analyse(facts)
    assert len(list(tmp_path.iterdir())) == 3
    fewer = NodeFacts(images=facts.images[1:], layer_blobs=facts.layer_blobs, present_blobs=facts.present_blobs)
    report = analysis.analyse(fewer)
    assert report.images == {image_id("other"): 0} and report.node_wasted_bytes == 0
    assert [p.name for p in tmp_path.iterdir()] == [fewer.images[0].diff_ids[0].removeprefix("sha256:")]


@pytest.mark.parametrize(("cpu_used", "wall", "slept"), [(0.1, 0.0, 0.5), (0.1, 0.5, None), (0.1, 0.3, 0.2)])
def test_the_cpu_budget_sleeps_until_the_thread_is_within_it(cpu_used, wall, slept):
    clock = {"cpu": 0.0, "wall": 0.0}
    waits: list[float] = []
    budget = CpuBudget(0.2, wait=waits.append, cpu=lambda: clock["cpu"], wall=lambda: clock["wall"])
    clock["cpu"], clock["wall"] = cpu_used, wall
    budget.pace()
    assert waits == ([] if slept is None else [pytest.approx(slept)])


def test_one_image_at_once_with_the_paths_of_its_hidden_files():
    blobs = Blobs()
    facts = node(blobs, {"clean": [BASE, CLEANUP, APP]})
    detail = analyse_image(blobs, facts, facts.images[0])
    assert (detail.wasted_bytes, detail.layer_wasted_bytes) == (5800, (5800, 0, 0))
    assert [(h.path, h.size, h.layer, h.hidden_by) for h in detail.hidden_files] == [
        ("var/cache/apt.bin", 5000, 0, 1),
        ("usr/bin/tool", 700, 0, 2),
        ("etc/motd", 100, 0, 1),
    ]
    assert detail.hidden_file_count == 3
    assert [h.path for h in analyse_image(blobs, facts, facts.images[0], limit=1).hidden_files] == ["var/cache/apt.bin"]


def test_one_image_with_a_gone_layer_has_no_figure():
    blobs = Blobs()
    facts = node(blobs, {"clean": [BASE, CLEANUP]})
    del blobs.data[facts.layer_blobs[image_id("clean")][1].digest]
    detail = analyse_image(blobs, facts, facts.images[0])
    assert (detail.wasted_bytes, detail.layer_wasted_bytes, detail.hidden_files) == (None, (None, None), ())
    assert [diff_id for diff_id, _ in detail.unavailable] == [facts.images[0].diff_ids[1]]


def test_facts_with_the_layers_of_the_last_pass_wake_no_new_pass():
    """The refresh loop hands over facts on every refresh; only new layers or images start a pass."""
    blobs = Blobs()
    facts = node(blobs, {"clean": [BASE, CLEANUP, APP]})
    analysis, _ = analyzer(blobs)
    analysis.observe(facts)
    assert analysis.due
    analysis.analyse_latest()  # one pass of run's loop
    for same_layers in (dataclasses.replace(facts), dataclasses.replace(facts, node_name="moved", containers=())):
        analysis.observe(same_layers)
        assert not analysis.due
    grown = node(blobs, {"clean": [BASE, CLEANUP, APP], "fat": [BASE, APP]})
    analysis.observe(grown)
    assert analysis.due


def test_a_pass_cut_short_is_woken_again_by_the_same_layers():
    blobs = Blobs()
    facts = node(blobs, {"clean": [BASE, CLEANUP, APP]})
    analysis, _ = analyzer(blobs)
    analysis.observe(facts)
    analysis.stop()  # as at shutdown: the pass stops before its first layer
    analysis.analyse_latest()
    assert sum(blobs.reads.values()) == 0
    analysis.observe(dataclasses.replace(facts))
    assert analysis.due


def test_a_layer_store_that_keeps_no_blobs_is_said_once_and_nothing_is_read(caplog):
    blobs = Blobs()
    blobs.keeps_blobs = False  # CRI-O's containers/storage: metadata files only
    facts = dataclasses.replace(node(blobs, {"clean": [BASE, CLEANUP]}), layer_store="containers-storage")
    analysis, published = analyzer(blobs)
    with caplog.at_level(logging.WARNING):
        for _ in range(2):
            analysis.observe(facts)
            analysis.analyse_latest()
    assert sum(blobs.reads.values()) == 0 and published == []
    assert [r.getMessage() for r in caplog.records] == [
        "wasted-bytes analysis unavailable on this node: CRI-O's containers-storage keeps no layer blobs to read; "
        + ELSEWHERE
    ]


def test_a_pass_hands_the_gil_over_more_often_and_restores_the_interval():
    import sys

    blobs = Blobs()
    facts = node(blobs, {"clean": [BASE, CLEANUP, APP]})
    seen: list[float] = []
    read = blobs.read_blob

    def reading(digest: str, size: int) -> Iterator[bytes]:
        seen.append(sys.getswitchinterval())
        return read(digest, size)

    blobs.read_blob = reading  # type: ignore[method-assign]
    before = sys.getswitchinterval()
    analyzer(blobs)[0].analyse(facts)
    assert seen and all(interval <= 0.001 for interval in seen)
    assert sys.getswitchinterval() == before
