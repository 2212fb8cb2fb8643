"""The Prometheus HTTP API adapter for the report: a few aggregating instant
queries, one per figure a view needs, asked concurrently. Only translates.

Every query groups `by` exactly the labels its view needs, so whatever target
labels the scrape added (namespace, pod, service, endpoint, container, job,
instance under the Prometheus Operator; cluster or other external labels
behind Thanos or Mimir) vanish. Each figure is first reduced to one value per
node (`max by (node, ...)`), so a node scraped twice (a rollout, two
ServiceMonitors) still counts once; then summed or counted over nodes.

Credentials and TLS follow Prometheus's own client configuration (http_config):
a bearer token or a file holding one (read on every run, so a rotated token is
picked up), a CA file, insecure_skip_verify, extra headers, and the tenant
header X-Scope-OrgID that Mimir, Cortex and Thanos Receive read.
"""

from __future__ import annotations

import json
import math
import re
import ssl
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Collection, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from exporter.core.cluster import NODE_FIGURES, Aggregate, ClusterAggregates, MeasuredPodLabels

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
# Unless told: the measured pod's namespace under either name, as each series has it.
EITHER = MeasuredPodLabels()
# The tenant header of Mimir, Cortex, Loki and Thanos Receive (and Grafana's data sources).
TENANT_HEADER = "X-Scope-OrgID"


class PrometheusError(Exception):
    """Prometheus could not be queried; the message says why."""


class PrometheusUnreachableError(PrometheusError):
    """No HTTP answer at all: connection refused, no such host, TLS handshake failed, timed out."""


@dataclass(frozen=True, slots=True)
class ClientOptions:
    """How to reach the Prometheus API, in the terms of Prometheus's http_config:
    `authorization` (type Bearer: credentials or credentials_file), `tls_config`
    (ca_file, insecure_skip_verify) and `http_headers`; `tenant` is sent as X-Scope-OrgID."""

    bearer_token: str = ""
    bearer_token_file: str = ""
    ca_file: str = ""
    insecure_skip_verify: bool = False
    headers: Mapping[str, str] = field(default_factory=dict)
    tenant: str = ""


def _workload(pod_labels: MeasuredPodLabels) -> tuple[str, ...]:
    """A workload's grouping labels. Without honor_labels the exporter's own `namespace`
    arrives as exported_namespace (the target's namespace took its place): unless told
    which, grouping by both keeps it, and MeasuredPodLabels.normalise takes it back."""
    return (*pod_labels.namespace_labels(), "workload_kind", "workload")


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
    selector: str = "",
    views: Collection[str] = VIEWS,
    images_cap: int = IMAGES_CAP,
    image_rank: str = "size",
    pod_labels: MeasuredPodLabels = EITHER,
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
        workload = _workload(pod_labels)
        exprs["workload_nodes"] = _counted("layer_sharing_workload_pods", selector, workload)
        exprs["workload_pods"] = _summed("layer_sharing_workload_pods", selector, workload)
        exprs["workload_attributed"] = _summed("layer_sharing_workload_attributed_bytes", selector, workload)
        # Only which bases a workload stands on: no nodes to count, so no per-node reduction.
        series = f"layer_sharing_workload_base_pods{{{selector}}}"
        exprs["workload_bases"] = f"group by ({', '.join((*workload, *BASE))}) ({series} > 0)"
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


@dataclass(frozen=True, slots=True)
class _Client:
    """ClientOptions made ready for one run: the headers (token read once) and the TLS context."""

    url: str
    headers: Mapping[str, str]
    context: ssl.SSLContext | None
    pod_labels: MeasuredPodLabels


def _client(url: str, options: ClientOptions, pod_labels: MeasuredPodLabels) -> _Client:
    headers = {"Content-Type": "application/x-www-form-urlencoded", **options.headers}
    token = options.bearer_token
    if options.bearer_token_file:
        try:
            with open(options.bearer_token_file, encoding="utf-8") as file:
                token = file.read().strip()
        except OSError as exc:
            raise PrometheusError(f"cannot read the bearer token file: {exc}") from None
        if not token:
            raise PrometheusError(f"the bearer token file {options.bearer_token_file} is empty")
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if options.tenant:
        headers[TENANT_HEADER] = options.tenant
    context = None
    if url.lower().startswith("https:"):
        try:
            context = ssl.create_default_context(cafile=options.ca_file or None)
        except (OSError, ssl.SSLError) as exc:
            raise PrometheusError(f"cannot load the CA file {options.ca_file}: {exc}") from None
        if options.insecure_skip_verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
    return _Client(url, headers, context, pod_labels)


