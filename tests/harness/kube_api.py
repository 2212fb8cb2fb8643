"""A stand-in for the Kubernetes API server, for tests only.

No API server can be had on these machines. This serves real-shaped JSON (a
PodList with resourceVersion, a watch event stream with BOOKMARK and ERROR 410,
ReplicaSets, Jobs, a 403 Status, and the pod proxy to exporter pods) over
plain HTTP on loopback, to the real `kubernetes` Python client via a kubeconfig.
"""

from __future__ import annotations

import http.client
import json
import queue
import ssl
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import yaml

from tests.harness.loopback import LoopbackServer, send_json


def pod(namespace: str, name: str, node: str, owner: tuple[str, str] | None = None, rv: int = 1) -> dict[str, Any]:
    metadata: dict[str, Any] = {
        "namespace": namespace,
        "name": name,
        "uid": f"uid-{namespace}-{name}",
        "resourceVersion": str(rv),
    }
    if owner:
        metadata["ownerReferences"] = [
            {
                "apiVersion": "apps/v1",
                "kind": owner[0],
                "name": owner[1],
                "uid": f"uid-{owner[1]}",
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata,
        "spec": {"nodeName": node},
        "status": {"phase": "Running"},
    }


def owned(kind: str, namespace: str, name: str, owner: tuple[str, str] | None) -> dict[str, Any]:
    api = {"ReplicaSet": "apps/v1", "Job": "batch/v1"}[kind]
    metadata: dict[str, Any] = {"namespace": namespace, "name": name, "uid": f"uid-{name}"}
    if owner:
        metadata["ownerReferences"] = [
            {"apiVersion": "apps/v1", "kind": owner[0], "name": owner[1], "uid": f"uid-{owner[1]}", "controller": True}
        ]
    return {"apiVersion": api, "kind": kind, "metadata": metadata}


def status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


def _matches(obj: dict[str, Any], selector: str) -> bool:
    labels = obj["metadata"].get("labels") or {}
    return all(labels.get(k) == v for k, _, v in (term.partition("=") for term in selector.split(",") if term))


def node(name: str, labels: dict[str, str] | None = None, unschedulable: bool = False,
         taints: tuple[dict[str, str], ...] = ()) -> dict[str, Any]:  # fmt: skip
    """A Node as the API serves it (only what the scheduler's node filters read)."""
    spec: dict[str, Any] = {"taints": list(taints)} if taints else {}
    if unschedulable:
        spec["unschedulable"] = True
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": labels or {}}, "spec": spec}


def exporter_pod(namespace: str, name: str, node: str, tls: bool = False) -> dict[str, Any]:
    obj = pod(namespace, name, node, ("DaemonSet", "layer-sharing-exporter"))
    obj["metadata"]["labels"] = {"app.kubernetes.io/name": "layer-sharing-exporter"}
    # As the chart renders them: the probes' scheme follows webConfig.tls.
    probe = {"httpGet": {"path": "/healthz", "port": "metrics", "scheme": "HTTPS" if tls else "HTTP"}}
    obj["spec"]["containers"] = [{"name": "exporter", "livenessProbe": probe, "readinessProbe": probe}]
    return obj


class KubeApiStandIn(LoopbackServer):
    def __init__(self, node: str) -> None:
        self.node = node
        self.pods: dict[tuple[str, str], dict[str, Any]] = {}
        self.owners: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.resource_version = 100
        self.forbidden = False
        self.forbidden_paths: set[str] = set()  # e.g. /api/v1/nodes without RBAC for nodes
        self.gone_next_watch = False
        self.events: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.requests: list[str] = []
        self.proxied: dict[tuple[str, str, int], str] = {}  # (namespace, pod, port) -> URL of the real exporter
        self.exporter_pods: list[dict[str, Any]] = []  # listed by label selector (the report's discovery)
        self.nodes: list[dict[str, Any]] = []  # GET /api/v1/nodes (the locality view's scheduling filters)
        self.pod_pages = 0  # pages of the cluster-wide running-pod list served
        super().__init__(_handler(self))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.events.put(None)  # ends open watch streams
        super().stop()

    def kubeconfig(self, path: Path) -> Path:
        path.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "current-context": "standin",
                    "clusters": [{"name": "standin", "cluster": {"server": self.url}}],
                    "users": [{"name": "standin", "user": {"token": "test-token"}}],
                    "contexts": [{"name": "standin", "context": {"cluster": "standin", "user": "standin"}}],
                }
            )
        )
        return path

    def add_pod(self, obj: dict[str, Any], announce: bool = False) -> None:
        self.resource_version += 1
        obj["metadata"]["resourceVersion"] = str(self.resource_version)
        self.pods[(obj["metadata"]["namespace"], obj["metadata"]["name"])] = obj
        if announce:
            self.events.put({"type": "ADDED", "object": obj})

    def delete_pod(self, namespace: str, name: str) -> None:
        obj = self.pods.pop((namespace, name))
        self.resource_version += 1
        self.events.put({"type": "DELETED", "object": obj})

    def add_owner(self, obj: dict[str, Any]) -> None:
        m = obj["metadata"]
        self.owners[(obj["kind"], m["namespace"], m["name"])] = obj


