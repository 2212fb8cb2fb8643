"""Shared versus unique layer bytes (pure: facts in, report out, no I/O).

Definitions (the `docker system df -v` ones, per layer chain ID):

- image `size` = Σ its layers' snapshot bytes; `shared` = Σ of those layers that
  at least two images on the node reference; `unique` = size - shared.
- node `logical` = Σ image sizes; `physical` = Σ distinct layers; `shared` and
  `unique` split physical by the same two-images rule; `reclaimable` = layers no
  in-use image references (in use: a container of any state, a pod sandbox, or
  pinned); `content` = compressed layer blobs present in the content store;
  `writable` = Σ container writable layers.
- pod (its containers, sandbox image excluded) `bytes` = Σ distinct layers;
  `shared` = those another pod uses too; `unique` = the rest; `attributed` =
  Σ layer bytes / pods using the layer, so attributed bytes add up over pods.
"""

from __future__ import annotations

import dataclasses
import math
from collections import Counter, defaultdict
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, fields, replace

from exporter.core.bases import (
    SOURCE_ANNOTATION,
    SOURCE_CATALOG,
    BaseKey,
    BaseMatch,
    BaseSpec,
    attribute_layers,
    match_bases,
    resolve_catalog,
)
from exporter.core.facts import FilesystemFacts, ImageFacts, NodeFacts, Workload
from exporter.core.pull_cost import RepullReport, repull_report

# Bytes of one layer (by chain ID) in this snapshot of facts.
_SizeOf = Callable[[str], int]


@dataclass(frozen=True, slots=True)
class LayerReport:
    chain_id: str
    diff_id: str
    size: int
    inodes: int
    images: int
    pods: int
    present: bool
    remote: bool = False


@dataclass(frozen=True, slots=True)
class ImageReport:
    image_id: str
    name: str
    image_ref: str
    repo_tags: tuple[str, ...]
    chain: tuple[str, ...]
    size: int
    shared: int
    unique: int
    compressed_size: int
    containers: int
    in_use: bool
    missing_layers: int
    base: str
    base_source: str
    base_version: str = ""
    # The config's `created`, Unix seconds (None: unknown).
    created: float | None = None
    # Digests of its layer blobs on disk in containerd's content store (none elsewhere).
    blobs: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class PodReport:
    namespace: str
    name: str
    containers: int
    image_ids: tuple[str, ...]
    bytes: int
    shared: int
    unique: int
    attributed: int
    writable: int
    workload: Workload | None = None


@dataclass(frozen=True, slots=True)
class WorkloadReport:
    """Pods of one workload on this node, summed."""

    namespace: str
    kind: str
    name: str
    pods: int
    bytes: int
    attributed: int
    # (base, version, source, pods of this workload with a container on that base)
    bases: tuple[tuple[str, str, str, int], ...] = ()


@dataclass(frozen=True, slots=True)
class NamespaceReport:
    """Pods of one Kubernetes namespace on this node, summed: showback without per-pod series."""

    namespace: str
    pods: int
    # Σ the pods' fair shares (PodReport.attributed): additive over namespaces.
    attributed: int


@dataclass(frozen=True, slots=True)
class BaseReport:
    """One base group (base, version, source) on the node.

    `bytes` are the layers attributed to this base alone (additive over bases:
    a layer of nested bases counts toward the innermost one); `stack_bytes` are
    every layer under the base, the whole stack its images stand on.
    """

    name: str
    source: str
    chain_id: str
    layers: int
    bytes: int
    images: int
    pods: int
    version: str = ""
    stack_bytes: int = 0


@dataclass(frozen=True, slots=True)
class FamilyReport:
    """A base family (catalog or declared) and its versions on the node.

    `bytes` = the distinct layers of all its versions' stacks; `largest` = the
    bytes of its largest version's stack; `drift` = bytes - largest: what
    converging on one version would free here.
    """

    name: str
    versions: tuple[str, ...]
    bytes: int
    largest: int

    @property
    def drift(self) -> int:
        return self.bytes - self.largest


