"""The Prometheus HTTP API adapter for the report: a few aggregating instant
queries, one per figure a view needs, asked concurrently. Only translates.

Every query groups `by` exactly the labels its view needs, so whatever target
labels the scrape added (namespace, pod, service, endpoint, container, job,
instance under the Prometheus Operator; cluster or other external labels
behind Thanos or Mimir) vanish. Each figure is first reduced to one value per
node (`max by (node, ...)`), so a node scraped twice (a rollout, two
ServiceMonitors) still counts once; then summed or counted over nodes.
"""

from __future__ import annotations

import json
import math
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from exporter.core.cluster import NODE_FIGURES, Aggregate, ClusterAggregates

# Images listed at most (ranked in PromQL with topk); --top raises it.
IMAGES_CAP = 500
IMAGE_RANKS = {
    "size": "layer_sharing_image_size_bytes",
    "unique": "layer_sharing_image_unique_bytes",
    "nodes": "layer_sharing_image_info",
}
QUERY_THREADS = 4

BASE = ("base", "source")
WORKLOAD = ("namespace", "workload_kind", "workload")


class PrometheusError(Exception):
    """Prometheus could not be queried; the message says why."""


def _series(metric: str, selector: str, by: tuple[str, ...]) -> str:
    """`metric` reduced to one value per node and `by` labels.

    The node is the `node` label (the chart's relabelling sets it from the
    pod's node), else the target's address (a plain scrape without it).
    """
    extra = f", {selector}" if selector else ""
    series = (
        f'({metric}{{node!=""{extra}}} or label_replace({metric}{{node=""{extra}}}, "node", "$1", "instance", "(.+)"))'
    )
    if "namespace" in by:
        # Without honor_labels the exporter's own `namespace` arrives as
        # exported_namespace (the target's namespace took its place): take it back.
        series = f'label_replace({series}, "namespace", "$1", "exported_namespace", "(.+)")'
    return f"max by ({', '.join(('node', *by))}) ({series})"


def queries(selector: str = "", images_cap: int = IMAGES_CAP, image_rank: str = "size") -> dict[str, str]:
    """The PromQL for every figure, keyed as ClusterAggregates fields (node figures as `node:<field>`)."""

    def summed(metric: str, by: tuple[str, ...]) -> str:
        return f"sum by ({', '.join(by)}) ({_series(metric, selector, by)})"

    def counted(metric: str, by: tuple[str, ...]) -> str:
        return f"count by ({', '.join(by)}) ({_series(metric, selector, by)})"

    rank_metric = IMAGE_RANKS.get(image_rank, IMAGE_RANKS["size"])
    rank_of = counted if rank_metric == IMAGE_RANKS["nodes"] else summed
    ranked = f"topk({images_cap}, {rank_of(rank_metric, ('image',))})"
    return {
        **{f"node:{figure}": _series(metric, selector, ()) for figure, metric in NODE_FIGURES.items()},
        "base_nodes": counted("layer_sharing_base_images", BASE),
        "base_images": summed("layer_sharing_base_images", BASE),
        "base_pods": summed("layer_sharing_base_pods", BASE),
        "base_bytes": summed("layer_sharing_base_bytes", BASE),
        "workload_nodes": counted("layer_sharing_workload_pods", WORKLOAD),
        "workload_pods": summed("layer_sharing_workload_pods", WORKLOAD),
        "workload_attributed": summed("layer_sharing_workload_attributed_bytes", WORKLOAD),
        "workload_bases": (
            f"count by ({', '.join((*WORKLOAD, *BASE))}) "
            f"({_series('layer_sharing_workload_base_pods', selector, (*WORKLOAD, *BASE))} > 0)"
        ),
        "image_nodes": f"{counted('layer_sharing_image_info', ('image', 'base'))} and on (image) {ranked}",
        "image_size": f"{summed('layer_sharing_image_size_bytes', ('image',))} and on (image) {ranked}",
        "image_unique": f"{summed('layer_sharing_image_unique_bytes', ('image',))} and on (image) {ranked}",
    }


def _query(url: str, expr: str, at: float, timeout: float) -> list[Aggregate]:
    params = urllib.parse.urlencode({"query": expr, "time": f"{at:.3f}", "timeout": f"{timeout:g}s"})
    endpoint = url.rstrip("/") + "/api/v1/query?" + params
    try:
        with urllib.request.urlopen(endpoint, timeout=timeout) as response:
            body: dict[str, Any] = json.load(response)
    except urllib.error.HTTPError as exc:
        detail = exc.read()[:300].decode(errors="replace")
        raise PrometheusError(f"{url} answered {exc.code}: {detail}") from None
    except (OSError, ValueError) as exc:
        raise PrometheusError(f"cannot query {url}: {exc}") from None
    if body.get("status") != "success":
        raise PrometheusError(f"{url}: {body.get('errorType')}: {body.get('error')}")
    data = body.get("data") or {}
    if data.get("resultType") != "vector":
        raise PrometheusError(f"{url}: expected an instant vector for {expr!r}, got {data.get('resultType')}")
    rows = []
    for result in data.get("result") or []:
        value = float(result["value"][1])
        if not math.isfinite(value) or not value.is_integer():
            raise PrometheusError(f"{url}: {expr!r} gave {result['value'][1]} for {result['metric']}, not a count")
        rows.append(Aggregate(dict(result["metric"]), int(value)))
    return rows


def fetch(
    url: str,
    selector: str = "",
    timeout: float = 30.0,
    images_cap: int = IMAGES_CAP,
    image_rank: str = "size",
    at: float | None = None,
) -> ClusterAggregates:
    """Every figure the report needs, aggregated by Prometheus at one instant (`at`, default now)."""
    instant = time.time() if at is None else at
    exprs = queries(selector, images_cap, image_rank)
    with ThreadPoolExecutor(max_workers=QUERY_THREADS) as pool:
        answers = dict(zip(exprs, pool.map(lambda e: _query(url, e, instant, timeout), exprs.values()), strict=True))
    return ClusterAggregates(
        node_figures={figure: answers[f"node:{figure}"] for figure in NODE_FIGURES},
        base_nodes=answers["base_nodes"],
        base_images=answers["base_images"],
        base_pods=answers["base_pods"],
        base_bytes=answers["base_bytes"],
        workload_nodes=answers["workload_nodes"],
        workload_pods=answers["workload_pods"],
        workload_attributed=answers["workload_attributed"],
        workload_bases=answers["workload_bases"],
        image_nodes=answers["image_nodes"],
        image_size=answers["image_size"],
        image_unique=answers["image_unique"],
    )