def _handler(api: KubeApiStandIn) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:  # noqa: N802
            url = urllib.parse.urlsplit(self.path)
            query = dict(urllib.parse.parse_qsl(url.query, keep_blank_values=True))
            api.requests.append(self.path)
            if api.forbidden:
                self._json(
                    403,
                    status(
                        403,
                        "Forbidden",
                        'pods is forbidden: User "system:serviceaccount:x:y" '
                        'cannot list resource "pods" in API group "" at the '
                        "cluster scope",
                    ),
                )
                return
            if url.path in api.forbidden_paths:
                resource = url.path.rstrip("/").rpartition("/")[2]
                message = (
                    f'{resource} is forbidden: User "system:serviceaccount:x:y" cannot list resource '
                    f'"{resource}" in API group "" at the cluster scope'
                )
                self._json(403, status(403, "Forbidden", message))
                return
            parts = [urllib.parse.unquote(p) for p in url.path.strip("/").split("/")]
            namespaced = len(parts) == 5 and parts[:3] == ["api", "v1", "namespaces"] and parts[4] == "pods"
            if (url.path == "/api/v1/pods" or namespaced) and "labelSelector" in query:
                self._json(
                    200,
                    {
                        "kind": "PodList",
                        "apiVersion": "v1",
                        "metadata": {"resourceVersion": "1"},
                        # The exporters, and (an empty selector: every pod) the workloads' pods too.
                        "items": [
                            p
                            for p in (*api.exporter_pods, *api.pods.values())
                            if _matches(p, query["labelSelector"])
                            and (not namespaced or p["metadata"]["namespace"] == parts[3])
                        ],
                    },
                )
            elif url.path == "/api/v1/nodes":
                self._json(200, {"kind": "NodeList", "apiVersion": "v1", "metadata": {}, "items": api.nodes})
            elif url.path == "/api/v1/pods" and query.get("fieldSelector") == "status.phase=Running":
                self._running_pods_page(query)
            elif url.path == "/api/v1/pods":
                if query.get("fieldSelector") != f"spec.nodeName={api.node}":
                    self._json(400, status(400, "BadRequest", "this stand-in only serves one node's pods"))
                elif query.get("watch") in ("true", "1", "True"):
                    self._watch()
                else:
                    self._json(
                        200,
                        {
                            "kind": "PodList",
                            "apiVersion": "v1",
                            "metadata": {"resourceVersion": str(api.resource_version)},
                            "items": list(api.pods.values()),
                        },
                    )
            elif len(parts) == 7 and parts[:4] == ["apis", "apps", "v1", "namespaces"] and parts[5] == "replicasets":
                self._owner("ReplicaSet", parts[4], parts[6])
            elif len(parts) == 7 and parts[:4] == ["apis", "batch", "v1", "namespaces"] and parts[5] == "jobs":
                self._owner("Job", parts[4], parts[6])
            elif (
                len(parts) >= 7
                and parts[:3] == ["api", "v1", "namespaces"]
                and parts[4] == "pods"
                and parts[6] == "proxy"
            ):
                # The query goes on to the pod, as the API server's proxy passes it.
                self._proxy(parts[3], parts[5], "/" + "/".join(parts[7:]) + (f"?{url.query}" if url.query else ""))
            else:
                self._json(404, status(404, "NotFound", f"{url.path} not found"))

        def _running_pods_page(self, query: dict[str, str]) -> None:
            """Every running pod, `limit` at a time; `continue` is the offset, opaque to clients
            as the API server's token is."""
            running = [
                p for p in (*api.exporter_pods, *api.pods.values()) if (p.get("status") or {}).get("phase") == "Running"
            ]
            start = int(query.get("continue") or 0)
            limit = int(query.get("limit") or 0) or len(running)
            api.pod_pages += 1
            metadata: dict[str, Any] = {"resourceVersion": str(api.resource_version)}
            if start + limit < len(running):
                metadata["continue"] = str(start + limit)
            self._json(200, {"kind": "PodList", "apiVersion": "v1", "metadata": metadata,
                             "items": running[start : start + limit]})  # fmt: skip

        def _owner(self, kind: str, namespace: str, name: str) -> None:
            obj = api.owners.get((kind, namespace, name))
            if obj is None:
                self._json(404, status(404, "NotFound", f'{kind.lower()}s "{name}" not found'))
            else:
                self._json(200, obj)

        def _proxy(self, namespace: str, pod_and_port: str, path: str) -> None:
            # [scheme:]name[:port], as the API server parses it; it does not verify the pod's certificate.
            scheme, name, port = "http", pod_and_port, ""
            if pod_and_port.startswith(("http:", "https:")):
                scheme, _, pod_and_port = pod_and_port.partition(":")
            name, _, port = pod_and_port.partition(":")
            target = api.proxied.get((namespace, name, int(port or 0)))
            if target is None:
                self._json(503, status(503, "ServiceUnavailable", f"no endpoints for pod {name}"))
                return
            target = scheme + "://" + target.partition("://")[2]
            # A TLS context costs ~30 ms of CPU to build: only for an https pod.
            unverified = None
            if scheme == "https":
                unverified = ssl.create_default_context()
                unverified.check_hostname = False
                unverified.verify_mode = ssl.CERT_NONE
            try:
                with urllib.request.urlopen(target.rstrip("/") + path, timeout=10, context=unverified) as response:
                    body = response.read()
            except (OSError, http.client.HTTPException) as exc:
                self._json(503, status(503, "ServiceUnavailable", f"error trying to reach service: {exc}"))
                return
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _watch(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            if api.gone_next_watch:
                api.gone_next_watch = False
                self._chunk({"type": "ERROR", "object": status(410, "Expired", "too old resource version")})
                self._chunk(None)
                return
            self._chunk(
                {
                    "type": "BOOKMARK",
                    "object": {
                        "kind": "Pod",
                        "apiVersion": "v1",
                        "metadata": {"resourceVersion": str(api.resource_version)},
                    },
                }
            )
            while not api.stopping.is_set():
                try:
                    event = api.events.get(timeout=0.2)
                except queue.Empty:
                    continue
                if event is None:
                    break
                try:
                    self._chunk(event)
                except OSError:
                    return
            self._chunk(None)

        def _chunk(self, event: dict[str, Any] | None) -> None:
            data = b"" if event is None else json.dumps(event).encode() + b"\n"
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()

        def _json(self, code: int, body: dict[str, Any]) -> None:
            send_json(self, code, json.dumps(body).encode())

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass

    return Handler
