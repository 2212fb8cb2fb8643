"""The CRI adapter (kubernetes/cri-api runtime.v1): images, pods, containers and the image filesystem.

Only translates. Every CRI runtime answers these calls the same way; where
they differ (what `ImageStatus(verbose)` and `Status(verbose)` put in `info`)
the parsers below accept each runtime's shape. Image details are cached by
image ID, because what a digest names never changes.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import grpc

from exporter._generated import cri_runtime_v1_pb2 as cri_pb
from exporter.core.facts import ContainerFacts, FilesystemFacts, ImageFacts, PodFacts
from exporter.core.references import reference_index, resolve_reference
from exporter.errors import ParseError
from exporter.sources.grpc_client import RpcSession, describe, unary_method
from exporter.sources.oci import ImageDetails, image_details_from_config, load_json

logger = logging.getLogger(__name__)

_RUNTIME = "/runtime.v1.RuntimeService/"
_IMAGES = "/runtime.v1.ImageService/"

# The CRI methods this process may call: every one of them reads.
METHODS = frozenset(
    {
        _RUNTIME + "Version",
        _RUNTIME + "Status",
        _RUNTIME + "ListPodSandbox",
        _RUNTIME + "ListContainers",
        _RUNTIME + "ListContainerStats",
        _IMAGES + "ListImages",
        _IMAGES + "ImageStatus",
        _IMAGES + "ImageFsInfo",
    }
)

POD_NAME_LABEL = "io.kubernetes.pod.name"
POD_NAMESPACE_LABEL = "io.kubernetes.pod.namespace"
POD_UID_LABEL = "io.kubernetes.pod.uid"
CONTAINER_NAME_LABEL = "io.kubernetes.container.name"

_STATE_NAMES = {
    cri_pb.CONTAINER_CREATED: "created",
    cri_pb.CONTAINER_RUNNING: "running",
    cri_pb.CONTAINER_EXITED: "exited",
    cri_pb.CONTAINER_UNKNOWN: "unknown",
}


@dataclass(frozen=True, slots=True)
class CriOptions:
    host_root: str = ""  # where the host's filesystem is mounted, for statvfs ("" = as is)
    collect_writable_layers: bool = True
    # ListContainerStats costs containerd a shim round trip per container
    # (~2 ms each), and containerd itself refreshes writable-layer sizes only
    # every 10 s: ask for them at most this often, and reuse them in between.
    writable_refresh_seconds: float = 120.0
    # Keep each image's history (the Dockerfile steps): only `df --image` shows it.
    keep_history: bool = False


@dataclass(frozen=True, slots=True)
class CriView:
    """What CRI says about the node at one moment."""

    runtime_name: str
    runtime_version: str
    images: tuple[ImageFacts, ...]
    pods: tuple[PodFacts, ...]
    containers: tuple[ContainerFacts, ...]
    filesystems: tuple[FilesystemFacts, ...]
    sandbox_image_ids: frozenset[str]


class CriClient:
    """Reads a node's images, pods, containers and image filesystem over CRI."""

    def __init__(self, session: RpcSession, options: CriOptions) -> None:
        self.session = session
        self.options = options
        ch = session.channel
        self._version = unary_method(ch, _RUNTIME + "Version", cri_pb.VersionRequest, cri_pb.VersionResponse)
        self._status = unary_method(ch, _RUNTIME + "Status", cri_pb.StatusRequest, cri_pb.StatusResponse)
        self._list_sandboxes = unary_method(
            ch, _RUNTIME + "ListPodSandbox", cri_pb.ListPodSandboxRequest, cri_pb.ListPodSandboxResponse
        )
        self._list_containers = unary_method(
            ch, _RUNTIME + "ListContainers", cri_pb.ListContainersRequest, cri_pb.ListContainersResponse
        )
        self._list_stats = unary_method(
            ch, _RUNTIME + "ListContainerStats", cri_pb.ListContainerStatsRequest, cri_pb.ListContainerStatsResponse
        )
        self._list_images = unary_method(
            ch, _IMAGES + "ListImages", cri_pb.ListImagesRequest, cri_pb.ListImagesResponse
        )
        self._image_status = unary_method(
            ch, _IMAGES + "ImageStatus", cri_pb.ImageStatusRequest, cri_pb.ImageStatusResponse
        )
        self._image_fs = unary_method(
            ch, _IMAGES + "ImageFsInfo", cri_pb.ImageFsInfoRequest, cri_pb.ImageFsInfoResponse
        )
        # Caches of immutable facts, pruned to what the node still holds.
        self._details: dict[str, ImageDetails] = {}
        self._bad_images: dict[str, str] = {}
        self._sandbox_ref: str | None = None
        self._writable: dict[str, int] = {}
        self._writable_at = float("-inf")

    def read(self) -> CriView:
        """One consistent view of the node. Raises RuntimeUnavailableError."""
        s = self.session
        version = s.required(self._version, cri_pb.VersionRequest(version="v1"))
        listed = s.required(self._list_images, cri_pb.ListImagesRequest()).images
        sandboxes = s.required(self._list_sandboxes, cri_pb.ListPodSandboxRequest()).items
        containers = s.required(self._list_containers, cri_pb.ListContainersRequest()).containers
        writable = self._writable_layers()
        filesystems = self._filesystems()
        images = self._images_with_details(listed)
        self._prune({image.id for image in listed})
        ref_to_id = reference_index(images)
        return CriView(
            runtime_name=version.runtime_name,
            runtime_version=version.runtime_version,
            images=tuple(images),
            pods=tuple(_pods(sandboxes)),
            containers=tuple(_containers(containers, sandboxes, ref_to_id, writable)),
            filesystems=filesystems,
            sandbox_image_ids=self._sandbox_image_ids(ref_to_id),
        )

    # -- images ------------------------------------------------------------

    def _images_with_details(self, listed: Sequence[cri_pb.Image]) -> list[ImageFacts]:
        missing = [image.id for image in listed if image.id not in self._details and image.id not in self._bad_images]
        self.session.call_many(
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
                created=details.created,
                declared_base=details.declared_base,
            )
            for image in listed
            if (details := self._details.get(image.id)) is not None
        ]

    def _remember_details(self, image_id: str, result: cri_pb.ImageStatusResponse | grpc.RpcError) -> None:
        if isinstance(result, grpc.RpcError):
            self.session.item_error(
                "image_status", "image %s skipped: ImageStatus failed: %s", image_id, describe(result)
            )
            return
        if not result.HasField("image"):
            # Deleted between ListImages and ImageStatus: it is simply gone.
            logger.debug("image %s vanished during refresh", image_id)
            return
        try:
            details = image_details_from_verbose_info(result.info)
            if not self.options.keep_history:
                details = dataclasses.replace(details, history=())
            self._details[image_id] = details
        except ParseError as exc:
            # Same digest, same bytes: the failure would repeat, so remember it.
            self._bad_images[image_id] = str(exc)
            self.session.item_error("image_parse", "image %s skipped: %s", image_id, exc)

    def _prune(self, image_ids: set[str]) -> None:
        for cache in (self._details, self._bad_images):
            for stale in cache.keys() - image_ids:
                del cache[stale]

    # -- containers, pods, filesystems ----------------------------------------

    def _writable_layers(self) -> dict[str, int]:
        if not self.options.collect_writable_layers:
            return {}
        now = time.monotonic()
        if now - self._writable_at < self.options.writable_refresh_seconds:
            return self._writable
        try:
            stats = self.session.call(self._list_stats, cri_pb.ListContainerStatsRequest()).stats
        except grpc.RpcError as exc:
            self.session.item_error("container_stats", "ListContainerStats failed: %s", describe(exc))
            return self._writable
        self._writable = {
            s.attributes.id: s.writable_layer.used_bytes.value for s in stats if s.HasField("writable_layer")
        }
        self._writable_at = now
        return self._writable

    def _filesystems(self) -> tuple[FilesystemFacts, ...]:
        try:
            response = self.session.call(self._image_fs, cri_pb.ImageFsInfoRequest())
        except grpc.RpcError as exc:
            self.session.item_error("imagefs", "ImageFsInfo failed: %s", describe(exc))
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
                status = self.session.call(self._status, cri_pb.StatusRequest(verbose=True))
                self._sandbox_ref = sandbox_image_from_status_info(status.info)
            except grpc.RpcError as exc:
                self.session.item_error("status", "runtime Status failed: %s", describe(exc))
                return frozenset()
        image_id = resolve_reference(self._sandbox_ref, ref_to_id)
        return frozenset({image_id}) if image_id else frozenset()

    def forget_runtime_state(self) -> None:
        """After the runtime restarted its config may differ: ask again."""
        self._sandbox_ref = None
        self._writable_at = float("-inf")


