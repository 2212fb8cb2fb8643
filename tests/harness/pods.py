"""Create and remove real pods through CRI, as the kubelet would (test-only).

The exporter never makes these calls; the harness has its own channel and its
own message definitions (tests/harness/proto/cri_harness.proto).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc

from tests.harness._generated import cri_harness_pb2 as pb

_RUNTIME = "/runtime.v1.RuntimeService/"
_IMAGE = "/runtime.v1.ImageService/"


@dataclass
class PodHandle:
    namespace: str
    name: str
    uid: str
    sandbox_id: str
    container_ids: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ContainerSpec:
    name: str
    image: str
    command: Sequence[str] = ()  # empty: the image's entrypoint (sleep)


class PodMaker:
    """Runs pods on one containerd through CRI."""

    def __init__(self, endpoint: str, log_dir: str, timeout: float = 60.0) -> None:
        self._channel = grpc.insecure_channel(endpoint)
        self._log_dir = log_dir
        self._timeout = timeout

    def close(self) -> None:
        self._channel.close()

    def _call(self, path: str, request: Any, response_type: Any) -> Any:
        method = self._channel.unary_unary(
            path,
            request_serializer=type(request).SerializeToString,
            response_deserializer=response_type.FromString,
        )
        return method(request, timeout=self._timeout)

    def run_pod(self, namespace: str, name: str, containers: Sequence[ContainerSpec]) -> PodHandle:
        uid = str(uuid.uuid4())
        labels = {
            "io.kubernetes.pod.name": name,
            "io.kubernetes.pod.namespace": namespace,
            "io.kubernetes.pod.uid": uid,
            "app": name,
        }
        config = pb.PodSandboxConfig(
            metadata=pb.PodSandboxMetadata(name=name, namespace=namespace, uid=uid),
            hostname=name[:63],
            log_directory=f"{self._log_dir}/{namespace}_{name}_{uid}",
            labels=labels,
        )
        config.linux.SetInParent()
        sandbox_id = self._call(
            _RUNTIME + "RunPodSandbox", pb.RunPodSandboxRequest(config=config), pb.RunPodSandboxResponse
        ).pod_sandbox_id
        handle = PodHandle(namespace, name, uid, sandbox_id)
        for spec in containers:
            container_labels = {
                "io.kubernetes.pod.name": name,
                "io.kubernetes.pod.namespace": namespace,
                "io.kubernetes.pod.uid": uid,
                "io.kubernetes.container.name": spec.name,
            }
            container_config = pb.ContainerConfig(
                metadata=pb.ContainerMetadata(name=spec.name),
                image=pb.ImageSpec(image=spec.image),
                command=list(spec.command),
                labels=container_labels,
                log_path=f"{spec.name}/0.log",
            )
            container_id = self._call(
                _RUNTIME + "CreateContainer",
                pb.CreateContainerRequest(pod_sandbox_id=sandbox_id, config=container_config, sandbox_config=config),
                pb.CreateContainerResponse,
            ).container_id
            self._call(_RUNTIME + "StartContainer", pb.StartContainerRequest(container_id=container_id), pb.Empty)
            handle.container_ids.append(container_id)
        return handle

    def remove_pod(self, handle: PodHandle) -> None:
        self._call(_RUNTIME + "StopPodSandbox", pb.StopPodSandboxRequest(pod_sandbox_id=handle.sandbox_id), pb.Empty)
        self._call(
            _RUNTIME + "RemovePodSandbox", pb.RemovePodSandboxRequest(pod_sandbox_id=handle.sandbox_id), pb.Empty
        )

    def pull_image(self, ref: str) -> str:
        """Pull through CRI, as the kubelet does; returns the image ID."""
        response = self._call(
            _IMAGE + "PullImage", pb.PullImageRequest(image=pb.ImageSpec(image=ref)), pb.PullImageResponse
        )
        return str(response.image_ref)

    def remove_image(self, ref: str) -> None:
        self._call(_IMAGE + "RemoveImage", pb.RemoveImageRequest(image=pb.ImageSpec(image=ref)), pb.Empty)
