"""The pull-cost accounting with literal values: containerd's and containers/storage's
rules as measured (tests/integration/test_pull_cost.py proves them on real pulls)."""

from __future__ import annotations

import dataclasses

import pytest

from exporter.core.chain import chain_ids
from exporter.core.facts import ImageFacts, LayerBlob, NodeFacts, SnapshotUsage
from exporter.core.pull_cost import (
    CONTAINERD,
    CONTAINERS_STORAGE,
    MIB,
    NodeHoldings,
    PullCost,
    RemoteImage,
    RemoteLayer,
    StoreAnswers,
    holdings_for,
    holdings_from_answers,
    holdings_from_facts,
    image_locality_score,
    kubelet_listed,
    locality_assumed_pull,
    merge_holdings,
    pull_costs,
    repull_report,
    rollout,
    shows_discarded_blobs,
    stored_layers_of,
    total,
    workload_locality,
)


def d(name: str) -> str:
    return "sha256:" + name.encode().hex().ljust(64, "0")


def layer(name: str, size: int) -> RemoteLayer:
    return RemoteLayer(digest=d("blob-" + name), size=size, diff_id=d("diff-" + name))


BASE, LIB, APP, APP2, LONE = layer("base", 1000), layer("lib", 200), layer("app", 30), layer("app2", 40), layer("x", 5)


def image(ref: str, *layers: RemoteLayer, config_size: int = 7) -> RemoteImage:
    return RemoteImage(ref, d("manifest-" + ref), d("config-" + ref), config_size, layers)


def chains(*layers: RemoteLayer) -> tuple[str, ...]:
    return chain_ids([lay.diff_id for lay in layers])


def node(model: str = CONTAINERD, **kwargs: object) -> NodeHoldings:
    return NodeHoldings(model, **kwargs)  # type: ignore[arg-type]


def test_an_empty_node_fetches_and_unpacks_everything():
    costs, tot = pull_costs([image("a", BASE, APP)], node())
    assert costs == (PullCost("a", 7 + 1000 + 30, 2, 2, None),)
    assert tot == PullCost("", 1037, 2, 2, None)


def test_an_image_already_present_costs_nothing_on_containerd():
    img = image("a", BASE, APP)
    holdings = node(
        chains=dict.fromkeys(chains(BASE, APP), 10), blobs=frozenset({img.config_digest, BASE.digest, APP.digest})
    )
    assert pull_costs([img], holdings)[0] == (PullCost("a", 0, 0, 0, 0),)


def test_present_chains_are_skipped_even_without_their_blobs():
    """discard_unpacked_layers: the blobs are gone, the snapshots stay; only the top is fetched."""
    holdings = node(chains=dict.fromkeys(chains(BASE, LIB), 10), keeps_layer_blobs=False)
    (cost,), _ = pull_costs([image("v2", BASE, LIB, APP2)], holdings)
    assert cost == PullCost("v2", 7 + 40, 1, 1, None)


def test_the_same_diff_on_another_parent_is_unpacked_but_its_blob_is_not_fetched():
    # APP is present on top of BASE, LIB; here it sits on BASE alone: a new chain.
    present = chains(BASE, LIB, APP)
    holdings = node(chains=dict(zip(present, (1000, 200, 33), strict=True)), blobs=frozenset({APP.digest}))
    (cost,), _ = pull_costs([image("moved", BASE, APP)], holdings)
    assert cost == PullCost("moved", 7, 0, 1, None)  # bytes unknown: not diff-sized
    diff_sized = node(
        chains=dict(zip(present, (1000, 200, 33), strict=True)),
        blobs=frozenset({APP.digest}),
        diff_bytes={APP.diff_id: 33},
        diff_sized=True,
    )
    assert pull_costs([image("moved", BASE, APP)], diff_sized)[0] == (PullCost("moved", 7, 0, 1, 33),)


