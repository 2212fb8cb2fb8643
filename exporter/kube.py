"""The Kubernetes API adapter: which workload owns each pod on this node.

Watches only this node's pods (fieldSelector spec.nodeName), resumably (list,
then watch from its resourceVersion; relist on 410 Gone; exponential backoff on
errors), and resolves each pod's controlling workload: ReplicaSet -> Deployment,
Job -> CronJob, StatefulSet, DaemonSet, or the bare pod. Owner lookups are
cached. Nothing here runs per scrape. Without API access the exporter runs as
before: this says once that attribution is off, and keeps quietly retrying.

The `kubernetes` client is imported only when attribution is enabled (its
ApiClient costs about 20 MiB of RSS; see `_Api` for why no more).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from exporter.facts import Workload

logger = logging.getLogger(__name__)

PodKey = tuple[str, str]
_WATCH_SECONDS = 300
_FORBIDDEN_RETRY_SECONDS = 600.0


class KubeError(Exception):
    """An API call failed; `status` is the HTTP status (0 when unreachable)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def controller_of(metadata: Mapping[str, Any]) -> tuple[str, str] | None:
    """The (kind, name) of the controlling owner reference, if any."""
    for ref in metadata.get("ownerReferences") or []:
        if isinstance(ref, dict) and ref.get("controller"):
            return str(ref.get("kind", "")), str(ref.get("name", ""))
    return None


class _Api:
    """The few raw calls attribution and the report need, through the kubernetes
    client's ApiClient: its kubeconfig and in-cluster loading, auth and
    connection pool. The generated per-group classes (CoreV1Api and friends) are
    not used: CoreV1Api alone is 63,000 lines of pydantic signatures, about
    24 MiB of RSS in a process that reads four kinds of URL (benchmarks/)."""

    def __init__(self, kubeconfig: str = "") -> None:
        from kubernetes import client, config

        if kubeconfig:
            config.load_kube_config(config_file=kubeconfig)  # type: ignore[no-untyped-call]
        else:
            try:
                config.load_incluster_config()  # type: ignore[no-untyped-call]
            except config.ConfigException:
                config.load_kube_config()  # type: ignore[no-untyped-call]
        self._client = client.ApiClient()

    def _get(
        self,
        path: str,
        path_params: Mapping[str, str] | None = None,
        query: Sequence[tuple[str, Any]] = (),
        timeout: float | tuple[float, float] = 30,
        accept: str = "application/json",
    ) -> Any:
        """GET an API path; the raw urllib3 response, or KubeError."""
        try:
            method, url, headers, body, post = self._client.param_serialize(
                "GET",
                path,
                path_params=dict(path_params or {}),
                query_params=list(query),
                header_params={"Accept": accept},
                auth_settings=["BearerToken"],
            )
            response = self._client.call_api(method, url, headers, body, post, _request_timeout=timeout)
        except Exception as exc:  # urllib3 connection errors, bad credentials and the like
            raise KubeError(0, f"{type(exc).__name__}: {exc}") from None
        if not 200 <= response.status <= 299:
            response.read()  # type: ignore[no-untyped-call]  # the Status body: the connection returns clean
            raise KubeError(int(response.status), f"{response.status} {response.reason}")
        return response.response

    def _get_json(self, path: str, path_params: Mapping[str, str] | None = None, **kw: Any) -> dict[str, Any]:
        return dict(json.loads(self._get(path, path_params, **kw).data))

    def list_pods(self, node: str) -> dict[str, Any]:
        return self._get_json("/api/v1/pods", query=[("fieldSelector", f"spec.nodeName={node}")])

    def watch_pods(self, node: str, resource_version: str) -> Iterator[dict[str, Any]]:
        response = self._get(
            "/api/v1/pods",
            query=[
                ("allowWatchBookmarks", True),
                ("fieldSelector", f"spec.nodeName={node}"),
                ("resourceVersion", resource_version),
                ("timeoutSeconds", _WATCH_SECONDS),
                ("watch", True),
            ],
            timeout=(10, _WATCH_SECONDS + 30),
        )
        try:
            buffer = b""
            for chunk in response.stream(65536, decode_content=True):
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    if line.strip():
                        yield dict(json.loads(line))
        except Exception as exc:
            raise KubeError(0, f"watch interrupted: {type(exc).__name__}: {exc}") from None
        finally:
            response.release_conn()

    def list_labelled_pods(self, namespace: str, selector: str) -> dict[str, Any]:
        query = [("labelSelector", selector)]
        if namespace:
            return self._get_json("/api/v1/namespaces/{namespace}/pods", {"namespace": namespace}, query=query)
        return self._get_json("/api/v1/pods", query=query)

    def pod_metrics(self, namespace: str, name: str, port: int, timeout: float) -> str:
        """A pod's /metrics through the API server's pod proxy."""
        response = self._get(
            "/api/v1/namespaces/{namespace}/pods/{name}/proxy/{path}",
            {"namespace": namespace, "name": f"{name}:{port}", "path": "metrics"},
            timeout=timeout,
            accept="*/*",
        )
        return bytes(response.data).decode()

    def close(self) -> None:
        self._client.close()  # type: ignore[no-untyped-call]

    def owner(self, kind: str, namespace: str, name: str) -> dict[str, Any]:
        path = {
            "ReplicaSet": "/apis/apps/v1/namespaces/{namespace}/replicasets/{name}",
            "Job": "/apis/batch/v1/namespaces/{namespace}/jobs/{name}",
        }[kind]
        return self._get_json(path, {"namespace": namespace, "name": name}, timeout=10)


