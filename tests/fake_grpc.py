"""An in-process gRPC server speaking the CRI and containerd subsets, for unit
tests of the adapter's fault handling (the integration tests use a real containerd)."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc

from exporter._generated import containerd_content_v1_pb2 as content_pb
from exporter._generated import containerd_images_v1_pb2 as images_pb
from exporter._generated import containerd_snapshots_v1_pb2 as snapshots_pb
from exporter._generated import cri_runtime_v1_pb2 as cri_pb
from exporter.config import Config, with_settings
from exporter.core.chain import chain_ids
from exporter.sources.node import RuntimeSource


class FakeRuntime:
    def __init__(self, socket: Path) -> None:
        self.socket = socket
        self.images: dict[str, list[str]] = {}  # image_id -> diff_ids
        self.tags: dict[str, list[str]] = {}
        self.broken_info: set[str] = set()
        self.vanished: set[str] = set()
        self.missing_snapshots: set[str] = set()
        # The snapshotter holding the layers; Usage for any other one fails as containerd's does.
        self.snapshotter = "overlayfs"
        # Lazily pulled layers (stargz, SOCI, nydus): usage 0, labelled remote.
        self.remote_snapshots: set[str] = set()
        # What CRI Status(verbose) puts under info["config"] ("" = no config key), and ImageFsInfo's mountpoint.
        self.status_config: dict[str, Any] = {}
        self.imagefs_mountpoint = ""
        # Pod sandboxes: ID -> the image its verbose PodSandboxStatus names.
        self.sandboxes: dict[str, str] = {}
        # Containers: ID -> (its sandbox's ID, its image ID).
        self.containers: dict[str, tuple[str, str]] = {}
        # containerd image records (their targets) and the content store's blobs.
        self.image_targets: list[str] = []
        self.blobs: dict[str, bytes] = {}
        self.blob_labels: dict[str, dict[str, str]] = {}  # the content store's labels, by digest
        self.failing_reads = 0  # the next N Content/Read calls fail (INTERNAL)
        self.failing_usage: set[str] = set()  # snapshots whose Usage fails (INTERNAL)
        self.failing_stat: set[str] = set()  # snapshots whose Stat fails (INTERNAL)
        self.chunk_delay = 0.0  # seconds before each Content/Read chunk (a slow disk)
        self.content_reads_active = 0  # Content/Read calls not ended (nor cancelled) yet
        self._read_lock = threading.Lock()
        self.delay = 0.0
        self.calls: Counter[str] = Counter()
        self.metadata: list[dict[str, str]] = []
        # CRI-O's shapes: Version says "cri-o", verbose info has labels and no
        # chainID, and ImageStatus carries the manifest annotations.
        self.runtime_name = "fake"
        self.annotations: dict[str, dict[str, str]] = {}
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        handlers: dict[str, dict[str, tuple[Any, Any]]] = {
            "runtime.v1.RuntimeService": {
                "Version": (cri_pb.VersionRequest, self.version),
                "Status": (cri_pb.StatusRequest, self.status),
                "ListPodSandbox": (cri_pb.ListPodSandboxRequest, self.list_sandboxes),
                "PodSandboxStatus": (cri_pb.PodSandboxStatusRequest, self.sandbox_status),
                "ListContainers": (cri_pb.ListContainersRequest, self.list_containers),
                "ListContainerStats": (
                    cri_pb.ListContainerStatsRequest,
                    lambda r, c: cri_pb.ListContainerStatsResponse(),
                ),
                "RemoveContainer": (cri_pb.VersionRequest, self.version),  # must never be reached
            },
            "runtime.v1.ImageService": {
                "ListImages": (cri_pb.ListImagesRequest, self.list_images),
                "ImageStatus": (cri_pb.ImageStatusRequest, self.image_status),
                "ImageFsInfo": (cri_pb.ImageFsInfoRequest, self.imagefs),
            },
            "containerd.services.images.v1.Images": {
                "List": (images_pb.ListImagesRequest, self.image_records),
            },
            "containerd.services.snapshots.v1.Snapshots": {
                "Usage": (snapshots_pb.UsageRequest, self.usage),
                "Stat": (snapshots_pb.StatSnapshotRequest, self.stat),
            },
        }
        generic = []
        for service, methods in handlers.items():
            table = {
                name: grpc.unary_unary_rpc_method_handler(
                    self._wrap(service, name, fn),
                    request_deserializer=req.FromString,
                    response_serializer=lambda m: m.SerializeToString(),
                )
                for name, (req, fn) in methods.items()
            }
            generic.append(grpc.method_handlers_generic_handler(service, table))
        stream = {
            "List": grpc.unary_stream_rpc_method_handler(
                self._wrap("content", "List", self.content_list),
                request_deserializer=content_pb.ListContentRequest.FromString,
                response_serializer=lambda m: m.SerializeToString(),
            ),
            "Read": grpc.unary_stream_rpc_method_handler(
                self._wrap("content", "Read", self.content_read),
                request_deserializer=content_pb.ReadContentRequest.FromString,
                response_serializer=lambda m: m.SerializeToString(),
            ),
        }
        # Content/Write streams both ways in containerd. It must never be reached;
        # it is here so that a call which slipped past the guard would be counted.
        stream["Write"] = grpc.stream_stream_rpc_method_handler(
            self._wrap("content", "Write", lambda requests, c: (content_pb.ReadContentResponse() for _ in requests)),
            request_deserializer=content_pb.ReadContentRequest.FromString,
            response_serializer=lambda m: m.SerializeToString(),
        )
        generic.append(grpc.method_handlers_generic_handler("containerd.services.content.v1.Content", stream))
        snapshot_list = grpc.unary_stream_rpc_method_handler(
            self._wrap("containerd.services.snapshots.v1.Snapshots", "List", self.snapshot_list),
            request_deserializer=snapshots_pb.ListSnapshotsRequest.FromString,
            response_serializer=lambda m: m.SerializeToString(),
        )
        generic.append(
            grpc.method_handlers_generic_handler("containerd.services.snapshots.v1.Snapshots", {"List": snapshot_list})
        )
        self._server.add_generic_rpc_handlers(tuple(generic))
        self._server.add_insecure_port(f"unix://{socket}")

    def _wrap(self, service: str, name: str, fn: Any) -> Any:
        def handler(request: Any, context: grpc.ServicerContext) -> Any:
            self.calls[f"{service}/{name}"] += 1
            self.metadata.append({k: str(v) for k, v in context.invocation_metadata()})
            if self.delay:
                time.sleep(self.delay)
            return fn(request, context)

        return handler

    def start(self) -> FakeRuntime:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop(grace=None)

    def version(self, request: Any, context: Any) -> cri_pb.VersionResponse:
        return cri_pb.VersionResponse(runtime_name=self.runtime_name, runtime_version="0.0.1", runtime_api_version="v1")

    def list_images(self, request: Any, context: Any) -> cri_pb.ListImagesResponse:
        return cri_pb.ListImagesResponse(
            images=[cri_pb.Image(id=i, repo_tags=self.tags.get(i, []), size=1) for i in self.images]
        )

    def image_status(self, request: cri_pb.ImageStatusRequest, context: Any) -> cri_pb.ImageStatusResponse:
        image_id = request.image.image
        if image_id in self.vanished or image_id not in self.images:
            return cri_pb.ImageStatusResponse()
        info = (
            "{broken"
            if image_id in self.broken_info
            else json.dumps(
                {"labels": {"a": "b"}, "imageSpec": {"rootfs": {"type": "layers", "diff_ids": self.images[image_id]}}}
            )
        )
        spec = cri_pb.ImageSpec(image=image_id, annotations=self.annotations.get(image_id, {}))
        return cri_pb.ImageStatusResponse(image=cri_pb.Image(id=image_id, spec=spec), info={"info": info})

    def status(self, request: cri_pb.StatusRequest, context: Any) -> cri_pb.StatusResponse:
        info = {"config": json.dumps(self.status_config)} if self.status_config and request.verbose else {}
        return cri_pb.StatusResponse(info=info)

    def imagefs(self, request: Any, context: Any) -> cri_pb.ImageFsInfoResponse:
        if not self.imagefs_mountpoint:
            return cri_pb.ImageFsInfoResponse()
        fs_id = cri_pb.FilesystemIdentifier(mountpoint=self.imagefs_mountpoint)
        return cri_pb.ImageFsInfoResponse(image_filesystems=[cri_pb.FilesystemUsage(fs_id=fs_id)])

    def list_sandboxes(self, request: Any, context: Any) -> cri_pb.ListPodSandboxResponse:
        return cri_pb.ListPodSandboxResponse(
            items=[
                cri_pb.PodSandbox(id=i, metadata=cri_pb.PodSandboxMetadata(name=i, namespace="default", uid=i))
                for i in self.sandboxes
            ]
        )

    def list_containers(self, request: Any, context: Any) -> cri_pb.ListContainersResponse:
        return cri_pb.ListContainersResponse(
            containers=[
                cri_pb.Container(
                    id=i, pod_sandbox_id=sandbox, image_ref=image, metadata=cri_pb.ContainerMetadata(name=i)
                )
                for i, (sandbox, image) in self.containers.items()
            ]
        )

    def sandbox_status(
        self, request: cri_pb.PodSandboxStatusRequest, context: grpc.ServicerContext
    ) -> cri_pb.PodSandboxStatusResponse:
        image = self.sandboxes.get(request.pod_sandbox_id)
        if image is None:
            context.abort(
                grpc.StatusCode.NOT_FOUND, f"an error occurred when try to find sandbox {request.pod_sandbox_id}"
            )
        info = {"info": json.dumps({"pid": 1, "image": image, "snapshotter": self.snapshotter})}
        return cri_pb.PodSandboxStatusResponse(info=info if request.verbose else {})

    def _snapshot_exists(self, snapshotter: str, key: str, context: grpc.ServicerContext) -> None:
        if snapshotter != self.snapshotter:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"snapshotter not loaded: {snapshotter}: invalid argument")
        if key in self.missing_snapshots or key not in self.all_chain_ids():
            context.abort(grpc.StatusCode.NOT_FOUND, f"snapshot {key} does not exist")

    def usage(self, request: snapshots_pb.UsageRequest, context: grpc.ServicerContext) -> snapshots_pb.UsageResponse:
        self._snapshot_exists(request.snapshotter, request.key, context)
        if request.key in self.failing_usage:
            context.abort(grpc.StatusCode.INTERNAL, "failed to compute usage: input/output error")
        if request.key in self.remote_snapshots:
            return snapshots_pb.UsageResponse(size=0, inodes=0)
        return snapshots_pb.UsageResponse(size=100, inodes=1)

    def stat(
        self, request: snapshots_pb.StatSnapshotRequest, context: grpc.ServicerContext
    ) -> snapshots_pb.StatSnapshotResponse:
        self._snapshot_exists(request.snapshotter, request.key, context)
        if request.key in self.failing_stat:
            context.abort(grpc.StatusCode.INTERNAL, "failed to stat: input/output error")
        labels = {"containerd.io/snapshot/remote": "remote snapshot"} if request.key in self.remote_snapshots else {}
        return snapshots_pb.StatSnapshotResponse(
            info=snapshots_pb.Info(name=request.key, kind=snapshots_pb.COMMITTED, labels=labels)
        )

    def snapshot_list(self, request: snapshots_pb.ListSnapshotsRequest, context: grpc.ServicerContext) -> Any:
        """Every committed snapshot (one per chain of the images), named by chain ID, with its parent."""
        parents: dict[str, str] = {}
        for diffs in self.images.values():
            ids = chain_ids(diffs)
            parents.update(zip(ids, ("", *ids[:-1]), strict=True))
        labels = {c: {"containerd.io/snapshot/remote": "remote snapshot"} for c in self.remote_snapshots}
        infos = [
            snapshots_pb.Info(name=c, parent=p, kind=snapshots_pb.COMMITTED, labels=labels.get(c, {}))
            for c, p in sorted(parents.items())
            if c not in self.missing_snapshots
        ]
        return iter([snapshots_pb.ListSnapshotsResponse(info=infos)])

    def image_records(self, request: Any, context: Any) -> images_pb.ListImagesResponse:
        return images_pb.ListImagesResponse(
            images=[images_pb.Image(name=f"image-{n}", target={"digest": d}) for n, d in enumerate(self.image_targets)]
        )

    def content_list(self, request: Any, context: Any) -> Any:
        infos = [
            content_pb.Info(digest=d, size=len(b), labels=self.blob_labels.get(d, {})) for d, b in self.blobs.items()
        ]
        return iter([content_pb.ListContentResponse(info=infos)])

    def content_read(self, request: content_pb.ReadContentRequest, context: grpc.ServicerContext) -> Any:
        if self.failing_reads:
            self.failing_reads -= 1
            context.abort(grpc.StatusCode.INTERNAL, "failed to read content: input/output error")
        data = self.blobs.get(request.digest)
        if data is None:
            context.abort(grpc.StatusCode.NOT_FOUND, f"content digest {request.digest}: not found")
        end = len(data) if request.size <= 0 else min(len(data), request.offset + request.size)
        with self._read_lock:
            self.content_reads_active += 1
        try:
            # containerd answers in chunks of at most 1 MiB; smaller here, to see several.
            for at in range(request.offset, end, 300_000):
                if self.chunk_delay:
                    time.sleep(self.chunk_delay)
                yield content_pb.ReadContentResponse(offset=at, data=data[at : min(at + 300_000, end)])
        finally:
            with self._read_lock:
                self.content_reads_active -= 1

    def all_chain_ids(self) -> set[str]:
        return {c for diffs in self.images.values() for c in chain_ids(diffs)}


def source_for(fake: FakeRuntime, **settings: Any) -> RuntimeSource:
    """The exporter's runtime source, pointed at `fake`, with settings by config file key
    (1 s deadlines unless said)."""
    settings = {"rpc_timeout_seconds": 1.0, "runtime_endpoint": f"unix://{fake.socket}", **settings}
    return RuntimeSource(with_settings(Config(), settings).runtime)