def test_from_the_first_missing_chain_every_layer_is_unpacked():
    """A present diff above a missing chain is a new chain too (its parent differs)."""
    holdings = node(chains=dict.fromkeys(chains(LIB), 1), blobs=frozenset({LIB.digest}))
    (cost,), _ = pull_costs([image("a", BASE, LIB)], holdings)
    assert cost == PullCost("a", 7 + 1000, 1, 2, None)


def test_references_in_order_do_not_fetch_or_unpack_twice():
    a, b, c = image("a", BASE, LIB), image("b", BASE, LIB, APP), image("c", BASE, APP2, config_size=9)
    costs, tot = pull_costs(
        [a, b, c, a], node(), known_chain_bytes=dict(zip(chains(BASE, LIB, APP), (5, 6, 7), strict=True))
    )
    assert costs == (
        PullCost("a", 7 + 1200, 2, 2, 11),
        PullCost("b", 7 + 30, 1, 1, 7),
        PullCost("c", 9 + 40, 1, 1, None),
        PullCost("a", 0, 0, 0, 0),
    )
    assert tot == PullCost("", 1200 + 30 + 40 + 23, 4, 4, None)


def test_a_node_that_discards_blobs_fetches_a_blob_again_for_a_later_reference():
    first, later = image("a", BASE, APP), image("b", LIB, APP)
    keeps = pull_costs([first, later], node())[0]
    discards = pull_costs([first, later], node(keeps_layer_blobs=False))[0]
    assert (keeps[1].fetch_layers, discards[1].fetch_layers) == (1, 2)


def test_a_blob_twice_in_one_image_is_fetched_once():
    empty = layer("empty", 32)
    (cost,), _ = pull_costs([image("a", empty, BASE, empty)], node())
    assert (cost.fetch_bytes, cost.fetch_layers, cost.unpack_layers) == (7 + 32 + 1000, 2, 3)


def test_containers_storage_reads_the_config_again_and_reuses_blobs_by_digest():
    img = image("a", BASE, APP)
    present = chains(BASE, APP)
    holdings = node(
        CONTAINERS_STORAGE,
        chains=dict(zip(present, (1024, 40), strict=True)),
        blobs=frozenset({BASE.digest, APP.digest}),
        diff_bytes={BASE.diff_id: 1024, APP.diff_id: 40},
        diff_sized=True,
    )
    assert pull_costs([img], holdings)[0] == (PullCost("a", 7, 0, 0, 0),)
    # APP again on LIB: its blob is reused, a layer made of the same diff (its bytes known).
    (cost,), _ = pull_costs([image("b", BASE, LIB, APP)], holdings)
    assert cost == PullCost("b", 7 + 200, 1, 2, None)
    (cost,), _ = pull_costs([image("c", APP)], holdings)
    assert cost == PullCost("c", 7, 0, 1, 40)


def test_total_is_unknown_when_one_figure_is():
    assert total([PullCost("a", 1, 1, 1, 5), PullCost("b", 2, 0, 1, None)]).unpack_bytes is None
    assert total([PullCost("a", 1, 1, 1, 5), PullCost("b", 2, 0, 0, 0)]) == PullCost("", 3, 1, 1, 5)


def test_unknown_model_is_refused():
    with pytest.raises(ValueError, match="unknown pull model"):
        NodeHoldings("docker")


def _facts(**kwargs: object) -> NodeFacts:
    return NodeFacts(**kwargs)  # type: ignore[arg-type]


