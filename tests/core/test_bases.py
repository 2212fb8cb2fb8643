"""Base images: one base per image, additive bytes, declared bases, catalog versions, rollouts, duplicates."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.core.accounting import NodeReport, account
from exporter.core.bases import BaseSpec, declared_family, short_chain_label
from exporter.core.chain import chain_ids
from exporter.core.facts import DeclaredBase, ImageFacts, NodeFacts, SnapshotUsage
from tests.fakes import container, digest, image, usage_for
from tests.sample_facts import APP_C, BASE, PAUSE, sample_facts


def by_id(report: NodeReport) -> dict[str, object]:
    return {i.image_id: i for i in report.images}


def base_of(report: NodeReport, img: ImageFacts) -> tuple[str, str, str]:
    found = next(i for i in report.images if i.image_id == img.image_id)
    return (found.base, found.base_version, found.base_source)


def bases(report: NodeReport) -> dict[tuple[str, str], tuple[int, int, int]]:
    """(base, version) -> (images, bytes, stack bytes)."""
    return {(b.name, b.version): (b.images, b.bytes, b.stack_bytes) for b in report.bases}


def facts_of(*images: ImageFacts, sizes: dict[tuple[str, ...], int], **kw: object) -> NodeFacts:
    return NodeFacts(images=images, layer_usage=usage_for(sizes), **kw)  # type: ignore[arg-type]


def assert_additive(report: NodeReport) -> None:
    assert sum(b.bytes for b in report.bases) <= report.totals.physical
    assert sum(b.images for b in report.bases) == report.totals.images


def label(*diffs: str) -> str:
    return short_chain_label(chain_ids([digest(d) for d in diffs])[-1])


def test_detected_bases_without_catalog_add_up():
    report = account(sample_facts())
    found = {b.name: b for b in report.bases}
    os_base = found[label("B", "OS")]
    # B lies under both detected bases: it counts toward the innermost one (pause's [B]).
    assert (os_base.images, os_base.pods, os_base.bytes, os_base.stack_bytes, os_base.layers) == (4, 2, 300, 1300, 2)
    assert os_base.source == "detected" and os_base.version == ""
    b_base = found[label("B")]
    assert (b_base.images, b_base.pods, b_base.bytes, b_base.stack_bytes) == (2, 1, 1000, 1000)
    assert_additive(report)
    assert chain_ids(BASE.diff_ids)[-1] == os_base.chain_id
    assert chain_ids(PAUSE.diff_ids)[-1] == b_base.chain_id


def test_catalog_bases_by_diff_ids_and_by_image():
    catalog = [
        BaseSpec(name="debian", diff_ids=tuple(digest(d) for d in ["B", "OS"])),
        BaseSpec(name="busybox", image="localhost/pause:test"),
    ]
    report = account(sample_facts(), catalog)
    found = {b.name: b for b in report.bases}
    assert (found["debian"].images, found["debian"].pods, found["debian"].source) == (4, 2, "catalog")
    # Nested: busybox [B] is inside debian [B, OS]; B counts toward busybox only.
    assert (found["debian"].bytes, found["debian"].stack_bytes) == (300, 1300)
    assert (found["busybox"].images, found["busybox"].pods, found["busybox"].bytes) == (2, 1, 1000)
    assert by_id(report)[APP_C.image_id].base == "busybox"  # type: ignore[attr-defined]
    assert_additive(report)


def test_nested_catalog_bases_count_each_layer_once():
    python = image("py-app", ["B", "OS", "PY", "P"])
    plain = image("deb-app", ["B", "OS", "D"])
    catalog = [
        BaseSpec("python", diff_ids=(digest("B"), digest("OS"), digest("PY")), version="3.12"),
        BaseSpec("debian", diff_ids=(digest("B"), digest("OS")), version="12"),
    ]
    sizes = {("B",): 1000, ("B", "OS"): 300, ("B", "OS", "PY"): 50, ("B", "OS", "PY", "P"): 7, ("B", "OS", "D"): 9}
    report = account(facts_of(python, plain, sizes=sizes), catalog)
    assert base_of(report, python) == ("python", "3.12", "catalog")
    assert base_of(report, plain) == ("debian", "12", "catalog")
    assert bases(report) == {("python", "3.12"): (1, 50, 1350), ("debian", "12"): (1, 1300, 1300)}
    assert_additive(report)
    # Alone, python's images take the whole stack.
    alone = account(facts_of(python, sizes=sizes), catalog)
    assert bases(alone) == {("python", "3.12"): (1, 1350, 1350)}


def test_catalog_versions_of_one_family_and_their_drift():
    old = image("svc-old", ["D11", "X"])
    new = image("svc-new", ["D12a", "D12b", "Y"])
    newer = image("job", ["D12a", "D12b", "Z"])
    catalog = [
        BaseSpec("debian", diff_ids=(digest("D11"),), version="11"),
        BaseSpec("debian", diff_ids=(digest("D12a"), digest("D12b")), version="12"),
    ]
    sizes = {
        ("D11",): 900,
        ("D11", "X"): 1,
        ("D12a",): 800,
        ("D12a", "D12b"): 200,
        ("D12a", "D12b", "Y"): 2,
        ("D12a", "D12b", "Z"): 3,
    }
    report = account(facts_of(old, new, newer, sizes=sizes), catalog)
    assert bases(report) == {("debian", "11"): (1, 900, 900), ("debian", "12"): (2, 1000, 1000)}
    [family] = report.families
    assert (family.name, family.versions, family.bytes, family.largest, family.drift) == (
        "debian",
        ("11", "12"),
        1900,
        1000,
        900,
    )


def test_a_rollout_never_forms_a_base_and_removing_the_old_version_keeps_the_new_ones():
    v1 = image("app-v1", ["B", "OS", "DEP", "V1"], tags=["registry.example/team/app:1"])
    v2 = image("app-v2", ["B", "OS", "DEP", "V2"], tags=["registry.example/team/app:2"])
    other = image("other", ["B", "OS", "X"], tags=["registry.example/team/other:1"])
    sizes = {
        ("B",): 100,
        ("B", "OS"): 10,
        ("B", "OS", "DEP"): 500,
        ("B", "OS", "DEP", "V1"): 1,
        ("B", "OS", "DEP", "V2"): 2,
        ("B", "OS", "X"): 3,
    }
    during = account(facts_of(v1, v2, other, sizes=sizes))
    after = account(facts_of(v2, other, sizes=sizes))
    want = (label("B", "OS"), "", "detected")
    assert base_of(during, v1) == base_of(during, v2) == base_of(after, v2) == want
    # Only one repository: nothing is a base, whatever its images share.
    alone = account(facts_of(v1, v2, sizes=sizes))
    assert base_of(alone, v1) == base_of(alone, v2) == ("unshared", "", "none")


def test_declared_base_on_the_node_is_its_chain():
    debian = image(
        "debian",
        ["B", "OS"],
        tags=["docker.io/library/debian:12"],
        repo_digests=(f"docker.io/library/debian@{digest('deb12-index')}",),
    )
    app = image("app", ["B", "OS", "A", "B2"])
    tool = image("tool", ["B", "OS", "T"])
    sizes = {("B",): 100, ("B", "OS"): 20, ("B", "OS", "A"): 3, ("B", "OS", "A", "B2"): 4, ("B", "OS", "T"): 5}
    declared = {app.image_id: DeclaredBase("docker.io/library/debian:12", digest("deb12-index"))}
    report = account(facts_of(debian, app, tool, sizes=sizes, declared_bases=declared))
    assert base_of(report, app) == ("docker.io/library/debian", "12", "annotation")
    app_base = next(b for b in report.bases if b.source == "annotation")
    assert (app_base.layers, app_base.stack_bytes) == (2, 120)
    assert_additive(report)
    assert [(f.name, f.versions, f.drift) for f in report.families] == [("docker.io/library/debian", ("12",), 0)]


def test_declared_base_off_the_node_is_the_prefix_its_declarers_share():
    base_digest = digest("ubi9")
    declared = DeclaredBase("registry.example/ubi9@" + base_digest)
    one = image("one", ["U1", "U2", "O"], tags=["registry.example/one:1"])
    two = image("two", ["U1", "U2", "T"], tags=["registry.example/two:1"])
    sizes = {("U1",): 70, ("U1", "U2"): 30, ("U1", "U2", "O"): 1, ("U1", "U2", "T"): 2}
    report = account(facts_of(one, two, sizes=sizes, declared_bases={one.image_id: declared, two.image_id: declared}))
    short = base_digest.removeprefix("sha256:")[:12]
    assert base_of(report, one) == base_of(report, two) == ("registry.example/ubi9", short, "annotation")
    assert bases(report) == {("registry.example/ubi9", short): (2, 100, 100)}


def test_declared_base_of_one_repository_alone_falls_back_to_what_it_shares():
    declared = DeclaredBase("registry.example/ubi9:9.4")
    v1 = image("v1", ["U", "DEP", "V1"], tags=["registry.example/app:1"])
    v2 = image("v2", ["U", "DEP", "V2"], tags=["registry.example/app:2"])
    sizes = {("U",): 70, ("U", "DEP"): 30, ("U", "DEP", "V1"): 1, ("U", "DEP", "V2"): 2}
    both = {v1.image_id: declared, v2.image_id: declared}
    report = account(facts_of(v1, v2, sizes=sizes, declared_bases=both))
    # The rollout's shared DEP layer is not the base: its extent is unknown here (0 bytes), the name stays.
    assert bases(report) == {("registry.example/ubi9", "9.4"): (2, 0, 0)}
    other = image("other", ["U", "X"], tags=["registry.example/other:1"])
    report = account(facts_of(v1, v2, other, sizes={**sizes, ("U", "X"): 5}, declared_bases=both))
    assert bases(report)[("registry.example/ubi9", "9.4")] == (2, 70, 70)


def test_config_labels_declare_a_base_and_manifest_annotations_win():
    by_label = image("labelled", ["L", "M"], declared_base=DeclaredBase("quay.example/base:2"))
    both = image("both", ["L", "N"], declared_base=DeclaredBase("quay.example/base:2"))
    sizes = {("L",): 10, ("L", "M"): 1, ("L", "N"): 2}
    report = account(
        facts_of(by_label, both, sizes=sizes, declared_bases={both.image_id: DeclaredBase("quay.example/base:3")})
    )
    assert base_of(report, by_label) == ("quay.example/base", "2", "annotation")
    assert base_of(report, both) == ("quay.example/base", "3", "annotation")
    [family] = report.families
    assert family.versions == ("2", "3")


def test_declared_family_names():
    assert declared_family(DeclaredBase("debian", "")) == ("docker.io/library/debian", "")
    assert declared_family(DeclaredBase("localhost:5000/base@" + digest(1))) == ("localhost:5000/base", "0" * 12)


def test_an_image_sharing_nothing_is_unshared():
    lone = image("lone", ["Z1", "Z2"])
    facts = NodeFacts(images=(lone,), layer_usage={c: SnapshotUsage(10) for c in chain_ids(lone.diff_ids)})
    report = account(facts)
    assert [(b.name, b.source, b.bytes) for b in report.bases] == [("unshared", "none", 0)]


def test_duplicate_diff_at_three_positions():
    one = image("one", ["P1", "CUDA"])
    two = image("two", ["P2", "CUDA"])
    three = image("three", ["P3", "X", "CUDA"])
    also = image("also", ["P1", "CUDA", "Y"])
    sizes = {
        ("P1",): 1,
        ("P2",): 1,
        ("P3",): 1,
        ("P3", "X"): 1,
        ("P1", "CUDA"): 5000,
        ("P2", "CUDA"): 5001,
        ("P3", "X", "CUDA"): 4999,
        ("P1", "CUDA", "Y"): 3,
    }
    report = account(facts_of(one, two, three, also, sizes=sizes))
    assert (report.totals.duplicate_layers, report.totals.duplicate_bytes) == (2, 5000 + 4999)
    [dup] = report.duplicates
    assert dup.diff_id == digest("CUDA")
    assert [(c.size, c.images) for c in dup.copies] == [
        (5001, ("localhost/two:1",)),
        (5000, ("localhost/also:1", "localhost/one:1")),
        (4999, ("localhost/three:1",)),
    ]


def test_unused_logical_is_what_image_gc_assumes_and_reclaimable_what_it_frees():
    report = account(sample_facts())
    # base (1300) and tool (1400) are unused; their layers but T sit under used images.
    assert (report.totals.unused_logical, report.totals.reclaimable) == (2700, 100)
    used = image("used", ["B", "OS", "A"])
    facts = facts_of(
        used, image("spare", ["B", "S"]), sizes={("B",): 8, ("B", "OS"): 1, ("B", "OS", "A"): 1, ("B", "S"): 4}
    )
    facts = NodeFacts(images=facts.images, layer_usage=facts.layer_usage, containers=(container("c", used, "ns", "p"),))
    assert (account(facts).totals.unused_logical, account(facts).totals.reclaimable) == (12, 4)


_DIFFS = st.sampled_from(["a", "b", "c", "d", "e"])
_CHAINS = st.lists(st.lists(_DIFFS, min_size=1, max_size=5), min_size=1, max_size=8)


@settings(max_examples=150, deadline=None)
@given(chains=_CHAINS, repos=st.lists(st.integers(0, 3), min_size=8, max_size=8), data=st.data())
def test_base_bytes_add_up_whatever_nests(chains: list[list[str]], repos: list[int], data: st.DataObject) -> None:
    images = [
        ImageFacts(image_id=digest(f"img{i}"), repo_tags=(f"r{repos[i]}:{i}",), diff_ids=tuple(digest(d) for d in c))
        for i, c in enumerate(chains)
    ]
    every_chain = {c for img in images for c in img.chain_ids}
    sizes = {c: SnapshotUsage(data.draw(st.integers(0, 1000))) for c in sorted(every_chain)}
    catalog = [
        BaseSpec(f"cat{k}", diff_ids=tuple(digest(d) for d in prefix), version=str(k))
        for k, prefix in enumerate(data.draw(st.lists(st.lists(_DIFFS, min_size=1, max_size=3), max_size=3)))
    ]
    declared = {
        img.image_id: DeclaredBase(f"decl:{n}")
        for img, n in zip(
            images,
            data.draw(st.lists(st.integers(0, 2) | st.none(), min_size=len(images), max_size=len(images))),
            strict=True,
        )
        if n is not None
    }
    report = account(NodeFacts(images=tuple(images), layer_usage=sizes, declared_bases=declared), catalog)
    assert sum(b.bytes for b in report.bases) <= report.totals.physical
    assert all(b.bytes <= b.stack_bytes for b in report.bases)
    assert sum(b.images for b in report.bases) == report.totals.images
    for family in report.families:
        assert 0 <= family.drift <= family.bytes


def test_declared_short_name_finds_the_base_by_its_tag_on_the_node():
    debian = image("debian", ["B", "OS"], tags=["docker.io/library/debian:12"])
    app = image("app", ["B", "OS", "A"], declared_base=DeclaredBase("debian:12"))
    moved = image("moved", ["B", "OS2", "M"], declared_base=DeclaredBase("debian:12"))
    sizes = {("B",): 100, ("B", "OS"): 20, ("B", "OS", "A"): 3, ("B", "OS2"): 9, ("B", "OS2", "M"): 1}
    report = account(facts_of(debian, app, moved, sizes=sizes))
    assert base_of(report, app) == base_of(report, moved) == ("docker.io/library/debian", "12", "annotation")
    # app stands on the debian image; moved was built on an older debian:12 (the tag moved on) and only shares B.
    stacks = {b.chain_id: b.layers for b in report.bases if b.source == "annotation"}
    assert stacks == {chain_ids([digest("B"), digest("OS")])[-1]: 2}
    assert_additive(report)
