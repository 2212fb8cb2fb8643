"""The containerd adapter's translation and fault handling, against an
in-process fake gRPC server (tests/integration/ run it against a real containerd)."""

import grpc
import pytest

from exporter._generated import cri_runtime_v1_pb2 as cri_pb
from exporter.runtime import (
    ContainerdRuntime,
    MutationRefusedError,
    RuntimeOptions,
    RuntimeUnavailableError,
    read_only_channel,
)
from tests.fake_grpc import FakeRuntime
from tests.fakes import digest


@pytest.fixture
def fake(tmp_path):
    server = FakeRuntime(tmp_path / "fake.sock").start()
    server.images = {digest("i1"): [digest("a"), digest("b")], digest("i2"): [digest("a"), digest("c")]}
    yield server
    server.stop()


def runtime_for(fake: FakeRuntime, **kw) -> ContainerdRuntime:
    kw.setdefault("rpc_timeout", 1.0)
    return ContainerdRuntime(RuntimeOptions(endpoint=f"unix://{fake.socket}", **kw))


def test_a_mutating_call_is_refused_before_it_leaves_the_process(fake):
    channel, _ = read_only_channel(f"unix://{fake.socket}")
    remove = channel.unary_unary(
        "/runtime.v1.RuntimeService/RemoveContainer",
        request_serializer=cri_pb.VersionRequest.SerializeToString,
        response_deserializer=cri_pb.VersionResponse.FromString,
    )
    with pytest.raises(MutationRefusedError, match="only reads"):
        remove(cri_pb.VersionRequest(), timeout=1)
    assert fake.calls["runtime.v1.RuntimeService/RemoveContainer"] == 0
    channel.close()


def test_steady_state_refresh_asks_only_list_calls(fake):
    runtime = runtime_for(fake)
    facts = runtime.snapshot()
    assert len(facts.images) == 2 and len(facts.layer_usage) == 3
    before = dict(fake.calls)
    runtime.snapshot()
    extra = {k: v - before.get(k, 0) for k, v in fake.calls.items() if v - before.get(k, 0)}
    assert "runtime.v1.ImageService/ImageStatus" not in extra
    assert "containerd.services.snapshots.v1.Snapshots/Usage" not in extra
    assert all(count == 1 for count in extra.values())
    runtime.close()


def test_writable_layers_are_asked_at_most_once_per_interval(fake):
    runtime = runtime_for(fake, writable_refresh_seconds=3600)
    for _ in range(3):
        runtime.snapshot()
    assert fake.calls["runtime.v1.RuntimeService/ListContainerStats"] == 1
    runtime.forget_runtime_state()  # e.g. after containerd restarted
    runtime.snapshot()
    assert fake.calls["runtime.v1.RuntimeService/ListContainerStats"] == 2
    runtime.close()


def test_native_calls_carry_the_containerd_namespace(fake):
    runtime = runtime_for(fake, namespace="k8s.io")
    runtime.snapshot()
    assert any(m.get("containerd-namespace") == "k8s.io" for m in fake.metadata)
    runtime.close()


def test_malformed_image_is_skipped_counted_and_not_retried(fake):
    bad = digest("bad")
    fake.images[bad] = [digest("z")]
    fake.broken_info.add(bad)
    runtime = runtime_for(fake)
    facts = runtime.snapshot()
    assert {i.image_id for i in facts.images} == {digest("i1"), digest("i2")}
    assert runtime.errors["image_parse"] == 1
    runtime.snapshot()
    assert runtime.errors["image_parse"] == 1
    assert fake.calls["runtime.v1.ImageService/ImageStatus"] == 3
    runtime.close()


def test_image_deleted_between_list_and_status_is_simply_gone(fake):
    fake.vanished.add(digest("i2"))
    runtime = runtime_for(fake)
    facts = runtime.snapshot()
    assert [i.image_id for i in facts.images] == [digest("i1")]
    assert sum(runtime.errors.values()) == 0
    runtime.close()


def test_missing_snapshot_is_reported_once_and_the_rest_exported(fake):
    missing = sorted(fake.all_chain_ids())[0]
    fake.missing_snapshots.add(missing)
    runtime = runtime_for(fake)
    facts = runtime.snapshot()
    assert missing not in facts.layer_usage and len(facts.layer_usage) == 2
    runtime.snapshot()
    assert runtime.errors["snapshot_usage"] == 1
    runtime.close()


def test_a_runtime_without_cri_is_unavailable_not_a_crash(tmp_path):
    # A gRPC server that knows none of the CRI services answers UNIMPLEMENTED.
    from concurrent import futures

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    server.add_insecure_port(f"unix://{tmp_path}/other.sock")
    server.start()
    runtime = ContainerdRuntime(RuntimeOptions(endpoint=f"unix://{tmp_path}/other.sock", rpc_timeout=2))
    try:
        with pytest.raises(RuntimeUnavailableError, match="UNIMPLEMENTED"):
            runtime.snapshot()
    finally:
        runtime.close()
        server.stop(None)


def test_missing_socket_is_runtime_unavailable(tmp_path):
    runtime = ContainerdRuntime(RuntimeOptions(endpoint=str(tmp_path / "none.sock"), rpc_timeout=0.5))
    with pytest.raises(RuntimeUnavailableError, match="UNAVAILABLE|DEADLINE"):
        runtime.snapshot()
    runtime.close()


def test_slow_runtime_hits_the_deadline(fake):
    fake.delay = 1.0
    runtime = runtime_for(fake, rpc_timeout=0.2)
    with pytest.raises(RuntimeUnavailableError, match="DEADLINE_EXCEEDED"):
        runtime.snapshot()
    runtime.close()


def test_pipelined_calls_build_requests_only_as_the_window_frees(fake):
    """A cold refresh on a busy node asks thousands of per-layer questions; at most
    one window of requests and replies exists at a time (benchmarks/busy_node.py)."""
    from exporter._generated import containerd_snapshots_v1_pb2 as snapshots_pb
    from exporter.runtime import _WINDOW

    runtime = runtime_for(fake)
    built: list[str] = []
    ahead: list[int] = []

    def requests():
        for n in range(3 * _WINDOW + 5):
            built.append(f"k{n}")
            yield f"k{n}", snapshots_pb.UsageRequest(snapshotter="overlayfs", key=f"k{n}")

    settled: list[str] = []

    def on_result(key, result):
        settled.append(key)
        ahead.append(len(built) - len(settled))

    runtime._call_many(runtime._usage, requests(), on_result, native=True)
    assert settled == built and len(settled) == 3 * _WINDOW + 5  # every reply, in order
    assert max(ahead) <= _WINDOW
    runtime.close()


def test_streamed_reads_are_handed_over_a_window_at_a_time(fake):
    from exporter._generated import containerd_content_v1_pb2 as content_pb
    from exporter.runtime import _WINDOW

    runtime = runtime_for(fake)
    built: list[str] = []
    ahead: list[int] = []
    settled: list[str] = []

    def requests():
        for n in range(2 * _WINDOW + 3):
            built.append(f"k{n}")
            yield f"k{n}", content_pb.ListContentRequest()

    def on_result(key, result):
        assert isinstance(result, list) and len(result) == 1  # the whole stream
        settled.append(key)
        ahead.append(len(built) - len(settled))

    runtime._stream_many(runtime._content_list, requests(), on_result)
    assert settled == built
    assert max(ahead) < _WINDOW
    runtime.close()