def test_holdings_from_containerd_facts():
    img = ImageFacts(d("config-a"), diff_ids=(BASE.diff_id, APP.diff_id))
    usage = dict(zip(img.chain_ids, (SnapshotUsage(1000), SnapshotUsage(33)), strict=True))
    blobs = {img.image_id: (LayerBlob(BASE.digest, 1000), LayerBlob(APP.digest, 30))}
    facts = _facts(images=(img,), layer_usage=usage, layer_blobs=blobs, present_blobs={BASE.digest: 1000})
    holdings = holdings_from_facts(facts)
    assert holdings.model == CONTAINERD
    assert holdings.chains == dict(zip(img.chain_ids, (1000, 33), strict=True))
    assert holdings.blobs == {img.image_id, BASE.digest}  # the config is kept while the image exists
    assert holdings.diff_sized and holdings.diff_bytes == {BASE.diff_id: 1000, APP.diff_id: 33}
    assert not holdings.keeps_layer_blobs  # APP's blob is gone though its chain is unpacked
    native = holdings_from_facts(_facts(images=(img,), layer_usage=usage, snapshotter="native"))
    assert not native.diff_sized and native.diff_bytes == {}
    remote = holdings_from_facts(_facts(images=(img,), remote_layers=frozenset(img.chain_ids)))
    assert remote.chains == dict.fromkeys(img.chain_ids, 0) and remote.keeps_layer_blobs


def test_holdings_from_containers_storage_facts():
    img = ImageFacts("ab" * 32, diff_ids=(BASE.diff_id,))
    facts = _facts(
        images=(img,),
        layer_usage={img.chain_ids[0]: SnapshotUsage(1024)},
        present_blobs={BASE.digest: 1000},
        layer_store=CONTAINERS_STORAGE,
        snapshotter="overlay",
    )
    holdings = holdings_from_facts(facts)
    assert holdings.model == CONTAINERS_STORAGE and holdings.diff_sized
    assert holdings.blobs == {BASE.digest}  # c/storage keeps no config blob to reuse
    assert holdings.diff_bytes == {BASE.diff_id: 1024}


def _stored(name: str, *layers: RemoteLayer) -> ImageFacts:
    return ImageFacts(d("config-" + name), diff_ids=tuple(lay.diff_id for lay in layers))


def test_repull_bytes_count_what_only_the_removed_image_held():
    """a and b share BASE+LIB; c shares BASE. Every chain unpacked, every blob kept."""
    specs = {"a": (BASE, LIB, APP), "b": (BASE, LIB, APP2), "c": (BASE, LONE)}
    images = tuple(_stored(name, *layers) for name, layers in specs.items())
    usage = {c: SnapshotUsage(1) for layers in specs.values() for c in chains(*layers)}
    blobs = {
        image.image_id: tuple(LayerBlob(lay.digest, lay.size) for lay in specs[name])
        for name, image in zip(specs, images, strict=True)
    }
    present = {lay.digest: lay.size for layers in specs.values() for lay in layers}
    facts = _facts(images=images, layer_usage=usage, layer_blobs=blobs, present_blobs=present)
    a, b, c = (image.image_id for image in images)
    report = repull_report(facts, [a, b, c, d("config-absent")], unused_ids=[a, b])
    # a alone: its top layer; b alone: its top; c alone: LONE (BASE stays with a and b).
    assert report.images == {a: 30, b: 40, c: 5, d("config-absent"): None}
    # a and b both gone: LIB goes too (c keeps BASE only), fetched once for both.
    assert report.unused == 200 + 30 + 40
    # Nothing unused: nothing to bring back.
    assert repull_report(facts, [], []).unused == 0


def test_repull_on_a_node_that_discarded_its_blobs():
    """The chains below stay (another image's), their blobs are gone: only from the first missing chain."""
    a, b = _stored("a", BASE, LIB, APP), _stored("b", BASE, LIB)
    usage = {c: SnapshotUsage(1) for c in chains(BASE, LIB, APP)}
    layer_blobs = (LayerBlob(BASE.digest, 1000), LayerBlob(LIB.digest, 200), LayerBlob(APP.digest, 30))
    blobs = {a.image_id: layer_blobs, b.image_id: layer_blobs[:2]}
    report = repull_report(_facts(images=(a, b), layer_usage=usage, layer_blobs=blobs), [a.image_id, b.image_id], [])
    assert report.images == {a.image_id: 30, b.image_id: 0}


