"""The containerd adapter: CRI and containerd's own API in, `NodeFacts` out.

Only translates. It asks the runtime the fewest questions that keep the facts
exact: a few list calls per refresh, and one call per *new* image or layer,
because what a digest names never changes (image diff IDs by image ID, a
committed snapshot's usage by chain ID, a manifest by digest).

Every call goes through a read-only allow-list and carries a deadline.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
from google.protobuf.message import Message

from exporter._generated import containerd_content_v1_pb2 as content_pb
from exporter._generated import containerd_images_v1_pb2 as images_pb
from exporter._generated import containerd_snapshots_v1_pb2 as snapshots_pb
from exporter._generated import cri_runtime_v1_pb2 as cri_pb
from exporter.facts import (
    ContainerFacts,
    FilesystemFacts,
    ImageFacts,
    LayerBlob,
    NodeFacts,
    PodFacts,
    SnapshotUsage,
)
from exporter.parse import (
    ImageDetails,
    Index,
    Manifest,
    ParseError,
    image_details_from_verbose_info,
    normalize_endpoint,
    parse_manifest_or_index,
    pod_identity,
    sandbox_image_from_status_info,
)

logger = logging.getLogger(__name__)

_CRI_RUNTIME = "/runtime.v1.RuntimeService/"
_CRI_IMAGES = "/runtime.v1.ImageService/"
_IMAGES = "/containerd.services.images.v1.Images/"
_CONTENT = "/containerd.services.content.v1.Content/"
_SNAPSHOTS = "/containerd.services.snapshots.v1.Snapshots/"

# The only methods this process may call: every one of them reads.
READ_ONLY_METHODS = frozenset(
    {
        _CRI_RUNTIME + "Version",
        _CRI_RUNTIME + "Status",
        _CRI_RUNTIME + "ListPodSandbox",
        _CRI_RUNTIME + "ListContainers",
        _CRI_RUNTIME + "ListContainerStats",
        _CRI_IMAGES + "ListImages",
        _CRI_IMAGES + "ImageStatus",
        _CRI_IMAGES + "ImageFsInfo",
        _IMAGES + "List",
        _CONTENT + "List",
        _CONTENT + "Read",
        _SNAPSHOTS + "Usage",
    }
)

# Codes that mean "the runtime as a whole is not answering".
_DOWN_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED})

_STATE_NAMES = {
    cri_pb.CONTAINER_CREATED: "created",
    cri_pb.CONTAINER_RUNNING: "running",
    cri_pb.CONTAINER_EXITED: "exited",
    cri_pb.CONTAINER_UNKNOWN: "unknown",
}

T = TypeVar("T")
# Calls in flight at once when many items are new (e.g. a cold start).
_WINDOW = 32
Req = TypeVar("Req", bound=Message)
Resp = TypeVar("Resp", bound=Message)


class RuntimeUnavailableError(Exception):
    """The runtime did not answer (socket missing, restarting, too slow)."""


class MutationRefusedError(PermissionError):
    """A call outside the read-only allow-list was attempted; it never left the process."""


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
    # ListContainerStats costs containerd a shim round trip per container
    # (~2 ms each), and containerd itself refreshes writable-layer sizes only
    # every 10 s: ask for them at most this often, and reuse them in between.
    writable_refresh_seconds: float = 120.0
    # Keep each image's history (the Dockerfile steps): only `df --image` shows it.
    keep_history: bool = False
    # How often to re-list the content store even when no image is new: layer
    # blobs can be garbage-collected after unpack (discard_unpacked_layers).
    content_recheck_seconds: float = 300.0


class _ReadOnlyGuard(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):  # type: ignore[type-arg]
    """Refuses any method not in the allow-list, and counts calls per method."""

    def __init__(self, allowed: frozenset[str]) -> None:
        self.allowed = allowed
        self.calls: Counter[str] = Counter()
        self._lock = threading.Lock()

    def _check(self, details: Any) -> None:
        method = details.method
        if isinstance(method, bytes):
            method = method.decode()
        if method not in self.allowed:
            raise MutationRefusedError(f"refusing to call {method}: the exporter only reads")
        with self._lock:
            self.calls[method] += 1

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        self._check(details)
        return continuation(details, request)

    def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        self._check(details)
        return continuation(details, request)


def read_only_channel(
    endpoint: str, allowed: frozenset[str] = READ_ONLY_METHODS
) -> tuple[grpc.Channel, _ReadOnlyGuard]:
    """A channel to the runtime socket that can only make allow-listed calls."""
    raw = grpc.insecure_channel(
        normalize_endpoint(endpoint),
        options=[
            ("grpc.max_receive_message_length", 64 * 1024 * 1024),
            # Reconnect quickly after containerd restarts (the default backs off to 2 min).
            ("grpc.initial_reconnect_backoff_ms", 250),
            ("grpc.min_reconnect_backoff_ms", 250),
            ("grpc.max_reconnect_backoff_ms", 2000),
            ("grpc.enable_http_proxy", 0),
        ],
    )
    guard = _ReadOnlyGuard(allowed)
    return grpc.intercept_channel(raw, guard), guard


class ContainerdRuntime:
    """Reads one node's images, layers, containers and pods from containerd."""

    def __init__(self, options: RuntimeOptions) -> None:
        self.options = options
        self._channel, self._guard = read_only_channel(options.endpoint)
        ch = self._channel
        self._version = _unary_method(ch, _CRI_RUNTIME + "Version", cri_pb.VersionRequest, cri_pb.VersionResponse)
        self._status = _unary_method(ch, _CRI_RUNTIME + "Status", cri_pb.StatusRequest, cri_pb.StatusResponse)
        self._list_sandboxes = _unary_method(
            ch, _CRI_RUNTIME + "ListPodSandbox", cri_pb.ListPodSandboxRequest, cri_pb.ListPodSandboxResponse
        )
        self._list_containers = _unary_method(
            ch, _CRI_RUNTIME + "ListContainers", cri_pb.ListContainersRequest, cri_pb.ListContainersResponse
        )
        self._list_stats = _unary_method(
            ch, _CRI_RUNTIME + "ListContainerStats", cri_pb.ListContainerStatsRequest, cri_pb.ListContainerStatsResponse
        )
        self._list_images = _unary_method(
            ch, _CRI_IMAGES + "ListImages", cri_pb.ListImagesRequest, cri_pb.ListImagesResponse
        )
        self._image_status = _unary_method(
            ch, _CRI_IMAGES + "ImageStatus", cri_pb.ImageStatusRequest, cri_pb.ImageStatusResponse
        )
        self._image_fs = _unary_method(
            ch, _CRI_IMAGES + "ImageFsInfo", cri_pb.ImageFsInfoRequest, cri_pb.ImageFsInfoResponse
        )
        self._image_records = _unary_method(
            ch, _IMAGES + "List", images_pb.ListImagesRequest, images_pb.ListImagesResponse
        )
        self._content_list = _stream_method(
            ch, _CONTENT + "List", content_pb.ListContentRequest, content_pb.ListContentResponse
        )
        self._content_read = _stream_method(
            ch, _CONTENT + "Read", content_pb.ReadContentRequest, content_pb.ReadContentResponse
        )
        self._usage = _unary_method(ch, _SNAPSHOTS + "Usage", snapshots_pb.UsageRequest, snapshots_pb.UsageResponse)
        self._metadata = (("containerd-namespace", options.namespace),)
        # Caches of immutable facts, pruned to what the node still holds.
        self._details: dict[str, ImageDetails] = {}
        self._bad_images: dict[str, str] = {}
        self._usage_cache: dict[str, SnapshotUsage] = {}
        self._missing_reported: set[str] = set()
        self._blobs: dict[str, tuple[LayerBlob, ...]] = {}
        self._manifests: dict[str, Manifest | Index | None] = {}
        self._present: dict[str, int] = {}
        self._present_at = float("-inf")
        self._sandbox_ref: str | None = None
        self._writable: dict[str, int] = {}
        self._writable_at = float("-inf")
        # Cumulative counts, exported as counters.
        self.errors: Counter[str] = Counter()

    @property
    def calls(self) -> Counter[str]:
        """How many times each runtime method was called."""
        return self._guard.calls

    def close(self) -> None:
        self._channel.close()

    # -- one refresh -----------------------------------------------------

    def snapshot(self) -> NodeFacts:
        """One consistent view of the node. Raises RuntimeUnavailableError."""
        version = self._required(self._version, cri_pb.VersionRequest(version="v1"))
        listed = self._required(self._list_images, cri_pb.ListImagesRequest()).images
        sandboxes = self._required(self._list_sandboxes, cri_pb.ListPodSandboxRequest()).items
        containers = self._required(self._list_containers, cri_pb.ListContainersRequest()).containers
        writable = self._writable_layers()
        filesystems = self._filesystems()

        images = self._images_with_details(listed)
        new_ids = [i.image_id for i in images if i.image_id not in self._blobs]
        self._prune({image.id for image in listed})
        ref_to_id = _reference_index(images)
        usage = self._layer_usage(images)
        self._layer_blobs(new_ids)
        self._content_presence(refresh=bool(new_ids))

        return NodeFacts(
            images=tuple(images),
            containers=tuple(_containers(containers, sandboxes, ref_to_id, writable)),
            pods=tuple(_pods(sandboxes)),
            layer_usage=usage,
            layer_blobs={i.image_id: self._blobs.get(i.image_id, ()) for i in images},
            present_blobs=self._present,
            sandbox_image_ids=self._sandbox_image_ids(ref_to_id),
            filesystems=filesystems,
            node_name=self.options.node_name,
            runtime_name=version.runtime_name,
            runtime_version=version.runtime_version,
            snapshotter=self.options.snapshotter,
        )

    def _call(self, method: Callable[..., T], request: Any, native: bool = False) -> T:
        """A unary call with a deadline; whole-runtime failures raise RuntimeUnavailableError."""
        try:
            return method(
                request,
                timeout=self.options.rpc_timeout,
                metadata=self._metadata if native else None,
            )
        except grpc.RpcError as exc:
            if exc.code() in _DOWN_CODES:
                raise RuntimeUnavailableError(_describe(exc)) from None
            raise

    def _required(self, method: Callable[..., T], request: Any) -> T:
        """A call the figures cannot do without: any failure (UNIMPLEMENTED from a
        runtime without CRI v1, PERMISSION_DENIED, ...) means the runtime is not usable."""
        try:
            return self._call(method, request)
        except grpc.RpcError as exc:
            raise RuntimeUnavailableError(_describe(exc)) from None

    def _stream(self, method: Callable[..., Iterable[T]], request: Any) -> Iterator[T]:
        try:
            yield from method(request, timeout=self.options.rpc_timeout, metadata=self._metadata)
        except grpc.RpcError as exc:
            if exc.code() in _DOWN_CODES:
                raise RuntimeUnavailableError(_describe(exc)) from None
            raise

    def _call_many(
        self,
        method: grpc.UnaryUnaryMultiCallable[Any, Any],
        requests: Iterable[tuple[str, Any]],
        on_result: Callable[[str, Any], None],
        native: bool = False,
    ) -> None:
        """Unary calls pipelined on the one connection, at most _WINDOW in flight.

        `requests` is consumed as the window frees up and `on_result(key,
        response-or-RpcError)` sees each reply as it settles, so neither the
        requests nor the replies of a cold refresh (thousands) are held at once.
        A whole-runtime failure raises RuntimeUnavailableError and cancels what
        is still in flight.
        """
        metadata = self._metadata if native else None
        in_flight: deque[tuple[str, Any]] = deque()

        def settle() -> None:
            key, future = in_flight.popleft()
            try:
                result = future.result()
            except grpc.RpcError as exc:
                if exc.code() in _DOWN_CODES:
                    raise RuntimeUnavailableError(_describe(exc)) from None
                result = exc
            on_result(key, result)

        try:
            for key, request in requests:
                in_flight.append((key, method.future(request, timeout=self.options.rpc_timeout, metadata=metadata)))
                if len(in_flight) >= _WINDOW:
                    settle()
            while in_flight:
                settle()
        finally:
            for _, future in in_flight:
                future.cancel()

    def _stream_many(
        self,
        method: Callable[..., Any],
        requests: Iterable[tuple[str, Any]],
        on_result: Callable[[str, Any], None],
    ) -> None:
        """Server-streaming calls, _WINDOW started together, each read whole and
        handed to `on_result(key, responses-or-RpcError)` before the next window."""
        pending = iter(requests)
        while batch := [
            (key, method(request, timeout=self.options.rpc_timeout, metadata=self._metadata))
            for key, request in itertools.islice(pending, _WINDOW)
        ]:
            for key, call in batch:
                try:
                    result: list[Any] | grpc.RpcError = list(call)
                except grpc.RpcError as exc:
                    if exc.code() in _DOWN_CODES:
                        for _, other in batch:
                            other.cancel()
                        raise RuntimeUnavailableError(_describe(exc)) from None
                    result = exc
                on_result(key, result)

    def _item_error(self, stage: str, message: str, *args: object) -> None:
        self.errors[stage] += 1
        logger.warning(message, *args)

    # -- images ------------------------------------------------------------

    def _images_with_details(self, listed: Sequence[cri_pb.Image]) -> list[ImageFacts]:
        missing = [image.id for image in listed if image.id not in self._details and image.id not in self._bad_images]
        self._call_many(
            self._image_status,
            ((i, cri_pb.ImageStatusRequest(image=cri_pb.ImageSpec(image=i), verbose=True)) for i in missing),
            self._remember_details,
        )
        return [
            ImageFacts(
                image_id=image.id,
                repo_tags=tuple(image.repo_tags),
                repo_digests=tuple(image.repo_digests),
                diff_ids=details.diff_ids,
                history=details.history,
                compressed_size=image.size,
                pinned=image.pinned,
                chain_ids=details.chain_ids,
            )
            for image in listed
            if (details := self._details.get(image.id)) is not None
        ]

    def _remember_details(self, image_id: str, result: cri_pb.ImageStatusResponse | grpc.RpcError) -> None:
        if isinstance(result, grpc.RpcError):
            self._item_error("image_status", "image %s skipped: ImageStatus failed: %s", image_id, _describe(result))
            return
        if not result.HasField("image"):
            # Deleted between ListImages and ImageStatus: it is simply gone.
            logger.debug("image %s vanished during refresh", image_id)
            return
        try:
            details = image_details_from_verbose_info(result.info)
            if not self.options.keep_history:
                details = ImageDetails(details.diff_ids, (), details.chain_ids)
            self._details[image_id] = details
        except ParseError as exc:
            # Same digest, same bytes: the failure would repeat, so remember it.
            self._bad_images[image_id] = str(exc)
            self._item_error("image_parse", "image %s skipped: %s", image_id, exc)

    def _prune(self, image_ids: set[str]) -> None:
        for cache in (self._details, self._bad_images, self._blobs):
            for stale in cache.keys() - image_ids:
                del cache[stale]

    # -- layers --------------------------------------------------------------

    def _layer_usage(self, images: list[ImageFacts]) -> dict[str, SnapshotUsage]:
        wanted = {c for image in images for c in image.chain_ids}
        for stale in self._usage_cache.keys() - wanted:
            del self._usage_cache[stale]
        self._missing_reported &= wanted
        requests = (
            (chain_id, snapshots_pb.UsageRequest(snapshotter=self.options.snapshotter, key=chain_id))
            for chain_id in sorted(wanted - self._usage_cache.keys())
        )
        self._call_many(self._usage, requests, self._remember_usage, native=True)
        return dict(self._usage_cache)

    def _remember_usage(self, chain_id: str, result: snapshots_pb.UsageResponse | grpc.RpcError) -> None:
        if isinstance(result, grpc.RpcError):
            # A layer not unpacked for this snapshotter (or a snapshotter that
            # does not exist): report once per layer, keep asking quietly.
            if chain_id not in self._missing_reported:
                self._missing_reported.add(chain_id)
                self._item_error(
                    "snapshot_usage",
                    "layer %s has no %s snapshot: %s",
                    chain_id,
                    self.options.snapshotter,
                    _describe(result),
                )
            return
        # Committed snapshots never change, so their usage is cached.
        self._usage_cache[chain_id] = SnapshotUsage(size=result.size, inodes=result.inodes)
        self._missing_reported.discard(chain_id)

    # -- compressed content ---------------------------------------------------

    def _layer_blobs(self, new_image_ids: list[str]) -> None:
        """Find the manifest of each new image (by its config digest)."""
        if not new_image_ids:
            return
        wanted = set(new_image_ids)
        try:
            records = self._call(self._image_records, images_pb.ListImagesRequest(), native=True).images
        except grpc.RpcError as exc:
            self._item_error("content", "listing containerd images failed: %s", _describe(exc))
            return
        targets = list(dict.fromkeys(r.target.digest for r in records if r.target.digest))
        self._read_manifests(targets)
        # Indexes point at one manifest per platform; other platforms' are
        # usually not pulled and stay None.
        children = [c for t in targets for c in self._index_children(t)]
        self._read_manifests(children)
        for digest in (*targets, *children):
            manifest = self._manifests.get(digest)
            if isinstance(manifest, Manifest) and manifest.config_digest in wanted:
                self._blobs[manifest.config_digest] = manifest.layers
        for image_id in wanted - self._blobs.keys():
            self._blobs[image_id] = ()
        for stale in self._manifests.keys() - {*targets, *children}:
            del self._manifests[stale]

    def _index_children(self, digest: str) -> tuple[str, ...]:
        parsed = self._manifests.get(digest)
        return parsed.manifests if isinstance(parsed, Index) else ()

    def _read_manifests(self, digests: Iterable[str]) -> None:
        """Read and parse the manifests not read yet (a manifest never changes)."""
        missing = [d for d in dict.fromkeys(digests) if d not in self._manifests]
        requests = ((d, content_pb.ReadContentRequest(digest=d)) for d in missing)
        self._stream_many(self._content_read, requests, self._remember_manifest)

    def _remember_manifest(self, digest: str, result: list[content_pb.ReadContentResponse] | grpc.RpcError) -> None:
        parsed: Manifest | Index | None = None
        if isinstance(result, grpc.RpcError):
            if result.code() != grpc.StatusCode.NOT_FOUND:
                self._item_error("content", "reading manifest %s failed: %s", digest, _describe(result))
                return  # not cached: asked again next time
        else:
            try:
                parsed = parse_manifest_or_index(b"".join(chunk.data for chunk in result))
            except ParseError as exc:
                self._item_error("content", "manifest %s skipped: %s", digest, exc)
        self._manifests[digest] = parsed

    def _content_presence(self, refresh: bool) -> None:
        now = time.monotonic()
        if not refresh and now - self._present_at < self.options.content_recheck_seconds:
            return
        # Only the layer blobs of known images matter (the store also holds
        # configs, manifests and indexes); keep just those.
        layer_digests = {blob.digest for blobs in self._blobs.values() for blob in blobs}
        try:
            present = {
                info.digest: info.size
                for response in self._stream(self._content_list, content_pb.ListContentRequest())
                for info in response.info
                if info.digest in layer_digests
            }
        except grpc.RpcError as exc:
            self._item_error("content", "listing the content store failed: %s", _describe(exc))
            return
        self._present = present
        self._present_at = now

    # -- containers, pods, filesystems ----------------------------------------

    def _writable_layers(self) -> dict[str, int]:
        if not self.options.collect_writable_layers:
            return {}
        now = time.monotonic()
        if now - self._writable_at < self.options.writable_refresh_seconds:
            return self._writable
        try:
            stats = self._call(self._list_stats, cri_pb.ListContainerStatsRequest()).stats
        except grpc.RpcError as exc:
            self._item_error("container_stats", "ListContainerStats failed: %s", _describe(exc))
            return self._writable
        self._writable = {
            s.attributes.id: s.writable_layer.used_bytes.value for s in stats if s.HasField("writable_layer")
        }
        self._writable_at = now
        return self._writable

    def _filesystems(self) -> tuple[FilesystemFacts, ...]:
        try:
            response = self._call(self._image_fs, cri_pb.ImageFsInfoRequest())
        except grpc.RpcError as exc:
            self._item_error("imagefs", "ImageFsInfo failed: %s", _describe(exc))
            return ()
        result = []
        for fs in response.image_filesystems:
            capacity, available = _statvfs(self.options.host_root, fs.fs_id.mountpoint)
            result.append(
                FilesystemFacts(
                    mountpoint=fs.fs_id.mountpoint,
                    used_bytes=fs.used_bytes.value,
                    inodes_used=fs.inodes_used.value,
                    capacity_bytes=capacity,
                    available_bytes=available,
                )
            )
        return tuple(result)

    def _sandbox_image_ids(self, ref_to_id: dict[str, str]) -> frozenset[str]:
        if self._sandbox_ref is None:
            try:
                status = self._call(self._status, cri_pb.StatusRequest(verbose=True))
                self._sandbox_ref = sandbox_image_from_status_info(status.info)
            except grpc.RpcError as exc:
                self._item_error("status", "runtime Status failed: %s", _describe(exc))
                return frozenset()
        image_id = _resolve_reference(self._sandbox_ref, ref_to_id)
        return frozenset({image_id}) if image_id else frozenset()

    def forget_runtime_state(self) -> None:
        """After the runtime restarted its config may differ: ask again."""
        self._sandbox_ref = None
        self._writable_at = float("-inf")


