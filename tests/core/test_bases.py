"""Base images: catalog entries (by diff IDs or by image) and detected chain prefixes."""

from exporter.core.accounting import account
from exporter.core.bases import BaseSpec
from exporter.core.chain import chain_ids
from exporter.core.facts import NodeFacts, SnapshotUsage
from tests.fakes import digest, image
from tests.sample_facts import APP_C, BASE, PAUSE, sample_facts


def by_id(report):
    return {i.image_id: i for i in report.images}


def test_detected_bases_without_catalog():
    report = account(sample_facts())
    bases = {b.name: b for b in report.bases}
    os_chain = chain_ids(BASE.diff_ids)[-1]
    b_chain = chain_ids(PAUSE.diff_ids)[-1]
    os_base = bases["chain:" + os_chain.removeprefix("sha256:")[:12]]
    assert (os_base.images, os_base.pods, os_base.bytes, os_base.layers, os_base.source) == (4, 2, 1300, 2, "detected")
    b_base = bases["chain:" + b_chain.removeprefix("sha256:")[:12]]
    assert (b_base.images, b_base.pods, b_base.bytes) == (2, 1, 1000)


def test_catalog_bases_by_diff_ids_and_by_image():
    catalog = [
        BaseSpec(name="debian", diff_ids=tuple(digest(d) for d in ["B", "OS"])),
        BaseSpec(name="busybox", image="localhost/pause:test"),
    ]
    report = account(sample_facts(), catalog)
    bases = {b.name: b for b in report.bases}
    assert (bases["debian"].images, bases["debian"].pods, bases["debian"].bytes, bases["debian"].source) == (
        4,
        2,
        1300,
        "catalog",
    )
    assert (bases["busybox"].images, bases["busybox"].pods) == (2, 1)
    assert by_id(report)[APP_C.image_id].base == "busybox"


def test_an_image_sharing_nothing_is_unshared():
    lone = image("lone", ["Z1", "Z2"])
    facts = NodeFacts(images=(lone,), layer_usage={c: SnapshotUsage(10) for c in chain_ids(lone.diff_ids)})
    report = account(facts)
    assert [(b.name, b.source, b.bytes) for b in report.bases] == [("unshared", "none", 0)]
