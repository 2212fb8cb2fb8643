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
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Collection
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from exporter.core.cluster import NODE_FIGURES, Aggregate, ClusterAggregates

# Images listed at most (ranked in PromQL with topk); --top raises it.
IMAGES_CAP = 500
IMAGE_RANKS = {
    "size": "layer_sharing_image_size_bytes",
    "unique": "layer_sharing_image_unique_bytes",
    "nodes": "layer_sharing_image_info",
    # Ranked by the sum over nodes; the figure itself is the max (every node that analysed the image agrees).
    "wasted": "layer_sharing_image_wasted_bytes",
}
QUERY_THREADS = 4

# The images figure the rank already is (ranking by nodes counts images, not (image, base) pairs).
RANKED_FIELD = {"size": "image_size", "unique": "image_unique"}
VIEWS = ("nodes", "bases", "workloads", "images")
BASE = ("base", "version", "source")
# Without honor_labels the exporter's own `namespace` arrives as exported_namespace
# (the target's namespace took its place): grouping by both keeps it, and
# _labels takes it back (with honor_labels, as the chart sets, there is none).
WORKLOAD = ("namespace", "exported_namespace", "workload_kind", "workload")


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
    return f"max by ({', '.join(('node', *by))}) ({series})"


def _summed(metric: str, selector: str, by: tuple[str, ...]) -> str:
    return f"sum by ({', '.join(by)}) ({_series(metric, selector, by)})"


def _counted(metric: str, selector: str, by: tuple[str, ...]) -> str:
    return f"count by ({', '.join(by)}) ({_series(metric, selector, by)})"


def queries(
    selector: str = "", views: Collection[str] = VIEWS, images_cap: int = IMAGES_CAP, image_rank: str = "size"
) -> dict[str, str]:
    """The PromQL for the figures `views` need, keyed as ClusterAggregates fields.

    Node figures (always asked: the totals come from them) are keyed
    `node:<field>`. For the images view this asks only `image_rank`: the
    largest images by the ranked figure (`topk`); `image_queries` then asks
    the other figures of just those images.
    """
    exprs = {f"node:{figure}": _series(metric, selector, ()) for figure, metric in NODE_FIGURES.items()}
    if "bases" in views:
        exprs["base_nodes"] = _counted("layer_sharing_base_images", selector, BASE)
        exprs["base_images"] = _summed("layer_sharing_base_images", selector, BASE)
        exprs["base_pods"] = _summed("layer_sharing_base_pods", selector, BASE)
        exprs["base_bytes"] = _summed("layer_sharing_base_bytes", selector, BASE)
        exprs["family_drift"] = _summed("layer_sharing_base_drift_bytes", selector, ("base",))
    if "workloads" in views:
        exprs["workload_nodes"] = _counted("layer_sharing_workload_pods", selector, WORKLOAD)
        exprs["workload_pods"] = _summed("layer_sharing_workload_pods", selector, WORKLOAD)
        exprs["workload_attributed"] = _summed("layer_sharing_workload_attributed_bytes", selector, WORKLOAD)
        # Only which bases a workload stands on: no nodes to count, so no per-node reduction.
        series = f"layer_sharing_workload_base_pods{{{selector}}}"
        exprs["workload_bases"] = f"group by ({', '.join((*WORKLOAD, *BASE))}) ({series} > 0)"
    if "images" in views:
        metric = IMAGE_RANKS.get(image_rank, IMAGE_RANKS["size"])
        rank_of = _counted if metric == IMAGE_RANKS["nodes"] else _summed
        exprs["image_rank"] = f"topk({images_cap}, {rank_of(metric, selector, ('image',))})"
    return exprs


def _regex_literal(values: Collection[str]) -> str:
    """A PromQL string holding an (anchored, RE2) regex matching exactly these values."""
    alternatives = "|".join(re.sub(r"([\\.+*?()|\[\]{}^$])", r"\\\1", v) for v in sorted(values))
    return json.dumps(alternatives)  # a JSON string is a valid PromQL double-quoted string


def image_queries(selector: str, images: Collection[str], image_rank: str = "size") -> dict[str, str]:
    """The images view's figures for just these (ranked) images; the ranked figure is known already."""
    narrowed = ", ".join(m for m in (selector, f"image=~{_regex_literal(images)}") if m)
    exprs = {
        "image_nodes": _counted("layer_sharing_image_info", narrowed, ("image", "base")),
        "image_size": _summed("layer_sharing_image_size_bytes", narrowed, ("image",)),
        "image_unique": _summed("layer_sharing_image_unique_bytes", narrowed, ("image",)),
        "image_wasted": f"max by (image) ({_series('layer_sharing_image_wasted_bytes', narrowed, ('image',))})",
    }
    exprs.pop(RANKED_FIELD.get(image_rank, ""), None)
    return exprs


