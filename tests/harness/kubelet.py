"""A kubelet stand-in for tests: runs a rendered pod spec on a real containerd through CRI.

It does what the kubelet does for the fields the chart's pod uses, and refuses
what the kubelet would refuse, so a pod that could not start or pass its probes
in a real cluster fails here too:

- volumes: hostPath (its `type` checked: Directory must exist), emptyDir (a
  directory per pod), configMap and secret (their keys written as files from the
  rendered objects), the service account token when automounted; each mounted at
  its mountPath, read-only where the spec says so;
- env: values, and fieldRef (spec.nodeName, metadata.name/namespace,
  status.podIP) as the kubelet fills them in;
- security: pod and container securityContext merged as the kubelet merges them
  (runAsUser/runAsGroup, runAsNonRoot checked against the image's user,
  readOnlyRootFilesystem, capabilities, allowPrivilegeEscalation as no_new_privs,
  seccomp), with the kubelet's default masked and read-only /proc paths;
- resources: CPU shares and quota and the memory limit, as cgroup settings;
- RunPodSandbox, then init containers (each to a successful exit), then
  CreateContainer/StartContainer for each container with its command and args;
- probes: httpGet against the pod IP, a named port resolved against the same
  container's ports only, HTTP or HTTPS (certificate not verified, as the
  kubelet does), success on 200-399.

The CRI messages are declared here (wire-compatible with kubernetes/cri-api
runtime.v1, field numbers from pkg/apis/runtime/v1/api.proto) and compiled at
first use with grpc_tools (a dev dependency) into `.cache/kubelet-cri/`.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import grpc

ROOT = Path(__file__).resolve().parents[2]

CRI_PROTO = """
syntax = "proto3";
package lsetest.kubelet.v1;