def _unary_method(
    channel: grpc.Channel, path: str, request: type[Req], response: type[Resp]
) -> grpc.UnaryUnaryMultiCallable[Req, Resp]:
    return channel.unary_unary(
        path, request_serializer=request.SerializeToString, response_deserializer=response.FromString
    )


def _stream_method(
    channel: grpc.Channel, path: str, request: type[Req], response: type[Resp]
) -> grpc.UnaryStreamMultiCallable[Req, Resp]:
    return channel.unary_stream(
        path, request_serializer=request.SerializeToString, response_deserializer=response.FromString
    )


def _describe(exc: grpc.RpcError) -> str:
    code = getattr(exc, "code", lambda: None)()
    details = getattr(exc, "details", lambda: "")()
    return f"{code.name if code else 'UNKNOWN'}: {details}"


def _statvfs(host_root: str, mountpoint: str) -> tuple[int | None, int | None]:
    if not mountpoint:
        return None, None
    path = os.path.join(host_root, mountpoint.lstrip("/")) if host_root else mountpoint
    try:
        st = os.statvfs(path)
    except OSError:
        return None, None
    return st.f_blocks * st.f_frsize, st.f_bavail * st.f_frsize


def _reference_index(images: Iterable[ImageFacts]) -> dict[str, str]:
    index: dict[str, str] = {}
    for image in images:
        for ref in (image.image_id, *image.repo_tags, *image.repo_digests):
            index.setdefault(ref, image.image_id)
    return index


