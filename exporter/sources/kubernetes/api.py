"""The Kubernetes API, read through the kubernetes client's ApiClient: the few raw GETs we need.

Only translates HTTP into JSON documents and `KubeError`. The `kubernetes`
client is imported only when an instance is made (its ApiClient costs about
20 MiB of RSS; see `Api` for why no more).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

logger = logging.getLogger(__name__)

_WATCH_SECONDS = 300


class KubeError(Exception):
    """An API call failed; `status` is the HTTP status (0 when unreachable)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _status_message(body: object) -> str:
    """The API's own words in a failure's Status body (which RBAC rule is missing, say); "" if none."""
    try:
        message = json.loads(body).get("message", "") if isinstance(body, bytes | str) else ""
    except (ValueError, AttributeError):
        return ""
    return " ".join(str(message).split())[:300]


class Api:
    """The few raw calls attribution and the report need, through the kubernetes
    client's ApiClient: its kubeconfig and in-cluster loading, auth and
    connection pool. The generated per-group classes (CoreV1Api and friends) are
    not used: CoreV1Api alone is 63,000 lines of pydantic signatures, about
    24 MiB of RSS in a process that reads four kinds of URL (benchmarks/)."""

    def __init__(self, kubeconfig: str = "", context: str = "") -> None:
        from kubernetes import client, config

        if kubeconfig or context:
            # kubectl's --kubeconfig and --context: that file (else the default one), that context.
            config.load_kube_config(config_file=kubeconfig or None, context=context or None)  # type: ignore[no-untyped-call]
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
            body = response.read()  # type: ignore[no-untyped-call]  # the Status body: the connection returns clean
            detail = _status_message(body)
            raise KubeError(
                int(response.status), f"{response.status} {response.reason}" + (f": {detail}" if detail else "")
            )
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

    def list_nodes(self) -> dict[str, Any]:
        return self._get_json("/api/v1/nodes")

    def running_pods(self, page_size: int = 500) -> Iterator[dict[str, Any]]:
        """Every running pod in the cluster, a page at a time (limit/continue), so a big
        cluster's list is never held whole."""
        token = ""
        while True:
            query: list[tuple[str, Any]] = [("fieldSelector", "status.phase=Running"), ("limit", page_size)]
            if token:
                query.append(("continue", token))
            page = self._get_json("/api/v1/pods", query=query, timeout=60)
            yield from page.get("items") or []
            token = str((page.get("metadata") or {}).get("continue") or "")
            if not token:
                return

    def list_labelled_pods(self, namespace: str, selector: str) -> dict[str, Any]:
        query = [("labelSelector", selector)]
        if namespace:
            return self._get_json("/api/v1/namespaces/{namespace}/pods", {"namespace": namespace}, query=query)
        return self._get_json("/api/v1/pods", query=query)

    def pod_metrics(self, namespace: str, name: str, port: int, timeout: float, scheme: str = "http") -> str:
        """A pod's /metrics through the API server's pod proxy (`https:<pod>:<port>` for TLS)."""
        target = f"{name}:{port}" if scheme == "http" else f"{scheme}:{name}:{port}"
        response = self._get(
            "/api/v1/namespaces/{namespace}/pods/{name}/proxy/{path}",
            {"namespace": namespace, "name": target, "path": "metrics"},
            timeout=timeout,
            accept="*/*",
        )
        return bytes(response.data).decode()

    def pod_proxy_get(
        self,
        namespace: str,
        name: str,
        port: int,
        path: str,
        query: Sequence[tuple[str, str]],
        timeout: float,
        scheme: str,
    ) -> bytes:
        """GET `path?query` of a pod through the API server's pod proxy (the body, or KubeError)."""
        target = f"{name}:{port}" if scheme == "http" else f"{scheme}:{name}:{port}"
        response = self._get(
            "/api/v1/namespaces/{namespace}/pods/{name}/proxy/{path}",
            {"namespace": namespace, "name": target, "path": path.lstrip("/")},
            query=query,
            timeout=timeout,
            accept="application/json",
        )
        return bytes(response.data)

    def close(self) -> None:
        self._client.close()  # type: ignore[no-untyped-call]

    def owner(self, kind: str, namespace: str, name: str) -> dict[str, Any]:
        path = {
            "ReplicaSet": "/apis/apps/v1/namespaces/{namespace}/replicasets/{name}",
            "Job": "/apis/batch/v1/namespaces/{namespace}/jobs/{name}",
        }[kind]
        return self._get_json(path, {"namespace": namespace, "name": name}, timeout=10)