# -- a rollout across nodes --------------------------------------------------------


def test_a_node_answers_for_the_layers_asked_and_the_cost_is_the_same():
    a, b = image("a", BASE, LIB, APP), image("b", BASE, APP2)
    holdings = node(
        chains={**dict.fromkeys(chains(BASE, LIB), 10), **dict.fromkeys(chains(LONE), 3)},
        blobs=frozenset({BASE.digest, LONE.digest, APP.digest, d("config-x")}),
        diff_bytes={BASE.diff_id: 10, LONE.diff_id: 3, APP.diff_id: 33},
        diff_sized=True,
        keeps_layer_blobs=False,
    )
    answer = holdings_for(holdings, [a, b])
    assert set(answer.chains) == set(chains(BASE, LIB)) and answer.blobs == {BASE.digest, APP.digest}
    assert answer.diff_bytes == {BASE.diff_id: 10, APP.diff_id: 33} and not answer.keeps_layer_blobs
    assert pull_costs([a, b], answer) == pull_costs([a, b], holdings)


def test_a_rollout_per_node_from_the_registry_and_warm_nodes():
    new = image("app:2", BASE, LIB, APP2)
    # Three overlayfs-like nodes (a layer's bytes are its diff's own) and a native one.
    sizes = dict(zip(chains(BASE, LIB, APP2), (1000, 200, 5), strict=True))
    warm = node(chains=sizes, blobs=frozenset({new.config_digest}), diff_sized=True)
    based = node(chains=dict(list(sizes.items())[:2]), blobs=frozenset({BASE.digest}), diff_sized=True)
    cold = node(diff_sized=True)
    native = node()
    report = rollout([new], {"warm": warm, "based": based, "cold": cold, "native": native})
    by_node = {n.node: n for n in report.nodes}
    assert [n.node for n in report.nodes] == ["based", "cold", "native", "warm"]
    assert by_node["warm"].warm and by_node["warm"].total == PullCost("", 0, 0, 0, 0)
    # The new top chain's bytes come from the warm node, which holds it.
    assert by_node["based"].total == PullCost("", 7 + 40, 1, 1, 5)
    assert by_node["cold"].total == PullCost("", 7 + 1240, 3, 3, 1000 + 200 + 5)
    # Not from a store whose bytes are counted another way.
    assert by_node["native"].total.unpack_bytes is None
    assert report.registry_bytes == 0 + 47 + 1247 + 1247 and report.warm_nodes == 1


def test_image_locality_scores_whole_images_by_name():
    # One container, a 500 MiB image every node lists: (500 - 23) / (1000 - 23) of 100.
    assert image_locality_score(["app:1"], {"app:1": 500 * MIB}, {"app:1": 2}, 2) == 48
    # On one node of two: half the size counts.
    assert image_locality_score(["app:1"], {"app:1": 500 * MIB}, {"app:1": 1}, 2) == 23
    # Not listed under that very name: nothing, below the 23 MiB floor anyway.
    assert image_locality_score(["app"], {"app:1": 500 * MIB, "docker.io/library/app:latest": 1}, {}, 1) == 0
    assert image_locality_score(["app:1"], {"app:1": 5 * MIB}, {"app:1": 1}, 1) == 0
    # Two containers: the ceiling doubles; one large image cannot fill it.
    assert image_locality_score(["big:1", "small:1"], {"big:1": 3000 * MIB}, {"big:1": 1}, 1) == 100


def test_what_image_locality_assumes_a_node_pulls():
    new = image("app:2", BASE, LIB, APP2)
    assert locality_assumed_pull([new], {"app:1": 1}) == 7 + 1240  # a new version: the whole image
    assert locality_assumed_pull([new], {"app:2": 1}) == 0


