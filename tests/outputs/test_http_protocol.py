"""The HTTP server as a hostile pod network sees it: raw bytes on real sockets
against the real server (tests/serving.py), no HTTP client library to tidy
them up. Latency and memory under load are measured in benchmarks/scrape.py."""

from __future__ import annotations

import base64
import dataclasses
import http.client
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import bcrypt
import pytest

from exporter import __version__
from exporter.outputs import webconfig
from tests.outputs.test_webconfig import pki  # noqa: F401 - the module's certificate fixture
from tests.serving import Served, serving


@pytest.fixture
def served() -> Iterator[Served]:
    with serving(refreshed=True) as served:
        yield served


def connect(served: Served) -> socket.socket:
    return socket.create_connection(("127.0.0.1", served.port), timeout=5)


_pending: dict[socket.socket, bytes] = {}  # bytes read past a response


def read_response(sock: socket.socket, head_only: bool = False) -> tuple[int, dict[str, str], bytes]:
    """One response, read by its Content-Length (none for HEAD); what follows it
    is kept for the next call. Raises on a closed connection."""
    data = _pending.get(sock, b"")
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed after {data!r}")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    length = 0 if head_only else int(headers.get("content-length", "0"))
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed mid-body")
        rest += chunk
    _pending[sock] = rest[length:]
    return status, headers, rest[:length]


def nothing_more(sock: socket.socket, seconds: float = 0.5) -> bytes:
    """What else the server sends (b"" once it closes), waiting `seconds`."""
    sock.settimeout(seconds)
    try:
        return _pending.get(sock, b"") + sock.recv(65536)
    except TimeoutError:
        return _pending.get(sock, b"")


def closed_by_server(sock: socket.socket, within: float) -> bool:
    sock.settimeout(within)
    try:
        while sock.recv(65536):
            pass
        return True
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True


def exchange(served: Served, raw: bytes) -> tuple[int, dict[str, str], bytes]:
    with connect(served) as sock:
        sock.sendall(raw)
        return read_response(sock)


GET = b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


def test_the_server_header_names_no_python_version(served):
    status, headers, _ = exchange(served, GET)
    assert status == 200 and headers["server"] == f"layer-sharing-exporter/{__version__}"


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT", "PROPFIND"])
def test_other_methods_get_405_with_allow(served, method):
    status, headers, _ = exchange(served, f"{method} /metrics HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    assert status == 405 and headers["allow"] == "GET, HEAD"


@pytest.mark.parametrize(
    "request_line",
    [b"GE(T /metrics HTTP/1.1", b"G\x01T /metrics HTTP/1.1", b"GET  /metrics HTTP/1.1", b"GET /metrics HTTQ/1.1",
     b"GET metrics HTTP/1.1", b"GET /met\x7frics HTTP/1.1", b"GET /metrics HTTP/1.1 extra"],
)  # fmt: skip
def test_invalid_request_lines_get_400(served, request_line):
    assert exchange(served, request_line + b"\r\nHost: x\r\n\r\n")[0] == 400


def test_an_http_0_9_request_gets_400_at_once(served):
    with connect(served) as sock:
        sock.sendall(b"GET /metrics\r\n")
        sock.settimeout(2)  # before: no answer for 30 s
        status, _, _ = read_response(sock)
        assert status == 400


@pytest.mark.parametrize(
    "head",
    [
        b"GET /metrics HTTP/1.1\r\n\r\n",  # HTTP/1.1 without Host
        b"GET /metrics HTTP/1.1\r\nHost: x\nAccept: */*\r\n\r\n",  # a bare LF
        b"GET /metrics HTTP/1.1\r\nHost: x\r\n folded: value\r\n\r\n",  # obs-fold
        b"GET /metrics HTTP/1.1\r\nHost : x\r\n\r\n",  # space before the colon
        b"GET /metrics HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n",
        b"GET /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 1, 1\r\n\r\nx",
        b"GET /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
    ],
)
def test_invalid_heads_get_400(served, head):
    assert exchange(served, head)[0] == 400


def test_http_2_gets_505(served):
    assert exchange(served, b"GET /metrics HTTP/2.0\r\nHost: x\r\n\r\n")[0] == 505


def test_a_body_is_never_read_as_a_second_request(served):
    """Content-Length covers bytes that look like a request: they are the body,
    read and dropped; one request, one response, and the connection stays in step."""
    smuggled = b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n"
    with connect(served) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(smuggled), smuggled))
        assert read_response(sock)[0] == 200
        assert nothing_more(sock) == b""  # before: a 404 for the smuggled request
        sock.settimeout(5)
        sock.sendall(GET)
        assert read_response(sock)[0] == 200


def test_a_chunked_body_is_refused_and_the_connection_closed(served):
    smuggled = b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n"
    with connect(served) as sock:
        sock.sendall(
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            + b"%x\r\n%s\r\n0\r\n\r\n" % (len(smuggled), smuggled)
        )
        assert read_response(sock)[0] == 400
        assert closed_by_server(sock, within=3)
        assert b"404" not in _pending.get(sock, b"")


def test_a_large_body_gets_413_and_a_closed_connection(served):
    with connect(served) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\n\r\n" + b"x" * 1000)
        status, headers, _ = read_response(sock)
        assert status == 413 and headers["connection"] == "close"
        assert closed_by_server(sock, within=3)


def test_a_post_body_gets_405_and_is_not_a_request(served):
    smuggled = b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n"
    with connect(served) as sock:
        sock.sendall(b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(smuggled), smuggled))
        assert read_response(sock)[0] == 405
        assert closed_by_server(sock, within=3) and b"404" not in _pending.get(sock, b"")