@dataclass(frozen=True, slots=True)
class DuplicateCopy:
    """One copy of a duplicated diff: the layer (chain ID) and the images holding it."""

    chain_id: str
    size: int
    images: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class DuplicateReport:
    """Content (one diff ID) stored under several chain IDs: unpacked again on each parent.

    `bytes` = all copies' bytes - the largest copy: what would be saved if the
    content were stored once.
    """

    diff_id: str
    copies: tuple[DuplicateCopy, ...]

    @property
    def bytes(self) -> int:
        sizes = [c.size for c in self.copies]
        return sum(sizes) - max(sizes)


@dataclass(frozen=True, slots=True)
class NodeTotals:
    images: int
    layers: int
    containers: int
    pods: int
    logical: int
    physical: int
    shared: int
    unique: int
    reclaimable: int
    content: int
    writable: int
    missing_layers: int
    # Lazily pulled layers (stargz, SOCI, nydus): 0 bytes here by design, not missing.
    remote_layers: int = 0
    # Redundant copies of diff IDs stored under several chain IDs, and their bytes.
    duplicate_layers: int = 0
    duplicate_bytes: int = 0
    # Σ whole sizes of unused images: what image GC assumes it frees
    # (`reclaimable` is what it really frees).
    unused_logical: int = 0


@dataclass(frozen=True, slots=True)
class NodeReport:
    totals: NodeTotals
    images: tuple[ImageReport, ...]
    pods: tuple[PodReport, ...]
    bases: tuple[BaseReport, ...]
    layers: dict[str, LayerReport]
    filesystems: tuple[FilesystemFacts, ...]
    node_name: str
    runtime_name: str
    runtime_version: str
    snapshotter: str
    workloads: tuple[WorkloadReport, ...] | None = None
    # What the runtime's CRI plugin says it uses ("" = it does not say).
    runtime_snapshotter: str = ""

    @property
    def snapshotter_mismatch(self) -> bool:
        """Layers were read from another snapshotter than the runtime's CRI plugin uses."""
        return bool(self.runtime_snapshotter) and self.runtime_snapshotter != self.snapshotter

    layer_store: str = "containerd"
    families: tuple[FamilyReport, ...] = ()
    duplicates: tuple[DuplicateReport, ...] = ()
    namespaces: tuple[NamespaceReport, ...] = ()
    # Bytes of the images' layer blobs on disk in containerd's content store, by digest.
    blob_sizes: Mapping[str, int] = dataclasses.field(default_factory=dict)
    # Compressed layer bytes a pull would fetch again had image GC removed each image, or every unused one.
    repull: RepullReport = RepullReport({}, 0)

    def image(self, ref: str) -> ImageReport | None:
        """Find an image by ID, tag, repo digest or unambiguous ID prefix."""
        for image in self.images:
            if ref in (image.image_id, image.name, *image.repo_tags) or image.image_ref == ref:
                return image
        hits = [i for i in self.images if i.image_id.removeprefix("sha256:").startswith(ref)]
        return hits[0] if len(hits) == 1 else None


def merge_images(images: Sequence[ImageFacts]) -> dict[str, ImageFacts]:
    """One image under several tags or digests is one image (by image ID)."""
    merged: dict[str, ImageFacts] = {}
    for image in images:
        seen = merged.get(image.image_id)
        if seen is None:
            merged[image.image_id] = image
            continue
        # The first record's other facts stand; names, pins and the larger compressed size add up.
        merged[image.image_id] = dataclasses.replace(
            seen,
            repo_tags=_union(seen.repo_tags, image.repo_tags),
            repo_digests=_union(seen.repo_digests, image.repo_digests),
            diff_ids=seen.diff_ids or image.diff_ids,
            history=seen.history or image.history,
            compressed_size=max(seen.compressed_size, image.compressed_size),
            pinned=seen.pinned or image.pinned,
            annotations=seen.annotations or image.annotations,
            created=seen.created if seen.created is not None else image.created,
            declared_base=seen.declared_base or image.declared_base,
        )
    return merged


