"""The Prometheus HTTP API adapter for the report: one instant query for every
layer_sharing_* series, grouped by node. Only translates."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections import defaultdict

from exporter.core.cluster import NodeSamples, Sample


class PrometheusError(Exception):
    """Prometheus could not be queried; the message says why."""


def fetch(url: str, selector: str = "", timeout: float = 30.0) -> list[NodeSamples]:
    """Every exporter's current figures, one NodeSamples per `node` label (else instance)."""
    matchers = '__name__=~"layer_sharing_.+"' + (f", {selector}" if selector else "")
    query = urllib.parse.urlencode({"query": "{" + matchers + "}"})
    endpoint = url.rstrip("/") + "/api/v1/query?" + query
    try:
        with urllib.request.urlopen(endpoint, timeout=timeout) as response:
            body = json.load(response)
    except urllib.error.HTTPError as exc:
        raise PrometheusError(f"{url} answered {exc.code}: {exc.read()[:200].decode(errors='replace')}") from None
    except (OSError, ValueError) as exc:
        raise PrometheusError(f"cannot query {url}: {exc}") from None
    if body.get("status") != "success":
        raise PrometheusError(f"{url}: {body.get('errorType')}: {body.get('error')}")
    by_node: dict[str, list[Sample]] = defaultdict(list)
    for result in body["data"]["result"]:
        labels = dict(result["metric"])
        name = labels.pop("__name__")
        node = labels.pop("node", "") or labels.get("instance", "")
        # Drop the target labels Prometheus added. `pod` and `namespace` are
        # also the exporter's own labels on pod/workload series: there the
        # exporter's win (honor_labels or exported_* renaming aside).
        for target_label in ("job", "instance", "service", "endpoint", "container"):
            labels.pop(target_label, None)
        by_node[node].append(Sample(name, labels, float(result["value"][1])))
    return [NodeSamples(node, tuple(samples)) for node, samples in sorted(by_node.items())]
