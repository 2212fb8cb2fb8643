"""Workload attribution against a stand-in Kubernetes API server (no API server
can be had here): tests/harness/kube_api.py serves real-shaped JSON to the real
`kubernetes` client: list, watch stream, 403, 410 Gone, API down."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from exporter.core.facts import Workload
from exporter.sources.kubernetes.workloads import PodWorkloads
from tests.harness.kube_api import KubeApiStandIn, owned, pod


def eventually(predicate: Callable[[], object], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("condition never held")


@pytest.fixture
def watcher(api: KubeApiStandIn, tmp_path: Path) -> Iterator[PodWorkloads]:
    workloads = PodWorkloads("node-1", str(api.kubeconfig(tmp_path / "kubeconfig")))
    assert workloads.start()
    assert workloads.synced.wait(10)
    yield workloads
    workloads.stop()


def test_owners_are_resolved_to_workloads(watcher: PodWorkloads, api: KubeApiStandIn):
    assert watcher.workloads() == {
        ("default", "web-1"): Workload("Deployment", "web"),
        ("batch", "job-1"): Workload("CronJob", "nightly"),
        ("db", "pg-0"): Workload("StatefulSet", "pg"),
        ("kube-system", "agent-x"): Workload("DaemonSet", "agent"),
        ("other", "solo"): Workload("Pod", "solo"),
        ("default", "orphan"): Workload("ReplicaSet", "orphan-rs"),
    }
    # Only this node's pods are asked for, and never the whole cluster.
    assert all("fieldSelector=spec.nodeName%3Dnode-1" in r for r in api.requests if r.startswith("/api/v1/pods"))


def test_the_watch_follows_adds_and_deletes_and_caches_owners(watcher: PodWorkloads, api: KubeApiStandIn):
    eventually(lambda: any("watch=true" in r for r in api.requests))
    lookups = sum("/replicasets/web-5d8f" in r for r in api.requests)
    api.add_pod(pod("default", "web-2", "node-1", ("ReplicaSet", "web-5d8f")), announce=True)
    eventually(lambda: ("default", "web-2") in watcher.workloads())
    assert watcher.workloads()[("default", "web-2")] == Workload("Deployment", "web")
    assert sum("/replicasets/web-5d8f" in r for r in api.requests) == lookups  # cached
    api.delete_pod("other", "solo")
    eventually(lambda: ("other", "solo") not in watcher.workloads())


def test_410_gone_relists_and_resumes(api: KubeApiStandIn, tmp_path: Path):
    api.gone_next_watch = True
    workloads = PodWorkloads("node-1", str(api.kubeconfig(tmp_path / "kubeconfig")))
    assert workloads.start()
    try:
        eventually(lambda: sum(r.startswith("/api/v1/pods") and "watch" not in r for r in api.requests) >= 2)
        api.add_pod(pod("default", "late", "node-1"), announce=True)
        eventually(lambda: ("default", "late") in workloads.workloads())
    finally:
        workloads.stop()


def test_forbidden_says_once_that_attribution_is_off(
    api: KubeApiStandIn, tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    api.forbidden = True
    caplog.set_level(logging.INFO, logger="exporter.kube")
    workloads = PodWorkloads("node-1", str(api.kubeconfig(tmp_path / "kubeconfig")), forbidden_retry=0.01)
    assert workloads.start()
    try:
        eventually(lambda: workloads.state == "forbidden" and workloads.lists >= 3)
        assert workloads.workloads() == {}
        messages = [r.getMessage() for r in caplog.records]
        assert sum("attribution off" in m for m in messages) == 1
        assert "403" in messages[0] and "RBAC" in messages[0]
    finally:
        workloads.stop()


def test_api_down_is_retried_with_backoff(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    standin = KubeApiStandIn("node-1").start()
    kubeconfig = standin.kubeconfig(tmp_path / "kubeconfig")
    standin.stop()  # nothing listens any more
    caplog.set_level(logging.INFO, logger="exporter.kube")
    workloads = PodWorkloads("node-1", str(kubeconfig), first_backoff=0.01)
    assert workloads.start()
    try:
        eventually(lambda: workloads.state == "down" and workloads.lists >= 3)
        assert sum("unreachable" in r.getMessage() for r in caplog.records) == 1
    finally:
        workloads.stop()


def test_no_configuration_means_attribution_off(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    caplog.set_level(logging.INFO, logger="exporter.kube")
    workloads = PodWorkloads("node-1")
    assert not workloads.start()
    assert any("workload attribution off" in r.getMessage() for r in caplog.records)
    assert not PodWorkloads("").start()  # no node name: nothing to watch


def test_the_owner_cache_does_not_grow_with_every_cronjob_run(watcher: PodWorkloads, api: KubeApiStandIn):
    """Each CronJob run is a new Job with a new pod; once the pod is gone, so is
    its Job's cached lookup (before: kept until the next relist, which a healthy
    watch may never do)."""
    eventually(lambda: any("watch=true" in r for r in api.requests))
    before = watcher.cached_owners
    for run in range(20):
        job = f"nightly-{run}"
        api.add_owner(owned("Job", "batch", job, ("CronJob", "nightly")))
        api.add_pod(pod("batch", f"{job}-x", "node-1", ("Job", job)), announce=True)
        key = ("batch", f"{job}-x")
        eventually(lambda: watcher.workloads().get(key) == Workload("CronJob", "nightly"))  # noqa: B023
        api.delete_pod(*key)
        eventually(lambda: key not in watcher.workloads())  # noqa: B023
    assert watcher.cached_owners == before
    # An owner still referenced by a pod stays cached.
    lookups = sum("/replicasets/web-5d8f" in r for r in api.requests)
    api.add_pod(pod("default", "web-3", "node-1", ("ReplicaSet", "web-5d8f")), announce=True)
    eventually(lambda: ("default", "web-3") in watcher.workloads())
    assert sum("/replicasets/web-5d8f" in r for r in api.requests) == lookups
