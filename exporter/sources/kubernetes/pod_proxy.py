"""The report's pod-proxy source: each exporter's /metrics through the API server.

An exporter serving TLS (a web config with tls_server_config) is reached as
`https:<pod>:<port>` through the proxy. `scheme="auto"` follows each pod's own
probes: the chart gives them scheme HTTPS exactly when the exporter serves TLS.
"""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple

from exporter.sources.kubernetes.api import Api, KubeError

SCHEMES = ("auto", "http", "https")


class ExporterPod(NamedTuple):
    namespace: str
    name: str
    node: str
    scheme: str = "http"


def exporter_pods(kubeconfig: str, namespace: str, selector: str, scheme: str = "auto") -> list[ExporterPod]:
    """Every running exporter pod (for the report), with the scheme its metrics are served with."""
    api = Api(kubeconfig)
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


def fetch_through_pod_proxy(
    kubeconfig: str, pods: list[ExporterPod], port: int, timeout: float, on_done: Any = None
) -> tuple[dict[str, str], list[tuple[str, str]]]:
    """Each exporter pod's /metrics via the API server's pod proxy, concurrently.

    Returns ({node: exposition text}, [(node, error)]); an unreachable node is
    listed, never fatal.
    """
    api = Api(kubeconfig)

    def one(target: ExporterPod) -> tuple[str, str | None, str]:
        namespace, name, node, scheme = target
        try:
            return node or name, api.pod_metrics(namespace, name, port, timeout, scheme), ""
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
