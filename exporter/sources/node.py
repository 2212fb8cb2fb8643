"""One node's facts from its runtime: CRI for images, pods and containers, plus the runtime's layer store.

Every CRI runtime answers the same CRI calls; where the layers are measured
differs (containerd's snapshotter; CRI-O's containers/storage). A layer store
is anything with `read(images) -> LayerFacts`: a new runtime is one more
module that provides it, and nothing else changes.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from exporter.core.facts import ImageFacts, LayerFacts, NodeFacts
from exporter.sources import containerd, cri
from exporter.sources.grpc_client import RpcSession, read_only_channel

# Every method this process may call on the runtime socket: each one reads.
READ_ONLY_METHODS = cri.METHODS | containerd.METHODS


class BlobReader(Protocol):
    """A layer store that can hand out its compressed layer blobs (containerd's content store)."""

    def read_blob(self, digest: str, size: int) -> Iterator[bytes]: ...


class LayerStore(Protocol):
    """A runtime's layer store: the layers of the images CRI listed."""

    name: str

    def read(self, images: Sequence[ImageFacts]) -> LayerFacts: ...

    def forget_runtime_state(self) -> None: ...


@dataclass(frozen=True, slots=True)
class RuntimeOptions:
    endpoint: str = "unix:///run/containerd/containerd.sock"
    namespace: str = "k8s.io"
    snapshotter: str = "overlayfs"
    rpc_timeout: float = 5.0
    node_name: str = ""
    # Where the host's filesystem is mounted, to measure the image filesystem's
    # capacity with statvfs ("" = the exporter sees the host paths directly).
    host_root: str = ""
    collect_writable_layers: bool = True
    writable_refresh_seconds: float = 120.0
    keep_history: bool = False
    content_recheck_seconds: float = 300.0


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
        self.layer_store: LayerStore = containerd.ContainerdLayerStore(
            self._session,
            containerd.ContainerdOptions(
                snapshotter=options.snapshotter, content_recheck_seconds=options.content_recheck_seconds
            ),
        )

    @property
    def errors(self) -> Counter[str]:
        """Per-item failures by stage (exported as a counter)."""
        return self._session.errors

    @property
    def calls(self) -> Counter[str]:
        """How many times each runtime method was called."""
        return self._guard.calls

    def close(self) -> None:
        self._channel.close()

    def blob_reader(self) -> BlobReader | None:
        """The layer store's blobs, if it keeps them (the wasted-bytes analysis reads them)."""
        store = self.layer_store
        return store if hasattr(store, "read_blob") else None  # type: ignore[return-value]

    def snapshot(self) -> NodeFacts:
        """One consistent view of the node. Raises RuntimeUnavailableError."""
        view = self.cri.read()
        layers = self.layer_store.read(view.images)
        return NodeFacts(
            images=view.images,
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
        )

    def forget_runtime_state(self) -> None:
        """After the runtime restarted its config may differ: ask again."""
        self.cri.forget_runtime_state()
        self.layer_store.forget_runtime_state()