def test_answers_to_several_questions_merge_into_the_answer_to_all():
    a, b = image("a", BASE, LIB, APP), image("b", BASE, APP2)
    holdings = node(
        chains=dict.fromkeys(chains(BASE, LIB, APP), 10),
        blobs=frozenset({BASE.digest, APP2.digest}),
        diff_bytes={BASE.diff_id: 10, APP2.diff_id: 4},
        diff_sized=True,
        listed={"a:latest": 99, "other": 1},
    )
    merged = merge_holdings([holdings_for(holdings, [a]), holdings_for(holdings, [b])])
    assert merged == holdings_for(holdings, [a, b])
    assert merged.listed == {"a:latest": 99}
    with pytest.raises(ValueError, match="disagree"):
        merge_holdings([holdings_for(holdings, [a]), node(CONTAINERS_STORAGE)])
    with pytest.raises(ValueError):
        merge_holdings([])


def test_the_kubelet_lists_the_largest_images_by_all_their_names():
    images = [
        ImageFacts(d(f"config-{i}"), repo_tags=(f"img:{i}",), repo_digests=(f"img@{d(str(i))}",), compressed_size=i)
        for i in range(1, 61)
    ]
    listed = kubelet_listed(images)
    assert len(listed) == 100 and listed["img:60"] == 60 and "img:10" not in listed and listed["img:11"] == 11
    assert listed[f"img@{d('60')}"] == 60


def test_holdings_answer_only_the_names_asked():
    holdings = node(listed={"app:1": 1000, "docker.io/library/app:1": 1000, "other:2": 5})
    assert holdings_for(holdings, [image("app:1", BASE)]).listed == {"app:1": 1000}
    assert holdings_for(holdings, [image("app", BASE)]).listed == {}  # app means app:latest


def test_a_rollout_shows_what_image_locality_assumes_next_to_the_real_figure():
    new = image("app:2", BASE, APP2)
    sizes = dict(zip(chains(BASE), (1000,), strict=True))
    report = rollout([new], {"based": node(chains=sizes, listed={"app:1": 1037}), "listed": node(listed={"app:2": 1})})
    by_node = {n.node: n for n in report.nodes}
    assert by_node["based"].total.fetch_bytes == 7 + 40 and by_node["based"].assumed == 7 + 1040
    # Listed by name counts as nothing to pull, however little the node really holds.
    assert by_node["listed"].total.fetch_bytes == 7 + 1040 and by_node["listed"].assumed == 0
    assert report.assumed_registry_bytes == 1047 and report.registry_bytes == 47 + 1047


def test_workload_cold_start_percentiles_are_nearest_rank_node_figures():
    app = image("app:1", BASE, APP)
    warm = node(chains=dict.fromkeys(chains(BASE, APP), 1), blobs=frozenset({app.config_digest}))
    based = node(chains=dict.fromkeys(chains(BASE), 1))
    nodes = {"n1": warm, "n2": warm, "n3": based, "n4": node()}
    (locality,) = workload_locality({"default/Deployment/app": [app]}, nodes)
    assert locality.workload == "default/Deployment/app" and locality.refs == ("app:1",)
    assert locality.rollout.warm_nodes == 2
    assert sorted(n.total.fetch_bytes for n in locality.rollout.nodes) == [0, 0, 37, 1037]
    assert locality.rollout.fetch_percentile(0.5) == 0 and locality.rollout.fetch_percentile(0.9) == 1037
    assert rollout([app], {}).fetch_percentile(0.5) == 0


# -- a targeted read --------------------------------------------------------------


