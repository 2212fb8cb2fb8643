"""What the figures must be, derived independently of the exporter's code:
layer sizes from `ctr snapshots usage -b`, layer identities from the images the
harness built, blobs from `ctr content ls -q`."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from tests.harness.scenario import SAMPLE_PODS, SampleNode


def _chains(diff_ids: tuple[str, ...]) -> list[str]:
    out: list[str] = []
    for d in diff_ids:
        out.append("sha256:" + hashlib.sha256(f"{out[-1]} {d}".encode()).hexdigest() if out else d)
    return out


@dataclass
class Expected:
    usage: dict[str, tuple[int, int]]
    image_size: dict[str, int]
    image_shared: dict[str, int]
    physical: int
    logical: int
    shared: int
    reclaimable: int
    content: int
    pod_bytes: dict[tuple[str, str], int]
    pod_unique: dict[tuple[str, str], int]


def expected(node: SampleNode) -> Expected:
    usage = node.containerd.snapshot_usage()
    committed = {k: v for k, v in usage.items() if k.startswith("sha256:")}
    chains = {key: set(_chains(img.diff_ids)) for key, img in node.images.items()}
    ids = {key: img.image_id for key, img in node.images.items()}
    refcount: dict[str, int] = {}
    for layers in chains.values():
        for c in layers:
            refcount[c] = refcount.get(c, 0) + 1
    size = {ids[k]: sum(committed[c][0] for c in layers) for k, layers in chains.items()}
    shared = {ids[k]: sum(committed[c][0] for c in layers if refcount[c] >= 2) for k, layers in chains.items()}
    ref_to_key = {ref: key for key, img in node.images.items() for ref in img.spec.refs}
    in_use = {"pause"} | {ref_to_key[c.image] for _, _, cs in SAMPLE_PODS for c in cs}
    in_use_layers = set().union(*(chains[k] for k in in_use))
    pod_layers = {(ns, name): set().union(*(chains[ref_to_key[c.image]] for c in cs)) for ns, name, cs in SAMPLE_PODS}
    pod_refcount: dict[str, int] = {}
    for layers in pod_layers.values():
        for c in layers:
            pod_refcount[c] = pod_refcount.get(c, 0) + 1
    present = node.containerd.content_digests()
    layer_blobs = {b.digest: len(b.data) for img in node.images.values() for b in img.layers}
    return Expected(
        usage=usage,
        image_size=size,
        image_shared=shared,
        physical=sum(v[0] for v in committed.values()),
        logical=sum(size.values()),
        shared=sum(committed[c][0] for c, n in refcount.items() if n >= 2),
        reclaimable=sum(committed[c][0] for c in set(committed) - in_use_layers),
        content=sum(n for d, n in layer_blobs.items() if d in present),
        pod_bytes={k: sum(committed[c][0] for c in layers) for k, layers in pod_layers.items()},
        pod_unique={
            k: sum(committed[c][0] for c in layers if pod_refcount[c] == 1) for k, layers in pod_layers.items()
        },
    )


def stack_bytes(usage: dict[str, tuple[int, int]], diff_ids: tuple[str, ...]) -> int:
    """`ctr snapshots usage` bytes of every layer of a chain of diff IDs."""
    return sum(usage[c][0] for c in _chains(diff_ids))


def top_layer_bytes(usage: dict[str, tuple[int, int]], diff_ids: tuple[str, ...]) -> int:
    """`ctr snapshots usage` bytes of the top layer of a chain of diff IDs."""
    return usage[_chains(diff_ids)[-1]][0]


def duplicates(usage: dict[str, tuple[int, int]], images: list[tuple[str, ...]]) -> tuple[int, int]:
    """(redundant copies, their bytes) of diff IDs unpacked under several chain IDs, from ctr usage."""
    copies: dict[str, set[str]] = {}
    for diff_ids in images:
        for diff_id, chain_id in zip(diff_ids, _chains(diff_ids), strict=True):
            if chain_id in usage:
                copies.setdefault(diff_id, set()).add(chain_id)
    layers = sum(len(c) - 1 for c in copies.values())
    wasted = sum(sum(usage[c][0] for c in cs) - max(usage[c][0] for c in cs) for cs in copies.values())
    return layers, wasted
