"""Which workload owns each pod on this node, kept current from the Kubernetes API.

Watches only this node's pods (fieldSelector spec.nodeName), resumably (list,
then watch from its resourceVersion; relist on 410 Gone; exponential backoff on
errors), and resolves each pod's controlling workload: ReplicaSet -> Deployment,
Job -> CronJob, StatefulSet, DaemonSet, or the bare pod. Owner lookups are
cached while a pod on the node references the owner (a CronJob makes a new Job
every run: the cache must not grow with them). Nothing here runs per scrape. Without API access the exporter runs as
before: this says once that attribution is off, and keeps quietly retrying.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from typing import Any

from exporter.core.facts import Workload
from exporter.sources.kubernetes.api import Api, KubeError

logger = logging.getLogger(__name__)

PodKey = tuple[str, str]
OwnerKey = tuple[str, str, str]  # (namespace, kind, name) of a ReplicaSet or Job
_FORBIDDEN_RETRY_SECONDS = 600.0


def controller_of(metadata: Mapping[str, Any]) -> tuple[str, str] | None:
    """The (kind, name) of the controlling owner reference, if any."""
    for ref in metadata.get("ownerReferences") or []:
        if isinstance(ref, dict) and ref.get("controller"):
            return str(ref.get("kind", "")), str(ref.get("name", ""))
    return None


class PodWorkloads:
    """Keeps `workloads()` current for the pods on one node."""

    def __init__(
        self,
        node_name: str,
        kubeconfig: str = "",
        api: Any = None,
        first_backoff: float = 1.0,
        forbidden_retry: float = _FORBIDDEN_RETRY_SECONDS,
    ) -> None:
        self.node_name = node_name
        self._first_backoff = first_backoff
        self._forbidden_retry = forbidden_retry
        self.lists = 0  # pod listings attempted (each start of a watch, each retry)
        self._kubeconfig = kubeconfig
        self._api = api
        self._pods: dict[PodKey, Workload] = {}
        self._owners: dict[OwnerKey, Workload] = {}
        # Which cached owner each pod references: an owner no pod references is evicted.
        self._pod_owner: dict[PodKey, OwnerKey] = {}
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
                self._api = Api(self._kubeconfig)
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

    @property
    def cached_owners(self) -> int:
        """Owner lookups held (bounded by the owners of the node's current pods)."""
        with self._lock:
            return len(self._owners)

    # -- the watch loop -------------------------------------------------------

    def _run(self) -> None:
        backoff = self._first_backoff
        while not self._stop.is_set():
            try:
                self.lists += 1
                resource_version = self._relist()
                backoff = self._first_backoff
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
                        int(self._forbidden_retry),
                        level=logging.WARNING,
                    )
                    self._stop.wait(self._forbidden_retry)
                    continue
                self._set_state(
                    "down",
                    "workload attribution paused: Kubernetes API unreachable (%s); retrying",
                    exc,
                    level=logging.WARNING,
                )
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 60 * self._first_backoff)

    def _set_state(self, state: str, message: str, *args: object, level: int = logging.INFO) -> None:
        if state != self.state:  # one line per change, not per retry
            logger.log(level, message, *args)
        self.state = state

    def _relist(self) -> str:
        assert self._api is not None
        listing = self._api.list_pods(self.node_name)
        items = [(key, item.get("metadata") or {}) for item in listing.get("items") or [] if (key := _key(item))]
        pod_owner = {key: owner for key, metadata in items if (owner := _owner_key(key, metadata))}
        with self._lock:
            self._owners = {k: v for k, v in self._owners.items() if k in pod_owner.values()}
        pods = {key: self._resolve(key, metadata) for key, metadata in items}
        with self._lock:
            self._pods = pods
            self._pod_owner = pod_owner
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
                    self._unreference(key)
                else:
                    self._pods[key] = workload
                    owner = _owner_key(key, metadata)
                    if owner != self._pod_owner.get(key):
                        self._unreference(key)
                        if owner is not None:
                            self._pod_owner[key] = owner
        return resource_version

    def _unreference(self, key: PodKey) -> None:
        """`key` no longer references its owner: evict the owner if no other pod does (lock held)."""
        owner = self._pod_owner.pop(key, None)
        if owner is not None and owner not in self._pod_owner.values():
            self._owners.pop(owner, None)

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


def _owner_key(key: PodKey, metadata: Mapping[str, Any]) -> OwnerKey | None:
    """The cache key of a pod's owner, when it is one that needs a lookup."""
    owner = controller_of(metadata)
    if owner is None or owner[0] not in ("ReplicaSet", "Job"):
        return None
    return key[0], owner[0], owner[1]


def _key(obj: Mapping[str, Any]) -> PodKey | None:
    metadata = obj.get("metadata") or {}
    namespace, name = metadata.get("namespace"), metadata.get("name")
    if isinstance(namespace, str) and isinstance(name, str):
        return namespace, name
    return None
