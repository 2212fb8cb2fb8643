"""The report's pod-proxy source: each exporter's /metrics through the API server.

An exporter serving TLS (a web config with tls_server_config) is reached as
`https:<pod>:<port>` through the proxy. `scheme="auto"` follows each pod's own
probes: the chart gives them scheme HTTPS exactly when the exporter serves TLS.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple, TypeVar

from exporter import pull_cost_wire
from exporter.core.placement import ClusterNode, NodeRequirement, PodPlacement, RunningWorkload, Taint, Toleration
from exporter.core.pull_cost import NodeHoldings, RemoteImage, merge_holdings
from exporter.sources.kubernetes.api import Api, KubeError
from exporter.sources.kubernetes.workloads import controller_of

logger = logging.getLogger(__name__)

SCHEMES = ("auto", "http", "https")


class ExporterPod(NamedTuple):
    namespace: str
    name: str
    node: str
    scheme: str = "http"


def exporter_pods(
    kubeconfig: str, namespace: str, selector: str, scheme: str = "auto", context: str = ""
) -> list[ExporterPod]:
    """Every running exporter pod (for the report), with the scheme its metrics are served with."""
    api = Api(kubeconfig, context)
    try:
        listing = api.list_labelled_pods(namespace, selector)
    finally:
        api.close()
    found = []
    for item in listing.get("items") or []:
        metadata, spec = item.get("metadata") or {}, item.get("spec") or {}
        if (item.get("status") or {}).get("phase") == "Running":
            found.append(
                ExporterPod(
                    metadata.get("namespace", ""),
                    metadata.get("name", ""),
                    spec.get("nodeName", ""),
                    scheme if scheme != "auto" else scheme_of_pod(spec),
                )
            )
    return sorted(found, key=lambda p: p.node)


def scheme_of_pod(spec: Mapping[str, Any]) -> str:
    """ "https" when the pod's HTTP probes use HTTPS (the exporter serves TLS), else "http"."""
    for container in spec.get("containers") or []:
        if not isinstance(container, dict):
            continue
        for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
            http_get = (container.get(probe) or {}).get("httpGet") or {}
            if isinstance(http_get, dict) and str(http_get.get("scheme", "")).upper() == "HTTPS":
                return "https"
    return "http"


_T = TypeVar("_T")


def _ask_each_pod(
    api: Api, pods: list[ExporterPod], ask: Callable[[ExporterPod], _T], on_done: Any = None
) -> tuple[dict[str, _T], list[tuple[str, str]]]:
    """`ask(pod)` for every pod, 16 at a time: ({node: answer}, [(node, error)]). A KubeError
    or a ValueError (an answer that does not read) lists the node; it is never fatal. Closes `api`."""

    def one(target: ExporterPod) -> tuple[str, _T | None, str]:
        node = target.node or target.name
        try:
            return node, ask(target), ""
        except (KubeError, ValueError) as exc:
            return node, None, str(exc)

    found: dict[str, _T] = {}
    failed: list[tuple[str, str]] = []
    try:
        with ThreadPoolExecutor(max_workers=16) as pool:
            for node, answer, error in pool.map(one, pods):
                if answer is None:
                    failed.append((node, error))
                else:
                    found[node] = answer
                if on_done is not None:
                    on_done()
    finally:
        api.close()
    return found, failed


def fetch_through_pod_proxy(
    kubeconfig: str, pods: list[ExporterPod], port: int, timeout: float, on_done: Any = None, context: str = ""
) -> tuple[dict[str, str], list[tuple[str, str]]]:
    """Each exporter pod's /metrics via the API server's pod proxy, concurrently.

    Returns ({node: exposition text}, [(node, error)]); an unreachable node is
    listed, never fatal.
    """
    api = Api(kubeconfig, context)

    def metrics(pod: ExporterPod) -> str:
        return api.pod_metrics(pod.namespace, pod.name, port, timeout, pod.scheme)

    return _ask_each_pod(api, pods, metrics, on_done)


def fetch_holdings(
    kubeconfig: str,
    pods: list[ExporterPod],
    port: int,
    timeout: float,
    images: Sequence[RemoteImage],
    context: str = "",
) -> tuple[dict[str, NodeHoldings], list[tuple[str, str]]]:
    """What each exporter's node holds for pulling `images` (GET /pull-cost through the pod
    proxy, split into questions of bounded length), concurrently.

    Returns ({node: holdings}, [(node, error)]); an unreachable node or an unreadable
    answer is listed, never fatal.
    """
    api = Api(kubeconfig, context)
    queries = pull_cost_wire.holdings_queries(images)

    def holdings(pod: ExporterPod) -> NodeHoldings:
        try:
            answers = [
                json.loads(
                    api.pod_proxy_get(pod.namespace, pod.name, port, pull_cost_wire.PATH, query, timeout, pod.scheme)
                )
                for query in queries
            ]
            return merge_holdings([pull_cost_wire.holdings_from_dict(answer) for answer in answers])
        except ValueError as exc:  # not JSON, or not holdings (an exporter without the endpoint)
            raise ValueError(f"unreadable pull-cost answer: {exc}") from None

    return _ask_each_pod(api, pods, holdings)


