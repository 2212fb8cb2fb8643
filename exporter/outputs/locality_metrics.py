"""`report --view locality --listen-port PORT`: the cluster's locality figures as Prometheus metrics.

One series set per workload, never per layer or per node, so the recording rules
and the cluster dashboard's pull-cost panels stay bounded: a workload's nodes
answering, its warm nodes, the nearest-rank p50 and p90 of the bytes a node
would fetch to start one of its pods, and the bytes a pod on every node would
take from the registry (with ImageLocality's assumption beside it). The figures
are `report --view locality`'s, from the same pure accounting
(exporter.core.pull_cost.workload_locality). The run's own health says what is
unknown: nodes that did not answer, workloads whose images did not resolve.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from exporter.core.pull_cost import WorkloadLocality
from exporter.core.state import RefreshStatus

# The quantiles over nodes exported for each workload's cold start (nearest rank: a real node's figure).
QUANTILES = (0.5, 0.9)
_WORKLOAD_LABELS = ("namespace", "workload_kind", "workload")


@dataclass(frozen=True, slots=True)
class LocalityRun:
    """One run of the locality view, or why it failed (`error`: nothing but the run's health is exported)."""

    workloads: tuple[WorkloadLocality, ...] = ()
    nodes_answering: int = 0
    unreachable: tuple[tuple[str, str], ...] = ()
    problems: tuple[str, ...] = ()
    error: str = ""
    finished_at: float = 0.0
    duration_seconds: float = 0.0


@dataclass(frozen=True, slots=True)
class LocalityHealth:
    runs_ok: int = 0
    runs_failed: int = 0
    last_success: float = 0.0


def split_workload(name: str) -> tuple[str, str, str]:
    """`namespace/Kind/name` (pod_proxy.workload_of) as the labels namespace, workload_kind, workload."""
    namespace, kind, workload = (name.split("/", 2) + ["", ""])[:3]
    return namespace, kind, workload


def ranked(workloads: Sequence[WorkloadLocality], top_n: int) -> tuple[WorkloadLocality, ...]:
    """The `top_n` workloads costliest to start cold (p90, then what all nodes would fetch); 0 = all."""
    order = sorted(workloads, key=lambda w: (-w.rollout.fetch_percentile(0.9), -w.rollout.registry_bytes, w.workload))
    return tuple(order[:top_n] if top_n else order)


class LocalityCollector(Collector):
    """The families of one run and the service's health."""

    def __init__(self, run: LocalityRun, health: LocalityHealth, top_n: int) -> None:
        self._run = run
        self._health = health
        self._top_n = top_n

    def collect(self) -> Iterator[Metric]:
        run, health = self._run, self._health
        yield _gauge(
            "layer_sharing_locality_up",
            "1 when the last run read the API and at least one exporter answered.",
            1 if not run.error else 0,
        )
        yield _gauge(
            "layer_sharing_locality_last_success_timestamp_seconds",
            "When the last successful run finished (Unix time; 0 before one).",
            health.last_success,
        )
        yield _gauge("layer_sharing_locality_run_duration_seconds", "How long the last run took.", run.duration_seconds)
        runs = CounterMetricFamily(
            "layer_sharing_locality_runs", "Runs of the locality view, by result.", labels=["result"]
        )
        runs.add_metric(["ok"], health.runs_ok)
        runs.add_metric(["failed"], health.runs_failed)
        yield runs
        if run.error:
            return  # no figures rather than zeros: layer_sharing_locality_up says why
        shown = ranked(run.workloads, self._top_n)
        yield _gauge(
            "layer_sharing_locality_nodes_answering",
            "Exporters (one per node) that answered for their node's holdings.",
            run.nodes_answering,
        )
        yield _gauge(
            "layer_sharing_locality_nodes_unreachable",
            "Exporters that did not answer in the last run (their nodes are in no figure).",
            len(run.unreachable),
        )
        yield _gauge(
            "layer_sharing_locality_problems",
            "Problems of the last run, each logged: references that did not resolve, workloads left out "
            "for one, nodes not readable (then every node answering counts for every workload).",
            len(run.problems),
        )
        yield _gauge(
            "layer_sharing_locality_workloads_not_exported",
            "Workloads measured but cut by the top-N limit (--top).",
            len(run.workloads) - len(shown),
        )
        nodes = _family(
            "layer_sharing_locality_workload_nodes",
            "Nodes answering on which a pod of the workload may be scheduled (not cordoned, taints "
            "tolerated, nodeSelector and required node affinity met): the nodes it was priced on.",
        )
        warm = _family(
            "layer_sharing_locality_workload_warm_nodes",
            "Nodes it may run on that would fetch and unpack no layer to start a pod of it.",
        )
        cold = GaugeMetricFamily(
            "layer_sharing_locality_workload_cold_start_bytes",
            "Bytes a node would fetch from the registry to start a pod of the workload "
            "(config and layer blobs, compressed): nearest-rank quantile over the nodes it may run on.",
            labels=[*_WORKLOAD_LABELS, "quantile"],
        )
        fleet = _family(
            "layer_sharing_locality_workload_rollout_bytes",
            "Bytes leaving the registry if every node it may run on started a pod of it.",
        )
        assumed = _family(
            "layer_sharing_locality_workload_image_locality_assumed_bytes",
            "What the scheduler's ImageLocality assumes every node it may run on would pull: whole "
            "compressed images the node does not list by name.",
        )
        for workload in shown:
            labels = list(split_workload(workload.workload))
            report = workload.rollout
            nodes.add_metric(labels, len(report.nodes))
            if not report.nodes:
                continue  # no node answering may run it: its nodes say 0, the rest is unknown, not 0
            warm.add_metric(labels, report.warm_nodes)
            for quantile in QUANTILES:
                cold.add_metric([*labels, str(quantile)], report.fetch_percentile(quantile))
            fleet.add_metric(labels, report.registry_bytes)
            assumed.add_metric(labels, report.assumed_registry_bytes)
        yield from (nodes, warm, cold, fleet, assumed)


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


def _family(name: str, documentation: str) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, labels=list(_WORKLOAD_LABELS))


class LocalityStore:
    """The latest run, rendered per scrape (a few series per workload), for the metrics server.

    It stands where the node exporter's MetricsStore stands: `status` for /readyz,
    `holdings` None (this service holds no layers: GET /pull-cost answers 503). A run and
    the health it makes are one pair, replaced in one assignment: a scrape never sees one
    without the other."""

    holdings: None = None

    def __init__(self, top_n: int = 100) -> None:
        self.top_n = top_n
        self._published: tuple[LocalityRun, LocalityHealth] = (LocalityRun(error="no run yet"), LocalityHealth())
        self._lock = threading.Lock()  # one publisher at a time

    def publish(self, run: LocalityRun) -> None:
        with self._lock:
            h = self._published[1]
            if run.error:
                health = LocalityHealth(h.runs_ok, h.runs_failed + 1, h.last_success)
            else:
                health = LocalityHealth(h.runs_ok + 1, h.runs_failed, run.finished_at)
            self._published = (run, health)

    @property
    def status(self) -> RefreshStatus:
        run, health = self._published
        generation = health.runs_ok + health.runs_failed
        return RefreshStatus(generation=generation, up=not run.error, last_error=run.error)

    def render(self, accept: str) -> tuple[bytes, str]:
        encoder, content_type = choose_encoder(accept)
        registry = CollectorRegistry(auto_describe=False)
        registry.register(LocalityCollector(*self._published, self.top_n))
        return encoder(registry), content_type