class PodWorkloads:
    """Keeps `workloads()` current for the pods on one node."""

    def __init__(self, node_name: str, kubeconfig: str = "", api: Any = None) -> None:
        self.node_name = node_name
        self._kubeconfig = kubeconfig
        self._api = api
        self._pods: dict[PodKey, Workload] = {}
        self._owners: dict[tuple[str, str, str], Workload] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.synced = threading.Event()
        self.state = "starting"

    def start(self) -> bool:
        """Start watching; False (and one log line) when the API cannot be configured."""
        if not self.node_name:
            logger.warning("workload attribution off: no node name (set NODE_NAME or --node-name)")
            return False
        if self._api is None:
            try:
                self._api = _Api(self._kubeconfig)
            except Exception as exc:  # no service account, no kubeconfig, unreadable config
                logger.warning("workload attribution off: no Kubernetes API configuration (%s)", exc)
                self.state = "off"
                return False
        self._thread = threading.Thread(target=self._run, name="kube-watch", daemon=True)
        self._thread.start()
        return True

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=1)  # a daemon thread; a blocked watch read ends with the process

    def workloads(self) -> dict[PodKey, Workload]:
        """The workload of each known pod, by (namespace, name). No API call."""
        with self._lock:
            return dict(self._pods)

    # -- the watch loop -------------------------------------------------------

    def _run(self) -> None:
        backoff = 1.0
        while not self._stop.is_set():
            try:
                resource_version = self._relist()
                backoff = 1.0
                self._set_state("watching", "workload attribution on: watching pods on node %s", self.node_name)
                while not self._stop.is_set():
                    resource_version = self._watch(resource_version)
            except _GoneError:
                continue  # relist at once
            except KubeError as exc:
                if exc.status in (401, 403):
                    self._set_state(
                        "forbidden",
                        "workload attribution off: the API refused (%s); grant the "
                        "chart's RBAC (get/list/watch pods, get replicasets and jobs). Retrying every "
                        "%d s",
                        exc,
                        int(_FORBIDDEN_RETRY_SECONDS),
                        level=logging.WARNING,
                    )
                    self._stop.wait(_FORBIDDEN_RETRY_SECONDS)
                    continue
                self._set_state(
                    "down",
                    "workload attribution paused: Kubernetes API unreachable (%s); retrying",
                    exc,
                    level=logging.WARNING,
                )
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 60.0)

    def _set_state(self, state: str, message: str, *args: object, level: int = logging.INFO) -> None:
        if state != self.state:  # one line per change, not per retry
            logger.log(level, message, *args)
        self.state = state

    def _relist(self) -> str:
        assert self._api is not None
        listing = self._api.list_pods(self.node_name)
        items = [(key, item.get("metadata") or {}) for item in listing.get("items") or [] if (key := _key(item))]
        live = {(key[0], *owner) for key, metadata in items if (owner := controller_of(metadata))}
        with self._lock:
            self._owners = {k: v for k, v in self._owners.items() if k in live}
        pods = {key: self._resolve(key, metadata) for key, metadata in items}
        with self._lock:
            self._pods = pods
        self.synced.set()
        return str((listing.get("metadata") or {}).get("resourceVersion", ""))

    def _watch(self, resource_version: str) -> str:
        assert self._api is not None
        for event in self._api.watch_pods(self.node_name, resource_version):
            if self._stop.is_set():
                break
            kind, obj = event.get("type"), event.get("object") or {}
            if kind == "ERROR":
                if obj.get("code") == 410:
                    raise _GoneError
                raise KubeError(int(obj.get("code") or 0), str(obj.get("message", "watch error")))
            metadata = obj.get("metadata") or {}
            resource_version = str(metadata.get("resourceVersion") or resource_version)
            if kind == "BOOKMARK":
                continue
            key = _key(obj)
            if key is None:
                continue
            workload = None if kind == "DELETED" else self._resolve(key, metadata)
            with self._lock:
                if workload is None:
                    self._pods.pop(key, None)
                else:
                    self._pods[key] = workload
        return resource_version

    # -- owners ------------------------------------------------------------

    def _resolve(self, key: PodKey, metadata: Mapping[str, Any]) -> Workload:
        owner = controller_of(metadata)
        if owner is None:
            return Workload("Pod", key[1])
        kind, name = owner
        if kind not in ("ReplicaSet", "Job"):
            return Workload(kind, name)
        cache_key = (key[0], kind, name)
        with self._lock:
            cached = self._owners.get(cache_key)
        if cached is not None:
            return cached
        workload = Workload(kind, name)
        try:
            assert self._api is not None
            parent = controller_of(self._api.owner(kind, key[0], name).get("metadata") or {})
            if parent is not None:
                workload = Workload(*parent)
        except KubeError as exc:
            logger.debug("owner of %s/%s %s not resolved: %s", key[0], kind, name, exc)
            return workload  # not cached: asked again next time
        with self._lock:
            self._owners[cache_key] = workload
        return workload


