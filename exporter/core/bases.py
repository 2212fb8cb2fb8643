"""Which base image each image stands on, and whose bytes are whose (pure).

Every image gets exactly one base, the first of these that applies:

1. **annotation**: the image declares its base (`org.opencontainers.image.base.name`
   / `.base.digest`, in its manifest annotations or config labels). The family
   is the name without tag or digest; the version its tag, else its short
   digest. The base's layers are the base image's chain when that image is on
   the node (found by digest, else by name, and only if its chain is a prefix of
   the declaring image's); else the longest chain prefix common to the images
   on the node that declare the same base, when they come from at least two
   repositories; else (one repository only: its images may share their own
   dependency layers) the detected prefix below (possibly none: the base is
   named, its layers unknown, its bytes 0).
2. **catalog**: the catalog entry whose chain is the longest prefix of the
   image's chain. Entries with the same name and different versions are
   versions of one family.
3. **detected**: the longest prefix of the image's chain whose top layer images
   of at least two *repositories* (references without tag or digest) use.
   Images of one repository (a rollout's old and new versions) never form a
   base among themselves, so removing the old version of a rollout does not
   change the new version's base.
4. **none**: the `unshared` group.

Bytes are additive (`attribute_layers`): a layer in the chains of several
bases (nested bases: python on debian) counts toward the base with the
*shortest* chain containing it (the innermost base: debian); between equally
short chains, declared before catalog before detected, then by name. So Σ over
bases of their bytes ≤ the node's physical bytes whatever nests; the whole
stack under a base is a separate figure (`stack_bytes`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from exporter.core.chain import chain_ids
from exporter.core.facts import DeclaredBase, ImageFacts
from exporter.core.references import normalize_repository, reference_index, resolve_reference, split_reference

SOURCE_ANNOTATION = "annotation"
SOURCE_CATALOG = "catalog"
SOURCE_DETECTED = "detected"
SOURCE_NONE = "none"
# Label value for images that share no layer with images of another repository.
UNSHARED = "unshared"
# OCI image-spec annotations (also used as config labels) declaring the base.
BASE_NAME_KEY = "org.opencontainers.image.base.name"
BASE_DIGEST_KEY = "org.opencontainers.image.base.digest"

# Which base a layer counts toward when equally short chains hold it.
_SOURCE_RANK = {SOURCE_ANNOTATION: 0, SOURCE_CATALOG: 1, SOURCE_DETECTED: 2, SOURCE_NONE: 3}
# (base, version, source): one base group, one set of series.
BaseKey = tuple[str, str, str]


@dataclass(frozen=True, slots=True)
class BaseSpec:
    """A catalog entry: a base named by its diff IDs or by an image on the node.

    Entries with the same `name` and different `version`s are versions of one family.
    """

    name: str
    diff_ids: tuple[str, ...] = ()
    image: str = ""
    version: str = ""


@dataclass(frozen=True, slots=True)
class CatalogBase:
    """A catalog entry resolved to a chain: what the top chain ID of a prefix names."""

    name: str
    version: str
    depth: int


@dataclass(frozen=True, slots=True)
class BaseMatch:
    """Where an image's base ends: its family, version, source and the base's chain."""

    name: str
    source: str
    chain: tuple[str, ...]
    version: str = ""

    @property
    def key(self) -> BaseKey:
        return (self.name, self.version, self.source)


def short_chain_label(chain_id: str) -> str:
    """Label for a detected base: its top chain ID, shortened.

    >>> short_chain_label("sha256:" + "ab" * 32)
    'chain:abababababab'
    """
    return "chain:" + chain_id.removeprefix("sha256:")[:12]


def short_digest(digest: str) -> str:
    """
    >>> short_digest("sha256:" + "cd" * 32)
    'cdcdcdcdcdcd'
    """
    return digest.partition(":")[2][:12] if ":" in digest else digest[:12]


def declared_base_from_labels(labels: Mapping[str, str]) -> DeclaredBase | None:
    """The declared base in manifest annotations or config labels, if any."""
    name = labels.get(BASE_NAME_KEY, "")
    digest = labels.get(BASE_DIGEST_KEY, "")
    if not isinstance(name, str) or not isinstance(digest, str) or not (name or digest):
        return None
    return DeclaredBase(name=name, digest=digest)


def declared_family(declared: DeclaredBase) -> tuple[str, str]:
    """(family, version) of a declared base: the name without tag or digest (Docker Hub's short
    names made whole, as containerd names them); its tag, else short digest.

    >>> declared_family(DeclaredBase("debian:12", "sha256:" + "ab" * 32))
    ('docker.io/library/debian', '12')
    >>> declared_family(DeclaredBase("", "sha256:" + "ab" * 32))
    ('sha256:abababababab', 'abababababab')
    """
    repo, tag, ref_digest = split_reference(declared.name)
    digest = declared.digest or ref_digest
    if not repo:
        return ("sha256:" + short_digest(digest), short_digest(digest))
    return (normalize_repository(repo), tag or short_digest(digest))


def image_repository(image: ImageFacts) -> str:
    """The repository an image belongs to (its first reference without tag or digest, else its ID)."""
    for ref in (*image.repo_tags, *image.repo_digests):
        return split_reference(ref)[0]
    return image.image_id


def resolve_catalog(catalog: Sequence[BaseSpec], images: Iterable[ImageFacts]) -> dict[str, CatalogBase]:
    """Map each catalog base's top chain ID to its entry.

    Entries naming an image are resolved against the images on the node;
    entries whose image is absent are left out. When two entries have the same
    chain, the first one in the catalog wins.
    """
    by_ref: dict[str, ImageFacts] = {}
    for image in images:
        for ref in (image.image_id, *image.repo_tags, *image.repo_digests):
            by_ref.setdefault(ref, image)
    tops: dict[str, CatalogBase] = {}
    for spec in catalog:
        diff_ids = spec.diff_ids
        if not diff_ids and spec.image:
            found = by_ref.get(spec.image)
            diff_ids = found.diff_ids if found else ()
        if diff_ids:
            tops.setdefault(chain_ids(diff_ids)[-1], CatalogBase(spec.name, spec.version, len(diff_ids)))
    return tops


def match_bases(
    images: Mapping[str, ImageFacts],
    catalog_tops: Mapping[str, CatalogBase],
    declared: Mapping[str, DeclaredBase] | None = None,
) -> dict[str, BaseMatch]:
    """Give every image (by ID) the one base it stands on (rules in the module doc).

    `declared` maps image IDs to the base their manifest declares; an image's
    config-label declaration is the fallback.
    """
    declared = declared or {}
    repo_of = {image_id: image_repository(image) for image_id, image in images.items()}
    layer_repos: dict[str, set[str]] = defaultdict(set)
    for image_id, image in images.items():
        for chain_id in image.chain_ids:
            layer_repos[chain_id].add(repo_of[image_id])
    detected = {image_id: _detected(image.chain_ids, layer_repos) for image_id, image in images.items()}

    declarations = {
        image_id: found
        for image_id, image in images.items()
        if (found := declared.get(image_id) or image.declared_base) is not None
    }
    declared_chains = _declared_chains(images, declarations, repo_of, detected)

    matches: dict[str, BaseMatch] = {}
    for image_id, image in images.items():
        if image_id in declarations:
            family, version = declared_family(declarations[image_id])
            matches[image_id] = BaseMatch(family, SOURCE_ANNOTATION, declared_chains[image_id], version)
        elif (hit := _catalog_match(image.chain_ids, catalog_tops)) is not None:
            matches[image_id] = hit
        elif detected[image_id]:
            chain = detected[image_id]
            matches[image_id] = BaseMatch(short_chain_label(chain[-1]), SOURCE_DETECTED, chain)
        else:
            matches[image_id] = BaseMatch(UNSHARED, SOURCE_NONE, ())
    return matches


def _detected(chain: tuple[str, ...], layer_repos: Mapping[str, set[str]]) -> tuple[str, ...]:
    # Walk from the top layer down: the first hit is the longest prefix.
    for depth in range(len(chain), 0, -1):
        if len(layer_repos[chain[depth - 1]]) >= 2:
            return chain[:depth]
    return ()


def _catalog_match(chain: tuple[str, ...], catalog_tops: Mapping[str, CatalogBase]) -> BaseMatch | None:
    for depth in range(len(chain), 0, -1):
        hit = catalog_tops.get(chain[depth - 1])
        if hit is not None and hit.depth == depth:
            return BaseMatch(hit.name, SOURCE_CATALOG, chain[:depth], hit.version)
    return None


def _declared_chains(
    images: Mapping[str, ImageFacts],
    declarations: Mapping[str, DeclaredBase],
    repo_of: Mapping[str, str],
    detected: Mapping[str, tuple[str, ...]],
) -> dict[str, tuple[str, ...]]:
    """Each declaring image's base chain (see the module doc, rule 1)."""
    by_digest: dict[str, list[str]] = defaultdict(list)
    for image_id, image in images.items():
        for ref in image.repo_digests:
            by_digest[split_reference(ref)[2]].append(image_id)
    ref_to_id = reference_index(images.values())

    # Images declaring the same base: same family and same digest (else tag).
    same_base: dict[tuple[str, str], list[str]] = defaultdict(list)
    for image_id, found in declarations.items():
        family, version = declared_family(found)
        same_base[(family, found.digest or split_reference(found.name)[2] or version)].append(image_id)

    chains: dict[str, tuple[str, ...]] = {}
    for members in same_base.values():
        found = declarations[members[0]]
        digest = found.digest or split_reference(found.name)[2]
        # The base image on the node: by digest (a repo digest), else by its name as a tag.
        named = resolve_reference(found.name, ref_to_id) if found.name else ""
        candidates = [*(by_digest.get(digest, ()) if digest else ()), *([named] if named else [])]
        member_repos = {repo_of[m] for m in members}
        common = _common_prefix([images[m].chain_ids for m in members]) if len(member_repos) >= 2 else None
        for image_id in members:
            chain = images[image_id].chain_ids
            on_node = next(
                (
                    images[c].chain_ids
                    for c in candidates
                    if c != image_id and chain[: len(images[c].chain_ids)] == images[c].chain_ids
                ),
                None,
            )
            if on_node is not None:
                chains[image_id] = on_node
            elif common is not None:
                chains[image_id] = common
            else:
                chains[image_id] = detected[image_id]
    return chains


def _common_prefix(chains: Sequence[tuple[str, ...]]) -> tuple[str, ...]:
    first = chains[0]
    depth = min(len(c) for c in chains)
    for i in range(depth):
        if any(c[i] != first[i] for c in chains):
            return first[:i]
    return first[:depth]


def attribute_layers(group_chains: Mapping[BaseKey, Iterable[tuple[str, ...]]]) -> dict[str, BaseKey]:
    """Which one base each layer's bytes count toward, so base bytes add up.

    A layer counts toward the base whose shortest chain containing it is the
    shortest of all (the innermost base); between equally short chains, the
    declared base before the catalog's before a detected one, then by key.
    """
    owner: dict[str, tuple[int, int, BaseKey]] = {}
    for key, chains in group_chains.items():
        for chain in chains:
            rank = (len(chain), _SOURCE_RANK.get(key[2], len(_SOURCE_RANK)), key)
            for chain_id in chain:
                held = owner.get(chain_id)
                if held is None or rank < held:
                    owner[chain_id] = rank
    return {chain_id: key for chain_id, (_, _, key) in owner.items()}
