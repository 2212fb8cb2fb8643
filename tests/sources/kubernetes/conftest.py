"""The stand-in API server (real-shaped JSON over HTTP; no real API server can be had here)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.harness.kube_api import KubeApiStandIn, owned, pod


@pytest.fixture
def api() -> Iterator[KubeApiStandIn]:
    standin = KubeApiStandIn("node-1").start()
    standin.add_owner(owned("ReplicaSet", "default", "web-5d8f", ("Deployment", "web")))
    standin.add_owner(owned("Job", "batch", "nightly-2911", ("CronJob", "nightly")))
    standin.add_owner(owned("ReplicaSet", "default", "orphan-rs", None))
    standin.add_pod(pod("default", "web-1", "node-1", ("ReplicaSet", "web-5d8f")))
    standin.add_pod(pod("batch", "job-1", "node-1", ("Job", "nightly-2911")))
    standin.add_pod(pod("db", "pg-0", "node-1", ("StatefulSet", "pg")))
    standin.add_pod(pod("kube-system", "agent-x", "node-1", ("DaemonSet", "agent")))
    standin.add_pod(pod("other", "solo", "node-1"))
    standin.add_pod(pod("default", "orphan", "node-1", ("ReplicaSet", "orphan-rs")))
    yield standin
    standin.stop()
