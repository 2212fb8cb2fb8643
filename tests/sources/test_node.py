"""The runtime source (CRI + layer store -> NodeFacts) and its fault handling, against an
in-process fake gRPC server (tests/integration/ run it against a real containerd)."""

import grpc
import pytest

from exporter.errors import RuntimeUnavailableError
from exporter.sources.node import RuntimeOptions, RuntimeSource
from tests.fake_grpc import source_for


def test_steady_state_refresh_asks_only_list_calls(fake):
    runtime = source_for(fake)
    facts = runtime.snapshot()
    assert len(facts.images) == 2 and len(facts.layer_usage) == 3
    before = dict(fake.calls)
    runtime.snapshot()
    extra = {k: v - before.get(k, 0) for k, v in fake.calls.items() if v - before.get(k, 0)}
    assert "runtime.v1.ImageService/ImageStatus" not in extra
    assert "containerd.services.snapshots.v1.Snapshots/Usage" not in extra
    assert all(count == 1 for count in extra.values())
    runtime.close()


def test_a_runtime_without_cri_is_unavailable_not_a_crash(tmp_path):
    # A gRPC server that knows none of the CRI services answers UNIMPLEMENTED.
    from concurrent import futures

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    server.add_insecure_port(f"unix://{tmp_path}/other.sock")
    server.start()
    runtime = RuntimeSource(RuntimeOptions(endpoint=f"unix://{tmp_path}/other.sock", rpc_timeout=2))
    try:
        with pytest.raises(RuntimeUnavailableError, match="UNIMPLEMENTED"):
            runtime.snapshot()
    finally:
        runtime.close()
        server.stop(None)


def test_missing_socket_is_runtime_unavailable(tmp_path):
    runtime = RuntimeSource(RuntimeOptions(endpoint=str(tmp_path / "none.sock"), rpc_timeout=0.5))
    with pytest.raises(RuntimeUnavailableError, match="UNAVAILABLE|DEADLINE"):
        runtime.snapshot()
    runtime.close()


def test_slow_runtime_hits_the_deadline(fake):
    fake.delay = 1.0
    runtime = source_for(fake, rpc_timeout=0.2)
    with pytest.raises(RuntimeUnavailableError, match="DEADLINE_EXCEEDED"):
        runtime.snapshot()
    runtime.close()
