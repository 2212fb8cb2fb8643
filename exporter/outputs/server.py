"""HTTP serving: /metrics (from the metrics store), /healthz, /readyz and a landing page.

One asyncio loop in one thread owns every connection on non-blocking sockets,
so an idle, slow or stalled client holds a few KiB and no thread. /metrics is
rendered in that thread (about 1.2 ms on a busy node: a hop to a worker thread
and back cost 0.4 ms more and doubled the p99); bcrypt for basic auth, which
takes tens of milliseconds, runs on one thread of its own, one check at a time
as exporter-toolkit serialises it.

Why not http.server: it gives each connection a thread (no cap), with a
per-read timeout, so a client trickling bytes holds a thread for good. Why not
asyncio's streams: their TLS transport allocates a 256 KiB buffer per
connection (1,000 stalled handshakes: +309 MiB). TLS here is an ssl.SSLObject
over memory buffers, made only once the whole ClientHello has arrived, with a
context taken per connection so a rotated certificate is served at once
(webconfig.TlsFiles).

The server is a strict HTTP/1.1 (and 1.0) origin server for GET and HEAD:
every request has one deadline for its whole head, a declared body is read
and discarded (up to a small size) or the connection is closed, and anything
it does not understand gets a 4xx and a closed connection, never a guess.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import email.utils
import errno
import gzip
import logging
import re
import resource
import socket
import ssl
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Protocol

from exporter import __version__, pull_cost_wire
from exporter.core.pull_cost import NodeHoldings
from exporter.core.state import RefreshStatus
from exporter.outputs import pull_cost
from exporter.outputs.webconfig import WebConfig

logger = logging.getLogger(__name__)


_LANDING = """<!doctype html>
<html><head><title>layer-sharing-exporter</title></head>
<body><h1>layer-sharing-exporter {version}</h1>
<p>Shared versus unique container image layer bytes on this node.</p>
<ul><li><a href="metrics">/metrics</a></li><li><a href="healthz">/healthz</a></li>
<li><a href="readyz">/readyz</a></li></ul></body></html>
"""

# Open without credentials so the kubelet's probes work; they only say "ok".
_UNAUTHENTICATED = frozenset({"/healthz", "/readyz"})
_SERVER = f"layer-sharing-exporter/{__version__}"  # no Python version: it tells an attacker nothing we need said
_TEXT = "text/plain; charset=utf-8"
_ALLOWED = "GET, HEAD"
_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    405: "Method Not Allowed",
    413: "Content Too Large",
    414: "URI Too Long",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
    505: "HTTP Version Not Supported",
}
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_VERSION = re.compile(rb"HTTP/(\d)\.(\d)")
_FIELD_VALUE = re.compile(rb"[\t\x20-\x7e\x80-\xff]*")
_DIGITS = re.compile(rb"[0-9]{1,18}")


@dataclass(frozen=True)
class ServerLimits:
    """What one client may hold. Prometheus sends a head of a few hundred bytes
    at once and reads the answer at once; nothing here slows it down."""

    # A new connection (TLS handshake included) must send its first request's head within this.
    first_request_seconds: float = 10.0
    # A kept-alive connection may wait this long for its next request (Prometheus scrapes every 15 s-1 min).
    idle_seconds: float = 120.0
    # One deadline for a whole request head (and a body to drain), from its first byte: not per read.
    request_seconds: float = 10.0
    # Prometheus' default scrape_timeout: a client that does not take its answer by then is dropped.
    response_seconds: float = 10.0
    # Connections held at once (fewer if the open-files limit is lower); past it the longest waiting one goes.
    max_connections: int = 2048
    request_line_bytes: int = 8192
    head_bytes: int = 16384
    header_fields: int = 100
    # A GET's body (it has no meaning) is read and dropped up to this size; past it the connection closes.
    drained_body_bytes: int = 65536
    # TLS handshakes holding OpenSSL state at once (about 40 KiB each); past it the oldest goes.
    tls_handshakes: int = 128
    listen_backlog: int = 1024


class _HttpError(Exception):
    def __init__(self, status: int, message: str, allow: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.allow = allow


class _ClosedError(Exception):
    """The peer closed its side."""


@dataclass
class Request:
    method: str
    target: str
    version: tuple[int, int]
    headers: dict[str, str] = field(default_factory=dict)
    body_bytes: int = 0
    keep_alive: bool = True

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0]

    def header(self, name: str) -> str:
        return self.headers.get(name, "")


def parse_request_line(line: bytes) -> tuple[str, str, tuple[int, int]]:
    """`METHOD SP target SP HTTP/x.y` (CRLF stripped). _HttpError 400 for
    anything else, HTTP/0.9's `GET /` included; 505 for HTTP/2 and later.

    >>> parse_request_line(b"GET /metrics HTTP/1.1")
    ('GET', '/metrics', (1, 1))
    """
    parts = line.split(b" ")
    if len(parts) != 3:
        raise _HttpError(400, "malformed request line")
    method, target, version = parts
    if not _TOKEN.fullmatch(method):
        raise _HttpError(400, "invalid method")
    matched = _VERSION.fullmatch(version)
    if not matched:
        raise _HttpError(400, "invalid HTTP version")
    major, minor = int(matched[1]), int(matched[2])
    if major != 1:
        raise _HttpError(505 if major > 1 else 400, "unsupported HTTP version")
    if not target or any(c <= 0x20 or c >= 0x7F for c in target):
        raise _HttpError(400, "invalid request target")
    text = target.decode("ascii")
    if text.startswith(("http://", "https://")):  # absolute-form: the path is what we serve
        rest = text.split("://", 1)[1]
        text = "/" + rest.split("/", 1)[1] if "/" in rest else "/"
    elif not text.startswith("/") and text != "*":
        raise _HttpError(400, "invalid request target")
    return method.decode("ascii"), text, (major, minor)


def parse_head(head: bytes, limits: ServerLimits) -> Request:
    """A request head without its final CRLF CRLF: request line, then fields.

    >>> parse_head(b"GET / HTTP/1.1\\r\\nHost: a", ServerLimits()).headers
    {'host': 'a'}
    """
    lines = head.split(b"\r\n")
    method, target, version = parse_request_line(lines[0])
    if len(lines) - 1 > limits.header_fields:
        raise _HttpError(431, "too many header fields")
    headers: dict[str, str] = {}
    lengths: list[bytes] = []
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        # No obs-fold, no space before the colon, no bare CR or LF: ambiguity is how smuggling starts.
        if not colon or not _TOKEN.fullmatch(name):
            raise _HttpError(400, "malformed header field")
        value = value.strip(b" \t")
        if not _FIELD_VALUE.fullmatch(value):
            raise _HttpError(400, "invalid header field value")
        key = name.decode("ascii").lower()
        text = value.decode("latin-1")
        if key == "content-length":
            lengths.append(value)
        if key in headers:
            if key in ("host", "content-length", "authorization"):
                raise _HttpError(400, f"repeated {key}")
            headers[key] = f"{headers[key]}, {text}"
        else:
            headers[key] = text
    request = Request(method, target, version, headers)
    if version == (1, 1) and "host" not in headers:
        raise _HttpError(400, "HTTP/1.1 request without Host")
    if "transfer-encoding" in headers:
        raise _HttpError(400, "a request body is not accepted here")  # chunked or not: this server reads none
    if lengths:
        if not _DIGITS.fullmatch(lengths[0]):
            raise _HttpError(400, "invalid Content-Length")
        request.body_bytes = int(lengths[0])
    tokens = {t.strip().lower() for t in request.header("connection").split(",")}
    request.keep_alive = "close" not in tokens and (version == (1, 1) or "keep-alive" in tokens)
    return request


def accepts_gzip(accept_encoding: str) -> bool:
    """Whether gzip is acceptable (RFC 9110 12.5.3: `gzip;q=0` refuses it).

    >>> accepts_gzip("gzip"), accepts_gzip("br, gzip;q=0"), accepts_gzip("*;q=0.5"), accepts_gzip("")
    (True, False, True, False)
    """
    verdict: dict[str, bool] = {}
    for item in accept_encoding.split(","):
        coding, _, params = item.strip().partition(";")
        q = 1.0
        for param in params.split(";"):
            key, _, value = param.strip().partition("=")
            if key.lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        verdict[coding.strip().lower()] = q > 0
    return verdict.get("gzip", verdict.get("x-gzip", verdict.get("*", False)))


def _response(
    status: int, headers: list[tuple[str, str]], body: bytes, send_body: bool, connection: str | None
) -> bytes:
    """Status line, fields and body as one buffer: one write, so no segment waits on
    Nagle's algorithm for the client's delayed ACK."""
    lines = [
        f"HTTP/1.1 {status} {_REASONS[status]}",
        f"Server: {_SERVER}",
        f"Date: {email.utils.formatdate(usegmt=True)}",
        *(f"{name}: {value}" for name, value in headers),
        f"Content-Length: {len(body)}",
    ]
    if connection:
        lines.append(f"Connection: {connection}")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head + body if send_body else head


def _any_bytes(_: bytes) -> bool:
    return True


class _Connection:
    """One client socket, non-blocking, driven by the loop; TLS through an
    ssl.SSLObject over memory buffers, so bytes can wait in ours before OpenSSL
    holds any state for them."""

    def __init__(self, sock: socket.socket, loop: asyncio.AbstractEventLoop) -> None:
        self.sock = sock
        self.loop = loop
        self.buffer = bytearray()  # request bytes received and not yet parsed
        # Since when it waits on its client (None while the server answers): the longest waiting goes first.
        self.waiting_since: float | None = loop.time()
        self.task: asyncio.Task[None] | None = None
        self.tls: ssl.SSLObject | None = None
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()

    async def _ready(self, write: bool) -> None:
        fd = self.sock.fileno()
        done = self.loop.create_future()

        def wake() -> None:
            if not done.done():
                done.set_result(None)

        if write:
            self.loop.add_writer(fd, wake)
        else:
            self.loop.add_reader(fd, wake)
        try:
            await done
        finally:
            if self.sock.fileno() == fd:  # not closed (and its number reused) meanwhile
                if write:
                    self.loop.remove_writer(fd)
                else:
                    self.loop.remove_reader(fd)

    async def _fill(self, into: bytearray, enough: Callable[[bytes], bool]) -> None:
        """Receive into `into` until a chunk is `enough` to look at. The loop's reader
        callback takes the bytes, so a client trickling a byte at a time costs one
        recv per byte, not a wake-up of this task."""
        fd = self.sock.fileno()
        done = self.loop.create_future()

        def readable() -> None:
            try:
                data = self.sock.recv(16384)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if not done.done():
                    done.set_exception(exc)
                return
            if done.done():  # woken already; the task takes it from here
                into.extend(data)
                return
            if not data:
                done.set_exception(_ClosedError())
                return
            into.extend(data)
            if enough(data):
                done.set_result(None)

        self.loop.add_reader(fd, readable)
        try:
            await done
        finally:
            if self.sock.fileno() == fd:  # not closed (and its number reused) meanwhile
                self.loop.remove_reader(fd)

    async def _raw_receive(self) -> bytes:
        chunk = bytearray()
        await self._fill(chunk, _any_bytes)
        return bytes(chunk)

    async def _raw_send(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        while view:
            try:
                sent = self.sock.send(view)
            except BlockingIOError:
                await self._ready(write=True)
                continue
            view = view[sent:]

    async def client_hello(self, limit: int) -> bytes:
        """The bytes of the client's first TLS record, once it is whole: a client that
        stalls before then costs this buffer, not an OpenSSL connection (about 45 KiB)."""
        hello = bytearray()

        def whole(_: bytes) -> bool:
            if len(hello) < 5:
                return False
            return hello[0] != 0x16 or len(hello) >= 5 + int.from_bytes(hello[3:5], "big") or len(hello) > limit

        await self._fill(hello, whole)
        if hello[0] != 0x16:  # not a handshake record: plain HTTP to the TLS port, say
            raise ssl.SSLError("not a TLS handshake")
        if len(hello) < 5 + int.from_bytes(hello[3:5], "big"):
            raise ssl.SSLError("TLS ClientHello too large")
        return bytes(hello)

    async def handshake(self, context: ssl.SSLContext, hello: bytes) -> None:
        self.tls = context.wrap_bio(self._incoming, self._outgoing, server_side=True)
        self._incoming.write(hello)
        while True:
            try:
                self.tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                await self._flush()
                self._incoming.write(await self._raw_receive())
        await self._flush()

    async def _flush(self) -> None:
        if self._outgoing.pending:
            await self._raw_send(self._outgoing.read())

    async def receive(self, enough: Callable[[bytes], bool] | None = None) -> None:
        """More bytes into the buffer (on a plain connection, until a chunk is
        `enough`); _ClosedError at the peer's end."""
        if self.tls is None:
            await self._fill(self.buffer, enough or _any_bytes)
            return
        while True:
            try:
                data = self.tls.read(16384)
            except ssl.SSLWantReadError:
                await self._flush()
                self._incoming.write(await self._raw_receive())
                continue
            except ssl.SSLZeroReturnError:
                raise _ClosedError from None
            if not data:
                raise _ClosedError
            self.buffer += data
            return

    async def send(self, data: bytes) -> None:
        if self.tls is None:
            await self._raw_send(data)
            return
        self.tls.write(data)  # the whole of it, as TLS records into the outgoing buffer
        await self._flush()

    def shutdown_write(self) -> None:
        if self.tls is None:
            self.sock.shutdown(socket.SHUT_WR)

    async def read_head(self, limits: ServerLimits) -> Request:
        """The next request's head, parsed; the request line is judged as soon as it is in."""
        line_checked = False

        def whole_line(chunk: bytes) -> bool:  # something to judge: a line's end, or too many bytes
            return b"\n" in chunk or len(self.buffer) > limits.request_line_bytes

        while True:
            if not line_checked:
                while self.buffer.startswith(b"\r\n"):  # RFC 9112 2.2: ignore empty lines before a request
                    del self.buffer[:2]
                end = self.buffer.find(b"\n")
                if end > limits.request_line_bytes:
                    raise _HttpError(414, "request line too long")
                if end >= 0:
                    if end == 0 or self.buffer[end - 1] != 0x0D:
                        raise _HttpError(400, "request line not ended by CRLF")
                    parse_request_line(bytes(self.buffer[: end - 1]))  # HTTP/0.9 and bad methods: 400 now
                    line_checked = True
                elif len(self.buffer) > limits.request_line_bytes:
                    raise _HttpError(414, "request line too long")
            if line_checked:
                end = self.buffer.find(b"\r\n\r\n")
                scanned = self.buffer if end < 0 else self.buffer[: end + 4]
                if re.search(rb"[^\r]\n|\r[^\n]", scanned[:-1] if end < 0 else scanned):
                    raise _HttpError(400, "bare CR or LF in the request head")
                if end >= 0:
                    if end + 4 > limits.head_bytes:
                        raise _HttpError(431, "request head too large")
                    head = bytes(self.buffer[:end])
                    del self.buffer[: end + 4]
                    return parse_head(head, limits)
                if len(self.buffer) > limits.head_bytes:
                    raise _HttpError(431, "request head too large")
            await self.receive(whole_line)

    async def discard(self, count: int) -> None:
        while count > 0:
            if not self.buffer:
                await self.receive()
            taken = min(count, len(self.buffer))
            del self.buffer[:taken]
            count -= taken

    def close(self) -> None:
        """Close now, from the connection's task or another (eviction frees its memory at once)."""
        fd = self.sock.fileno()
        if fd >= 0:
            self.loop.remove_reader(fd)
            self.loop.remove_writer(fd)
            with contextlib.suppress(OSError):
                self.sock.close()
        self.tls = None
        self.buffer = bytearray()


