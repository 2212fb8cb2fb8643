"""The accounting on hand-computed figures (see tests/sample_facts.py)."""

import dataclasses

from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.core.accounting import (
    account,
    fair_shares,
    merge_images,
    only_moving_figures_differ,
    with_moving_figures,
)
from exporter.core.chain import chain_ids
from exporter.core.facts import FilesystemFacts, LayerBlob, NodeFacts
from tests.fakes import container, digest, pod
from tests.sample_facts import APP_A, APP_B, APP_C, BASE, IMAGES, PAUSE, TOOL, sample_facts


def by_id(report):
    return {i.image_id: i for i in report.images}


def test_node_totals():
    t = account(sample_facts()).totals
    assert t.images == 6
    assert t.layers == 8  # the empty layer is a layer
    assert t.physical == 1000 + 300 + 200 + 400 + 250 + 200 + 0 + 100
    assert t.shared == 1000 + 300  # B and OS: referenced by two or more images
    assert t.unique == t.physical - t.shared
    assert t.logical == 1300 + 1500 + 1700 + 1450 + 1400 + 1000
    assert t.writable == 22
    assert t.containers == 4
    assert t.pods == 3
    assert t.missing_layers == 0


def test_image_size_shared_unique_are_docker_system_df_definitions():
    images = by_id(account(sample_facts()))
    assert (images[APP_A.image_id].size, images[APP_A.image_id].shared, images[APP_A.image_id].unique) == (
        1500,
        1300,
        200,
    )
    assert (images[APP_B.image_id].size, images[APP_B.image_id].shared, images[APP_B.image_id].unique) == (
        1700,
        1300,
        400,
    )
    assert (images[BASE.image_id].size, images[BASE.image_id].unique) == (1300, 0)


def test_same_diff_on_a_different_parent_is_not_shared():
    images = by_id(account(sample_facts()))
    # app-c carries app-a's top diff, but on another parent: unique to app-c.
    assert (images[APP_C.image_id].shared, images[APP_C.image_id].unique) == (1000, 450)


def test_one_image_under_two_tags_is_one_image():
    facts = sample_facts()
    retagged = dataclasses.replace(
        APP_A, repo_tags=("registry.example/app-a:v1",), repo_digests=("r@sha256:" + "f" * 64,)
    )
    twice = dataclasses.replace(facts, images=(*facts.images, retagged))
    report = account(twice)
    assert report.totals.images == 6
    assert report.totals == account(facts).totals
    merged = merge_images(twice.images)[APP_A.image_id]
    assert merged.repo_tags == ("localhost/app-a:1", "localhost/app-a:latest", "registry.example/app-a:v1")


def test_reclaimable_counts_layers_no_in_use_image_references():
    # in use: app-a, app-b (running), app-c (exited container still pins it),
    # pause (sandbox). base's layers are covered by app-a; tool's E and T are not.
    report = account(sample_facts())
    assert report.totals.reclaimable == 0 + 100
    assert {i.name for i in report.images if not i.in_use} == {"localhost/base:1", "localhost/tool:1"}


def test_pinned_images_are_not_reclaimable():
    facts = sample_facts()
    pinned_tool = dataclasses.replace(TOOL, pinned=True)
    facts = dataclasses.replace(facts, images=tuple(pinned_tool if i is TOOL else i for i in facts.images))
    assert account(facts).totals.reclaimable == 0


def test_pods_shared_unique_and_fair_share():
    pods = {(p.namespace, p.name): p for p in account(sample_facts()).pods}
    web1, web2, solo = pods[("default", "web-1")], pods[("default", "web-2")], pods[("other", "solo")]
    # a two-container pod counts each distinct layer once
    assert (web1.bytes, web1.shared, web1.unique, web1.containers) == (1900, 1500, 400, 2)
    # two pods on one image (via two tags) share everything
    assert (web2.bytes, web2.shared, web2.unique) == (1500, 1500, 0)
    assert (solo.bytes, solo.shared, solo.unique) == (1450, 1000, 450)
    # B is used by 3 pods, OS and A by 2: 1000/3 + 300/2 + 200/2 (+400 for web-1)
    assert {web1.attributed, web2.attributed, solo.attributed} <= {983, 984, 583, 584, 783, 784}
    assert web1.attributed + web2.attributed + solo.attributed == 1000 + 300 + 200 + 400 + 250 + 200
    assert (web1.writable, web2.writable, solo.writable) == (15, 7, 0)


def test_sandbox_image_is_excluded_from_pods():
    facts = sample_facts()
    with_pause = dataclasses.replace(
        facts, containers=(*facts.containers, container("pause", PAUSE, "default", "web-2"))
    )
    pods = {p.name: p for p in account(with_pause).pods}
    assert pods["web-2"].image_ids == (APP_A.image_id,)


def test_fair_shares_add_up_exactly_whatever_the_rounding():
    layers = {("ns", f"p{i}"): {"x"} for i in range(3)}
    shares = fair_shares(layers, __import__("collections").Counter({"x": 3}), lambda c: 100)
    assert sorted(shares.values()) == [33, 33, 34]
    assert sum(shares.values()) == 100


