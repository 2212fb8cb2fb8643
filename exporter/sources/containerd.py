"""The containerd layer store adapter: snapshots, content and image records in, `LayerFacts` out.

Only translates. It asks the fewest questions that keep the facts exact: one
call per *new* layer or manifest, because what a digest names never changes (a
committed snapshot's usage by chain ID, a manifest by digest).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

import grpc

from exporter._generated import containerd_content_v1_pb2 as content_pb
from exporter._generated import containerd_images_v1_pb2 as images_pb
from exporter._generated import containerd_snapshots_v1_pb2 as snapshots_pb
from exporter.core.facts import DeclaredBase, ImageFacts, LayerBlob, LayerFacts, SnapshotUsage
from exporter.core.pull_cost import (
    DIFF_SIZED_SNAPSHOTTERS,
    RemoteImage,
    StoreAnswers,
    shows_discarded_blobs,
    stored_layers_of,
)
from exporter.errors import BlobUnavailableError, ParseError, RuntimeUnavailableError
from exporter.options import RUNTIME_COMMANDS, option
from exporter.sources.grpc_client import DOWN_CODES, RpcSession, describe, stream_method, unary_method
from exporter.sources.oci import (
    ImageDetails,
    Index,
    Manifest,
    image_details_from_config,
    load_json,
    parse_manifest_or_index,
)

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
        _SNAPSHOTS + "List",
    }
)

# The label remote snapshotters (stargz, SOCI, nydus) put on a lazily pulled layer.
REMOTE_SNAPSHOT_LABEL = "containerd.io/snapshot/remote"
# Content labels a pull puts on a manifest blob: its config, and its layers in order
# (left out when the pull discards unpacked layers: then the layers can be collected).
CONFIG_REF_LABEL = "containerd.io/gc.ref.content.config"
LAYER_REF_LABEL_PREFIX = "containerd.io/gc.ref.content.l."
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


@dataclass(frozen=True, slots=True)
class StoreListings:
    """The content store's blobs (digest -> labels) and, where read, the committed snapshots
    of `snapshotter` (name -> parent's name, "" for a bottom layer)."""

    snapshotter: str
    content: Mapping[str, Mapping[str, str]]
    snapshots: Mapping[str, str] | None = None


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
        self._snapshot_list = stream_method(
            ch, _SNAPSHOTS + "List", snapshots_pb.ListSnapshotsRequest, snapshots_pb.ListSnapshotsResponse
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

    # -- a targeted read, for pull-cost ---------------------------------------

    def pull_listings(self) -> StoreListings:
        """The listings a pull's accounting needs whatever the images (so they can be read
        while the registries are asked): the content store's blobs and labels, and on a
        diff-sized snapshotter its committed snapshots. Raises RuntimeUnavailableError (a
        listing that fails too: without it the figures would be wrong, not incomplete)."""
        snapshots = self._committed_snapshots() if self.snapshotter in DIFF_SIZED_SNAPSHOTTERS else None
        return StoreListings(self.snapshotter, self._content_labels(), snapshots)

    def pull_answers(
        self, images: Sequence[RemoteImage], listed: Sequence[ImageFacts], listings: StoreListings | None = None
    ) -> StoreAnswers:
        """What this store holds of what pulling `images` needs, asking about those only:
        Usage (and Stat where it says 0 or fails) of their chains, and of the stored layers
        of their diffs on other parents (found from the snapshot listing, on a diff-sized
        snapshotter, for the diffs none of their own chains holds). `listed` is CRI's image
        list; `listings` pull_listings's answer, if read already. Raises RuntimeUnavailableError.
        """
        if listings is None or listings.snapshotter != self.snapshotter:
            listings = self.pull_listings()
        content = listings.content
        usage, remote, unsized = self._usage_of(dict.fromkeys(c for image in images for c in image.chain_ids))
        present = frozenset(layer.digest for image in images for layer in image.layers if layer.digest in content)
        diff_chains: dict[str, tuple[str, ...]] = {}
        if listings.snapshots is not None:
            pairs = [
                (layer.diff_id, c) for image in images for layer, c in zip(image.layers, image.chain_ids, strict=True)
            ]
            held = {d for d, c in pairs if c in usage and c not in remote}
            if unheld := {d for d, _ in pairs} - held:
                diff_chains = stored_layers_of(unheld, listings.snapshots)
                more = {c for chains in diff_chains.values() for c in chains} - usage.keys() - remote
                more_usage, more_remote, more_unsized = self._usage_of(more - unsized)
                unsized |= more_unsized
                usage.update(more_usage)
                remote |= more_remote
        keeps_layer_blobs = not self._discards_layer_blobs({i.image_id for i in listed}, content, dict(usage))
        return StoreAnswers(
            snapshotter=self.snapshotter,
            listed_images=tuple(listed),
            layer_usage=usage,
            remote_layers=frozenset(remote),
            unsized_layers=frozenset(unsized),
            present_blobs=present,
            diff_chains=diff_chains,
            keeps_layer_blobs=keeps_layer_blobs,
        )

    def _usage_of(self, chain_ids: Iterable[str]) -> tuple[dict[str, int], set[str], set[str]]:
        """Bytes of the snapshots among `chain_ids` that exist; which are lazily pulled; and
        which exist with bytes not known (Usage failed, Stat found them). Stat is asked where
        Usage says 0 or fails otherwise than NOT_FOUND, as a refresh does. A chain without a
        snapshot is simply not there. Raises RuntimeUnavailableError when neither call can
        say whether a snapshot exists: a guess either way would be a wrong figure."""
        usage: dict[str, int] = {}
        # Chains to Stat: those that read as 0 bytes (None) or failed otherwise than NOT_FOUND (the error).
        to_stat: dict[str, grpc.RpcError | None] = {}

        def remember(chain_id: str, result: snapshots_pb.UsageResponse | grpc.RpcError) -> None:
            if isinstance(result, grpc.RpcError):
                if result.code() != grpc.StatusCode.NOT_FOUND:  # not there: Stat would say so too
                    to_stat[chain_id] = result
                return
            usage[chain_id] = result.size
            if not result.size:
                to_stat[chain_id] = None

        requests = ((c, snapshots_pb.UsageRequest(snapshotter=self.snapshotter, key=c)) for c in chain_ids)
        self.session.call_many(self._usage, requests, remember, native=True)
        remote: set[str] = set()
        unsized: set[str] = set()
        undecided: list[str] = []

        def remember_stat(chain_id: str, result: snapshots_pb.StatSnapshotResponse | grpc.RpcError) -> None:
            usage_error = to_stat[chain_id]
            if not isinstance(result, grpc.RpcError):
                if REMOTE_SNAPSHOT_LABEL in result.info.labels:
                    remote.add(chain_id)
                elif usage_error is not None:  # there, but its bytes could not be read
                    unsized.add(chain_id)
                    self.session.item_error("snapshot_usage", "layer %s: its bytes could not be read: %s",
                                            chain_id, describe(usage_error))  # fmt: skip
            elif usage_error is not None:
                if result.code() == grpc.StatusCode.NOT_FOUND:
                    self._report_missing(chain_id, usage_error)
                else:
                    undecided.append(f"{chain_id}: {describe(usage_error)}; {describe(result)}")

        stats = ((c, snapshots_pb.StatSnapshotRequest(snapshotter=self.snapshotter, key=c)) for c in to_stat)
        self.session.call_many(self._stat, stats, remember_stat, native=True)
        if undecided:
            raise RuntimeUnavailableError(f"whether layer {undecided[0]} has a snapshot is not known")
        return usage, remote, unsized

    def _committed_snapshots(self) -> dict[str, str]:
        """Every committed snapshot's name (a chain ID) and its parent's, in one listing."""
        request = snapshots_pb.ListSnapshotsRequest(snapshotter=self.snapshotter)
        try:
            return {
                info.name: info.parent
                for response in self.session.stream(self._snapshot_list, request)
                for info in response.info
                if info.kind == snapshots_pb.COMMITTED
            }
        except grpc.RpcError as exc:
            raise RuntimeUnavailableError(f"listing {self.snapshotter} snapshots failed: {describe(exc)}") from None

    def _content_labels(self) -> dict[str, Mapping[str, str]]:
        """Every blob the content store holds, with its labels, in one listing."""
        try:
            return {
                info.digest: info.labels
                for response in self.session.stream(self._content_list, content_pb.ListContentRequest())
                for info in response.info
            }
        except grpc.RpcError as exc:
            raise RuntimeUnavailableError(f"listing the content store failed: {describe(exc)}") from None

    def _discards_layer_blobs(
        self, image_ids: set[str], content: Mapping[str, Mapping[str, str]], usage: dict[str, int]
    ) -> bool:
        """Whether some listed image shows the store drops unpacked layer blobs (core.pull_cost.
        shows_discarded_blobs), asking as little as the content labels allow.

        A manifest's labels name its config and, unless its pull discarded them, its layer
        blobs: an image whose layer blobs are all there is no evidence, at no cost. Only
        the others have their manifest (where its labels do not name the layers) and
        config read and their chains asked, a few at a time, until one is evidence.
        """
        manifests: dict[str, tuple[str, tuple[str, ...] | None]] = {}
        for digest in sorted(content):
            labels = content[digest]
            config = labels.get(CONFIG_REF_LABEL, "")
            if config in image_ids:
                manifests[config] = (digest, _labelled_layers(labels))
        suspects = [
            (config, manifest, layers)
            for config, (manifest, layers) in sorted(manifests.items())
            if layers is None or any(b not in content for b in layers)
        ]
        for start in range(0, len(suspects), WINDOW_OF_SUSPECTS):
            batch = suspects[start : start + WINDOW_OF_SUSPECTS]
            blobs = self._read_blobs([manifest for _, manifest, layers in batch if layers is None])
            layer_lists: dict[str, tuple[str, ...]] = {}
            for config, manifest, layers in batch:
                if layers is None:
                    parsed = _parse(blobs.get(manifest), parse_manifest_or_index)
                    layers = tuple(b.digest for b in parsed.layers) if isinstance(parsed, Manifest) else ()
                if any(b not in content for b in layers):
                    layer_lists[config] = layers
            configs = self._read_blobs(layer_lists)
            chains = {
                config: details.chain_ids
                for config in layer_lists
                if (details := _parse(configs.get(config), _config_details))
            }
            more_usage, _, _ = self._usage_of({c for ids in chains.values() for c in ids} - usage.keys())
            usage.update(more_usage)
            if any(shows_discarded_blobs(layer_lists[i], ids, usage, content) for i, ids in chains.items()):
                return True
        return False

    def _read_blobs(self, digests: Iterable[str]) -> dict[str, bytes]:
        """Small blobs (manifests, configs) by digest; one that cannot be read is left out."""
        found: dict[str, bytes] = {}

        def remember(digest: str, result: list[content_pb.ReadContentResponse] | grpc.RpcError) -> None:
            if isinstance(result, grpc.RpcError):
                if result.code() != grpc.StatusCode.NOT_FOUND:
                    self.session.item_error("content", "reading %s failed: %s", digest, describe(result))
            else:
                found[digest] = b"".join(response.data for response in result)

        requests = ((d, content_pb.ReadContentRequest(digest=d)) for d in dict.fromkeys(digests))
        self.session.stream_many(self._content_read, requests, remember)
        return found


# Images whose manifests and configs are read together while looking for evidence of discarded blobs.
WINDOW_OF_SUSPECTS = 8

_T = TypeVar("_T")


def _labelled_layers(labels: Mapping[str, str]) -> tuple[str, ...] | None:
    """The layer blobs a manifest's labels name, in order (None: the labels name none)."""
    indexed = []
    for key, value in labels.items():
        if key.startswith(LAYER_REF_LABEL_PREFIX) and key[len(LAYER_REF_LABEL_PREFIX) :].isdigit():
            indexed.append((int(key[len(LAYER_REF_LABEL_PREFIX) :]), value))
    return tuple(value for _, value in sorted(indexed)) or None


def _config_details(raw: bytes) -> ImageDetails:
    config = load_json(raw, "image config")
    if not isinstance(config, dict):
        raise ParseError("image config is not a JSON object")
    return image_details_from_config(config)


def _parse(raw: bytes | None, parser: Callable[[bytes], _T]) -> _T | None:
    """A blob parsed, or None when it was not read or does not parse (no evidence either way)."""
    if raw is None:
        return None
    try:
        return parser(raw)
    except ParseError:
        return None


def _blob_error(digest: str, exc: grpc.RpcError) -> BlobUnavailableError:
    """A failed call about one blob: missing when the store does not hold it."""
    missing = exc.code() == grpc.StatusCode.NOT_FOUND
    return BlobUnavailableError(f"reading blob {digest} failed: {describe(exc)}", missing)
