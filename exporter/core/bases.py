"""Which base image each image stands on (pure).

A catalog names known bases. An image belongs to the catalog base whose layer
chain is the longest prefix of its own. Images matching no catalog base are
grouped by the deepest layer they share with any other image on the node.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from exporter.core.chain import chain_ids
from exporter.core.facts import ImageFacts

SOURCE_CATALOG = "catalog"
SOURCE_DETECTED = "detected"
SOURCE_NONE = "none"
# Label value for images that share no layer with any other image.
UNSHARED = "unshared"


@dataclass(frozen=True, slots=True)
class BaseSpec:
    """A catalog entry: a base named by its diff IDs or by an image on the node."""

    name: str
    diff_ids: tuple[str, ...] = ()
    image: str = ""


@dataclass(frozen=True, slots=True)
class BaseMatch:
    """Where an image's base ends: its name, source and the base's chain."""

    name: str
    source: str
    chain: tuple[str, ...]


def short_chain_label(chain_id: str) -> str:
    """Label for a detected base: its top chain ID, shortened.

    >>> short_chain_label("sha256:" + "ab" * 32)
    'chain:abababababab'
    """
    return "chain:" + chain_id.removeprefix("sha256:")[:12]


def resolve_catalog(catalog: Sequence[BaseSpec], images: Iterable[ImageFacts]) -> dict[str, tuple[str, int]]:
    """Map each catalog base's top chain ID to (name, depth).

    Entries naming an image are resolved against the images on the node;
    entries whose image is absent are left out. When two entries have the same
    chain, the first one in the catalog wins.
    """
    by_ref: dict[str, ImageFacts] = {}
    for image in images:
        for ref in (image.image_id, *image.repo_tags, *image.repo_digests):
            by_ref.setdefault(ref, image)
    tops: dict[str, tuple[str, int]] = {}
    for spec in catalog:
        diff_ids = spec.diff_ids
        if not diff_ids and spec.image:
            found = by_ref.get(spec.image)
            diff_ids = found.diff_ids if found else ()
        if diff_ids:
            tops.setdefault(chain_ids(diff_ids)[-1], (spec.name, len(diff_ids)))
    return tops


def match_bases(
    chains: Mapping[str, tuple[str, ...]],
    catalog_tops: Mapping[str, tuple[str, int]],
    image_refcount: Mapping[str, int],
) -> dict[str, BaseMatch]:
    """Give every image (by ID, with its chain) the base it stands on.

    `image_refcount[chain_id]` is how many images reference that layer.
    """
    matches: dict[str, BaseMatch] = {}
    for image_id, chain in chains.items():
        matches[image_id] = _match_one(chain, catalog_tops, image_refcount)
    return matches


def _match_one(
    chain: tuple[str, ...],
    catalog_tops: Mapping[str, tuple[str, int]],
    image_refcount: Mapping[str, int],
) -> BaseMatch:
    # Walk from the top layer down: the first hit is the longest prefix.
    for depth in range(len(chain), 0, -1):
        hit = catalog_tops.get(chain[depth - 1])
        if hit is not None and hit[1] == depth:
            return BaseMatch(hit[0], SOURCE_CATALOG, chain[:depth])
    for depth in range(len(chain), 0, -1):
        if image_refcount.get(chain[depth - 1], 0) >= 2:
            return BaseMatch(short_chain_label(chain[depth - 1]), SOURCE_DETECTED, chain[:depth])
    return BaseMatch(UNSHARED, SOURCE_NONE, ())
