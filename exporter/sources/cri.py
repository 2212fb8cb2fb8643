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
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import grpc

from exporter._generated import cri_runtime_v1_pb2 as cri_pb
from exporter.core.bases import declared_base_from_labels
from exporter.core.facts import ContainerFacts, FilesystemFacts, ImageFacts, PodFacts
from exporter.core.references import reference_index, resolve_reference
from exporter.errors import ParseError
from exporter.options import option
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
        _RUNTIME + "PodSandboxStatus",
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

_STATE_NAMES = {
    cri_pb.CONTAINER_CREATED: "created",
    cri_pb.CONTAINER_RUNNING: "running",
    cri_pb.CONTAINER_EXITED: "exited",
    cri_pb.CONTAINER_UNKNOWN: "unknown",
}


@dataclass(frozen=True, slots=True)
class CriOptions:
    host_root: str = option("", 'where the host\'s / is mounted, for statvfs of the image filesystem ("" = as is)')
    capacity_dir: str = option(
        "",
        "a directory on the image filesystem (the chart mounts a small hostPath there, also the analysis "
        "state_dir): statvfs of it gives the image filesystem's capacity without exposing the store "
        '("" = statvfs of the ImageFsInfo mountpoint under host_root)',
        flag="--capacity-dir",
        metavar="DIR",
    )
    collect_writable_layers: bool = option(True, "ask for containers' writable layer sizes (ListContainerStats)")
    # ListContainerStats costs containerd a shim round trip per container
    # (~2 ms each), and containerd itself refreshes writable-layer sizes only
    # every 10 s: ask for them at most this often, and reuse them in between.
    writable_refresh_seconds: float = option(120.0, "ask for writable layer sizes at most this often", positive=True)
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
    # The snapshotter the CRI plugin unpacks images with ("" = it does not say).
    snapshotter: str = ""


