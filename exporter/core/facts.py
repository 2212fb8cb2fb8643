"""Plain data: what the container runtime says about one node at one moment.

The runtime adapter produces a `NodeFacts`; the accounting consumes it. Nothing
here does I/O, so the accounting can be tested with literal values.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from exporter.core.chain import chain_ids as compute_chain_ids


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One entry of an image config's `history` (what a Dockerfile step did)."""

    created_by: str
    empty_layer: bool = False
    created: str = ""


def history_per_layer(diff_ids: tuple[str, ...], history: tuple[HistoryEntry, ...]) -> tuple[HistoryEntry | None, ...]:
    """The history entry that created each layer, bottom-up.

    Entries with `empty_layer: true` (ENV, CMD, ...) made no layer and are
    skipped. If the counts disagree the history cannot be trusted, and every
    layer gets None.
    """
    made_layers = [entry for entry in history if not entry.empty_layer]
    if len(made_layers) != len(diff_ids):
        return tuple(None for _ in diff_ids)
    return tuple(made_layers)


@dataclass(frozen=True, slots=True)
class DeclaredBase:
    """The base an image says it was built on (OCI `org.opencontainers.image.base.*`).

    `name` is the reference as written (it may carry a tag); `digest` the base
    manifest's (or index's) digest; either may be "".
    """

    name: str
    digest: str = ""


@dataclass(frozen=True, slots=True)
class ImageFacts:
    """One image on the node, identified by its config digest (`image_id`).

    `compressed_size` is CRI's `Image.size`: on containerd, the manifest-declared
    size of the compressed blobs (what a pull transfers), not bytes on disk.
    """

    image_id: str
    repo_tags: tuple[str, ...] = ()
    repo_digests: tuple[str, ...] = ()
    diff_ids: tuple[str, ...] = ()
    history: tuple[HistoryEntry, ...] = ()
    compressed_size: int = 0
    pinned: bool = False
    # Derived from diff_ids; the adapter passes the ones it cached per image.
    chain_ids: tuple[str, ...] = ()
    # The image manifest's annotations where the runtime gives them (CRI-O's
    # ImageStatus `spec.annotations`), e.g. org.opencontainers.image.base.name.
    annotations: Mapping[str, str] = field(default_factory=dict, hash=False)
    # The config's `created`, in Unix seconds (None: absent or unreadable).
    created: float | None = None
    # The base declared in the config's labels (manifest annotations, which
    # the layer store reads, take precedence).
    declared_base: DeclaredBase | None = None

    def __post_init__(self) -> None:
        if len(self.chain_ids) != len(self.diff_ids):
            object.__setattr__(self, "chain_ids", compute_chain_ids(self.diff_ids))

    @property
    def name(self) -> str:
        """Display name: first tag, else first repo digest, else the image ID."""
        if self.repo_tags:
            return self.repo_tags[0]
        if self.repo_digests:
            return self.repo_digests[0]
        return self.image_id

    @property
    def image_ref(self) -> str:
        """The value the kubelet reports as a container's `imageID`.

        containerd's CRI gives the first repo digest, else the config digest.
        """
        return self.repo_digests[0] if self.repo_digests else self.image_id


@dataclass(frozen=True, slots=True)
class SnapshotUsage:
    """Bytes and inodes of one committed snapshot's own diff (not cumulative)."""

    size: int
    inodes: int = 0


@dataclass(frozen=True, slots=True)
class LayerBlob:
    """A compressed layer blob named in an image's manifest."""

    digest: str
    size: int


@dataclass(frozen=True, slots=True)
class ContainerFacts:
    """A container (any state) and the pod it belongs to."""

    container_id: str
    name: str
    image_id: str
    namespace: str
    pod: str
    sandbox_id: str = ""
    state: str = "running"
    writable_bytes: int | None = None


@dataclass(frozen=True, slots=True)
class PodFacts:
    """A pod sandbox as CRI lists it."""

    sandbox_id: str
    namespace: str
    name: str
    uid: str = ""


@dataclass(frozen=True, slots=True)
class Workload:
    """The controller a pod belongs to (Deployment, StatefulSet, ..., or the bare Pod)."""

    kind: str
    name: str


