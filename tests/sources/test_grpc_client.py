"""The shared gRPC transport: the read-only guard, pipelining and endpoint parsing."""

import contextlib
from typing import Any

import grpc
import pytest

from exporter._generated import cri_runtime_v1_pb2 as cri_pb
from exporter.errors import ParseError
from exporter.sources.grpc_client import (
    MutationRefusedError,
    RpcSession,
    normalize_endpoint,
    read_only_channel,
    stream_method,
    unary_method,
)
from exporter.sources.node import READ_ONLY_METHODS
from tests.fake_grpc import FakeRuntime


@pytest.mark.parametrize("bad", ["tcp://1.2.3.4:5", "relative/path", "unix://relative", ""])
def test_bad_endpoints_are_refused(bad):
    with pytest.raises(ParseError):
        normalize_endpoint(bad)


def session_for(fake: FakeRuntime) -> tuple[grpc.Channel, RpcSession]:
    channel, _ = read_only_channel(f"unix://{fake.socket}", READ_ONLY_METHODS)
    return channel, RpcSession(channel, 1.0, (("containerd-namespace", "k8s.io"),))


def test_a_mutating_call_is_refused_before_it_leaves_the_process(fake):
    channel, _ = read_only_channel(f"unix://{fake.socket}", READ_ONLY_METHODS)
    remove = channel.unary_unary(
        "/runtime.v1.RuntimeService/RemoveContainer",
        request_serializer=cri_pb.VersionRequest.SerializeToString,
        response_deserializer=cri_pb.VersionResponse.FromString,
    )
    with pytest.raises(MutationRefusedError, match="only reads"):
        remove(cri_pb.VersionRequest(), timeout=1)
    assert fake.calls["runtime.v1.RuntimeService/RemoveContainer"] == 0
    channel.close()


# containerd's Content/Write streams both ways; a guard is only as good as the
# kinds of call it intercepts, so the same mutating method is tried with each of
# the four (gRPC does not tell the kinds apart on the wire: an unguarded call of
# any kind reaches the server's handler, as the control case shows).
_WRITE = "/containerd.services.content.v1.Content/Write"
_CODEC: dict[str, Any] = {
    "request_serializer": cri_pb.VersionRequest.SerializeToString,
    "response_deserializer": cri_pb.VersionResponse.FromString,
}
_KINDS = {
    "unary_unary": lambda ch: ch.unary_unary(_WRITE, **_CODEC)(cri_pb.VersionRequest(), timeout=1),
    "unary_stream": lambda ch: list(ch.unary_stream(_WRITE, **_CODEC)(cri_pb.VersionRequest(), timeout=1)),
    "stream_unary": lambda ch: ch.stream_unary(_WRITE, **_CODEC)(iter([cri_pb.VersionRequest()]), timeout=1),
    "stream_stream": lambda ch: list(ch.stream_stream(_WRITE, **_CODEC)(iter([cri_pb.VersionRequest()]), timeout=1)),
}


@pytest.mark.parametrize("kind", sorted(_KINDS))
def test_every_kind_of_call_outside_the_allow_list_is_refused(fake, kind):
    channel, guard = read_only_channel(f"unix://{fake.socket}", READ_ONLY_METHODS)
    with pytest.raises(MutationRefusedError, match="only reads"):
        _KINDS[kind](channel)
    assert fake.calls["content/Write"] == 0
    assert guard.calls[_WRITE] == 0
    channel.close()


@pytest.mark.parametrize("kind", sorted(_KINDS))
def test_control_an_unguarded_call_of_that_kind_does_reach_the_server(fake, kind):
    channel = grpc.insecure_channel(f"unix://{fake.socket}")
    # The reply may not fit the kind; what matters is that the call arrived.
    with contextlib.suppress(grpc.RpcError):
        _KINDS[kind](channel)
    assert fake.calls["content/Write"] == 1
    channel.close()


def test_pipelined_calls_build_requests_only_as_the_window_frees(fake):
    """A cold refresh on a busy node asks thousands of per-layer questions; at most
    one window of requests and replies exists at a time (benchmarks/busy_node.py)."""
    from exporter._generated import containerd_snapshots_v1_pb2 as snapshots_pb
    from exporter.sources.grpc_client import WINDOW as _WINDOW

    channel, session = session_for(fake)
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

    usage = unary_method(
        channel,
        "/containerd.services.snapshots.v1.Snapshots/Usage",
        snapshots_pb.UsageRequest,
        snapshots_pb.UsageResponse,
    )
    session.call_many(usage, requests(), on_result, native=True)
    assert settled == built and len(settled) == 3 * _WINDOW + 5  # every reply, in order
    assert max(ahead) <= _WINDOW
    channel.close()


def test_streamed_reads_are_handed_over_a_window_at_a_time(fake):
    from exporter._generated import containerd_content_v1_pb2 as content_pb
    from exporter.sources.grpc_client import WINDOW as _WINDOW

    channel, session = session_for(fake)
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

    content_list = stream_method(
        channel,
        "/containerd.services.content.v1.Content/List",
        content_pb.ListContentRequest,
        content_pb.ListContentResponse,
    )
    session.stream_many(content_list, requests(), on_result)
    assert settled == built
    assert max(ahead) < _WINDOW
    channel.close()