def _labels(metric: dict[str, str]) -> dict[str, str]:
    exported = metric.pop("exported_namespace", "")
    return metric | {"namespace": exported} if exported else metric


def _post(url: str, params: dict[str, str], timeout: float) -> dict[str, Any]:
    """One instant query's `data`; a failure raises PrometheusError saying why."""
    # POST: the images' regex can be longer than a URL should be.
    request = urllib.request.Request(
        url.rstrip("/") + "/api/v1/query",
        data=urllib.parse.urlencode(params | {"timeout": f"{timeout:g}s"}).encode(),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body: dict[str, Any] = json.load(response)
    except urllib.error.HTTPError as exc:
        detail = exc.read()[:300].decode(errors="replace")
        raise PrometheusError(f"{url} answered {exc.code}: {detail}") from None
    except (OSError, ValueError) as exc:
        raise PrometheusError(f"cannot query {url}: {exc}") from None
    if body.get("status") != "success":
        raise PrometheusError(f"{url}: {body.get('errorType')}: {body.get('error')}")
    data: dict[str, Any] = body.get("data") or {}
    return data


def _server_time(url: str, timeout: float) -> float:
    """Prometheus's own "now": this machine's clock may be off by more than the lookback."""
    data = _post(url, {"query": "time()"}, timeout)
    if data.get("resultType") != "scalar":
        raise PrometheusError(f"{url}: expected a scalar for time(), got {data.get('resultType')}")
    return float(data["result"][0])


def _query(url: str, expr: str, at: float, timeout: float) -> list[Aggregate]:
    data = _post(url, {"query": expr, "time": f"{at:.3f}"}, timeout)
    if data.get("resultType") != "vector":
        raise PrometheusError(f"{url}: expected an instant vector for {expr!r}, got {data.get('resultType')}")
    rows = []
    for result in data.get("result") or []:
        value = float(result["value"][1])
        if not math.isfinite(value) or not value.is_integer():
            raise PrometheusError(f"{url}: {expr!r} gave {result['value'][1]} for {result['metric']}, not a count")
        rows.append(Aggregate(_labels(result["metric"]), int(value)))
    return rows


def fetch(
    url: str,
    selector: str = "",
    timeout: float = 30.0,
    views: Collection[str] = VIEWS,
    images_cap: int = IMAGES_CAP,
    image_rank: str = "size",
    at: float | None = None,
) -> ClusterAggregates:
    """The figures `views` need, aggregated by Prometheus at one instant (`at`, default its now)."""
    instant = _server_time(url, timeout) if at is None else at

    def ask(expr: str) -> list[Aggregate]:
        return _query(url, expr, instant, timeout)

    with ThreadPoolExecutor(max_workers=QUERY_THREADS) as pool:
        pending = {
            key: pool.submit(ask, expr) for key, expr in queries(selector, views, images_cap, image_rank).items()
        }
        answers: dict[str, list[Aggregate]] = {}
        if "image_rank" in pending:
            ranked = pending.pop("image_rank").result()
            names = {row.labels.get("image", "") for row in ranked}
            if names:
                for key, expr in image_queries(selector, names, image_rank).items():
                    pending[key] = pool.submit(ask, expr)
            if image_rank in RANKED_FIELD:
                answers[RANKED_FIELD[image_rank]] = ranked
        answers.update((key, future.result()) for key, future in pending.items())
    return ClusterAggregates(
        node_figures={figure: answers.get(f"node:{figure}", []) for figure in NODE_FIGURES},
        base_nodes=answers.get("base_nodes", []),
        base_images=answers.get("base_images", []),
        base_pods=answers.get("base_pods", []),
        base_bytes=answers.get("base_bytes", []),
        family_drift=answers.get("family_drift", []),
        workload_nodes=answers.get("workload_nodes", []),
        workload_pods=answers.get("workload_pods", []),
        workload_attributed=answers.get("workload_attributed", []),
        workload_bases=answers.get("workload_bases", []),
        image_nodes=answers.get("image_nodes", []),
        image_size=answers.get("image_size", []),
        image_unique=answers.get("image_unique", []),
        image_wasted=answers.get("image_wasted", []),
    )