@dataclass(frozen=True, slots=True)
class FilesystemFacts:
    """One image filesystem from CRI `ImageFsInfo`, plus its size when known."""

    mountpoint: str
    used_bytes: int
    inodes_used: int
    capacity_bytes: int | None = None
    available_bytes: int | None = None
    # The capacity directory was found on another filesystem: its size is not this one's.
    capacity_dir_elsewhere: bool = False


@dataclass(frozen=True, slots=True)
class LayerFacts:
    """What a runtime's layer store says about the layers of the images CRI listed.

    `layer_usage` is keyed by chain ID; a chain ID missing from it is a layer
    whose snapshot does not exist (not unpacked for this snapshotter).
    `layer_blobs` maps an image ID to its manifest's layer blobs, and
    `present_blobs` says which blob digests the store holds (and their sizes).
    `remote_layers` are chain IDs of lazily pulled layers (stargz, SOCI,
    nydus): their snapshot holds no bytes on this node by design.
    `compressed_sizes` overrides CRI's `Image.size` per image ID where the
    store knows the compressed size and CRI reports another figure (CRI-O
    reports uncompressed bytes there).
    """

    layer_usage: Mapping[str, SnapshotUsage]
    layer_blobs: Mapping[str, tuple[LayerBlob, ...]]
    present_blobs: Mapping[str, int]
    snapshotter: str
    remote_layers: frozenset[str] = frozenset()
    compressed_sizes: Mapping[str, int] = field(default_factory=dict)
    # Image ID -> the base its manifest annotations declare (only images that declare one).
    declared_bases: Mapping[str, DeclaredBase] = field(default_factory=dict)


def _frozen(mapping: Mapping[str, object] | None) -> Mapping[str, object]:
    """A read-only copy; a read-only view is kept as it is, so facts made from
    facts (dataclasses.replace) share their mappings rather than copy them."""
    if isinstance(mapping, MappingProxyType):
        return mapping
    return MappingProxyType(dict(mapping or {}))


@dataclass(frozen=True, slots=True)
class NodeFacts:
    """Everything one refresh learned from the runtime: one consistent view.

    `layer_usage` is keyed by chain ID; a chain ID missing from it is a layer
    whose snapshot does not exist (not unpacked for this snapshotter).
    `layer_blobs` maps an image ID to its manifest's layer blobs, and
    `present_blobs` says which blob digests the content store holds (and their
    sizes): by default containerd keeps compressed layers beside the snapshots.
    """

    images: tuple[ImageFacts, ...] = ()
    containers: tuple[ContainerFacts, ...] = ()
    pods: tuple[PodFacts, ...] = ()
    layer_usage: Mapping[str, SnapshotUsage] = field(default_factory=dict)
    layer_blobs: Mapping[str, tuple[LayerBlob, ...]] = field(default_factory=dict)
    present_blobs: Mapping[str, int] = field(default_factory=dict)
    sandbox_image_ids: frozenset[str] = frozenset()
    filesystems: tuple[FilesystemFacts, ...] = ()
    node_name: str = ""
    runtime_name: str = ""
    runtime_version: str = ""
    # The snapshotter the layers were read from, and the one the runtime's CRI
    # plugin says it uses ("" when it does not say): they differ when the
    # exporter was configured with another one.
    snapshotter: str = "overlayfs"
    runtime_snapshotter: str = ""
    # Chain IDs of lazily pulled layers (labelled containerd.io/snapshot/remote):
    # 0 bytes on disk by design, neither missing nor a quiet zero.
    remote_layers: frozenset[str] = frozenset()
    # Which layer store measured the layers (containerd, containers-storage).
    layer_store: str = "containerd"
    # Pod (namespace, name) -> workload, from the Kubernetes API; None when
    # attribution is off (then no workload labels are exported at all).
    workloads: Mapping[tuple[str, str], Workload] | None = None
    # Image ID -> the base its manifest annotations declare (see LayerFacts).
    declared_bases: Mapping[str, DeclaredBase] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Facts are shared between threads; make the mappings read-only too.
        object.__setattr__(self, "layer_usage", _frozen(self.layer_usage))
        object.__setattr__(self, "layer_blobs", _frozen(self.layer_blobs))
        object.__setattr__(self, "present_blobs", _frozen(self.present_blobs))
        object.__setattr__(self, "declared_bases", _frozen(self.declared_bases))