def _resolve_reference(ref: str, ref_to_id: dict[str, str]) -> str:
    """Image ID for a reference, trying Docker Hub's implicit names too."""
    if not ref:
        return ""
    candidates = [ref]
    if "/" not in ref.split(":", 1)[0]:
        candidates.append("docker.io/library/" + ref)
    elif ref.count("/") == 1 and "." not in ref.split("/", 1)[0]:
        candidates.append("docker.io/" + ref)
    if ":" not in ref.rsplit("/", 1)[-1] and "@" not in ref:
        candidates += [c + ":latest" for c in candidates]
    for candidate in candidates:
        if candidate in ref_to_id:
            return ref_to_id[candidate]
    return ""


def _pods(sandboxes: Iterable[cri_pb.PodSandbox]) -> Iterator[PodFacts]:
    for sandbox in sandboxes:
        who = pod_identity(sandbox.labels, sandbox.metadata.namespace, sandbox.metadata.name, sandbox.metadata.uid)
        yield PodFacts(
            sandbox_id=sandbox.id,
            namespace=who.namespace,
            name=who.name,
            uid=who.uid,
            ready=sandbox.state == cri_pb.SANDBOX_READY,
        )


def _containers(
    containers: Iterable[cri_pb.Container],
    sandboxes: Iterable[cri_pb.PodSandbox],
    ref_to_id: dict[str, str],
    writable: dict[str, int],
) -> Iterator[ContainerFacts]:
    by_sandbox = {s.id: s for s in sandboxes}
    known_ids = set(ref_to_id.values())
    for container in containers:
        sandbox = by_sandbox.get(container.pod_sandbox_id)
        meta = sandbox.metadata if sandbox is not None else cri_pb.PodSandboxMetadata()
        labels = dict(sandbox.labels) if sandbox is not None else {}
        labels.update(container.labels)
        who = pod_identity(labels, meta.namespace, meta.name, meta.uid)
        # containerd reports the config digest as image_ref; image_id (field 10)
        # exists from containerd 2.3. Anything else is resolved by reference.
        image_id = container.image_id or container.image_ref
        if image_id not in known_ids:
            image_id = _resolve_reference(container.image_ref, ref_to_id) or image_id
        yield ContainerFacts(
            container_id=container.id,
            name=container.metadata.name,
            image_id=image_id,
            namespace=who.namespace,
            pod=who.name,
            pod_uid=who.uid,
            sandbox_id=container.pod_sandbox_id,
            state=_STATE_NAMES.get(container.state, "unknown"),
            writable_bytes=writable.get(container.id),
        )