def test_pod_without_containers_is_listed_with_zero_bytes():
    facts = dataclasses.replace(sample_facts(), pods=(*sample_facts().pods, pod("kube-system", "empty")))
    empty = next(p for p in account(facts).pods if p.name == "empty")
    assert (empty.bytes, empty.attributed, empty.containers) == (0, 0, 0)


def test_missing_snapshot_counts_zero_bytes_and_is_reported():
    facts = sample_facts()
    top_of_b = chain_ids(APP_B.diff_ids)[-1]
    usage = {k: v for k, v in facts.layer_usage.items() if k != top_of_b}
    report = account(dataclasses.replace(facts, layer_usage=usage))
    assert report.totals.missing_layers == 1
    assert by_id(report)[APP_B.image_id].size == 1300
    assert by_id(report)[APP_B.image_id].missing_layers == 1


def test_content_bytes_count_each_present_blob_once():
    facts = sample_facts()
    shared_blob = LayerBlob(digest(100), 600)
    blobs = {
        APP_A.image_id: (shared_blob, LayerBlob(digest(101), 50)),
        APP_B.image_id: (shared_blob, LayerBlob(digest(102), 70)),  # 102 was garbage-collected
    }
    present = {digest(100): 600, digest(101): 50, digest(999): 5}  # 999: not an image layer
    report = account(dataclasses.replace(facts, layer_blobs=blobs, present_blobs=present))
    assert report.totals.content == 650


def test_empty_node_is_all_zero():
    report = account(NodeFacts())
    assert all(value == 0 for value in dataclasses.asdict(report.totals).values())
    assert report.images == report.pods == report.bases == ()


def test_image_lookup_by_tag_id_and_prefix():
    report = account(sample_facts())
    assert report.image("localhost/app-a:latest").image_id == APP_A.image_id
    assert report.image(APP_B.image_id).image_id == APP_B.image_id
    assert report.image(APP_C.image_id.removeprefix("sha256:")[:16]).image_id == APP_C.image_id
    assert report.image("nope:1") is None


def test_every_image_fact_is_reported():
    assert {i.image_id for i in account(sample_facts()).images} == {i.image_id for i in IMAGES}


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(st.sampled_from("abcdefgh"), st.integers(0, 10**12), min_size=1),
    st.lists(st.sets(st.sampled_from("abcdefgh")), min_size=1, max_size=12),
)
def test_fair_shares_match_exact_fractions_and_add_up(sizes, pods):
    from collections import Counter
    from fractions import Fraction

    pod_layers = {("ns", f"p{i}"): layers for i, layers in enumerate(pods)}
    refcount = Counter(c for layers in pod_layers.values() for c in layers)
    shares = fair_shares(pod_layers, refcount, lambda c: sizes.get(c, 0))
    for key, layers in pod_layers.items():
        exact = sum((Fraction(sizes.get(c, 0), refcount[c]) for c in layers), Fraction(0))
        assert abs(shares[key] - exact) < 1
    used = set().union(*pod_layers.values())
    assert sum(shares.values()) == sum(sizes.get(c, 0) for c in used)


@given(
    st.lists(st.none() | st.integers(0, 10**12), min_size=4, max_size=4),
    st.lists(st.tuples(st.integers(0, 10**12), st.none() | st.integers(0, 10**12)), max_size=2),
)
def test_a_report_updated_with_moving_figures_is_the_report_accounted_again(writable, filesystems):
    before = sample_facts()
    after = dataclasses.replace(
        before,
        containers=tuple(
            dataclasses.replace(c, writable_bytes=w) for c, w in zip(before.containers, writable, strict=True)
        ),
        filesystems=tuple(
            FilesystemFacts(f"/var/lib/fs{n}", used, 7, capacity_bytes=10**13, available_bytes=available)
            for n, (used, available) in enumerate(filesystems)
        ),
    )
    assert only_moving_figures_differ(before, after)
    assert with_moving_figures(account(before), after) == account(after)


def test_anything_but_moving_figures_differing_means_accounting_again():
    before = sample_facts()
    first, *others = before.containers
    for after in (
        dataclasses.replace(before, containers=tuple(others)),  # a container gone
        dataclasses.replace(before, containers=(dataclasses.replace(first, image_id=APP_B.image_id), *others)),
        dataclasses.replace(before, containers=(dataclasses.replace(first, state="exited"), *others)),
        dataclasses.replace(before, images=before.images[:-1]),
        dataclasses.replace(before, pods=before.pods[:-1]),
        dataclasses.replace(before, layer_usage={}),
        dataclasses.replace(before, runtime_version="2.0.0"),
    ):
        assert not only_moving_figures_differ(before, after)


def test_namespaces_sum_their_pods_fair_shares_to_the_byte():
    report = account(sample_facts())
    by_namespace = {n.namespace: (n.pods, n.attributed) for n in report.namespaces}
    pods = {p.name: p.attributed for p in report.pods}
    assert by_namespace == {
        "default": (2, pods["web-1"] + pods["web-2"]),
        "other": (1, pods["solo"]),
    }
    assert sum(n.attributed for n in report.namespaces) == sum(pods.values())
    assert [n.namespace for n in report.namespaces] == sorted(by_namespace, key=lambda ns: -by_namespace[ns][1])