def _union(a: tuple[str, ...], b: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(dict.fromkeys((*a, *b)))


def account(facts: NodeFacts, catalog: Sequence[BaseSpec] = ()) -> NodeReport:
    """Compute the node's layer-sharing report from one snapshot of facts."""
    images = merge_images(facts.images)
    chains = {image_id: image.chain_ids for image_id, image in images.items()}
    diff_of: dict[str, str] = {}
    for image_id, chain in chains.items():
        diff_of.update(zip(chain, images[image_id].diff_ids, strict=True))

    # A plain dict: this lookup runs for every layer of every image and pod.
    sizes = {chain_id: usage.size for chain_id, usage in facts.layer_usage.items()}
    # A remote (lazily pulled) layer is known even when its snapshotter reports no usage.
    present_layers = facts.layer_usage.keys() | facts.remote_layers

    def size_of(chain_id: str) -> int:
        return sizes.get(chain_id, 0)

    image_refcount: Counter[str] = Counter()
    for chain in chains.values():
        image_refcount.update(set(chain))

    # Containers per image, and which images are in use (never reclaimable).
    containers_of: Counter[str] = Counter(c.image_id for c in facts.containers)
    in_use = {
        image_id
        for image_id, image in images.items()
        if containers_of[image_id] or image.pinned or image_id in facts.sandbox_image_ids
    }

    # Pods: every container's image layers, keyed by (namespace, pod name) so a
    # recreated pod with the same name is one series.
    pod_images: dict[tuple[str, str], set[str]] = defaultdict(set)
    pod_containers: Counter[tuple[str, str]] = Counter()
    pod_writable: Counter[tuple[str, str]] = Counter()
    for container in facts.containers:
        key = (container.namespace, container.pod)
        pod_containers[key] += 1
        pod_writable[key] += container.writable_bytes or 0
        if container.image_id in chains and container.image_id not in facts.sandbox_image_ids:
            pod_images[key].add(container.image_id)
    for pod in facts.pods:
        pod_images.setdefault((pod.namespace, pod.name), set())
    pod_layers = {key: {layer for image_id in ids for layer in chains[image_id]} for key, ids in pod_images.items()}
    pod_refcount: Counter[str] = Counter()
    for used in pod_layers.values():
        pod_refcount.update(used)

    bases = match_bases(images, resolve_catalog(catalog, images.values()), facts.declared_bases)
    present_blobs = {
        blob.digest: facts.present_blobs[blob.digest]
        for image_id in images
        for blob in facts.layer_blobs.get(image_id, ())
        if blob.digest in facts.present_blobs
    }
    # containers-storage records compressed sizes without keeping blobs: only containerd's take disk.
    blob_sizes = present_blobs if facts.layer_store == "containerd" else {}

    image_reports = tuple(
        _image_report(
            images[image_id],
            chain,
            bases[image_id],
            containers_of[image_id],
            image_id in in_use,
            image_refcount,
            size_of,
            present_layers,
            tuple(b.digest for b in facts.layer_blobs.get(image_id, ()) if b.digest in blob_sizes),
        )
        for image_id, chain in chains.items()
    )
    shares = fair_shares({key: pod_layers[key] for key in sorted(pod_layers)}, pod_refcount, size_of)
    pod_reports = tuple(
        _pod_report(
            key,
            pod_layers[key],
            pod_images[key],
            pod_containers[key],
            pod_writable[key],
            pod_refcount,
            size_of,
            shares[key],
            None if facts.workloads is None else facts.workloads.get(key),
        )
        for key in sorted(pod_layers)
    )
    layers = {
        chain_id: LayerReport(
            chain_id=chain_id,
            diff_id=diff_of[chain_id],
            size=size_of(chain_id),
            inodes=usage.inodes if (usage := facts.layer_usage.get(chain_id)) else 0,
            images=count,
            pods=pod_refcount[chain_id],
            present=chain_id in present_layers,
            remote=chain_id in facts.remote_layers,
        )
        for chain_id, count in image_refcount.items()
    }
    in_use_layers = {layer for image_id in in_use for layer in chains[image_id]}
    physical = sum(layer.size for layer in layers.values())
    shared = sum(layer.size for layer in layers.values() if layer.images >= 2)
    duplicates = _duplicates(layers, chains, images)
    totals = NodeTotals(
        images=len(images),
        layers=len(layers),
        containers=len(facts.containers),
        pods=len(pod_layers),
        logical=sum(report.size for report in image_reports),
        physical=physical,
        shared=shared,
        unique=physical - shared,
        reclaimable=sum(layer.size for c, layer in layers.items() if c not in in_use_layers),
        content=sum(present_blobs.values()),
        writable=sum(c.writable_bytes or 0 for c in facts.containers),
        missing_layers=sum(1 for layer in layers.values() if not layer.present),
        remote_layers=sum(1 for layer in layers.values() if layer.remote),
        duplicate_layers=sum(len(d.copies) - 1 for d in duplicates),
        duplicate_bytes=sum(d.bytes for d in duplicates),
        unused_logical=sum(r.size for r in image_reports if not r.in_use),
    )
    return NodeReport(
        totals=totals,
        images=tuple(sorted(image_reports, key=lambda r: (-r.unique, -r.size, r.name))),
        pods=tuple(sorted(pod_reports, key=lambda r: (-r.attributed, r.namespace, r.name))),
        bases=_base_reports(bases, pod_images, size_of),
        families=_family_reports(bases, size_of),
        duplicates=duplicates,
        layers=layers,
        filesystems=facts.filesystems,
        node_name=facts.node_name,
        runtime_name=facts.runtime_name,
        runtime_version=facts.runtime_version,
        snapshotter=facts.snapshotter,
        runtime_snapshotter=facts.runtime_snapshotter,
        layer_store=facts.layer_store,
        workloads=None if facts.workloads is None else _workload_reports(pod_reports, pod_layers, size_of, bases),
        namespaces=namespace_reports(pod_reports),
        blob_sizes=blob_sizes,
        repull=repull_report(
            facts, (r.image_id for r in image_reports), (r.image_id for r in image_reports if not r.in_use)
        ),
    )


# What moves between refreshes with no image, layer or pod changing: the image
# filesystem's usage (statvfs) and the containers' writable layers.
_MOVING_FIELDS = frozenset({"filesystems", "containers"})


def only_moving_figures_differ(before: NodeFacts, after: NodeFacts) -> bool:
    """Whether `after` differs from `before` at most in the filesystems' usage and
    the containers' writable bytes; `with_moving_figures` then updates a report
    of `before` to the one `account(after)` gives, without accounting again."""
    if len(before.containers) != len(after.containers):
        return False
    return all(
        getattr(before, f.name) == getattr(after, f.name) for f in fields(NodeFacts) if f.name not in _MOVING_FIELDS
    ) and all(
        replace(b, writable_bytes=a.writable_bytes) == a
        for b, a in zip(before.containers, after.containers, strict=True)
    )


def with_moving_figures(report: NodeReport, facts: NodeFacts) -> NodeReport:
    """`report` with the filesystems and writable bytes of `facts` (see only_moving_figures_differ)."""
    pod_writable: Counter[tuple[str, str]] = Counter()
    for container in facts.containers:
        pod_writable[(container.namespace, container.pod)] += container.writable_bytes or 0
    pods = tuple(
        pod if pod.writable == (moved := pod_writable[(pod.namespace, pod.name)]) else replace(pod, writable=moved)
        for pod in report.pods
    )
    totals = replace(report.totals, writable=sum(c.writable_bytes or 0 for c in facts.containers))
    return replace(report, totals=totals, pods=pods, filesystems=facts.filesystems)


def _workload_reports(
    pods: Sequence[PodReport],
    pod_layers: dict[tuple[str, str], set[str]],
    size_of: _SizeOf,
    bases: dict[str, BaseMatch],
) -> tuple[WorkloadReport, ...]:
    """Pods of the same workload on this node, summed (pods the API does not know are left out)."""
    members: dict[tuple[str, str, str], list[PodReport]] = defaultdict(list)
    for pod in pods:
        if pod.workload is not None:
            members[(pod.namespace, pod.workload.kind, pod.workload.name)].append(pod)
    reports = [
        WorkloadReport(
            namespace=namespace,
            kind=kind,
            name=name,
            pods=len(group),
            bytes=sum(size_of(c) for c in set().union(*(pod_layers[(p.namespace, p.name)] for p in group))),
            attributed=sum(p.attributed for p in group),
            bases=_bases_of(group, bases),
        )
        for (namespace, kind, name), group in members.items()
    ]
    return tuple(sorted(reports, key=lambda r: (-r.attributed, r.namespace, r.name)))


def namespace_reports(pods: Sequence[PodReport]) -> tuple[NamespaceReport, ...]:
    """Pods per namespace and the sum of their fair shares, most bytes first.

    Σ over namespaces equals Σ over pods of `attributed`, to the byte, so the
    namespace figures are showback on their own, whatever pod series are kept.
    """
    pods_in: Counter[str] = Counter()
    attributed: Counter[str] = Counter()
    for pod in pods:
        pods_in[pod.namespace] += 1
        attributed[pod.namespace] += pod.attributed
    reports = [NamespaceReport(namespace, pods_in[namespace], attributed[namespace]) for namespace in pods_in]
    return tuple(sorted(reports, key=lambda r: (-r.attributed, r.namespace)))


def _bases_of(pods: Sequence[PodReport], bases: dict[str, BaseMatch]) -> tuple[tuple[str, str, str, int], ...]:
    """Pods per base (a pod counts once per base it has a container on)."""
    counts: Counter[BaseKey] = Counter()
    for pod in pods:
        counts.update({bases[i].key for i in pod.image_ids})
    return tuple((name, version, source, n) for (name, version, source), n in sorted(counts.items()))


def _image_report(
    image: ImageFacts,
    chain: tuple[str, ...],
    base: BaseMatch,
    containers: int,
    in_use: bool,
    image_refcount: Counter[str],
    size_of: _SizeOf,
    present: Collection[str],
    blobs: tuple[str, ...],
) -> ImageReport:
    distinct = set(chain)  # a layer repeated in one image is stored once
    size = sum(size_of(c) for c in distinct)
    shared = sum(size_of(c) for c in distinct if image_refcount[c] >= 2)
    return ImageReport(
        image_id=image.image_id,
        name=image.name,
        image_ref=image.image_ref,
        repo_tags=image.repo_tags,
        chain=chain,
        size=size,
        shared=shared,
        unique=size - shared,
        compressed_size=image.compressed_size,
        containers=containers,
        in_use=in_use,
        missing_layers=sum(1 for c in distinct if c not in present),
        base=base.name,
        base_source=base.source,
        base_version=base.version,
        created=image.created,
        blobs=tuple(dict.fromkeys(blobs)),
    )


def fair_shares(
    pod_layers: dict[tuple[str, str], set[str]], pod_refcount: Counter[str], size_of: _SizeOf
) -> dict[tuple[str, str], int]:
    """Each pod's share of its layers' bytes, in whole bytes that add up exactly.

    A layer's bytes are split evenly between the pods using it. Shares are
    exact fractions, floored, and the leftover bytes go to the largest
    remainders (largest-remainder rounding), so Σ over pods equals Σ of the
    distinct layers pods use, to the byte.
    """
    # Exact integer arithmetic over one common denominator (Fraction is ten
    # times slower here): numerator / denominator is each pod's exact share.
    denominator = math.lcm(1, *{pod_refcount[c] for layers in pod_layers.values() for c in layers})
    numerators = {
        key: sum(size_of(c) * (denominator // pod_refcount[c]) for c in layers) for key, layers in pod_layers.items()
    }
    floors = {key: n // denominator for key, n in numerators.items()}
    leftover = sum(numerators.values()) // denominator - sum(floors.values())
    by_remainder = sorted(numerators, key=lambda key: (-(numerators[key] % denominator), key))
    for key in by_remainder[:leftover]:
        floors[key] += 1
    return floors


def _pod_report(
    key: tuple[str, str],
    layers: set[str],
    image_ids: set[str],
    containers: int,
    writable: int,
    pod_refcount: Counter[str],
    size_of: _SizeOf,
    attributed: int,
    workload: Workload | None,
) -> PodReport:
    size = sum(size_of(c) for c in layers)
    shared = sum(size_of(c) for c in layers if pod_refcount[c] >= 2)
    return PodReport(
        namespace=key[0],
        name=key[1],
        containers=containers,
        image_ids=tuple(sorted(image_ids)),
        bytes=size,
        shared=shared,
        unique=size - shared,
        attributed=attributed,
        writable=writable,
        workload=workload,
    )


def _base_reports(
    bases: dict[str, BaseMatch],
    pod_images: dict[tuple[str, str], set[str]],
    size_of: _SizeOf,
) -> tuple[BaseReport, ...]:
    """One report per (base, version, source); bytes attributed so they add up over bases."""
    grouped: dict[BaseKey, list[str]] = defaultdict(list)
    for image_id, match in bases.items():
        grouped[match.key].append(image_id)
    group_chains = {key: {bases[i].chain for i in image_ids} for key, image_ids in grouped.items()}
    owner = attribute_layers(group_chains)
    attributed: Counter[BaseKey] = Counter()
    for chain_id, key in owner.items():
        attributed[key] += size_of(chain_id)
    reports = []
    for key, image_ids in grouped.items():
        name, version, source = key
        longest = max(group_chains[key], key=lambda c: (len(c), c))
        members = set(image_ids)
        reports.append(
            BaseReport(
                name=name,
                source=source,
                chain_id=longest[-1] if longest else "",
                layers=len(longest),
                bytes=attributed[key],
                images=len(members),
                pods=sum(1 for ids in pod_images.values() if ids & members),
                version=version,
                stack_bytes=sum(size_of(c) for c in set().union(*group_chains[key])),
            )
        )
    return tuple(sorted(reports, key=lambda r: (-r.stack_bytes * r.images, r.name, r.version, r.source)))


def _family_reports(bases: dict[str, BaseMatch], size_of: _SizeOf) -> tuple[FamilyReport, ...]:
    """Catalog and declared families with their versions and drift (detected bases have no versions)."""
    stacks: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for match in bases.values():
        if match.source in (SOURCE_CATALOG, SOURCE_ANNOTATION):
            stacks[match.name][match.version].update(match.chain)
    reports = []
    for name, versions in stacks.items():
        every = set().union(*versions.values())
        reports.append(
            FamilyReport(
                name=name,
                versions=tuple(sorted(versions)),
                bytes=sum(size_of(c) for c in every),
                largest=max(sum(size_of(c) for c in layers) for layers in versions.values()),
            )
        )
    return tuple(sorted(reports, key=lambda f: (-f.bytes, f.name)))


def _duplicates(
    layers: dict[str, LayerReport], chains: dict[str, tuple[str, ...]], images: dict[str, ImageFacts]
) -> tuple[DuplicateReport, ...]:
    """Diff IDs stored (present on disk) under more than one chain ID."""
    by_diff: dict[str, list[LayerReport]] = defaultdict(list)
    for layer in layers.values():
        if layer.present:
            by_diff[layer.diff_id].append(layer)
    holders: dict[str, list[str]] = defaultdict(list)
    for image_id, chain in chains.items():
        for chain_id in dict.fromkeys(chain):
            holders[chain_id].append(images[image_id].name)
    reports = [
        DuplicateReport(
            diff_id=diff_id,
            copies=tuple(
                DuplicateCopy(layer.chain_id, layer.size, tuple(sorted(holders[layer.chain_id])))
                for layer in sorted(copies, key=lambda layer: (-layer.size, layer.chain_id))
            ),
        )
        for diff_id, copies in by_diff.items()
        if len(copies) >= 2
    ]
    return tuple(sorted(reports, key=lambda d: (-d.bytes, d.diff_id)))