# -- translation ---------------------------------------------------------------


def image_details_from_verbose_info(info: Mapping[str, str]) -> ImageDetails:
    """Diff IDs and history from CRI `ImageStatus(verbose=true).info`.

    containerd puts `{"chainID": ..., "imageSpec": <OCI image config>}` under
    the key "info" (CRI-O puts the config there too, without chainID).
    """
    raw = info.get("info")
    if raw is None:
        raise ParseError("verbose image status has no 'info' key")
    doc = load_json(raw, "verbose image info")
    if not isinstance(doc, dict):
        raise ParseError("verbose image info is not a JSON object")
    spec = doc.get("imageSpec")
    if not isinstance(spec, dict):
        raise ParseError("verbose image info has no imageSpec object")
    return image_details_from_config(spec)


@dataclass(frozen=True, slots=True)
class PodIdentity:
    namespace: str
    name: str
    uid: str


def pod_identity(labels: Mapping[str, str], namespace: str = "", name: str = "", uid: str = "") -> PodIdentity:
    """Which pod an object belongs to: the kubelet's labels, else CRI metadata."""
    return PodIdentity(
        namespace=labels.get(POD_NAMESPACE_LABEL) or namespace,
        name=labels.get(POD_NAME_LABEL) or name,
        uid=labels.get(POD_UID_LABEL) or uid,
    )


def sandbox_image_from_status_info(info: Mapping[str, str]) -> str:
    """The pause image reference from CRI `Status(verbose=true).info`.

    containerd 1.x: info["config"] is its CRI config with "sandboxImage";
    2.x keeps it under pinned images ("pinnedImages": {"sandbox": ...}).
    Returns "" when the runtime does not say.
    """
    raw = info.get("config")
    if not raw:
        return ""
    try:
        doc = json.loads(raw)
    except ValueError:
        return ""
    if not isinstance(doc, dict):
        return ""
    for holder in (doc, doc.get("containerd"), doc.get("pinnedImages")):
        if isinstance(holder, dict):
            for key in ("sandboxImage", "sandbox"):
                value = holder.get(key)
                if isinstance(value, str) and value:
                    return value
    return ""


def _statvfs(host_root: str, mountpoint: str) -> tuple[int | None, int | None]:
    if not mountpoint:
        return None, None
    path = os.path.join(host_root, mountpoint.lstrip("/")) if host_root else mountpoint
    try:
        st = os.statvfs(path)
    except OSError:
        return None, None
    return st.f_blocks * st.f_frsize, st.f_bavail * st.f_frsize


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
            image_id = resolve_reference(container.image_ref, ref_to_id) or image_id
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
