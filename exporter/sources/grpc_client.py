"""The gRPC transport every runtime adapter shares: read-only, with deadlines, pipelined.

Every call goes through a read-only allow-list and carries a deadline. A
whole-runtime failure (socket gone, restarting, too slow) becomes
`RuntimeUnavailableError`; a failure of one item is handed back to the caller,
which skips that item and goes on.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

import grpc
from google.protobuf.message import Message

from exporter.errors import ParseError, RuntimeUnavailableError

logger = logging.getLogger(__name__)

# Codes that mean "the runtime as a whole is not answering".
DOWN_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED})
# Calls in flight at once when many items are new (e.g. a cold start).
WINDOW = 32

T = TypeVar("T")
Req = TypeVar("Req", bound=Message)
Resp = TypeVar("Resp", bound=Message)


class MutationRefusedError(PermissionError):
    """A call outside the read-only allow-list was attempted; it never left the process."""


class ReadOnlyGuard(
    grpc.UnaryUnaryClientInterceptor,  # type: ignore[type-arg]
    grpc.UnaryStreamClientInterceptor,  # type: ignore[type-arg]
    grpc.StreamUnaryClientInterceptor,  # type: ignore[type-arg]
    grpc.StreamStreamClientInterceptor,  # type: ignore[type-arg]
):
    """Refuses any method not in the allow-list, and counts calls per method.

    It intercepts all four kinds of call: a guard that skipped the
    client-streaming kinds would let e.g. `Content/Write` (stream-stream) through.
    """

    def __init__(self, allowed: frozenset[str]) -> None:
        self.allowed = allowed
        self.calls: Counter[str] = Counter()
        # Calls started, all methods together (read without the lock by the liveness probe).
        self.started = 0
        self._lock = threading.Lock()

    def counts(self) -> dict[str, int]:
        """Calls made so far, per method (a copy: the counts move in other threads)."""
        with self._lock:
            return dict(self.calls)

    def _check(self, details: Any) -> None:
        method = details.method
        if isinstance(method, bytes):
            method = method.decode()
        if method not in self.allowed:
            raise MutationRefusedError(f"refusing to call {method}: the exporter only reads")
        with self._lock:
            self.calls[method] += 1
            self.started += 1

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        self._check(details)
        return continuation(details, request)

    def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        self._check(details)
        return continuation(details, request)

    def intercept_stream_unary(self, continuation: Any, details: Any, request_iterator: Any) -> Any:
        self._check(details)
        return continuation(details, request_iterator)

    def intercept_stream_stream(self, continuation: Any, details: Any, request_iterator: Any) -> Any:
        self._check(details)
        return continuation(details, request_iterator)


def read_only_channel(endpoint: str, allowed: frozenset[str]) -> tuple[grpc.Channel, ReadOnlyGuard]:
    """A channel to the runtime socket that can only make allow-listed calls."""
    raw = grpc.insecure_channel(
        normalize_endpoint(endpoint),
        options=[
            ("grpc.max_receive_message_length", 64 * 1024 * 1024),
            # Reconnect quickly after the runtime restarts (the default backs off to 2 min).
            ("grpc.initial_reconnect_backoff_ms", 250),
            ("grpc.min_reconnect_backoff_ms", 250),
            ("grpc.max_reconnect_backoff_ms", 2000),
            ("grpc.enable_http_proxy", 0),
            # Flow control that keeps a streamed call (a layer blob read at the
            # analysis's pace) from being received far ahead of its reader: no
            # window growth from bandwidth probing, and a 16 KiB initial window
            # per stream, which gRPC widens only to the message being read.
            # Measured on the realistic layers: about one 1 MiB chunk ahead, where
            # the defaults let several MiB pile up. It applies to every call on
            # the channel; a busy node's cold snapshot (300 images) took the same
            # 0.68-0.77 s with and without it.
            ("grpc.http2.bdp_probe", 0),
            ("grpc.http2.lookahead_bytes", 16 << 10),
        ],
    )
    guard = ReadOnlyGuard(allowed)
    return grpc.intercept_channel(raw, guard), guard


def unary_method(
    channel: grpc.Channel, path: str, request: type[Req], response: type[Resp]
) -> grpc.UnaryUnaryMultiCallable[Req, Resp]:
    return channel.unary_unary(
        path, request_serializer=request.SerializeToString, response_deserializer=response.FromString
    )


def stream_method(
    channel: grpc.Channel, path: str, request: type[Req], response: type[Resp]
) -> grpc.UnaryStreamMultiCallable[Req, Resp]:
    return channel.unary_stream(
        path, request_serializer=request.SerializeToString, response_deserializer=response.FromString
    )


def describe(exc: grpc.RpcError) -> str:
    """`CODE: details` of a failed call, for one log line."""
    code = getattr(exc, "code", lambda: None)()
    details = getattr(exc, "details", lambda: "")()
    return f"{code.name if code else 'UNKNOWN'}: {details}"


class RpcSession:
    """Calls on one channel with one deadline and one set of metadata.

    `native` calls carry the containerd namespace header; CRI calls carry none.
    `errors` counts per-item failures by stage (exported as a counter).
    """

    def __init__(self, channel: grpc.Channel, rpc_timeout: float, native_metadata: tuple[tuple[str, str], ...]) -> None:
        self.channel = channel
        self.rpc_timeout = rpc_timeout
        self._native_metadata = native_metadata
        self.errors: Counter[str] = Counter()

    def _metadata(self, native: bool) -> tuple[tuple[str, str], ...] | None:
        return self._native_metadata if native else None

    def call(self, method: Callable[..., T], request: Any, native: bool = False) -> T:
        """A unary call with a deadline; whole-runtime failures raise RuntimeUnavailableError."""
        try:
            return method(request, timeout=self.rpc_timeout, metadata=self._metadata(native))
        except grpc.RpcError as exc:
            if exc.code() in DOWN_CODES:
                raise RuntimeUnavailableError(describe(exc)) from None
            raise

    def required(self, method: Callable[..., T], request: Any) -> T:
        """A call the figures cannot do without: any failure (UNIMPLEMENTED from a
        runtime without CRI v1, PERMISSION_DENIED, ...) means the runtime is not usable."""
        try:
            return self.call(method, request)
        except grpc.RpcError as exc:
            raise RuntimeUnavailableError(describe(exc)) from None

    def stream(self, method: Callable[..., Iterable[T]], request: Any, native: bool = True) -> Iterator[T]:
        try:
            yield from method(request, timeout=self.rpc_timeout, metadata=self._metadata(native))
        except grpc.RpcError as exc:
            if exc.code() in DOWN_CODES:
                raise RuntimeUnavailableError(describe(exc)) from None
            raise

    def start_stream(self, method: Callable[..., Any], request: Any, native: bool = True) -> Any:
        """Start a server-streaming call now; its replies arrive in the background until iterated."""
        return method(request, timeout=self.rpc_timeout, metadata=self._metadata(native))

    def call_many(
        self,
        method: grpc.UnaryUnaryMultiCallable[Any, Any],
        requests: Iterable[tuple[str, Any]],
        on_result: Callable[[str, Any], None],
        native: bool = False,
    ) -> None:
        """Unary calls pipelined on the one connection, at most WINDOW in flight.

        `requests` is consumed as the window frees up and `on_result(key,
        response-or-RpcError)` sees each reply as it settles, so neither the
        requests nor the replies of a cold refresh (thousands) are held at once.
        A whole-runtime failure raises RuntimeUnavailableError and cancels what
        is still in flight.
        """
        metadata = self._metadata(native)
        in_flight: deque[tuple[str, Any]] = deque()

        def settle() -> None:
            key, future = in_flight.popleft()
            try:
                result = future.result()
            except grpc.RpcError as exc:
                if exc.code() in DOWN_CODES:
                    raise RuntimeUnavailableError(describe(exc)) from None
                result = exc
            on_result(key, result)

        try:
            for key, request in requests:
                in_flight.append((key, method.future(request, timeout=self.rpc_timeout, metadata=metadata)))
                if len(in_flight) >= WINDOW:
                    settle()
            while in_flight:
                settle()
        finally:
            for _, future in in_flight:
                future.cancel()

    def stream_many(
        self,
        method: Callable[..., Any],
        requests: Iterable[tuple[str, Any]],
        on_result: Callable[[str, Any], None],
        native: bool = True,
    ) -> None:
        """Server-streaming calls, WINDOW started together, each read whole and
        handed to `on_result(key, responses-or-RpcError)` before the next window."""
        metadata = self._metadata(native)
        pending = iter(requests)
        while batch := [
            (key, method(request, timeout=self.rpc_timeout, metadata=metadata))
            for key, request in itertools.islice(pending, WINDOW)
        ]:
            for key, call in batch:
                try:
                    result: list[Any] | grpc.RpcError = list(call)
                except grpc.RpcError as exc:
                    if exc.code() in DOWN_CODES:
                        for _, other in batch:
                            other.cancel()
                        raise RuntimeUnavailableError(describe(exc)) from None
                    result = exc
                on_result(key, result)

    def item_error(self, stage: str, message: str, *args: object) -> None:
        """One item failed: count it by stage and say so in the log."""
        self.errors[stage] += 1
        logger.warning(message, *args)


def normalize_endpoint(endpoint: str) -> str:
    """A gRPC target for the runtime socket: `unix://` URLs and bare paths.

    >>> normalize_endpoint("/run/containerd/containerd.sock")
    'unix:///run/containerd/containerd.sock'
    >>> normalize_endpoint("unix:///run/k3s/containerd/containerd.sock")
    'unix:///run/k3s/containerd/containerd.sock'
    """
    endpoint = endpoint.strip()
    if endpoint.startswith("unix://"):
        path = endpoint[len("unix://") :]
    elif endpoint.startswith("/"):
        path = endpoint
    else:
        raise ParseError(f"runtime endpoint must be unix:///path or /path, got {endpoint!r}")
    if not path.startswith("/"):
        raise ParseError(f"runtime endpoint path must be absolute, got {endpoint!r}")
    return "unix://" + path