message Int64Value { int64 value = 1; }
message KeyValue { string key = 1; string value = 2; }
message ImageSpec { string image = 1; map<string, string> annotations = 2; }
message PodSandboxMetadata { string name = 1; string uid = 2; string namespace = 3; uint32 attempt = 4; }
message DNSConfig { repeated string servers = 1; repeated string searches = 2; repeated string options = 3; }
message PortMapping { int32 protocol = 1; int32 container_port = 2; int32 host_port = 3; string host_ip = 4; }
message NamespaceOption { int32 network = 1; int32 pid = 2; int32 ipc = 3; string target_id = 4; }
message SecurityProfile { int32 profile_type = 1; string localhost_ref = 2; }
message Capability { repeated string add_capabilities = 1; repeated string drop_capabilities = 2; }
message LinuxSandboxSecurityContext {
  NamespaceOption namespace_options = 1;
  Int64Value run_as_user = 3;
  bool readonly_rootfs = 4;
  repeated int64 supplemental_groups = 5;
  bool privileged = 6;
  string seccomp_profile_path = 7;
  Int64Value run_as_group = 8;
  SecurityProfile seccomp = 9;
}
message LinuxPodSandboxConfig {
  string cgroup_parent = 1;
  LinuxSandboxSecurityContext security_context = 2;
  map<string, string> sysctls = 3;
}
message PodSandboxConfig {
  PodSandboxMetadata metadata = 1;
  string hostname = 2;
  string log_directory = 3;
  DNSConfig dns_config = 4;
  repeated PortMapping port_mappings = 5;
  map<string, string> labels = 6;
  map<string, string> annotations = 7;
  LinuxPodSandboxConfig linux = 8;
}
message ContainerMetadata { string name = 1; uint32 attempt = 2; }
message Mount {
  string container_path = 1;
  string host_path = 2;
  bool readonly = 3;
  bool selinux_relabel = 4;
  int32 propagation = 5;
}
message LinuxContainerSecurityContext {
  Capability capabilities = 1;
  bool privileged = 2;
  NamespaceOption namespace_options = 3;
  Int64Value run_as_user = 5;
  string run_as_username = 6;
  bool readonly_rootfs = 7;
  repeated int64 supplemental_groups = 8;
  string seccomp_profile_path = 10;
  bool no_new_privs = 11;
  Int64Value run_as_group = 12;
  repeated string masked_paths = 13;
  repeated string readonly_paths = 14;
  SecurityProfile seccomp = 15;
}
message LinuxContainerResources {
  int64 cpu_period = 1;
  int64 cpu_quota = 2;
  int64 cpu_shares = 3;
  int64 memory_limit_in_bytes = 4;
  int64 oom_score_adj = 5;
}
message LinuxContainerConfig {
  LinuxContainerResources resources = 1;
  LinuxContainerSecurityContext security_context = 2;
}
message ContainerConfig {
  ContainerMetadata metadata = 1;
  ImageSpec image = 2;
  repeated string command = 3;
  repeated string args = 4;
  string working_dir = 5;
  repeated KeyValue envs = 6;
  repeated Mount mounts = 7;
  map<string, string> labels = 9;
  map<string, string> annotations = 10;
  string log_path = 11;
  LinuxContainerConfig linux = 15;
}
message RunPodSandboxRequest { PodSandboxConfig config = 1; string runtime_handler = 2; }
message RunPodSandboxResponse { string pod_sandbox_id = 1; }
message CreateContainerRequest {
  string pod_sandbox_id = 1;
  ContainerConfig config = 2;
  PodSandboxConfig sandbox_config = 3;
}
message CreateContainerResponse { string container_id = 1; }
message StartContainerRequest { string container_id = 1; }
message StopPodSandboxRequest { string pod_sandbox_id = 1; }
message RemovePodSandboxRequest { string pod_sandbox_id = 1; }
message Empty {}
message PodSandboxStatusRequest { string pod_sandbox_id = 1; bool verbose = 2; }
message PodSandboxNetworkStatus { string ip = 1; }
message PodSandboxStatus {
  string id = 1;
  PodSandboxMetadata metadata = 2;
  int32 state = 3;
  PodSandboxNetworkStatus network = 5;
}
message PodSandboxStatusResponse { PodSandboxStatus status = 1; map<string, string> info = 2; }
message ContainerStatusRequest { string container_id = 1; bool verbose = 2; }
message ContainerStatus {
  string id = 1;
  ContainerMetadata metadata = 2;
  int32 state = 3;
  int64 finished_at = 6;
  int32 exit_code = 7;
  string reason = 10;
  string message = 11;
}
message ContainerStatusResponse { ContainerStatus status = 1; map<string, string> info = 2; }
message ExecSyncRequest { string container_id = 1; repeated string cmd = 2; int64 timeout = 3; }
message ExecSyncResponse { bytes stdout = 1; bytes stderr = 2; int32 exit_code = 3; }
message ImageStatusRequest { ImageSpec image = 1; bool verbose = 2; }
message Image {
  string id = 1;
  repeated string repo_tags = 2;
  Int64Value uid = 5;
  string username = 6;
}
message ImageStatusResponse { Image image = 1; map<string, string> info = 2; }
"""

_RUNTIME = "/runtime.v1.RuntimeService/"
_IMAGE = "/runtime.v1.ImageService/"
# runtime.v1 enum values, as numbers (the messages above declare them int32).
NAMESPACE_POD, NAMESPACE_CONTAINER = 0, 1
PROFILE_RUNTIME_DEFAULT, PROFILE_UNCONFINED, PROFILE_LOCALHOST = 0, 1, 2
CONTAINER_RUNNING, CONTAINER_EXITED = 1, 2
# The kubelet's defaults for a non-privileged container with procMount Default
# (pkg/securitycontext: DefaultProcMountMaskedPaths / ReadonlyPaths).
MASKED_PATHS = (
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
)
READONLY_PATHS = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")
SERVICE_ACCOUNT_PATH = "/var/run/secrets/kubernetes.io/serviceaccount"


@cache
def cri() -> ModuleType:
    """The CRI message module, compiled from CRI_PROTO once (cached by its text)."""
    from grpc_tools import protoc

    key = hashlib.sha256(CRI_PROTO.encode()).hexdigest()[:12]
    out = ROOT / ".cache" / "kubelet-cri" / key
    module_path = out / "kubelet_cri_pb2.py"
    if not module_path.exists():
        out.mkdir(parents=True, exist_ok=True)
        (out / "kubelet_cri.proto").write_text(CRI_PROTO)
        if protoc.main(["grpc_tools.protoc", f"-I{out}", f"--python_out={out}", str(out / "kubelet_cri.proto")]) != 0:
            raise RuntimeError("protoc failed on the kubelet stand-in's CRI messages")
    name = f"lse_kubelet_cri_{key}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, module_path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


class PodFailedError(RuntimeError):
    """The kubelet would not start this pod, or it did not become ready; the message says why."""


@dataclass(frozen=True)
class Release:
    """The objects a chart rendered, by kind."""

    docs: list[dict[str, Any]]

    def one(self, kind: str) -> dict[str, Any]:
        (doc,) = [d for d in self.docs if d["kind"] == kind]
        return doc

    def named(self, kind: str, name: str) -> dict[str, Any]:
        (doc,) = [d for d in self.docs if d["kind"] == kind and d["metadata"]["name"] == name]
        return doc

    def pod_template(self, workload: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The pod template of `workload` (default: the chart's one DaemonSet)."""
        return dict((workload or self.one("DaemonSet"))["spec"]["template"])


