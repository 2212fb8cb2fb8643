"""The locality service's metrics: per workload, bounded, exact; the run's health says what is unknown."""

from __future__ import annotations

import dataclasses

from prometheus_client.parser import text_string_to_metric_families

from exporter.core.pull_cost import CONTAINERD, NodeHoldings, RemoteImage, RemoteLayer, workload_locality
from exporter.outputs.locality_metrics import LocalityRun, LocalityStore, ranked, split_workload

BASE = RemoteLayer("sha256:" + "b" * 64, 1000, "sha256:" + "1" * 64)
TOP = RemoteLayer("sha256:" + "c" * 64, 300, "sha256:" + "2" * 64)
APP = RemoteImage("r/app:1", "sha256:" + "m" * 64, "sha256:" + "f" * 64, 50, (BASE, TOP))
TINY = RemoteImage("r/tiny:1", "sha256:" + "n" * 64, "sha256:" + "e" * 64, 10, (BASE,))


def _nodes() -> dict[str, NodeHoldings]:
    warm = NodeHoldings(
        CONTAINERD, dict.fromkeys(APP.chain_ids, 10), frozenset({APP.config_digest, TINY.config_digest})
    )
    base_only = NodeHoldings(CONTAINERD, {APP.chain_ids[0]: 10}, frozenset())
    cold = NodeHoldings(CONTAINERD, {}, frozenset())
    return {"n1": warm, "n2": base_only, "n3": cold}


def _run() -> LocalityRun:
    workloads = workload_locality({"shop/Deployment/app": [APP], "shop/DaemonSet/tiny": [TINY]}, _nodes())
    return LocalityRun(workloads, nodes_answering=3, unreachable=(("n4", "timed out"),), problems=("x: 404",))


def _samples(store: LocalityStore) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    body, content_type = store.render("text/plain")
    assert content_type.startswith("text/plain")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    }


def _app(**extra: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted({"namespace": "shop", "workload_kind": "Deployment", "workload": "app", **extra}.items()))


def test_each_workload_has_its_nodes_warm_nodes_quantiles_and_registry_bytes():
    store = LocalityStore(top_n=10)
    store.publish(_run())
    samples = _samples(store)
    assert samples[("layer_sharing_locality_workload_nodes", _app())] == 3
    assert samples[("layer_sharing_locality_workload_warm_nodes", _app())] == 1
    # Fetched per node: n1 nothing, n2 the config and the top layer, n3 everything.
    fetched = sorted([0, 50 + 300, 50 + 1000 + 300])
    assert samples[("layer_sharing_locality_workload_cold_start_bytes", _app(quantile="0.5"))] == fetched[1]
    assert samples[("layer_sharing_locality_workload_cold_start_bytes", _app(quantile="0.9"))] == fetched[2]
    assert samples[("layer_sharing_locality_workload_rollout_bytes", _app())] == sum(fetched)
    # ImageLocality lists nothing by name on these nodes: whole images everywhere.
    assert samples[("layer_sharing_locality_workload_image_locality_assumed_bytes", _app())] == 3 * (50 + 1300)
    assert samples[("layer_sharing_locality_up", ())] == 1
    assert samples[("layer_sharing_locality_nodes_unreachable", ())] == 1
    assert samples[("layer_sharing_locality_problems", ())] == 1
    assert samples[("layer_sharing_locality_runs_total", (("result", "ok"),))] == 1


def test_no_per_layer_or_per_node_series_and_the_top_n_cut_is_counted():
    store = LocalityStore(top_n=1)
    store.publish(_run())
    samples = _samples(store)
    labels = {name for (_, pairs) in samples for name, _ in pairs}
    assert labels <= {"namespace", "workload_kind", "workload", "quantile", "result"}
    workloads = {
        dict(pairs)["workload"] for (name, pairs) in samples if name == "layer_sharing_locality_workload_nodes"
    }
    assert workloads == {"app"}  # the costlier cold start
    assert samples[("layer_sharing_locality_workloads_not_exported", ())] == 1


def test_a_failed_run_exports_its_health_and_no_figure_rather_than_zeros():
    store = LocalityStore()
    assert store.status.generation == 0  # not ready before the first run
    store.publish(dataclasses.replace(_run(), finished_at=1234.5))
    store.publish(LocalityRun(error="no exporter answered", finished_at=2000.0, duration_seconds=0.25))
    samples = _samples(store)
    assert samples[("layer_sharing_locality_up", ())] == 0
    assert samples[("layer_sharing_locality_runs_total", (("result", "failed"),))] == 1
    assert samples[("layer_sharing_locality_last_success_timestamp_seconds", ())] == 1234.5  # the ok run's
    assert samples[("layer_sharing_locality_run_duration_seconds", ())] == 0.25
    assert not any(name.startswith("layer_sharing_locality_workload_") for name, _ in samples)
    assert store.status.generation == 2 and not store.status.up and store.status.last_error == "no exporter answered"


def test_openmetrics_is_served_when_asked():
    store = LocalityStore()
    store.publish(_run())
    body, content_type = store.render("application/openmetrics-text; version=1.0.0")
    assert content_type.startswith("application/openmetrics-text") and body.endswith(b"# EOF\n")


def test_workload_names_split_into_labels_and_ranking_is_by_p90():
    assert split_workload("ns/StatefulSet/db") == ("ns", "StatefulSet", "db")
    assert split_workload("ns/Pod/a/b") == ("ns", "Pod", "a/b")
    workloads = _run().workloads
    assert [w.workload for w in ranked(workloads, 0)] == ["shop/Deployment/app", "shop/DaemonSet/tiny"]


def test_six_series_per_workload_and_nine_of_health():
    """The budget docs/pull-cost.md states: 6 per workload exported, 9 for the run."""
    store = LocalityStore(top_n=10)
    store.publish(_run())
    assert len(_samples(store)) == 6 * 2 + 9
