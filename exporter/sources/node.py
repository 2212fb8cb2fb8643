"""One node's facts from its runtime: CRI for images, pods and containers, plus the runtime's layer store.

Every CRI runtime answers the same CRI calls; where the layers are measured
differs (containerd's snapshotter; CRI-O's containers/storage). A layer store
is anything with `read(images) -> LayerFacts`: a new runtime is one more
module that provides it, and nothing else changes.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from exporter.core.facts import ImageFacts, LayerFacts, NodeFacts
from exporter.core.pull_cost import NodeHoldings, RemoteImage, holdings_for, holdings_from_answers, holdings_from_facts
from exporter.errors import BlobUnavailableError
from exporter.options import RUNTIME_COMMANDS, option, section
from exporter.sources import containerd, cri
from exporter.sources.containers_storage import ContainersStorageLayerStore, ContainersStorageOptions
from exporter.sources.grpc_client import RpcSession, read_only_channel

logger = logging.getLogger(__name__)

# Every method this process may call on the runtime socket: each one reads.
READ_ONLY_METHODS = cri.METHODS | containerd.METHODS

# --layer-store: `auto` asks CRI Version which runtime answers.
LAYER_STORES = ("auto", "containerd", "containers-storage")
DEFAULT_ENDPOINT = "unix:///run/containerd/containerd.sock"
CRIO_RUNTIME_NAME = "cri-o"  # CRI-O's Version.runtime_name (server/version.go)


def choose_layer_store(setting: str, runtime_name: str) -> str:
    """The layer store to read: the one configured, or for `auto` the runtime's own.

    >>> choose_layer_store("auto", "cri-o"), choose_layer_store("auto", "containerd")
    ('containers-storage', 'containerd')
    """
    if setting != "auto":
        return setting
    return "containers-storage" if runtime_name == CRIO_RUNTIME_NAME else "containerd"


class BlobReader(Protocol):
    """Where compressed layer blobs are read from (the layer store in use)."""

    @property
    def keeps_blobs(self) -> bool:
        """Whether the store keeps layer contents at all (containerd's content store does)."""
        ...

    def read_blob(self, digest: str, size: int) -> Iterator[bytes]:
        """The blob's bytes in chunks. Raises BlobUnavailableError, RuntimeUnavailableError."""
        ...


class LayerStore(Protocol):
    """A runtime's layer store: the layers of the images CRI listed."""

    name: str
    # Whether it keeps layer contents that read_blob can hand out (CRI-O's metadata files do not).
    keeps_blobs: bool

    def read_blob(self, digest: str, size: int) -> Iterator[bytes]: ...

    def read(self, images: Sequence[ImageFacts]) -> LayerFacts: ...

    def use_snapshotter(self, name: str) -> None:
        """Where the runtime unpacks images, as CRI says (a store with one place ignores it)."""

    def forget_runtime_state(self) -> None: ...


@dataclass(frozen=True, slots=True)
class RuntimeOptions:
    """How to reach the node's runtime and read its layer store."""

    endpoint: str = option(
        DEFAULT_ENDPOINT,
        "CRI socket: unix:///path or /path (environment: $CONTAINER_RUNTIME_ENDPOINT)",
        key="runtime_endpoint",
        flag="--runtime-endpoint",
        commands=RUNTIME_COMMANDS,
    )
    containerd_namespace: str = option(
        "k8s.io",
        "containerd namespace the CRI plugin keeps its images in (not a Kubernetes namespace)",
        flag="--containerd-namespace",
        commands=RUNTIME_COMMANDS,
    )
    rpc_timeout: float = option(
        5.0,
        "seconds per runtime call",
        key="rpc_timeout_seconds",
        flag="--rpc-timeout",
        commands=RUNTIME_COMMANDS,
        positive=True,
    )
    node_name: str = option("", "node name reported (environment: $NODE_NAME, else the host name)", flag="--node-name")
    layer_store: str = option(
        "auto",
        "where layer sizes come from: containerd's snapshotter, or containers-storage (CRI-O) metadata files; "
        "auto picks containers-storage when the CRI runtime is cri-o",
        flag="--layer-store",
        commands=RUNTIME_COMMANDS,
        choices=LAYER_STORES,
    )
    cri: cri.CriOptions = section(cri.CriOptions)
    containerd: containerd.ContainerdOptions = section(containerd.ContainerdOptions)
    containers_storage: ContainersStorageOptions = section(ContainersStorageOptions)


@dataclass(frozen=True, slots=True)
class PullView:
    """What pull_view read: CRI's image list, and containerd's listings (None on another store)."""

    cri: cri.CriView
    listings: containerd.StoreListings | None = None


@dataclass(frozen=True, slots=True)
class PullHoldings:
    """A node's holdings for some pulls, and the layer store (and snapshotter) they were read from."""

    holdings: NodeHoldings
    layer_store: str
    snapshotter: str


class RuntimeSource:
    """Reads one node's images, layers, containers and pods from its runtime."""

    def __init__(self, options: RuntimeOptions) -> None:
        self.options = options
        self._channel, self._guard = read_only_channel(options.endpoint, READ_ONLY_METHODS)
        self._session = RpcSession(
            self._channel, options.rpc_timeout, (("containerd-namespace", options.containerd_namespace),)
        )
        self.cri = cri.CriClient(self._session, options.cri)
        self._mismatch_reported: tuple[str, str] | None = None
        self._stores: dict[str, LayerStore] = {}
        self._store_kind = ""
        if options.layer_store != "auto":
            self._layer_store(options.layer_store)

    @property
    def layer_store(self) -> LayerStore | None:
        """The layer store in use (None while `auto` has not asked the runtime yet)."""
        return self._stores.get(self._store_kind)

    def _layer_store(self, runtime_name: str) -> LayerStore:
        kind = choose_layer_store(self.options.layer_store, runtime_name)
        store = self._stores.get(kind)
        if store is None:
            store = self._stores[kind] = self._make_store(kind)
        if kind != self._store_kind:
            logger.info("layer store: %s (runtime %s)", kind, runtime_name or "not asked yet")
            self._store_kind = kind
        return store

    def _make_store(self, kind: str) -> LayerStore:
        if kind == "containers-storage":
            return ContainersStorageLayerStore(self.options.containers_storage, self._session.errors)
        if kind == "containerd":
            return containerd.ContainerdLayerStore(self._session, self.options.containerd)
        raise ValueError(f"unknown layer store {kind!r} (known: {', '.join(LAYER_STORES)})")

    @property
    def errors(self) -> Counter[str]:
        """Per-item failures by stage (exported as a counter)."""
        return self._session.errors

    @property
    def calls(self) -> dict[str, int]:
        """How many times each runtime method was called so far."""
        return self._guard.counts()

    @property
    def progress(self) -> int:
        """Runtime calls started so far (the liveness probe sees a long refresh progress)."""
        return self._guard.started

    def close(self) -> None:
        self._channel.close()

    @property
    def keeps_blobs(self) -> bool:
        """Whether the layer store in use keeps layer blobs (False until it is known)."""
        store = self.layer_store
        return store is not None and store.keeps_blobs

    def read_blob(self, digest: str, size: int) -> Iterator[bytes]:
        """One compressed layer blob, in chunks, from the layer store in use."""
        store = self.layer_store
        if store is None or not store.keeps_blobs:
            kind = store.name if store is not None else "not known yet"
            raise BlobUnavailableError(f"layer store {kind} keeps no layer blobs to read {digest} from")
        return store.read_blob(digest, size)

    def snapshot(self) -> NodeFacts:
        """One consistent view of the node. Raises RuntimeUnavailableError."""
        view = self.cri.read()
        store = self._layer_store(view.runtime_name)
        store.use_snapshotter(self._snapshotter(view.snapshotter))
        layers = store.read(view.images)
        images = view.images
        if layers.compressed_sizes:
            images = tuple(
                dataclasses.replace(image, compressed_size=layers.compressed_sizes[image.image_id])
                if image.image_id in layers.compressed_sizes
                else image
                for image in images
            )
        return NodeFacts(
            images=images,
            containers=view.containers,
            pods=view.pods,
            layer_usage=layers.layer_usage,
            layer_blobs=layers.layer_blobs,
            present_blobs=layers.present_blobs,
            sandbox_image_ids=view.sandbox_image_ids,
            filesystems=view.filesystems,
            node_name=self.options.node_name,
            runtime_name=view.runtime_name,
            runtime_version=view.runtime_version,
            snapshotter=layers.snapshotter,
            runtime_snapshotter=view.snapshotter,
            remote_layers=layers.remote_layers,
            layer_store=store.name,
            declared_bases=layers.declared_bases,
        )

    def pull_view(self) -> PullView:
        """What a pull's accounting needs of the node whatever the images (so it can be read
        while the registries are asked): CRI's runtime, snapshotter and image list (no image
        details), and containerd's content and snapshot listings. Raises RuntimeUnavailableError."""
        view = self.cri.read_images()
        store = self._layer_store(view.runtime_name)
        if not isinstance(store, containerd.ContainerdLayerStore):
            return PullView(view)
        store.use_snapshotter(self._snapshotter(view.snapshotter))
        return PullView(view, store.pull_listings())

    def pull_holdings(self, images: Sequence[RemoteImage], view: PullView | None = None) -> PullHoldings:
        """What the node holds of what pulling `images` needs (`view`: pull_view's answer, if
        read already). containerd is asked about those images' chains only, beyond its
        listings (a few calls per layer, whatever else the node holds); containers/storage's
        records are files, read whole by a refresh. Raises RuntimeUnavailableError."""
        view = view or self.pull_view()
        store = self._layer_store(view.cri.runtime_name)
        if not isinstance(store, containerd.ContainerdLayerStore):
            facts = self.snapshot()
            return PullHoldings(holdings_for(holdings_from_facts(facts), images), facts.layer_store, facts.snapshotter)
        answers = store.pull_answers(images, view.cri.images, view.listings)
        return PullHoldings(holdings_from_answers(answers, images), store.name, store.snapshotter)

    def _snapshotter(self, runtime_snapshotter: str) -> str:
        """The configured snapshotter, else the runtime's; a mismatch is said once
        (and exported as layer_sharing_snapshotter_mismatch while it lasts)."""
        configured = self.options.containerd.snapshotter
        mismatch = (configured, runtime_snapshotter)
        differs = bool(configured and runtime_snapshotter) and configured != runtime_snapshotter
        if differs and mismatch != self._mismatch_reported:
            self._mismatch_reported = mismatch
            logger.error(
                "snapshotter %r is configured but the runtime unpacks images with %r: layers read from %r "
                "will be missing or 0 bytes; remove the setting (the runtime's is used then) or set it to %r",
                configured,
                runtime_snapshotter,
                configured,
                runtime_snapshotter,
            )
        return configured or runtime_snapshotter

    def forget_runtime_state(self) -> None:
        """After the runtime restarted its config may differ: ask again."""
        self.cri.forget_runtime_state()
        for store in self._stores.values():
            store.forget_runtime_state()
