"""The kubelet's image garbage collection, modelled with real bytes (pure: no I/O).

What the kubelet does (pkg/kubelet/images/image_gc_manager.go): when the
image filesystem's usage, `100 - available * 100 / capacity` in whole percent,
reaches `imageGCHighThresholdPercent` (default 85), it sets out to free
`capacity * (100 - imageGCLowThresholdPercent) / 100 - available` bytes
(low default 80) by deleting unused images, least recently used first, and
stops once the sizes CRI reports for the images it deleted add up to that
amount. Those sizes are whole-image sizes (compressed on containerd): a layer
another image still holds is not freed, however often it is counted.

This module replays one such round on the node's images with the real bytes:
a layer's snapshot (and, on containerd, its content-store blob) is freed only
when no image left on the node references it. The kubelet's recency order is
its own memory; the exporter cannot see it, so images are taken oldest build
first (the config's `created`; unknown last), then by name. Whether deleting
every unused image brings usage under the low threshold does not depend on
the order.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from exporter.core.accounting import ImageReport

DEFAULT_HIGH_PERCENT = 85
DEFAULT_LOW_PERCENT = 80


@dataclass(frozen=True, slots=True)
class ImageGcPlan:
    """One image filesystem as the kubelet's image GC sees it, and what a round would really free.

    `bytes_to_free` is the kubelet's target (0 below the high threshold);
    `freed_bytes` what one round deleting unused images in order until the CRI
    sizes cover the target really frees; `unused_bytes` what deleting every
    unused image frees; `can_reach_low` whether that brings usage under the
    low threshold (available ≥ capacity × (100 - low) / 100).
    """

    capacity_bytes: int
    available_bytes: int
    usage_percent: int
    above_high: bool
    bytes_to_free: int
    freed_bytes: int
    believed_freed_bytes: int
    unused_bytes: int
    can_reach_low: bool


def _deletion_order(image: ImageReport) -> tuple[bool, float, str, str]:
    return (image.created is None, image.created or 0.0, image.name, image.image_id)


def plan_image_gc(
    images: Sequence[ImageReport],
    layer_sizes: Mapping[str, int],
    blob_sizes: Mapping[str, int],
    capacity_bytes: int,
    available_bytes: int,
    high_percent: int = DEFAULT_HIGH_PERCENT,
    low_percent: int = DEFAULT_LOW_PERCENT,
) -> ImageGcPlan:
    """Replay the kubelet's image GC on `images` at the given filesystem figures.

    `layer_sizes` are snapshot bytes by chain ID; `blob_sizes` the bytes of the
    content-store blobs present, by digest (empty where the store keeps none):
    each image's `blobs` names those it references.
    """
    if capacity_bytes <= 0:
        raise ValueError(f"capacity must be > 0 bytes, got {capacity_bytes}")
    if not 0 <= low_percent < high_percent <= 100:
        raise ValueError(f"expected 0 <= low < high <= 100, got low {low_percent}, high {high_percent}")
    # The kubelet's own integer arithmetic, so the thresholds trip where its do.
    usage_percent = 100 - available_bytes * 100 // capacity_bytes
    above_high = usage_percent >= high_percent
    target_available = capacity_bytes * (100 - low_percent) // 100
    bytes_to_free = max(0, target_available - available_bytes) if above_high else 0

    layer_refs: Counter[str] = Counter()
    blob_refs: Counter[str] = Counter()
    for image in images:
        layer_refs.update(set(image.chain))
        blob_refs.update(set(image.blobs))
    unused = sorted((i for i in images if not i.in_use), key=_deletion_order)

    # One pass deletes every unused image in order; the round is where it would
    # stop: once the CRI sizes deleted so far cover the target.
    freed = believed = 0
    round_end: tuple[int, int] | None = None if bytes_to_free else (0, 0)
    for image in unused:
        if round_end is None and believed >= bytes_to_free:
            round_end = (freed, believed)
        believed += image.compressed_size
        for chain_id in set(image.chain):
            layer_refs[chain_id] -= 1
            if layer_refs[chain_id] == 0:
                freed += layer_sizes.get(chain_id, 0)
        for digest in set(image.blobs):
            blob_refs[digest] -= 1
            if blob_refs[digest] == 0:
                freed += blob_sizes.get(digest, 0)
    round_freed, round_believed = round_end if round_end is not None else (freed, believed)
    return ImageGcPlan(
        capacity_bytes=capacity_bytes,
        available_bytes=available_bytes,
        usage_percent=usage_percent,
        above_high=above_high,
        bytes_to_free=bytes_to_free,
        freed_bytes=round_freed,
        believed_freed_bytes=round_believed,
        unused_bytes=freed,
        can_reach_low=available_bytes + freed >= target_available,
    )