def test_size_limits_on_the_request_line_and_head(served):
    assert exchange(served, b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")[0] == 414
    assert exchange(served, b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 17000 + b"\r\n\r\n")[0] == 431
    many = b"".join(b"X-%d: 1\r\n" % i for i in range(101))
    assert exchange(served, b"GET / HTTP/1.1\r\nHost: x\r\n" + many + b"\r\n")[0] == 431


def test_kept_alive_pipelined_head_and_http_1_0(served):
    with connect(served) as sock:
        sock.sendall(GET + b"HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n" + GET)
        status, headers, body = read_response(sock)
        assert status == 200 and int(headers["content-length"]) == len(body) > 0
        status, headers, empty = read_response(sock, head_only=True)  # HEAD: the GET's fields, no body
        assert status == 200 and int(headers["content-length"]) > 1000 and empty == b""
        assert read_response(sock)[0] == 200
    with connect(served) as sock:  # HTTP/1.0 closes unless asked to keep alive
        sock.sendall(b"GET /healthz HTTP/1.0\r\n\r\n")
        assert read_response(sock)[0] == 200 and closed_by_server(sock, within=3)
    with connect(served) as sock:
        sock.sendall(b"GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        status, headers, _ = read_response(sock)
        assert status == 200 and headers["connection"] == "keep-alive"
        sock.sendall(b"GET /healthz HTTP/1.0\r\n\r\n")
        assert read_response(sock)[0] == 200


def test_gzip_only_when_acceptable(served):
    q0 = exchange(served, b"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip;q=0, identity\r\n\r\n")
    assert "content-encoding" not in q0[1]
    yes = exchange(served, b"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\n\r\n")
    assert yes[1]["content-encoding"] == "gzip" and yes[1]["vary"] == "Accept-Encoding"


def test_one_deadline_for_the_whole_request_not_per_read(served):
    """A client trickling a byte every 0.2 s never lets a per-read timeout fire;
    the whole head has one deadline (shortened here from 10 s)."""
    served.server.limits = dataclasses.replace(served.server.limits, request_seconds=0.6)
    with connect(served) as sock:
        started = time.monotonic()
        for byte in GET[:-2]:
            try:
                sock.send(bytes([byte]))
            except OSError:
                break
            if closed_by_server(sock, within=0.2):
                break
        assert time.monotonic() - started < 3  # the trickle had 8 s of bytes left
        assert closed_by_server(sock, within=1)


def test_idle_and_slow_connections_hold_no_thread(served):
    before = threading.active_count()
    socks = [connect(served) for _ in range(200)]
    try:
        for sock in socks[::2]:
            sock.sendall(b"GET /metr")  # a head begun and left
        time.sleep(0.5)
        assert served.server.connections == 200
        assert threading.active_count() <= before + 2  # before: 200 more
        assert exchange(served, GET)[0] == 200
    finally:
        for sock in socks:
            sock.close()


def test_past_the_connection_cap_the_longest_waiting_goes(served):
    served.server.limits = dataclasses.replace(served.server.limits, max_connections=20)
    socks = [connect(served) for _ in range(30)]
    try:
        time.sleep(0.3)
        assert exchange(served, GET)[0] == 200  # a new scrape always gets in
        assert closed_by_server(socks[0], within=2) and served.server.connections <= 20
    finally:
        for sock in socks:
            sock.close()


def test_the_listen_backlog_is_1024(served):
    out = subprocess.run(["ss", "-ltnH", f"sport = :{served.port}"], capture_output=True, text=True, check=True)
    assert out.stdout.split()[2] == "1024"  # Send-Q of a listening socket: its backlog (before: 5)


def test_unknown_users_go_through_bcrypt_too(monkeypatch):
    """So timing does not tell which users exist (measured: benchmarks/scrape.py)."""
    hashed = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=4))
    web = webconfig.WebConfig(users={"prometheus": hashed})
    checked: list[bytes] = []
    real = bcrypt.checkpw

    def counting(password: bytes, hashed_password: bytes) -> bool:
        checked.append(hashed_password)
        return real(password, hashed_password)

    monkeypatch.setattr(bcrypt, "checkpw", counting)

    def basic(user: str, password: str) -> str:
        return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()

    assert not web.authorized(basic("nobody", "s3cret"))
    assert not web.authorized(basic("prometheus", "wrong"))
    assert len(checked) == 2 and checked[0] != hashed and checked[0][:7] == hashed[:7]  # a dummy of the same cost
    assert web.authorized(basic("prometheus", "s3cret"))
    assert web.authorized(basic("prometheus", "s3cret")) and len(checked) == 3  # then cached


def test_stalled_tls_handshakes_do_not_hold_a_scrape(pki: Path, tmp_path: Path):  # noqa: F811
    config = tmp_path / "web.yml"
    config.write_text(f"tls_server_config:\n  cert_file: {pki}/server.crt\n  key_file: {pki}/server.key\n")
    with serving(webconfig.load(config), refreshed=True) as served:
        before = threading.active_count()
        socks = [connect(served) for _ in range(100)]
        try:
            for sock in socks[::2]:
                sock.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")  # a ClientHello begun and left
            context = ssl.create_default_context(cafile=str(pki / "ca.crt"))
            conn = http.client.HTTPSConnection("127.0.0.1", served.port, context=context, timeout=5)
            conn.request("GET", "/metrics")
            assert conn.getresponse().status == 200
            conn.close()
            assert threading.active_count() <= before + 2
        finally:
            for sock in socks:
                sock.close()
