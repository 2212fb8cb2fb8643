"""Faults on the real containerd: restarts, a missing socket, churn.

Runs after test_parity (it stops and starts the shared containerd)."""

from __future__ import annotations

import os

from tests.harness.scenario import SampleNode
from tests.integration.conftest import start_exporter, stop_exporter
from tests.integration.oracle import expected


def test_containerd_killed_and_restarted_is_survived(sample_node: SampleNode, tmp_path):
    exporter = start_exporter(
        sample_node.containerd.endpoint, tmp_path, "--refresh-interval", "0.3", "--rpc-timeout", "1"
    )
    try:
        want = expected(sample_node)
        exporter.wait_for(lambda: exporter.value("layer_sharing_physical_bytes") == want.physical, what="exact")
        pid = exporter.process.pid
        socket = sample_node.containerd.socket
        sample_node.containerd.stop(kill=True)  # and its socket file is removed
        assert not socket.exists()
        exporter.wait_for(lambda: exporter.value("layer_sharing_up") == 0, what="up 0")
        assert exporter.value("layer_sharing_physical_bytes") is None  # no stale figures while down
        status, body = exporter.get("/readyz")
        assert status == 200 and "unreachable" in body
        # Liveness does not depend on the runtime: the kubelet must not restart the pod for it.
        assert exporter.get("/healthz") == (200, "ok\n")
        # containerd creates a new socket file at the same path; the exporter's
        # channel resolves the path again on reconnect (the chart must mount the
        # socket's directory, not the file, for the new one to be seen in the pod).
        sample_node.containerd.start()
        exporter.wait_for(lambda: exporter.value("layer_sharing_up") == 1, what="up 1")
        exporter.wait_for(lambda: exporter.value("layer_sharing_physical_bytes") == want.physical, what="exact again")
        assert exporter.value("layer_sharing_logical_bytes") == want.logical
        assert exporter.process.pid == pid and exporter.process.poll() is None
        log = exporter.log()
        assert log.count("runtime unreachable") == 1, log
        assert log.count("runtime answered") == 2, log
        assert exporter.value("layer_sharing_errors_total", stage="runtime") >= 1
    finally:
        assert stop_exporter(exporter) == 0


def test_socket_absent_at_start_keeps_serving(tmp_path):
    absent = tmp_path / "nothing-here.sock"
    exporter = start_exporter(f"unix://{absent}", tmp_path, "--refresh-interval", "0.5", "--rpc-timeout", "0.5")
    try:
        assert exporter.value("layer_sharing_up") == 0
        assert exporter.get("/healthz")[0] == 200
        assert "unreachable" in exporter.get("/readyz")[1]
        assert "nothing-here.sock" in exporter.log() or "UNAVAILABLE" in exporter.log()
        assert os.path.exists(absent) is False
    finally:
        assert stop_exporter(exporter) == 0
