"""The containerd layer store adapter: snapshots, content and image records in, `LayerFacts` out.

Only translates. It asks the fewest questions that keep the facts exact: one
call per *new* layer or manifest, because what a digest names never changes (a
committed snapshot's usage by chain ID, a manifest by digest).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Generator, Iterable, Sequence
from dataclasses import dataclass

import grpc

from exporter._generated import containerd_content_v1_pb2 as content_pb
from exporter._generated import containerd_images_v1_pb2 as images_pb
from exporter._generated import containerd_snapshots_v1_pb2 as snapshots_pb
from exporter.core.facts import DeclaredBase, ImageFacts, LayerBlob, LayerFacts, SnapshotUsage
from exporter.errors import BlobUnavailableError, ParseError, RuntimeUnavailableError
from exporter.options import RUNTIME_COMMANDS, option
from exporter.sources.grpc_client import DOWN_CODES, RpcSession, describe, stream_method, unary_method
from exporter.sources.oci import Index, Manifest, parse_manifest_or_index

logger = logging.getLogger(__name__)

_IMAGES = "/containerd.services.images.v1.Images/"
_CONTENT = "/containerd.services.content.v1.Content/"
_SNAPSHOTS = "/containerd.services.snapshots.v1.Snapshots/"

# The containerd methods this process may call: every one of them reads.
METHODS = frozenset(
    {
        _IMAGES + "List",
        _CONTENT + "List",
        _CONTENT + "Read",
        _SNAPSHOTS + "Usage",
        _SNAPSHOTS + "Stat",
    }
)

# The label remote snapshotters (stargz, SOCI, nydus) put on a lazily pulled layer.
REMOTE_SNAPSHOT_LABEL = "containerd.io/snapshot/remote"
# containerd's own default, when neither the configuration nor the runtime says.
DEFAULT_SNAPSHOTTER = "overlayfs"
# A manifest read that failed is retried after this long, doubling up to the cap.
MANIFEST_RETRY_SECONDS = 15.0
MANIFEST_RETRY_MAX_SECONDS = 600.0


@dataclass(frozen=True, slots=True)
class ContainerdOptions:
    snapshotter: str = option(
        "",
        "containerd snapshotter holding the layers (default: the one the runtime's CRI plugin uses)",
        flag="--snapshotter",
        commands=RUNTIME_COMMANDS,
    )
    # Layer blobs can be garbage-collected after unpack (discard_unpacked_layers).
    content_recheck_seconds: float = option(
        300.0, "re-list containerd's content store this often even when no image is new", positive=True
    )


class ContainerdLayerStore:
    """Layer sizes from containerd's snapshotter, compressed blobs from its content store."""

    name = "containerd"
    keeps_blobs = True

    def __init__(
        self, session: RpcSession, options: ContainerdOptions, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.session = session
        self.options = options
        self.snapshotter = options.snapshotter or DEFAULT_SNAPSHOTTER
        self._clock = clock
        ch = session.channel
        self._image_records = unary_method(
            ch, _IMAGES + "List", images_pb.ListImagesRequest, images_pb.ListImagesResponse
        )
        self._content_list = stream_method(
            ch, _CONTENT + "List", content_pb.ListContentRequest, content_pb.ListContentResponse
        )
        self._content_read = stream_method(
            ch, _CONTENT + "Read", content_pb.ReadContentRequest, content_pb.ReadContentResponse
        )
        self._usage = unary_method(ch, _SNAPSHOTS + "Usage", snapshots_pb.UsageRequest, snapshots_pb.UsageResponse)
        self._stat = unary_method(
            ch, _SNAPSHOTS + "Stat", snapshots_pb.StatSnapshotRequest, snapshots_pb.StatSnapshotResponse
        )
        # Caches of immutable facts, pruned to what the node still holds.
        self._usage_cache: dict[str, SnapshotUsage] = {}
        self._missing_reported: set[str] = set()
        self._remote: set[str] = set()
        # Layers of this refresh to Stat: zero-size ones (None) and failed ones (their error).
        self._to_stat: dict[str, grpc.RpcError | None] = {}
        self._blobs: dict[str, tuple[LayerBlob, ...]] = {}
        # Images whose manifest could not be found yet: image ID -> (failures, next attempt).
        self._blob_retry: dict[str, tuple[int, float]] = {}
        # Image ID -> the base its manifest annotations declare.
        self._declared: dict[str, DeclaredBase] = {}
        self._manifests: dict[str, Manifest | Index | None] = {}
        self._present: dict[str, int] = {}
        self._present_at = float("-inf")

    def read(self, images: Sequence[ImageFacts]) -> LayerFacts:
        """The layers of `images`. Raises RuntimeUnavailableError."""
        image_ids = {image.image_id for image in images}
        now = self._clock()
        new_ids = [
            image_id
            for image_id in image_ids
            if image_id not in self._blobs and self._blob_retry.get(image_id, (0, now))[1] <= now
        ]
        for cache in (self._blobs, self._blob_retry):
            for stale in cache.keys() - image_ids:
                del cache[stale]
        for stale in self._declared.keys() - image_ids:
            del self._declared[stale]
        usage = self._layer_usage(images)
        self._layer_blobs(new_ids)
        self._content_presence(refresh=bool(new_ids))
        return LayerFacts(
            layer_usage=usage,
            layer_blobs={i.image_id: self._blobs.get(i.image_id, ()) for i in images},
            present_blobs=self._present,
            snapshotter=self.snapshotter,
            remote_layers=frozenset(self._remote),
            declared_bases=dict(self._declared),
        )

    def use_snapshotter(self, name: str) -> None:
        """Read layers from snapshotter `name` from now on (what was read from another one is dropped)."""
        name = name or DEFAULT_SNAPSHOTTER
        if name != self.snapshotter:
            self.snapshotter = name
            self._usage_cache.clear()
            self._missing_reported.clear()
            self._remote.clear()

    def read_blob(self, digest: str, size: int) -> Generator[bytes, None, None]:
        """The bytes of one content blob (a compressed layer), in order, in chunks.

        One streaming `Content.Read`; the channel's flow control (exporter.sources.
        grpc_client) keeps what gRPC receives ahead of a slow caller to about one
        chunk. A caller that paces itself may outlast the call's deadline: a call
        that brought bytes before it is continued by a new one from where it
        stopped; one that brought nothing is asked once more. Raises
        BlobUnavailableError (missing=True when the store does not hold it) and
        RuntimeUnavailableError. A blob shorter than `size` just ends early (the
        caller checks the content's digest).
        """
        offset, again = 0, True
        while offset < size:
            request = content_pb.ReadContentRequest(digest=digest, offset=offset, size=size - offset)
            call = self.session.start_stream(self._content_read, request)
            brought = 0
            try:
                for response in call:
                    brought += len(response.data)
                    yield response.data
                return
            except grpc.RpcError as exc:
                code = exc.code()
                if code == grpc.StatusCode.DEADLINE_EXCEEDED and (brought or again):
                    offset, again = offset + brought, bool(brought)
                    continue
                if code in DOWN_CODES:
                    raise RuntimeUnavailableError(describe(exc)) from None
                raise _blob_error(digest, exc) from None
            finally:
                call.cancel()  # a caller that stopped early leaves no call behind

    def forget_runtime_state(self) -> None:
        """Nothing to forget: every cache here is keyed by an immutable digest."""

    # -- layers --------------------------------------------------------------

    def _layer_usage(self, images: Sequence[ImageFacts]) -> dict[str, SnapshotUsage]:
        wanted = {c for image in images for c in image.chain_ids}
        for stale in self._usage_cache.keys() - wanted:
            del self._usage_cache[stale]
        self._missing_reported &= wanted
        self._remote &= wanted
        requests = (
            (chain_id, snapshots_pb.UsageRequest(snapshotter=self.snapshotter, key=chain_id))
            for chain_id in sorted(wanted - self._usage_cache.keys() - self._remote)
        )
        self._to_stat = {}
        self.session.call_many(self._usage, requests, self._remember_usage, native=True)
        # A layer that reads as 0 bytes (or not at all) may be a lazily pulled
        # one: its snapshot's labels say so. Asked once per such layer.
        stats = ((c, snapshots_pb.StatSnapshotRequest(snapshotter=self.snapshotter, key=c)) for c in self._to_stat)
        self.session.call_many(self._stat, stats, self._remember_stat, native=True)
        return dict(self._usage_cache)

    def _remember_usage(self, chain_id: str, result: snapshots_pb.UsageResponse | grpc.RpcError) -> None:
        if isinstance(result, grpc.RpcError):
            if chain_id not in self._missing_reported:
                self._missing_reported.add(chain_id)
                self._to_stat[chain_id] = result  # reported unless it is a remote layer
            return
        # Committed snapshots never change, so their usage is cached.
        self._usage_cache[chain_id] = SnapshotUsage(size=result.size, inodes=result.inodes)
        self._missing_reported.discard(chain_id)
        if result.size == 0:
            self._to_stat[chain_id] = None

    def _report_missing(self, chain_id: str, result: grpc.RpcError) -> None:
        # A layer not unpacked for this snapshotter (or a snapshotter that
        # does not exist): report once per layer, keep asking quietly.
        self.session.item_error(
            "snapshot_usage", "layer %s has no %s snapshot: %s", chain_id, self.snapshotter, describe(result)
        )

    def _remember_stat(self, chain_id: str, result: snapshots_pb.StatSnapshotResponse | grpc.RpcError) -> None:
        if not isinstance(result, grpc.RpcError) and REMOTE_SNAPSHOT_LABEL in result.info.labels:
            self._remote.add(chain_id)
            return
        usage_error = self._to_stat.get(chain_id)
        if usage_error is not None:
            self._report_missing(chain_id, usage_error)

    # -- compressed content ---------------------------------------------------

    def _layer_blobs(self, new_image_ids: list[str]) -> None:
        """Find the manifest of each new image (by its config digest)."""
        if not new_image_ids:
            return
        wanted = set(new_image_ids)
        try:
            records = self.session.call(self._image_records, images_pb.ListImagesRequest(), native=True).images
        except grpc.RpcError as exc:
            self.session.item_error("content", "listing containerd images failed: %s", describe(exc))
            self._retry_later(wanted)
            return
        targets = list(dict.fromkeys(r.target.digest for r in records if r.target.digest))
        if wanted & self._blob_retry.keys():
            # A retry: a manifest found missing before may be there now.
            self._manifests = {d: m for d, m in self._manifests.items() if m is not None}
        self._read_manifests(targets)
        # Indexes point at one manifest per platform; other platforms' are
        # usually not pulled and stay None.
        children = [c for t in targets for c in self._index_children(t)]
        self._read_manifests(children)
        for digest in (*targets, *children):
            manifest = self._manifests.get(digest)
            if isinstance(manifest, Manifest) and manifest.config_digest in wanted:
                self._blobs[manifest.config_digest] = manifest.layers
                self._blob_retry.pop(manifest.config_digest, None)
                if manifest.declared_base is not None:
                    self._declared[manifest.config_digest] = manifest.declared_base
        # Not found (a read failed, or the record is not there yet): ask again
        # later rather than report its compressed bytes as 0 until a restart.
        self._retry_later(wanted - self._blobs.keys())
        for stale in self._manifests.keys() - {*targets, *children}:
            del self._manifests[stale]

    def _retry_later(self, image_ids: Iterable[str]) -> None:
        now = self._clock()
        for image_id in image_ids:
            failures = self._blob_retry.get(image_id, (0, now))[0] + 1
            delay = min(MANIFEST_RETRY_SECONDS * 2 ** (failures - 1), MANIFEST_RETRY_MAX_SECONDS)
            self._blob_retry[image_id] = (failures, now + delay)

    def _index_children(self, digest: str) -> tuple[str, ...]:
        parsed = self._manifests.get(digest)
        return parsed.manifests if isinstance(parsed, Index) else ()

    def _read_manifests(self, digests: Iterable[str]) -> None:
        """Read and parse the manifests not read yet (a manifest never changes)."""
        missing = [d for d in dict.fromkeys(digests) if d not in self._manifests]
        requests = ((d, content_pb.ReadContentRequest(digest=d)) for d in missing)
        self.session.stream_many(self._content_read, requests, self._remember_manifest)

    def _remember_manifest(self, digest: str, result: list[content_pb.ReadContentResponse] | grpc.RpcError) -> None:
        parsed: Manifest | Index | None = None
        if isinstance(result, grpc.RpcError):
            if result.code() != grpc.StatusCode.NOT_FOUND:
                self.session.item_error("content", "reading manifest %s failed: %s", digest, describe(result))
                return  # not cached: asked again next time
        else:
            try:
                parsed = parse_manifest_or_index(b"".join(response.data for response in result))
            except ParseError as exc:
                self.session.item_error("content", "manifest %s skipped: %s", digest, exc)
        self._manifests[digest] = parsed

    def _content_presence(self, refresh: bool) -> None:
        now = self._clock()
        if not refresh and now - self._present_at < self.options.content_recheck_seconds:
            return
        # Only the layer blobs of known images matter (the store also holds
        # configs, manifests and indexes); keep just those.
        # Keyed by the manifests' own digest strings: the listing's copies would double them.
        layer_digests = {blob.digest: blob.digest for blobs in self._blobs.values() for blob in blobs}
        try:
            present = {
                layer_digests[info.digest]: info.size
                for response in self.session.stream(self._content_list, content_pb.ListContentRequest())
                for info in response.info
                if info.digest in layer_digests
            }
        except grpc.RpcError as exc:
            self.session.item_error("content", "listing the content store failed: %s", describe(exc))
            return
        self._present = present
        self._present_at = now


def _blob_error(digest: str, exc: grpc.RpcError) -> BlobUnavailableError:
    """A failed call about one blob: missing when the store does not hold it."""
    missing = exc.code() == grpc.StatusCode.NOT_FOUND
    return BlobUnavailableError(f"reading blob {digest} failed: {describe(exc)}", missing)