@dataclass
class RunningPod:
    name: str
    namespace: str
    uid: str
    sandbox_id: str
    ip: str
    spec: dict[str, Any]
    container_ids: dict[str, str] = field(default_factory=dict)
    volume_dirs: dict[str, Path] = field(default_factory=dict)


@dataclass(frozen=True)
class ProbeResult:
    ok: bool
    detail: str


@dataclass(frozen=True)
class KubeApiAccess:
    """What the kubelet gives a pod that talks to the API: the service's address and the token files."""

    host: str
    port: int
    ca_pem: bytes
    token: str = "stand-in-service-account-token"


def _merged_security(pod_spec: Mapping[str, Any], container: Mapping[str, Any]) -> dict[str, Any]:
    """Container securityContext over the pod's, for the fields both may set (as the kubelet does)."""
    pod = pod_spec.get("securityContext") or {}
    own = container.get("securityContext") or {}
    merged = {k: pod[k] for k in ("runAsUser", "runAsGroup", "runAsNonRoot", "seccompProfile") if k in pod}
    merged.update(own)
    return merged


def _profile(pb: Any, profile: Mapping[str, Any] | None) -> tuple[Any, str]:
    """CRI SecurityProfile and the deprecated path string for a seccompProfile (none: Unconfined)."""
    kind = (profile or {}).get("type", "Unconfined")
    if kind == "RuntimeDefault":
        return pb.SecurityProfile(profile_type=PROFILE_RUNTIME_DEFAULT), "runtime/default"
    if kind == "Localhost":
        ref = profile["localhostProfile"]  # type: ignore[index]
        return pb.SecurityProfile(profile_type=PROFILE_LOCALHOST, localhost_ref=ref), f"localhost/{ref}"
    return pb.SecurityProfile(profile_type=PROFILE_UNCONFINED), "unconfined"


