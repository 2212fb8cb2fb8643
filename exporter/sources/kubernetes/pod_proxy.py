"""The report's pod-proxy source: each exporter's /metrics through the API server."""

from __future__ import annotations

from typing import Any

from exporter.sources.kubernetes.api import Api, KubeError


def exporter_pods(kubeconfig: str, namespace: str, selector: str) -> list[tuple[str, str, str]]:
    """(namespace, pod, node) of every running exporter pod (for the report)."""
    api = Api(kubeconfig)
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

    api = Api(kubeconfig)

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