class CriClient:
    """Reads a node's images, pods, containers and image filesystem over CRI."""

    def __init__(self, session: RpcSession, options: CriOptions, clock: Callable[[], float] = time.monotonic) -> None:
        self.session = session
        self.options = options
        self._clock = clock
        ch = session.channel
        self._version = unary_method(ch, _RUNTIME + "Version", cri_pb.VersionRequest, cri_pb.VersionResponse)
        self._status = unary_method(ch, _RUNTIME + "Status", cri_pb.StatusRequest, cri_pb.StatusResponse)
        self._list_sandboxes = unary_method(
            ch, _RUNTIME + "ListPodSandbox", cri_pb.ListPodSandboxRequest, cri_pb.ListPodSandboxResponse
        )
        self._sandbox_status = unary_method(
            ch, _RUNTIME + "PodSandboxStatus", cri_pb.PodSandboxStatusRequest, cri_pb.PodSandboxStatusResponse
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
        self._annotations: dict[str, Mapping[str, str]] = {}
        self._sandbox_ref: str | None = None
        self._config_snapshotter = ""
        self._known_snapshotter = ""
        # Sandbox ID -> the image it runs (a sandbox's image never changes).
        self._sandbox_images: dict[str, str] = {}
        self._writable: dict[str, int] = {}
        self._writable_at = float("-inf")
        # Image filesystems the capacity directory was found not to be on, and why (logged once).
        self._elsewhere_said: dict[str, str] = {}

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
        sandbox_image_ids = self._sandbox_image_ids(ref_to_id) | self._running_sandbox_image_ids(sandboxes, ref_to_id)
        # Sorted by ID: runtimes list in no fixed order (containerd walks Go maps), and
        # facts equal to the last refresh's let the refresh loop keep its report.
        return CriView(
            runtime_name=version.runtime_name,
            runtime_version=version.runtime_version,
            images=tuple(sorted(images, key=_image_order)),
            pods=tuple(sorted(_pods(sandboxes), key=lambda pod: pod.sandbox_id)),
            containers=tuple(
                sorted(_containers(containers, sandboxes, ref_to_id, writable), key=lambda c: c.container_id)
            ),
            filesystems=filesystems,
            sandbox_image_ids=sandbox_image_ids,
            snapshotter=self._runtime_snapshotter(filesystems),
        )

    def read_images(self) -> CriView:
        """Only the runtime, its snapshotter and the images it lists (IDs, names, sizes; no
        ImageStatus, pods or containers): what pull-cost needs of CRI, in four calls
        whatever the node holds. Raises RuntimeUnavailableError."""
        version = self.session.required(self._version, cri_pb.VersionRequest(version="v1"))
        listed = self.session.required(self._list_images, cri_pb.ListImagesRequest()).images
        filesystems = self._filesystems()
        self._sandbox_image_ids({})  # Status(verbose) once: the configured snapshotter
        images = (
            ImageFacts(i.id, tuple(i.repo_tags), tuple(i.repo_digests), compressed_size=i.size, pinned=i.pinned)
            for i in listed
        )
        return CriView(
            runtime_name=version.runtime_name,
            runtime_version=version.runtime_version,
            images=tuple(sorted(images, key=_image_order)),
            pods=(),
            containers=(),
            filesystems=filesystems,
            sandbox_image_ids=frozenset(),
            snapshotter=self._runtime_snapshotter(filesystems),
        )

    def _runtime_snapshotter(self, filesystems: Sequence[FilesystemFacts]) -> str:
        """The CRI plugin's snapshotter; once known it is kept until the runtime
        restarts, so one failed ImageFsInfo does not switch where layers are read."""
        found = self._config_snapshotter or _snapshotter_of_filesystems(filesystems)
        if found:
            self._known_snapshotter = found
        return self._known_snapshotter

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
                annotations=(annotations := self._annotations.get(image.id, {})),
                created=details.created,
                # CRI-O hands over the manifest's annotations; they win over the config's labels.
                declared_base=declared_base_from_labels(annotations) or details.declared_base,
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
            if result.image.spec.annotations:
                self._annotations[image_id] = image_annotations(result.image)
        except ParseError as exc:
            # Same digest, same bytes: the failure would repeat, so remember it.
            self._bad_images[image_id] = str(exc)
            self.session.item_error("image_parse", "image %s skipped: %s", image_id, exc)

    def _prune(self, image_ids: set[str]) -> None:
        for cache in (self._details, self._bad_images, self._annotations):
            for stale in cache.keys() - image_ids:
                del cache[stale]

    # -- containers, pods, filesystems ----------------------------------------

    def _writable_layers(self) -> dict[str, int]:
        if not self.options.collect_writable_layers:
            return {}
        now = self._clock()
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
            mountpoint, used = fs.fs_id.mountpoint, fs.used_bytes.value
            elsewhere = ""
            if self.options.capacity_dir:
                try:
                    capacity, available, elsewhere = _capacity_dir_statvfs(
                        self.options.capacity_dir, self.options.host_root, mountpoint, used
                    )
                except OSError as exc:
                    self.session.item_error(
                        "imagefs", "statvfs of capacity_dir %s failed: %s", self.options.capacity_dir, exc
                    )
                    capacity = available = None
                self._say_elsewhere(mountpoint, elsewhere)
            else:
                capacity, available = _statvfs(self.options.host_root, mountpoint)
            result.append(
                FilesystemFacts(
                    mountpoint=mountpoint,
                    used_bytes=used,
                    inodes_used=fs.inodes_used.value,
                    capacity_bytes=capacity,
                    available_bytes=available,
                    capacity_dir_elsewhere=bool(elsewhere),
                )
            )
        return tuple(result)

    def _say_elsewhere(self, mountpoint: str, why: str) -> None:
        """One log line when the capacity directory turns out to be on another filesystem (and when it is fixed)."""
        said = self._elsewhere_said.get(mountpoint, "")
        if why and not said:
            logger.warning(
                "capacity_dir %s is not on the image filesystem %s (%s): its capacity is not exported; "
                "mount a directory of the image filesystem there (the chart's hostPath directory)",
                self.options.capacity_dir,
                mountpoint,
                why,
            )
        elif said and not why:
            logger.info("capacity_dir %s is on the image filesystem %s again", self.options.capacity_dir, mountpoint)
        self._elsewhere_said[mountpoint] = why

    def _sandbox_image_ids(self, ref_to_id: dict[str, str]) -> frozenset[str]:
        """The configured pause image (in use even before any pod runs)."""
        if self._sandbox_ref is None:
            try:
                status = self.session.call(self._status, cri_pb.StatusRequest(verbose=True))
                self._sandbox_ref = sandbox_image_from_status_info(status.info)
                self._config_snapshotter = snapshotter_from_status_info(status.info)
            except grpc.RpcError as exc:
                self.session.item_error("status", "runtime Status failed: %s", describe(exc))
                return frozenset()
        image_id = resolve_reference(self._sandbox_ref, ref_to_id)
        return frozenset({image_id}) if image_id else frozenset()

    def _running_sandbox_image_ids(
        self, sandboxes: Sequence[cri_pb.PodSandbox], ref_to_id: dict[str, str]
    ) -> frozenset[str]:
        """The images the node's sandboxes run: after `sandbox_image` changes, pods
        started before still run the old pause image, which stays in use.

        One verbose PodSandboxStatus per new sandbox (it names its image on
        containerd 1.6, 1.7 and 2.x), cached: a sandbox's image never changes.
        """
        listed = {sandbox.id for sandbox in sandboxes}
        for stale in self._sandbox_images.keys() - listed:
            del self._sandbox_images[stale]
        requests = (
            (sandbox_id, cri_pb.PodSandboxStatusRequest(pod_sandbox_id=sandbox_id, verbose=True))
            for sandbox_id in sorted(listed - self._sandbox_images.keys())
        )
        self.session.call_many(self._sandbox_status, requests, self._remember_sandbox_image)
        ids = {resolve_reference(ref, ref_to_id) for ref in self._sandbox_images.values() if ref}
        return frozenset(i for i in ids if i)

    def _remember_sandbox_image(self, sandbox_id: str, result: cri_pb.PodSandboxStatusResponse | grpc.RpcError) -> None:
        if isinstance(result, grpc.RpcError):
            if result.code() != grpc.StatusCode.NOT_FOUND:  # NOT_FOUND: removed since the list
                self.session.item_error(
                    "status", "sandbox %s: PodSandboxStatus failed: %s", sandbox_id, describe(result)
                )
            return
        # "" when the runtime does not say (not containerd): remembered, not asked again.
        self._sandbox_images[sandbox_id] = sandbox_image_from_sandbox_info(result.info)

    def forget_runtime_state(self) -> None:
        """After the runtime restarted its config may differ: ask again."""
        self._sandbox_ref = None
        self._config_snapshotter = ""
        self._known_snapshotter = ""
        self._writable_at = float("-inf")


# -- translation ---------------------------------------------------------------


def image_details_from_verbose_info(info: Mapping[str, str]) -> ImageDetails:
    """Diff IDs and history from CRI `ImageStatus(verbose=true).info`.

    containerd puts `{"chainID": ..., "imageSpec": <OCI image config>}` under
    the key "info"; CRI-O puts `{"labels": ..., "imageSpec": ...}` there, with
    no chainID (cri-o server/image_status.go `createImageInfo`). Only
    imageSpec is read, so both shapes are the same here.
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


def image_annotations(image: cri_pb.Image) -> dict[str, str]:
    """The image manifest's annotations, from ImageStatus's `Image.spec.annotations`.

    CRI-O fills them from the stored OCI manifest (cri-o internal/storage/image.go
    `buildImageCacheItem`; ListImages leaves `spec` empty); containerd gives none.
    """
    return dict(image.spec.annotations)


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


def _config_of_status_info(info: Mapping[str, str]) -> dict[str, object]:
    raw = info.get("config")
    if not raw:
        return {}
    try:
        doc = json.loads(raw)
    except ValueError:
        return {}
    return doc if isinstance(doc, dict) else {}


def snapshotter_from_status_info(info: Mapping[str, str]) -> str:
    """The snapshotter the CRI plugin unpacks images with, from `Status(verbose=true).info`.

    containerd 1.6 and 1.7: info["config"]["containerd"]["snapshotter"]. 2.x
    moved it to the image service's config, which Status does not show (then
    the image filesystem's path tells it). Returns "" when the runtime does not say.
    """
    holder = _config_of_status_info(info).get("containerd")
    value = holder.get("snapshotter") if isinstance(holder, dict) else None
    return value if isinstance(value, str) else ""


_SNAPSHOTTER_DIR = "io.containerd.snapshotter.v1."


def _snapshotter_of_filesystems(filesystems: Sequence[FilesystemFacts]) -> str:
    """containerd reports its snapshotter's directory as the image filesystem
    (`<root>/io.containerd.snapshotter.v1.<name>`) on 1.6, 1.7 and 2.x."""
    for fs in filesystems:
        name = os.path.basename(fs.mountpoint.rstrip("/"))
        if name.startswith(_SNAPSHOTTER_DIR) and len(name) > len(_SNAPSHOTTER_DIR):
            return name[len(_SNAPSHOTTER_DIR) :]
    return ""


def sandbox_image_from_sandbox_info(info: Mapping[str, str]) -> str:
    """The image a sandbox runs, from `PodSandboxStatus(verbose=true).info`:
    containerd (1.6, 1.7, 2.x) puts {"image": ref, ...} under info["info"]."""
    raw = info.get("info")
    if not raw:
        return ""
    try:
        doc = json.loads(raw)
    except ValueError:
        return ""
    value = doc.get("image") if isinstance(doc, dict) else None
    return value if isinstance(value, str) else ""


def _statvfs(host_root: str, mountpoint: str) -> tuple[int | None, int | None]:
    if not mountpoint:
        return None, None
    path = os.path.join(host_root, mountpoint.lstrip("/")) if host_root else mountpoint
    try:
        st = os.statvfs(path)
    except OSError:
        return None, None
    return st.f_blocks * st.f_frsize, st.f_bavail * st.f_frsize


def _capacity_dir_statvfs(
    directory: str, host_root: str, mountpoint: str, image_used_bytes: int
) -> tuple[int | None, int | None, str]:
    """The image filesystem's capacity and available bytes from statvfs of `directory`,
    unless it can be told to be on another filesystem: then (None, None, why).
    Raises OSError when `directory` cannot be read.

    Two checks, each decisive only when it can say "elsewhere": the device of
    `directory` against that of the ImageFsInfo mountpoint, when that path is
    visible here; and the bytes CRI counts for images against the bytes used on
    the directory's filesystem (the images cannot use more than their filesystem).
    """
    st = os.statvfs(directory)
    device = os.stat(directory).st_dev
    if mountpoint:
        path = os.path.join(host_root, mountpoint.lstrip("/")) if host_root else mountpoint
        try:
            image_device: int | None = os.stat(path).st_dev
        except OSError:
            image_device = None  # not visible from here (the usual case in a pod)
        if image_device is not None and image_device != device:
            return None, None, f"device {_device(device)}, the image filesystem's is {_device(image_device)}"
    fs_used = (st.f_blocks - st.f_bfree) * st.f_frsize
    if image_used_bytes > fs_used:
        return None, None, f"images use {image_used_bytes} bytes, the directory's filesystem only {fs_used} in all"
    return st.f_blocks * st.f_frsize, st.f_bavail * st.f_frsize, ""


def _device(device: int) -> str:
    return f"{os.major(device)}:{os.minor(device)}"


def _image_order(image: ImageFacts) -> tuple[str, tuple[str, ...], tuple[str, ...]]:
    return (image.image_id, image.repo_tags, image.repo_digests)


def _pods(sandboxes: Iterable[cri_pb.PodSandbox]) -> Iterator[PodFacts]:
    for sandbox in sandboxes:
        who = pod_identity(sandbox.labels, sandbox.metadata.namespace, sandbox.metadata.name, sandbox.metadata.uid)
        yield PodFacts(
            sandbox_id=sandbox.id,
            namespace=who.namespace,
            name=who.name,
            uid=who.uid,
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
            sandbox_id=container.pod_sandbox_id,
            state=_STATE_NAMES.get(container.state, "unknown"),
            writable_bytes=writable.get(container.id),
        )
