"""An in-process gRPC server speaking the CRI and containerd subsets, for unit
tests of the adapter's fault handling (the integration tests use a real containerd)."""

from __future__ import annotations

import json
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
from exporter.core.chain import chain_ids
from exporter.sources.node import RuntimeOptions, RuntimeSource


class FakeRuntime:
    def __init__(self, socket: Path) -> None:
        self.socket = socket
        self.images: dict[str, list[str]] = {}  # image_id -> diff_ids
        self.tags: dict[str, list[str]] = {}
        self.broken_info: set[str] = set()
        self.vanished: set[str] = set()
        self.missing_snapshots: set[str] = set()
        self.blobs: dict[str, bytes] = {}  # content store: digest -> bytes (Content.Read)
        self.delay = 0.0
        self.calls: Counter[str] = Counter()
        self.metadata: list[dict[str, str]] = []
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        handlers: dict[str, dict[str, tuple[Any, Any]]] = {
            "runtime.v1.RuntimeService": {
                "Version": (cri_pb.VersionRequest, self.version),
                "Status": (cri_pb.StatusRequest, lambda r, c: cri_pb.StatusResponse()),
                "ListPodSandbox": (cri_pb.ListPodSandboxRequest, lambda r, c: cri_pb.ListPodSandboxResponse()),
                "ListContainers": (cri_pb.ListContainersRequest, lambda r, c: cri_pb.ListContainersResponse()),
                "ListContainerStats": (
                    cri_pb.ListContainerStatsRequest,
                    lambda r, c: cri_pb.ListContainerStatsResponse(),
                ),
                "RemoveContainer": (cri_pb.VersionRequest, self.version),  # must never be reached
            },
            "runtime.v1.ImageService": {
                "ListImages": (cri_pb.ListImagesRequest, self.list_images),
                "ImageStatus": (cri_pb.ImageStatusRequest, self.image_status),
                "ImageFsInfo": (cri_pb.ImageFsInfoRequest, lambda r, c: cri_pb.ImageFsInfoResponse()),
            },
            "containerd.services.images.v1.Images": {
                "List": (images_pb.ListImagesRequest, lambda r, c: images_pb.ListImagesResponse()),
            },
            "containerd.services.snapshots.v1.Snapshots": {
                "Usage": (snapshots_pb.UsageRequest, self.usage),
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
                self._wrap("content", "List", lambda r, c: iter([content_pb.ListContentResponse()])),
                request_deserializer=content_pb.ListContentRequest.FromString,
                response_serializer=lambda m: m.SerializeToString(),
            ),
            "Read": grpc.unary_stream_rpc_method_handler(
                self._wrap("content", "Read", self.read_content),
                request_deserializer=content_pb.ReadContentRequest.FromString,
                response_serializer=lambda m: m.SerializeToString(),
            ),
        }
        generic.append(grpc.method_handlers_generic_handler("containerd.services.content.v1.Content", stream))
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
        return cri_pb.VersionResponse(runtime_name="fake", runtime_version="0.0.1", runtime_api_version="v1")

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
            else json.dumps({"imageSpec": {"rootfs": {"type": "layers", "diff_ids": self.images[image_id]}}})
        )
        return cri_pb.ImageStatusResponse(image=cri_pb.Image(id=image_id), info={"info": info})

    def usage(self, request: snapshots_pb.UsageRequest, context: grpc.ServicerContext) -> snapshots_pb.UsageResponse:
        if request.key in self.missing_snapshots:
            context.abort(grpc.StatusCode.NOT_FOUND, f"snapshot {request.key} does not exist")
        return snapshots_pb.UsageResponse(size=100, inodes=1)

    def read_content(self, request: content_pb.ReadContentRequest, context: grpc.ServicerContext) -> Any:
        data = self.blobs.get(request.digest)
        if data is None:
            context.abort(grpc.StatusCode.NOT_FOUND, f"content digest {request.digest}: not found")
        end = len(data) if request.size <= 0 else min(len(data), request.offset + request.size)
        # containerd answers in chunks of at most 1 MiB; smaller here, to see several.
        return (
            content_pb.ReadContentResponse(offset=at, data=data[at : min(at + 300_000, end)])
            for at in range(request.offset, end, 300_000)
        )

    def all_chain_ids(self) -> set[str]:
        return {c for diffs in self.images.values() for c in chain_ids(diffs)}


def source_for(fake: FakeRuntime, **options: Any) -> RuntimeSource:
    """The exporter's runtime source, pointed at `fake` (1 s deadlines unless said)."""
    options.setdefault("rpc_timeout", 1.0)
    return RuntimeSource(RuntimeOptions(endpoint=f"unix://{fake.socket}", **options))