def test_answers_about_some_images_give_the_whole_refreshs_holdings_for_them():
    """The node: a (BASE, LIB, APP) and c (BASE, LONE), every chain unpacked, APP's blob
    discarded, c's top remote. Asked: a new version of a (BASE, LIB, APP2), moved (BASE,
    APP: APP's diff only on another parent, which the answers name) and c itself."""
    a = ImageFacts(d("config-a"), ("x/a:1",), diff_ids=(BASE.diff_id, LIB.diff_id, APP.diff_id), compressed_size=9)
    c = ImageFacts(d("config-c"), ("x/c:1",), diff_ids=(BASE.diff_id, LONE.diff_id), compressed_size=5)
    sizes = dict(zip(chains(BASE, LIB, APP), (1000, 200, 33), strict=True))
    facts = _facts(
        images=(a, c),
        layer_usage={**{k: SnapshotUsage(v) for k, v in sizes.items()}, chains(BASE, LONE)[1]: SnapshotUsage(0)},
        remote_layers=frozenset({chains(BASE, LONE)[1]}),
        layer_blobs={a.image_id: tuple(LayerBlob(x.digest, x.size) for x in (BASE, LIB, APP))},
        present_blobs={BASE.digest: 1000, LIB.digest: 200},
    )
    present = RemoteImage("x/c:1", "", c.image_id, 7, (BASE, LONE))
    asked = [image("x/a:1", BASE, LIB, APP2), image("moved", BASE, APP), present]
    answers = StoreAnswers(
        snapshotter="overlayfs",
        listed_images=(a, c),
        layer_usage={
            **{ch: sizes[ch] for ch in chains(BASE, LIB)},
            chains(BASE)[0]: 1000,
            chains(BASE, LONE)[1]: 0,
            chains(BASE, LIB, APP)[2]: 33,
        },
        remote_layers=frozenset({chains(BASE, LONE)[1]}),
        present_blobs=frozenset({BASE.digest, LIB.digest}),
        diff_chains={APP.diff_id: (chains(BASE, LIB, APP)[2],)},
        keeps_layer_blobs=False,
    )
    targeted = holdings_from_answers(answers, asked)
    assert targeted == holdings_for(holdings_from_facts(facts), asked)
    assert targeted.diff_bytes[APP.diff_id] == 33 and LONE.diff_id not in targeted.diff_bytes  # remote: no bytes
    assert targeted.chains[chains(BASE, LONE)[1]] == 0 and c.image_id in targeted.blobs
    assert targeted.listed == {"x/a:1": 9, "x/c:1": 5}
    native = holdings_from_answers(dataclasses.replace(answers, snapshotter="native"), asked)
    assert not native.diff_sized and native.diff_bytes == {}


def test_stored_layers_of_a_diff_are_found_on_any_parent():
    snapshots = {
        **{c: p for c, p in zip(chains(BASE, LIB, APP), ("", *chains(BASE, LIB)), strict=True)},
        chains(LONE, APP)[1]: chains(LONE)[0],
        chains(LONE)[0]: "",
        chains(BASE, APP2)[1]: chains(BASE)[0],
    }
    found = stored_layers_of([APP.diff_id, LONE.diff_id, LIB.diff_id, d("diff-none")], snapshots)
    assert found == {
        APP.diff_id: tuple(sorted((chains(BASE, LIB, APP)[2], chains(LONE, APP)[1]), key=lambda c: snapshots[c])),
        LONE.diff_id: (LONE.diff_id,),  # a bottom layer's chain ID is its diff ID
        LIB.diff_id: (chains(BASE, LIB)[1],),
    }


def test_evidence_of_discarded_blobs_needs_every_chain_unpacked_and_a_blob_missing():
    ids = chains(BASE, APP)
    blobs = (BASE.digest, APP.digest)
    assert shows_discarded_blobs(blobs, ids, set(ids), {BASE.digest})
    assert not shows_discarded_blobs(blobs, ids, set(ids), set(blobs))  # all kept
    assert not shows_discarded_blobs(blobs, ids, {ids[0]}, {BASE.digest})  # not unpacked: never fetched
    assert not shows_discarded_blobs(blobs[:1], ids, set(ids), set())  # the manifest does not match the config