def running_workloads(kubeconfig: str, context: str = "") -> dict[str, RunningWorkload]:
    """Every running pod's workload (namespace/kind/name): its images, init containers first,
    and where its pods may be scheduled (each distinct placement of its pods).

    Read a page at a time. A ReplicaSet's pods are their Deployment's (the ReplicaSet's
    name less the pod's pod-template-hash), a Job's its CronJob's (asked once per Job), so
    that names last across rollouts and runs; a pod without a controller is its own
    workload. Static (mirror) pods, owned by their Node, are left out: the kubelet runs
    them from files, from images the node was built with. Pods of one workload with
    different images (a rollout under way) make it a set of all of them.
    """
    api = Api(kubeconfig, context)
    images: dict[str, dict[str, None]] = {}
    placements: dict[str, dict[PodPlacement, None]] = {}
    jobs = _JobOwners(api)
    try:
        for item in api.running_pods():
            metadata, spec = item.get("metadata") or {}, item.get("spec") or {}
            found = [
                str(c.get("image"))
                for c in (*(spec.get("initContainers") or []), *(spec.get("containers") or []))
                if isinstance(c, dict) and c.get("image")
            ]
            owner = controller_of(metadata)
            if not found or (owner is not None and owner[0] == "Node"):
                continue
            name = workload_of(metadata)
            if owner is not None and owner[0] == "Job":
                name = jobs.workload(str(metadata.get("namespace", "")), owner[1], name)
            images.setdefault(name, {}).update(dict.fromkeys(found))
            placement = pod_placement(spec, daemon=owner is not None and owner[0] == "DaemonSet")
            placements.setdefault(name, {})[placement] = None
    finally:
        api.close()
    return {name: RunningWorkload(tuple(images[name]), tuple(placements[name])) for name in sorted(images)}


class _JobOwners:
    """A run's Job -> workload: a CronJob's Jobs are that CronJob (each run is a new Job);
    a Job of none, or whose owner cannot be read, is its own (said once a run)."""

    def __init__(self, api: Api) -> None:
        self._api = api
        self._names: dict[tuple[str, str], str] = {}
        self._said = False

    def workload(self, namespace: str, job: str, default: str) -> str:
        key = (namespace, job)
        if key not in self._names:
            try:
                parent = controller_of(self._api.owner("Job", namespace, job).get("metadata") or {})
            except KubeError as exc:
                parent = None
                if not self._said:
                    self._said = True
                    logger.warning("a Job's owner could not be read, its pods named by the Job: %s", exc)
            self._names[key] = f"{namespace}/{parent[0]}/{parent[1]}" if parent else default
        return self._names[key]


def cluster_nodes(kubeconfig: str, context: str = "") -> dict[str, ClusterNode]:
    """Every node's labels, cordon and taints (what the scheduler's node filters read)."""
    api = Api(kubeconfig, context)
    try:
        listing = api.list_nodes()
    finally:
        api.close()
    nodes = {}
    for item in listing.get("items") or []:
        metadata, spec = item.get("metadata") or {}, item.get("spec") or {}
        taints = tuple(
            Taint(str(t.get("key", "")), str(t.get("value", "")), str(t.get("effect", "")))
            for t in spec.get("taints") or []
            if isinstance(t, dict)
        )
        name = str(metadata.get("name", ""))
        labels = {str(k): str(v) for k, v in (metadata.get("labels") or {}).items()}
        nodes[name] = ClusterNode(name, labels, bool(spec.get("unschedulable")), taints)
    return nodes


def pod_placement(spec: Mapping[str, Any], daemon: bool = False) -> PodPlacement:
    """A pod spec's tolerations, nodeSelector and required node affinity. `daemon`: a
    DaemonSet's pod, whose controller pins it to its node with a `metadata.name` field
    requirement; without it the pod is its template's, which every matching node runs."""
    tolerations = tuple(
        Toleration(
            str(t.get("key", "")), str(t.get("operator") or "Equal"), str(t.get("value", "")), str(t.get("effect", ""))
        )
        for t in spec.get("tolerations") or []
        if isinstance(t, dict)
    )
    selector = tuple(sorted((str(k), str(v)) for k, v in (spec.get("nodeSelector") or {}).items()))
    required = ((spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution"
    ) or {}
    terms = tuple(
        tuple(
            NodeRequirement(
                str(e.get("key", "")),
                str(e.get("operator", "")),
                tuple(map(str, e.get("values") or ())),
                on_field=kind == "matchFields",
            )  # fmt: skip
            for kind in ("matchExpressions", "matchFields")
            for e in term.get(kind) or []
            if isinstance(e, dict)
        )
        for term in required.get("nodeSelectorTerms") or []
        if isinstance(term, dict)
    )
    if daemon:
        pinned = [tuple(r for r in term if not (r.on_field and r.key == "metadata.name")) for term in terms]
        # A term the pinning alone made matches any node: the template had no affinity then.
        terms = () if any(not term for term in pinned) else tuple(pinned)
    return PodPlacement(tolerations, selector, terms)


def workload_of(metadata: Mapping[str, Any]) -> str:
    """namespace/kind/name of the pod's controller (Deployment for a ReplicaSet of one)."""
    namespace = metadata.get("namespace", "")
    for owner in metadata.get("ownerReferences") or []:
        if isinstance(owner, dict) and owner.get("controller"):
            kind, name = str(owner.get("kind", "")), str(owner.get("name", ""))
            suffix = "-" + str((metadata.get("labels") or {}).get("pod-template-hash", ""))
            if kind == "ReplicaSet" and len(suffix) > 1 and name.endswith(suffix):
                return f"{namespace}/Deployment/{name[: -len(suffix)]}"
            return f"{namespace}/{kind}/{name}"
    return f"{namespace}/Pod/{metadata.get('name', '')}"
