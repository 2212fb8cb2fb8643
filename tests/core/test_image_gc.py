"""The kubelet's image GC replayed with real bytes, on hand-computed nodes.

Node: a 1,000-byte base layer B under every image; `app` (running) adds A=100;
`old-1` (built first) adds P=300, `old-2` adds Q=200; `tool` (no build time)
adds T=50. The unused images are old-1, old-2 and tool; B stays, app uses it.
"""

from __future__ import annotations

import pytest

from exporter.core.accounting import NodeReport, account
from exporter.core.facts import LayerBlob, NodeFacts
from exporter.core.image_gc import ImageGcPlan, plan_image_gc
from tests.fakes import container, digest, image, pod, usage_for

APP = image("app", ["B", "A"], compressed_size=400)
OLD_1 = image("old-1", ["B", "P"], compressed_size=600, created=1_600_000_000.0)
OLD_2 = image("old-2", ["B", "Q"], compressed_size=500, created=1_700_000_000.0)
TOOL = image("tool", ["B", "T"], compressed_size=700)
SIZES = {("B",): 1000, ("B", "A"): 100, ("B", "P"): 300, ("B", "Q"): 200, ("B", "T"): 50}


def node(**kw: object) -> NodeReport:
    facts = NodeFacts(
        images=(APP, OLD_1, OLD_2, TOOL),
        containers=(container("c", APP, "default", "web"),),
        pods=(pod("default", "web"),),
        layer_usage=usage_for(SIZES),
        **kw,  # type: ignore[arg-type]
    )
    return account(facts)


def plan(report: NodeReport, capacity: int, available: int, high: int = 85, low: int = 80) -> ImageGcPlan:
    sizes = {chain_id: layer.size for chain_id, layer in report.layers.items()}
    return plan_image_gc(report.images, sizes, report.blob_sizes, capacity, available, high, low)


def test_below_the_high_threshold_nothing_is_to_free():
    # 10,000 bytes, 2,000 available: 80% used, under 85%.
    gc = plan(node(), 10_000, 2_000)
    assert (gc.usage_percent, gc.above_high, gc.bytes_to_free, gc.freed_bytes) == (80, False, 0, 0)
    # Every unused image's own layers; B stays (app holds it).
    assert gc.unused_bytes == 300 + 200 + 50
    assert gc.can_reach_low


def test_a_round_stops_once_the_cri_sizes_cover_the_target_and_frees_only_unshared_layers():
    # 10,000 bytes, 1,400 available: 86% used. Target: 2,000 available, so 600 to free.
    gc = plan(node(), 10_000, 1_400)
    assert (gc.usage_percent, gc.above_high, gc.bytes_to_free) == (86, True, 600)
    # The kubelet believes old-1 (oldest build, CRI size 600) covers it; it really frees P only.
    assert (gc.believed_freed_bytes, gc.freed_bytes) == (600, 300)
    assert gc.unused_bytes == 550
    assert not gc.can_reach_low  # 1,400 + 550 < 2,000


def test_deleting_every_unused_image_can_bring_usage_under_low():
    gc = plan(node(), 10_000, 1_450)  # 85.5% -> the kubelet's integer math says 86
    assert gc.above_high and gc.bytes_to_free == 550
    assert gc.can_reach_low  # 1,450 + 550 = 2,000: exactly the low threshold
    # old-1 (600 believed) covers 550: the round frees 300, and the next round the rest.
    assert gc.freed_bytes == 300


def test_images_without_a_build_time_go_last_and_a_round_may_take_them_all():
    gc = plan(node(), 100_000, 1_000)  # 99% used: 19,000 to free, more than every CRI size together
    assert gc.bytes_to_free == 19_000
    assert gc.believed_freed_bytes == 600 + 500 + 700
    assert gc.freed_bytes == gc.unused_bytes == 550


def test_a_base_layer_goes_when_no_image_left_holds_it():
    facts_without_app = NodeFacts(images=(OLD_1, OLD_2), layer_usage=usage_for(SIZES))
    report = account(facts_without_app)
    gc = plan(report, 10_000, 100)
    assert gc.freed_bytes == gc.unused_bytes == 1000 + 300 + 200


def test_content_store_blobs_are_freed_with_their_last_image():
    blobs = {
        APP.image_id: (LayerBlob(digest("blob-B"), 400), LayerBlob(digest("blob-A"), 40)),
        OLD_1.image_id: (LayerBlob(digest("blob-B"), 400), LayerBlob(digest("blob-P"), 120)),
        OLD_2.image_id: (LayerBlob(digest("blob-B"), 400), LayerBlob(digest("blob-Q"), 80)),
        TOOL.image_id: (LayerBlob(digest("blob-B"), 400), LayerBlob(digest("blob-T"), 20)),
    }
    present = {blob.digest: blob.size for layer_blobs in blobs.values() for blob in layer_blobs}
    report = node(layer_blobs=blobs, present_blobs=present)
    assert plan(report, 10_000, 2_000).unused_bytes == 550 + 120 + 80 + 20
    # containers-storage records compressed sizes but keeps no blobs: nothing more is freed.
    crio = node(layer_blobs=blobs, present_blobs=present, layer_store="containers-storage")
    assert crio.blob_sizes == {} and plan(crio, 10_000, 2_000).unused_bytes == 550


@pytest.mark.parametrize(
    ("capacity", "high", "low", "message"),
    [(0, 85, 80, "capacity"), (10, 80, 80, "low < high"), (10, 101, 80, "low < high")],
)
def test_impossible_inputs_are_refused(capacity, high, low, message):
    with pytest.raises(ValueError, match=message):
        plan(node(), capacity, 0, high, low)