class ServedStore(Protocol):
    """What the server serves: the node exporter's MetricsStore, or the locality service's store."""

    @property
    def status(self) -> RefreshStatus: ...

    @property
    def holdings(self) -> NodeHoldings | None: ...

    def render(self, accept: str) -> tuple[bytes, str]: ...


class MetricsServer:
    """An HTTP(S) server in front of one metrics store: one event-loop thread, and one for bcrypt."""

    def __init__(
        self,
        store: ServedStore,
        loop_alive: Callable[[], bool],
        host: str,
        port: int,
        web: WebConfig | None = None,
        limits: ServerLimits | None = None,
    ) -> None:
        self.store = store
        self._loop_alive = loop_alive
        self.web = web or WebConfig()
        self.limits = limits or ServerLimits()  # read per connection: tests shorten the deadlines
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._listener = socket.create_server((host, port), family=family, backlog=self.limits.listen_backlog)
        self._listener.setblocking(False)
        self._auth_pool = concurrent.futures.ThreadPoolExecutor(1, "http-auth")  # bcrypt one at a time
        self._connections: dict[_Connection, None] = {}
        self._handshaking: dict[_Connection, None] = {}  # in the order they began
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._open_files = 1024  # connections the open-files limit leaves room for
        self._entered = False  # serve_forever was called
        self._started = threading.Event()  # its loop runs
        self._stopped = threading.Event()
        self._stopping = False

    @property
    def port(self) -> int:
        return int(self._listener.getsockname()[1])

    @property
    def connections(self) -> int:
        return len(self._connections)

    def serve_forever(self) -> None:
        self._entered = True
        try:
            if not self._stopping:
                asyncio.run(self._serve())
        finally:
            self._stopped.set()

    def shutdown(self) -> None:
        """Stop serving and close every connection; returns once serve_forever has."""
        self._stopping = True
        if self._entered and not self._stopped.is_set():
            self._started.wait(timeout=10)
            loop, stop = self._loop, self._stop
            if loop is not None and stop is not None:
                with contextlib.suppress(RuntimeError):  # the loop already closed
                    loop.call_soon_threadsafe(stop.set)
            self._stopped.wait(timeout=10)
        self._listener.close()
        self._auth_pool.shutdown(wait=False, cancel_futures=True)

    def health(self) -> tuple[int, str]:
        if not self._loop_alive():
            return 503, "refresh loop stuck\n"
        return 200, "ok\n"

    def readiness(self) -> tuple[int, str]:
        status = self.store.status
        if status.generation == 0:
            return 503, "not ready: first refresh has not finished\n"
        if status.up:
            return 200, "ready: runtime answering\n"
        # Still serving (layer_sharing_up 0 tells Prometheus); say why here.
        return 200, f"ready, but {status.last_error}\n"

    # The loop

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._open_files = _open_files_allowance()
        accept = asyncio.create_task(self._accept())
        self._started.set()
        if self._stopping:
            self._stop.set()
        try:
            await self._stop.wait()
        finally:
            accept.cancel()
            for connection in list(self._connections):
                if connection.task is not None:
                    connection.task.cancel()
            await asyncio.gather(accept, *(c.task for c in self._connections if c.task), return_exceptions=True)

    async def _accept(self) -> None:
        assert self._loop is not None
        listener = _Connection(self._listener, self._loop)
        while True:
            try:
                sock, _ = self._listener.accept()
            except BlockingIOError:
                await listener._ready(write=False)
                continue
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    # Out of descriptors: make room as at the cap, and let the next accept try again.
                    logger.warning("cannot accept a connection: %s", exc.strerror)
                    if not self._evict_one():
                        await asyncio.sleep(0.1)
                    continue
                if exc.errno in (errno.ECONNABORTED, errno.EPROTO, errno.EPERM):
                    continue
                raise
            sock.setblocking(False)
            if sock.family in (socket.AF_INET, socket.AF_INET6):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            capacity = min(self.limits.max_connections, self._open_files)
            if len(self._connections) >= capacity and not self._evict_one():
                sock.close()  # every held connection is being answered: this one must come back
                continue
            connection = _Connection(sock, self._loop)
            self._connections[connection] = None
            connection.task = asyncio.create_task(self._handle(connection))

    @contextlib.asynccontextmanager
    async def _handshake_slot(self, connection: _Connection) -> AsyncIterator[None]:
        """A TLS handshake's turn: past the limit the oldest one in progress is dropped
        (a real client finishes in milliseconds, so the oldest is one that stalled)."""
        if len(self._handshaking) >= self.limits.tls_handshakes:
            oldest = next(iter(self._handshaking))
            del self._handshaking[oldest]
            self._drop(oldest)
        self._handshaking[connection] = None
        try:
            yield
        finally:
            self._handshaking.pop(connection, None)

    def _evict_one(self) -> bool:
        """Close the connection that has waited on its client longest (idle, slow or stalled)."""
        waiting = [c for c in self._connections if c.waiting_since is not None]
        if not waiting:
            return False
        self._drop(min(waiting, key=lambda c: c.waiting_since or 0.0))
        return True

    def _drop(self, connection: _Connection) -> None:
        connection.waiting_since = None
        connection.close()
        self._connections.pop(connection, None)
        if connection.task is not None:
            connection.task.cancel()

    async def _handle(self, connection: _Connection) -> None:
        limits = self.limits
        loop = connection.loop
        request: Request | None = None
        try:
            if self.web.tls is not None:
                async with asyncio.timeout(limits.first_request_seconds):
                    hello = await connection.client_hello(limits.head_bytes)
                    async with self._handshake_slot(connection):
                        await connection.handshake(self.web.tls.context(), hello)
            wait = limits.first_request_seconds
            while True:
                connection.waiting_since = loop.time()
                if not connection.buffer:
                    async with asyncio.timeout(wait):
                        await connection.receive()
                async with asyncio.timeout(limits.request_seconds):
                    request = await connection.read_head(limits)
                    if request.body_bytes > limits.drained_body_bytes:
                        raise _HttpError(413, "request body too large")
                    await connection.discard(request.body_bytes)  # a body is never taken for the next request
                connection.waiting_since = None
                if request.method not in ("GET", "HEAD"):
                    raise _HttpError(405, "method not allowed", allow=True)
                async with asyncio.timeout(limits.response_seconds):
                    status, headers, body = await self._answer(request)
                    send_body = request.method == "GET"
                    close = not request.keep_alive
                    said = "close" if close else "keep-alive" if request.version == (1, 0) else None
                    await connection.send(_response(status, headers, body, send_body, said))
                if close:
                    return
                wait = limits.idle_seconds
        except _HttpError as exc:
            logger.debug("bad request: %s", exc)
            await self._refuse(connection, exc)
        except (_ClosedError, TimeoutError, ConnectionError, ssl.SSLError, OSError) as exc:
            logger.debug("connection ended: %r", exc)
        except asyncio.CancelledError:
            pass  # evicted, or the server stops
        except Exception:  # a bug must not take the server down
            logger.exception("error serving %s", request.target if request else "a connection")
        finally:
            connection.close()
            self._connections.pop(connection, None)

    async def _refuse(self, connection: _Connection, error: _HttpError) -> None:
        """Answer a request we will not serve, then close: what followed its head is not trusted."""
        headers = [("Content-Type", _TEXT)]
        if error.allow:
            headers.append(("Allow", _ALLOWED))
        body = f"{error}\n".encode()
        try:
            async with asyncio.timeout(1.0):
                await connection.send(_response(error.status, headers, body, True, "close"))
                if connection.tls is None:
                    # Half-close and read what the client still sends, so the kernel does not
                    # reset the connection (and lose the answer) over unread bytes.
                    connection.shutdown_write()
                    connection.buffer.clear()
                    for _ in range(16):
                        await connection.receive()
                        connection.buffer.clear()
        except (_ClosedError, TimeoutError, OSError, ssl.SSLError):
            pass

    async def _answer(self, request: Request) -> tuple[int, list[tuple[str, str]], bytes]:
        assert self._loop is not None
        path = request.path
        if path not in _UNAUTHENTICATED:
            credentials = request.headers.get("authorization")
            allowed = self.web.cached_verdict(credentials)
            if allowed is None:  # bcrypt must decide: on its own thread, never the loop's
                allowed = await self._loop.run_in_executor(self._auth_pool, self.web.authorized, credentials)
            if not allowed:
                headers = [("Content-Type", _TEXT), ("WWW-Authenticate", 'Basic realm="layer-sharing-exporter"')]
                return 401, headers, b"unauthorized\n"
        try:
            if path == "/metrics":
                # In the loop's thread: rendering holds the GIL anyway, and a hop to a
                # worker and back costs two thread wake-ups, slow on a busy node.
                return self._metrics(request.header("accept"), request.header("accept-encoding"))
            if path == pull_cost_wire.PATH:
                # What the node holds of the layers asked (report --view pull-cost): read-only, bounded work.
                status, text = pull_cost.answer(self.store.holdings, request.target.partition("?")[2])
                return status, [("Content-Type", "application/json")], text.encode()
            if path == "/healthz":
                status, text = self.health()
            elif path == "/readyz":
                status, text = self.readiness()
            elif path == "/":
                landing = _LANDING.format(version=__version__).encode()
                return 200, [("Content-Type", "text/html; charset=utf-8")], landing
            else:
                status, text = 404, "not found\n"
            return status, [("Content-Type", _TEXT)], text.encode()
        except Exception:  # a rendering bug must not take the server down
            logger.exception("error serving %s", path)
            return 500, [("Content-Type", _TEXT)], b"internal error\n"

    def _metrics(self, accept: str, accept_encoding: str) -> tuple[int, list[tuple[str, str]], bytes]:
        body, content_type = self.store.render(accept)
        headers = [("Content-Type", content_type), ("Vary", "Accept-Encoding")]
        if len(body) > 1024 and accepts_gzip(accept_encoding):
            body = gzip.compress(body, compresslevel=1, mtime=0)
            headers.append(("Content-Encoding", "gzip"))
        return 200, headers, body


def _open_files_allowance() -> int:
    """Connections the open-files limit leaves room for. The soft limit is raised
    to the hard one first, as Go's runtime does for every Go exporter."""
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard == resource.RLIM_INFINITY or soft < hard:
            target = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
    except (OSError, ValueError):
        soft = 1024
    return max(16, soft - 64)  # the rest: gRPC to the runtime, the layer store, the Kubernetes API