def _transport_failure(url: str, exc: BaseException) -> PrometheusUnreachableError:
    """No HTTP answer: say which kind, in words a person acts on."""
    reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
    if isinstance(reason, ConnectionRefusedError):
        why = "connection refused (is Prometheus listening there?)"
    elif isinstance(reason, ssl.SSLCertVerificationError):
        why = f"TLS certificate not trusted ({reason.verify_message}; give its CA with --prometheus-ca-file)"
    elif isinstance(reason, ssl.SSLError):
        why = f"TLS failed ({reason.reason or reason})"
    elif isinstance(reason, TimeoutError):
        why = "timed out"
    else:
        why = str(reason)
    return PrometheusUnreachableError(f"cannot connect to {url}: {why}")


def _post(client: _Client, params: dict[str, str], timeout: float) -> dict[str, Any]:
    """One instant query's `data`; a failure raises PrometheusError saying why."""
    url = client.url
    # POST: the images' regex can be longer than a URL should be.
    request = urllib.request.Request(
        url.rstrip("/") + "/api/v1/query",
        data=urllib.parse.urlencode(params | {"timeout": f"{timeout:g}s"}).encode(),
        headers=dict(client.headers),
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=client.context) as response:
            body: dict[str, Any] = json.load(response)
    except urllib.error.HTTPError as exc:
        detail = exc.read()[:300].decode(errors="replace").strip()
        hint = ""
        if exc.code in (401, 403):
            hint = " (credentials: --prometheus-bearer-token-file, --prometheus-header, --prometheus-tenant)"
        raise PrometheusError(f"{url} answered {exc.code}: {detail}{hint}") from None
    except urllib.error.URLError as exc:
        raise _transport_failure(url, exc) from None
    except (ConnectionError, TimeoutError, ssl.SSLError) as exc:
        raise _transport_failure(url, exc) from None
    except (OSError, ValueError) as exc:
        raise PrometheusError(f"cannot query {url}: {exc}") from None
    if body.get("status") != "success":
        raise PrometheusError(f"{url}: {body.get('errorType')}: {body.get('error')}")
    data: dict[str, Any] = body.get("data") or {}
    return data


def _server_time(client: _Client, timeout: float) -> float:
    """Prometheus's own "now": this machine's clock may be off by more than the lookback."""
    data = _post(client, {"query": "time()"}, timeout)
    if data.get("resultType") != "scalar":
        raise PrometheusError(f"{client.url}: expected a scalar for time(), got {data.get('resultType')}")
    return float(data["result"][0])


def _query(client: _Client, expr: str, at: float, timeout: float) -> list[Aggregate]:
    url = client.url
    data = _post(client, {"query": expr, "time": f"{at:.3f}"}, timeout)
    if data.get("resultType") != "vector":
        raise PrometheusError(f"{url}: expected an instant vector for {expr!r}, got {data.get('resultType')}")
    rows = []
    for result in data.get("result") or []:
        value = float(result["value"][1])
        if not math.isfinite(value) or not value.is_integer():
            raise PrometheusError(f"{url}: {expr!r} gave {result['value'][1]} for {result['metric']}, not a count")
        rows.append(Aggregate(client.pod_labels.normalise(result["metric"]), int(value)))
    return rows


def fetch(
    url: str,
    selector: str = "",
    timeout: float = 30.0,
    views: Collection[str] = VIEWS,
    images_cap: int = IMAGES_CAP,
    image_rank: str = "size",
    at: float | None = None,
    options: ClientOptions | None = None,
    pod_labels: MeasuredPodLabels = EITHER,
) -> ClusterAggregates:
    """The figures `views` need, aggregated by Prometheus at one instant (`at`, default its now)."""
    client = _client(url, options or ClientOptions(), pod_labels)
    instant = _server_time(client, timeout) if at is None else at

    def ask(expr: str) -> list[Aggregate]:
        return _query(client, expr, instant, timeout)

    with ThreadPoolExecutor(max_workers=QUERY_THREADS) as pool:
        exprs = queries(selector, views, images_cap, image_rank, pod_labels)
        pending = {key: pool.submit(ask, expr) for key, expr in exprs.items()}
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