class _GoneError(Exception):
    """The watch's resourceVersion is too old (410): relist."""


def _key(obj: Mapping[str, Any]) -> PodKey | None:
    metadata = obj.get("metadata") or {}
    namespace, name = metadata.get("namespace"), metadata.get("name")
    if isinstance(namespace, str) and isinstance(name, str):
        return namespace, name
    return None


def exporter_pods(kubeconfig: str, namespace: str, selector: str) -> list[tuple[str, str, str]]:
    """(namespace, pod, node) of every running exporter pod (for the report)."""
    api = _Api(kubeconfig)
    try:
        listing = api.list_labelled_pods(namespace, selector)
    finally:
        api.close()
    found = []
    for item in listing.get("items") or []:
        metadata, spec = item.get("metadata") or {}, item.get("spec") or {}
        if (item.get("status") or {}).get("phase") == "Running":
            found.append((metadata.get("namespace", ""), metadata.get("name", ""), spec.get("nodeName", "")))
    return sorted(found, key=lambda p: p[2])


def fetch_through_pod_proxy(
    kubeconfig: str, pods: list[tuple[str, str, str]], port: int, timeout: float, on_done: Any = None
) -> tuple[dict[str, str], list[tuple[str, str]]]:
    """Each exporter pod's /metrics via the API server's pod proxy, concurrently.

    Returns ({node: exposition text}, [(node, error)]); an unreachable node is
    listed, never fatal.
    """
    from concurrent.futures import ThreadPoolExecutor

    api = _Api(kubeconfig)

    def one(target: tuple[str, str, str]) -> tuple[str, str | None, str]:
        namespace, name, node = target
        try:
            return node or name, api.pod_metrics(namespace, name, port, timeout), ""
        except KubeError as exc:
            return node or name, None, str(exc)

    texts: dict[str, str] = {}
    failed: list[tuple[str, str]] = []
    try:
        with ThreadPoolExecutor(max_workers=16) as pool:
            for node, text, error in pool.map(one, pods):
                if text is None:
                    failed.append((node, error))
                else:
                    texts[node] = text
                if on_done is not None:
                    on_done()
    finally:
        api.close()
    return texts, failed