class Kubelet:
    """Runs rendered pods on one containerd, as a node's kubelet named `node_name` would."""

    def __init__(
        self,
        endpoint: str,
        node_name: str,
        workdir: Path,
        kube_api: KubeApiAccess | None = None,
        timeout: float = 60,
        runtime_pid: Callable[[], int] | None = None,
    ) -> None:
        """`runtime_pid`: the runtime's process, when it runs in a mount namespace of its
        own: hostPaths are then checked as the runtime sees them."""
        self.pb = cri()
        self.runtime_pid = runtime_pid
        self.created_host_paths: list[Path] = []  # DirectoryOrCreate hostPaths it made
        self._channel = grpc.insecure_channel(endpoint)
        self.node_name = node_name
        self.workdir = workdir
        self.kube_api = kube_api
        self._timeout = timeout

    def close(self) -> None:
        self._channel.close()

    def reconnect(self, endpoint: str) -> None:
        """A new channel after the runtime restarted, as the kubelet redials."""
        self._channel.close()
        self._channel = grpc.insecure_channel(endpoint)

    def call(self, path: str, request: Any, response_type: Any, timeout: float | None = None) -> Any:
        method = self._channel.unary_unary(
            path, request_serializer=type(request).SerializeToString, response_deserializer=response_type.FromString
        )
        return method(request, timeout=timeout or self._timeout)

    # Volumes -----------------------------------------------------------------

    def _volume_dirs(self, release: Release, pod: dict[str, Any], uid: str) -> dict[str, Path]:
        """Every volume of the pod as a host path (files written where the kubelet writes them)."""
        spec = pod["spec"]
        base = self.workdir / "pods" / uid / "volumes"
        dirs: dict[str, Path] = {}
        for volume in spec.get("volumes", []):
            name = volume["name"]
            if "hostPath" in volume:
                host = Path(volume["hostPath"]["path"])
                kind = volume["hostPath"].get("type", "")
                found = self._file_type(host)
                wanted = {"Directory": "directory", "Socket": "socket", "File": "regular file"}.get(kind)
                if wanted and found != wanted:
                    raise PodFailedError(
                        f"FailedMount: volume {name}: hostPath type check failed: {host} is not a {wanted} ({found})"
                    )
                if kind == "DirectoryOrCreate" and found == "missing":
                    # As the kubelet makes it: 0755, root's. Left on the node, as a real one is.
                    self._node_command(["mkdir", "-m", "0755", "-p", str(host)])
                    self.created_host_paths.append(host)
                dirs[name] = host
            elif "emptyDir" in volume:
                path = base / "empty-dir" / name
                path.mkdir(parents=True)
                path.chmod(0o777)  # the kubelet makes emptyDirs world-writable
                dirs[name] = path
            elif "configMap" in volume:
                config_map = release.named("ConfigMap", volume["configMap"]["name"])
                files = {k: v.encode() for k, v in (config_map.get("data") or {}).items()}
                dirs[name] = self._projected(base / "configmap" / name, files, volume["configMap"])
            elif "secret" in volume:
                secret = release.named("Secret", volume["secret"]["secretName"])
                files = {k: base64.b64decode(v) for k, v in (secret.get("data") or {}).items()}
                files.update({k: v.encode() for k, v in (secret.get("stringData") or {}).items()})
                dirs[name] = self._projected(base / "secret" / name, files, volume["secret"])
            else:
                raise PodFailedError(f"volume {name}: this kubelet stand-in does not project {sorted(volume)}")
        if self._automount(release, spec):
            api = self.kube_api
            files = {
                "token": (api.token if api else "stand-in-service-account-token").encode(),
                "ca.crt": api.ca_pem if api else b"",
                "namespace": pod["metadata"]["namespace"].encode(),
            }
            dirs["kube-api-access"] = self._projected(base / "projected" / "kube-api-access", files, {})
        return dirs

    def _node_command(self, command: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
        """A command on the node's filesystem as the runtime sees it."""
        if self.runtime_pid:
            command = ["nsenter", "-t", str(self.runtime_pid()), "-m", *command]
        return subprocess.run(command, capture_output=True, text=True, check=check)

    def _file_type(self, path: Path) -> str:
        """`stat -c %F` of a node path, as the runtime sees it ("missing" if absent)."""
        result = self._node_command(["stat", "-L", "-c", "%F", str(path)], check=False)
        return result.stdout.strip() if result.returncode == 0 else "missing"

    @staticmethod
    def _automount(release: Release, spec: Mapping[str, Any]) -> bool:
        if "automountServiceAccountToken" in spec:
            return bool(spec["automountServiceAccountToken"])
        name = spec.get("serviceAccountName", "default")
        accounts = [d for d in release.docs if d["kind"] == "ServiceAccount" and d["metadata"]["name"] == name]
        return bool(accounts[0].get("automountServiceAccountToken", True)) if accounts else True

    @staticmethod
    def _projected(path: Path, files: Mapping[str, bytes], source: Mapping[str, Any]) -> Path:
        path.mkdir(parents=True)
        mode = int(source.get("defaultMode", 0o644))
        items = {i["key"]: i["path"] for i in source.get("items", [])}
        for key, content in files.items():
            if items and key not in items:
                continue
            target = path / items.get(key, key)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content)
            target.chmod(mode)
        path.chmod(0o755)
        return path

    # Containers --------------------------------------------------------------

    def _env(self, container: Mapping[str, Any], pod: Mapping[str, Any], ip: str) -> list[Any]:
        fields = {
            "spec.nodeName": self.node_name,
            "metadata.name": pod["metadata"]["name"],
            "metadata.namespace": pod["metadata"]["namespace"],
            "metadata.uid": pod["metadata"]["uid"],
            "status.podIP": ip,
            "spec.serviceAccountName": pod["spec"].get("serviceAccountName", "default"),
        }
        env: dict[str, str] = {}
        if self.kube_api:
            # The kubelet gives every pod the `kubernetes` service's address.
            env["KUBERNETES_SERVICE_HOST"] = self.kube_api.host
            env["KUBERNETES_SERVICE_PORT"] = str(self.kube_api.port)
        for item in container.get("env", []):
            if "value" in item:
                env[item["name"]] = str(item["value"])
            elif "fieldRef" in (item.get("valueFrom") or {}):
                path = item["valueFrom"]["fieldRef"]["fieldPath"]
                if path not in fields:
                    raise PodFailedError(
                        f"CreateContainerConfigError: env {item['name']}: unsupported fieldPath {path}"
                    )
                env[item["name"]] = fields[path]
            else:
                raise PodFailedError(f"env {item['name']}: this kubelet stand-in cannot resolve {item}")
        return [self.pb.KeyValue(key=k, value=v) for k, v in env.items()]

    def _image_user(self, image: str) -> tuple[int | None, str]:
        status = self.call(
            _IMAGE + "ImageStatus",
            self.pb.ImageStatusRequest(image=self.pb.ImageSpec(image=image)),
            self.pb.ImageStatusResponse,
        )
        if not status.image.id:
            raise PodFailedError(f"ErrImageNeverPull/ImagePullBackOff: {image} is not on the node")
        uid = status.image.uid.value if status.image.HasField("uid") else None
        return uid, status.image.username

    def _security(self, pod_spec: Mapping[str, Any], container: Mapping[str, Any]) -> Any:
        pb = self.pb
        security = _merged_security(pod_spec, container)
        uid = security.get("runAsUser")
        if security.get("runAsNonRoot"):
            # The kubelet's verifyRunAsNonRoot: against runAsUser, else the image's user.
            image_uid, username = self._image_user(container["image"])
            effective = uid if uid is not None else image_uid
            if effective is None and username:
                raise PodFailedError(
                    f"CreateContainerConfigError: image has non-numeric user ({username}), "
                    "cannot verify user is non-root"
                )
            if not effective:
                raise PodFailedError(
                    "CreateContainerConfigError: container has runAsNonRoot and image will run as root"
                )
        privileged = bool(security.get("privileged"))
        profile, profile_path = _profile(pb, security.get("seccompProfile"))
        capabilities = security.get("capabilities") or {}
        context = pb.LinuxContainerSecurityContext(
            capabilities=pb.Capability(
                add_capabilities=list(capabilities.get("add", [])), drop_capabilities=list(capabilities.get("drop", []))
            ),
            privileged=privileged,
            namespace_options=pb.NamespaceOption(network=NAMESPACE_POD, pid=NAMESPACE_CONTAINER, ipc=NAMESPACE_POD),
            readonly_rootfs=bool(security.get("readOnlyRootFilesystem")),
            # The kubelet sets no_new_privs only when allowPrivilegeEscalation is false.
            no_new_privs=security.get("allowPrivilegeEscalation") is False,
            seccomp=profile,
            seccomp_profile_path=profile_path,
            supplemental_groups=list((pod_spec.get("securityContext") or {}).get("supplementalGroups", [])),
        )
        if uid is not None:
            context.run_as_user.value = int(uid)
        if "runAsGroup" in security:
            context.run_as_group.value = int(security["runAsGroup"])
        if not privileged:
            context.masked_paths.extend(MASKED_PATHS)
            context.readonly_paths.extend(READONLY_PATHS)
        return context

    def _resources(self, container: Mapping[str, Any]) -> Any:
        """The cgroup settings the kubelet derives from requests and limits (CPU shares from
        the request, a CFS quota and the memory limit from the limits): a pod that outgrows
        its memory limit is OOM-killed here as there."""
        resources = container.get("resources") or {}
        requests, limits = resources.get("requests") or {}, resources.get("limits") or {}
        out = self.pb.LinuxContainerResources(cpu_period=100_000)
        cpu_request = requests.get("cpu", limits.get("cpu"))
        out.cpu_shares = max(2, millicores(cpu_request) * 1024 // 1000) if cpu_request else 2
        if "cpu" in limits:
            out.cpu_quota = max(1000, millicores(limits["cpu"]) * 100_000 // 1000)
        if "memory" in limits:
            out.memory_limit_in_bytes = quantity_bytes(limits["memory"])
        return out

    def _mounts(self, container: Mapping[str, Any], dirs: Mapping[str, Path], automount: bool) -> list[Any]:
        mounts = []
        for m in container.get("volumeMounts", []):
            if m["name"] not in dirs:
                raise PodFailedError(f"CreateContainerConfigError: volumeMount {m['name']} names no volume")
            host = dirs[m["name"]]
            if m.get("subPath"):
                host = host / m["subPath"]
            mounts.append(
                self.pb.Mount(container_path=m["mountPath"], host_path=str(host), readonly=bool(m.get("readOnly")))
            )
        if automount and "kube-api-access" in dirs:
            mounts.append(
                self.pb.Mount(
                    container_path=SERVICE_ACCOUNT_PATH, host_path=str(dirs["kube-api-access"]), readonly=True
                )
            )
        return mounts

    # Pods --------------------------------------------------------------------

    def run_pod(
        self, release: Release, name: str | None = None, workload: Mapping[str, Any] | None = None
    ) -> RunningPod:
        """RunPodSandbox, then CreateContainer and StartContainer for each container, in order,
        for a pod of `workload` (default: the chart's DaemonSet)."""
        pb = self.pb
        owner = workload or release.one("DaemonSet")
        template = release.pod_template(owner)
        namespace = owner["metadata"]["namespace"]
        name = name or f"{owner['metadata']['name']}-{uuid.uuid4().hex[:5]}"
        uid = str(uuid.uuid4())
        spec = template["spec"]
        pod = {"metadata": {"name": name, "namespace": namespace, "uid": uid}, "spec": spec}
        dirs = self._volume_dirs(release, pod, uid)
        labels = {
            **template["metadata"].get("labels", {}),
            "io.kubernetes.pod.name": name,
            "io.kubernetes.pod.namespace": namespace,
            "io.kubernetes.pod.uid": uid,
        }
        pod_security = spec.get("securityContext") or {}
        sandbox_profile, sandbox_profile_path = _profile(pb, pod_security.get("seccompProfile"))
        sandbox_security = pb.LinuxSandboxSecurityContext(
            namespace_options=pb.NamespaceOption(network=NAMESPACE_POD, pid=NAMESPACE_CONTAINER, ipc=NAMESPACE_POD),
            seccomp=sandbox_profile,
            seccomp_profile_path=sandbox_profile_path,
        )
        if "runAsUser" in pod_security:
            sandbox_security.run_as_user.value = int(pod_security["runAsUser"])
        if "runAsGroup" in pod_security:
            sandbox_security.run_as_group.value = int(pod_security["runAsGroup"])
        log_dir = self.workdir / "logs" / f"{namespace}_{name}_{uid}"
        config = pb.PodSandboxConfig(
            metadata=pb.PodSandboxMetadata(name=name, namespace=namespace, uid=uid),
            hostname=name[:63],
            log_directory=str(log_dir),
            labels=labels,
            annotations=template["metadata"].get("annotations", {}),
            linux=pb.LinuxPodSandboxConfig(security_context=sandbox_security),
        )
        sandbox_id = self.call(
            _RUNTIME + "RunPodSandbox", pb.RunPodSandboxRequest(config=config), pb.RunPodSandboxResponse
        ).pod_sandbox_id
        status = self.call(
            _RUNTIME + "PodSandboxStatus",
            pb.PodSandboxStatusRequest(pod_sandbox_id=sandbox_id),
            pb.PodSandboxStatusResponse,
        )
        running = RunningPod(name, namespace, uid, sandbox_id, status.status.network.ip, spec, volume_dirs=dirs)
        automount = self._automount(release, spec)
        try:
            # Init containers first, one at a time, each to a successful exit; then the others.
            init = [(c, True) for c in spec.get("initContainers", [])]
            for container, is_init in [*init, *((c, False) for c in spec["containers"])]:
                container_config = pb.ContainerConfig(
                    metadata=pb.ContainerMetadata(name=container["name"]),
                    image=pb.ImageSpec(image=container["image"]),
                    command=list(container.get("command", [])),
                    args=[str(a) for a in container.get("args", [])],
                    working_dir=container.get("workingDir", ""),
                    envs=self._env(container, pod, running.ip),
                    mounts=self._mounts(container, dirs, automount),
                    labels={
                        "io.kubernetes.pod.name": name,
                        "io.kubernetes.pod.namespace": namespace,
                        "io.kubernetes.pod.uid": uid,
                        "io.kubernetes.container.name": container["name"],
                    },
                    log_path=f"{container['name']}/0.log",
                    linux=pb.LinuxContainerConfig(
                        resources=self._resources(container), security_context=self._security(spec, container)
                    ),
                )
                try:
                    container_id = self.call(
                        _RUNTIME + "CreateContainer",
                        pb.CreateContainerRequest(
                            pod_sandbox_id=sandbox_id, config=container_config, sandbox_config=config
                        ),
                        pb.CreateContainerResponse,
                    ).container_id
                except grpc.RpcError as exc:
                    raise PodFailedError(f"CreateContainerError: {container['name']}: {exc.details()}") from None
                running.container_ids[container["name"]] = container_id
                try:
                    self.call(
                        _RUNTIME + "StartContainer", pb.StartContainerRequest(container_id=container_id), pb.Empty
                    )
                except grpc.RpcError as exc:
                    raise PodFailedError(f"RunContainerError: {container['name']}: {exc.details()}") from None
                if is_init:
                    self._wait_exited(running, container["name"])
        except BaseException:
            self.remove_pod(running)
            raise
        return running

    def _wait_exited(self, pod: RunningPod, name: str, timeout: float = 60) -> None:
        """An init container must exit 0 before the pod goes on (Init:Error otherwise)."""
        deadline = time.monotonic() + timeout
        while True:
            status, _ = self.container_status(pod, name)
            if status.state == CONTAINER_EXITED:
                if status.exit_code != 0:
                    raise PodFailedError(
                        f"Init:Error: {name} exited {status.exit_code} ({status.reason}); log:\n{self.logs(pod, name)}"
                    )
                return
            if time.monotonic() > deadline:
                raise PodFailedError(f"init container {name} still running after {timeout}s")
            time.sleep(0.2)

    def remove_pod(self, pod: RunningPod) -> None:
        pb = self.pb
        self.call(_RUNTIME + "StopPodSandbox", pb.StopPodSandboxRequest(pod_sandbox_id=pod.sandbox_id), pb.Empty)
        self.call(_RUNTIME + "RemovePodSandbox", pb.RemovePodSandboxRequest(pod_sandbox_id=pod.sandbox_id), pb.Empty)

    def container_status(self, pod: RunningPod, container: str) -> tuple[Any, dict[str, Any]]:
        """CRI ContainerStatus and its verbose info (pid, runtime spec) as JSON."""
        response = self.call(
            _RUNTIME + "ContainerStatus",
            self.pb.ContainerStatusRequest(container_id=pod.container_ids[container], verbose=True),
            self.pb.ContainerStatusResponse,
        )
        return response.status, json.loads(response.info.get("info", "{}"))

    def pid(self, pod: RunningPod, container: str) -> int:
        return int(self.container_status(pod, container)[1]["pid"])

    def exec_sync(self, pod: RunningPod, container: str, cmd: list[str], timeout: int = 60) -> tuple[int, str, str]:
        response = self.call(
            _RUNTIME + "ExecSync",
            self.pb.ExecSyncRequest(container_id=pod.container_ids[container], cmd=cmd, timeout=timeout),
            self.pb.ExecSyncResponse,
            timeout=timeout + 10,
        )
        return int(response.exit_code), response.stdout.decode(), response.stderr.decode()

    def logs(self, pod: RunningPod, container: str) -> str:
        path = self.workdir / "logs" / f"{pod.namespace}_{pod.name}_{pod.uid}" / container / "0.log"
        try:
            return path.read_text(errors="replace")[-4000:]
        except OSError as exc:
            return f"(no log: {exc})"

    # Probes ------------------------------------------------------------------

    def probe(self, pod: RunningPod, container_name: str, kind: str) -> ProbeResult:
        """One run of the container's `kind` probe (livenessProbe, readinessProbe), as the kubelet runs it."""
        (container,) = [c for c in pod.spec["containers"] if c["name"] == container_name]
        probe = container.get(kind)
        if probe is None:
            return ProbeResult(True, "no probe")  # the kubelet counts a missing probe as success
        get = probe.get("httpGet")
        if get is None:
            raise PodFailedError(f"{kind}: this kubelet stand-in runs httpGet probes only: {probe}")
        port = get["port"]
        if isinstance(port, str) and not port.isdigit():
            # Only the same container's ports (kubelet: findPortByName on the container).
            named = [p["containerPort"] for p in container.get("ports", []) if p.get("name") == port]
            if not named:
                return ProbeResult(False, f"couldn't find port {port!r} in container {container_name}")
            port = named[0]
        scheme = get.get("scheme", "HTTP").lower()
        url = f"{scheme}://{get.get('host') or pod.ip}:{int(port)}{get.get('path', '/')}"
        headers = {h["name"]: h["value"] for h in get.get("httpHeaders", [])}
        headers.setdefault("User-Agent", "kube-probe/1.31")
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # the kubelet does not verify probe certificates
        request = urllib.request.Request(url, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=probe.get("timeoutSeconds", 1), context=context) as response:
                code = response.status
        except urllib.error.HTTPError as exc:
            code = exc.code
        except (OSError, ssl.SSLError) as exc:
            return ProbeResult(False, f"{url}: {exc}")
        return ProbeResult(200 <= code < 400, f"{url}: HTTP {code}")

    def wait_ready(self, pod: RunningPod, timeout: float = 60) -> None:
        """Until every container runs and passes its readiness and liveness probes;
        PodFailedError (with the last probe results and the logs) otherwise."""
        deadline = time.monotonic() + timeout
        last: dict[str, ProbeResult] = {}
        while True:
            ready = True
            for container in pod.spec["containers"]:
                name = container["name"]
                status, _ = self.container_status(pod, name)
                if status.state != CONTAINER_RUNNING:
                    raise PodFailedError(
                        f"container {name} is not running (state {status.state}, exit {status.exit_code}, "
                        f"{status.reason} {status.message}); log:\n{self.logs(pod, name)}"
                    )
                for kind in ("readinessProbe", "livenessProbe"):
                    last[f"{name} {kind}"] = result = self.probe(pod, name, kind)
                    if "couldn't find port" in result.detail:
                        # The spec itself is wrong: every later probe fails the same way.
                        raise PodFailedError(f"pod {pod.name}: {name} {kind}: {result.detail}")
                    ready = ready and result.ok
            if ready:
                return
            if time.monotonic() > deadline:
                logs = "\n".join(f"--- {c['name']}:\n{self.logs(pod, c['name'])}" for c in pod.spec["containers"])
                raise PodFailedError(f"pod {pod.name} not ready in {timeout}s: {last}\n{logs}")
            time.sleep(0.5)


_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
_DECIMAL = {"k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}


def quantity_bytes(quantity: str | int) -> int:
    """A Kubernetes memory quantity (128Mi, 1G, 1048576) in bytes."""
    text = str(quantity)
    for suffix, factor in {**_BINARY, **_DECIMAL}.items():
        if text.endswith(suffix):
            return int(float(text[: -len(suffix)]) * factor)
    return int(float(text))


def millicores(quantity: str | int | float) -> int:
    """A Kubernetes CPU quantity (10m, 0.5, 2) in millicores."""
    text = str(quantity)
    return int(text[:-1]) if text.endswith("m") else int(float(text) * 1000)


def process_status(pid: int) -> dict[str, str]:
    """/proc/<pid>/status as a dict."""
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {k: v.strip() for k, v in (line.split(":", 1) for line in lines if ":" in line)}


def process_mounts(pid: int) -> dict[str, set[str]]:
    """The process's mount points and their per-mount options (from /proc/<pid>/mountinfo)."""
    mounts: dict[str, set[str]] = {}
    for line in Path(f"/proc/{pid}/mountinfo").read_text().splitlines():
        parts = line.split()
        mounts[parts[4].replace("\\040", " ")] = set(parts[5].split(","))
    return mounts


def pod_environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().split("=", 1) for item in raw if b"=" in item)
