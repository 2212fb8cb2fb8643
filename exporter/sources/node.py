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
from exporter.errors import BlobUnavailableError
from exporter.sources import containerd, cri
from exporter.sources.grpc_client import RpcSession, read_only_channel

logger = logging.getLogger(__name__)

# Every method this process may call on the runtime socket: each one reads.
READ_ONLY_METHODS = cri.METHODS | containerd.METHODS

# --layer-store: `auto` asks CRI Version which runtime answers.
LAYER_STORES = ("auto", "containerd", "containers-storage")
# Where CRI-O keeps containers/storage unless its storage.conf says otherwise.
DEFAULT_STORAGE_ROOT = "/var/lib/containers/storage"
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
    """A layer store that can hand out its compressed layer blobs (containerd's content store)."""

    def read_blob(self, digest: str, size: int) -> Iterator[bytes | memoryview]: ...

    def uncompressed_digest(self, digest: str) -> str | None:
        """The diff ID the store recorded when it decompressed the blob itself (None: none)."""
        ...


class LayerStore(Protocol):
    """A runtime's layer store: the layers of the images CRI listed."""

    name: str

    def read(self, images: Sequence[ImageFacts]) -> LayerFacts: ...

    def use_snapshotter(self, name: str) -> None:
        """Where the runtime unpacks images, as CRI says (a store with one place ignores it)."""

    def forget_runtime_state(self) -> None: ...


@dataclass(frozen=True, slots=True)
class RuntimeOptions:
    endpoint: str = "unix:///run/containerd/containerd.sock"
    namespace: str = "k8s.io"
    # "" = the one the runtime's CRI plugin uses (containerd's default overlayfs if it does not say).
    snapshotter: str = ""
    rpc_timeout: float = 5.0
    node_name: str = ""
    # Where the host's filesystem is mounted, to measure the image filesystem's
    # capacity with statvfs ("" = the exporter sees the host paths directly).
    host_root: str = ""
    collect_writable_layers: bool = True
    writable_refresh_seconds: float = 120.0
    keep_history: bool = False
    content_recheck_seconds: float = 300.0
    layer_store: str = "auto"
    # containers/storage's graph root (CRI-O's `root` in storage.conf).
    storage_root: str = DEFAULT_STORAGE_ROOT


class RuntimeSource:
    """Reads one node's images, layers, containers and pods from its runtime."""

    def __init__(self, options: RuntimeOptions) -> None:
        self.options = options
        self._channel, self._guard = read_only_channel(options.endpoint, READ_ONLY_METHODS)
        self._session = RpcSession(self._channel, options.rpc_timeout, (("containerd-namespace", options.namespace),))
        self.cri = cri.CriClient(
            self._session,
            cri.CriOptions(
                host_root=options.host_root,
                collect_writable_layers=options.collect_writable_layers,
                writable_refresh_seconds=options.writable_refresh_seconds,
                keep_history=options.keep_history,
            ),
        )
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
            # Loaded only on a CRI-O node: about 0.3 MiB the long-running exporter
            # on a containerd node does without.
            from exporter.sources import containers_storage

            return containers_storage.ContainersStorageLayerStore(
                containers_storage.ContainersStorageOptions(storage_root=self.options.storage_root),
                self._session.errors,
            )
        if kind == "containerd":
            return containerd.ContainerdLayerStore(
                self._session,
                containerd.ContainerdOptions(
                    snapshotter=self.options.snapshotter, content_recheck_seconds=self.options.content_recheck_seconds
                ),
            )
        raise ValueError(f"unknown layer store {kind!r} (known: {', '.join(LAYER_STORES)})")

    @property
    def errors(self) -> Counter[str]:
        """Per-item failures by stage (exported as a counter)."""
        return self._session.errors

    @property
    def calls(self) -> Counter[str]:
        """How many times each runtime method was called."""
        return self._guard.calls

    @property
    def progress(self) -> int:
        """Runtime calls started so far (the liveness probe sees a long refresh progress)."""
        return self._guard.started

    def close(self) -> None:
        self._channel.close()

    def blob_reader(self) -> BlobReader | None:
        """The layer store's blobs, if it can keep them (the wasted-bytes analysis reads them).

        With `auto` the store is only known after the first refresh, so this
        source reads for it; a store that keeps no layer contents (CRI-O's
        metadata) then answers every read as unavailable.
        """
        return None if self.options.layer_store == "containers-storage" else self

    def read_blob(self, digest: str, size: int) -> Iterator[bytes | memoryview]:
        """One compressed layer blob, in chunks, from the layer store in use."""
        return self._blob_store(digest).read_blob(digest, size)

    def uncompressed_digest(self, digest: str) -> str | None:
        """The diff ID the layer store in use recorded for a blob it decompressed."""
        return self._blob_store(digest).uncompressed_digest(digest)

    def _blob_store(self, digest: str) -> containerd.ContainerdLayerStore:
        store = self.layer_store
        if not isinstance(store, containerd.ContainerdLayerStore):
            kind = store.name if store is not None else "not known yet"
            raise BlobUnavailableError(f"layer store {kind} keeps no layer blobs to read {digest} from")
        return store

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

    def _snapshotter(self, runtime_snapshotter: str) -> str:
        """The configured snapshotter, else the runtime's; a mismatch is said once
        (and exported as layer_sharing_snapshotter_mismatch while it lasts)."""
        configured = self.options.snapshotter
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
