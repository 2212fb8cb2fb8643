"""Benchmark: the /metrics endpoint as Prometheus and a hostile pod network see it.

    .venv/bin/python -m benchmarks.scrape [--old-ref REV] [--hostile 1000] [--scrapes 500]

The server runs in a process of its own over a busy-node-shaped node (300
images, 110 pods: benchmarks/report_prometheus.py's facts, no runtime needed),
as `serve` wires it. Against it, on loopback:

1. Scrapes as Prometheus makes them: one kept-alive connection, the OpenMetrics
   Accept header, Accept-Encoding gzip; plain and TLS; p50/p99. The reference
   in the same run is a trivial asyncio server that answers every request with
   the same pre-rendered bytes (the floor: loopback, the client, TLS).
2. 1,000 hostile clients held open at once (idle, trickling a request head a
   byte at a time, and stalled TLS handshakes), while a legitimate client
   scrapes on new connections: its latencies, and the server's threads and RSS
   before, during and after (all bounded loops, loopback only).
3. Basic auth: the time to reject a known user's wrong password against an
   unknown user's, interleaved (timing is measured here, never asserted in a test).

`--old-ref REV` runs the same against the server as it was at git REV
(http.server, before issue 28). Writes benchmarks/results/scrape.json.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import http.client
import json
import os
import platform
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import types
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
# What Prometheus 2.x sends (scrape.go's acceptHeader with OpenMetrics first, and gzip).
PROMETHEUS_HEADERS = {
    "Accept": "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,"
    "text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
    "Accept-Encoding": "gzip",
    "User-Agent": "Prometheus/2.53.0",
    "X-Prometheus-Scrape-Timeout-Seconds": "10",
}
BCRYPT_COST = 10


# The server side (a child process)


def _busy_store() -> Any:
    from benchmarks.report_prometheus import busy_node_facts
    from exporter.outputs.collector import MetricsOptions
    from exporter.outputs.metrics_store import MetricsStore
    from exporter.service import Refresher
    from tests.fakes import FakeSource

    store = MetricsStore(MetricsOptions())
    refresher = Refresher(FakeSource(busy_node_facts(1)), store, interval=30)
    refresher.refresh_once()
    return store, refresher


def _old_modules(ref: str) -> tuple[types.ModuleType, types.ModuleType]:
    """server.py and webconfig.py as they were at `ref`, over today's metrics store."""
    modules = []
    for name in ("webconfig", "server"):
        source = subprocess.run(
            ["git", "show", f"{ref}:exporter/outputs/{name}.py"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout
        module = types.ModuleType(f"exporter.outputs.{name}")
        module.__file__ = f"<{ref}:{name}.py>"
        sys.modules[module.__name__] = module
        exec(compile(source, module.__file__, "exec"), module.__dict__)
        modules.append(module)
    return modules[0], modules[1]


async def _reference(port_out: Callable[[int], None], body: bytes, context: ssl.SSLContext | None) -> None:
    """The floor: any request head gets the same bytes, in one write."""
    response = (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/openmetrics-text; version=1.0.0; charset=utf-8\r\n"
        b"Content-Encoding: gzip\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )

    class Answer(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport
            self.buffer = b""

        def data_received(self, data: bytes) -> None:
            self.buffer += data
            while b"\r\n\r\n" in self.buffer:
                _, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
                self.transport.write(response)  # type: ignore[attr-defined]

    server = await asyncio.get_running_loop().create_server(Answer, "127.0.0.1", 0, ssl=context, backlog=1024)
    port_out(server.sockets[0].getsockname()[1])
    await asyncio.Event().wait()


def serve_child(kind: str, web_config: str | None) -> None:
    """Run one server until killed; print its port."""
    store, refresher = _busy_store()

    def announce(port: int) -> None:
        print(port, flush=True)

    if kind == "reference":
        import gzip

        body = gzip.compress(store.render(PROMETHEUS_HEADERS["Accept"])[0], compresslevel=1)
        context = None
        if web_config:
            from exporter.outputs import webconfig

            tls = webconfig.load(web_config).tls
            context = tls.context() if tls else None
        asyncio.run(_reference(announce, body, context))
        return
    if kind == "current":
        from exporter.outputs import server as server_mod
        from exporter.outputs import webconfig as web_mod
    else:
        web_mod, server_mod = _old_modules(kind.split(":", 1)[1])
    web = web_mod.load(web_config) if web_config else None
    server = server_mod.MetricsServer(store, refresher.loop_alive, "127.0.0.1", 0, web)
    announce(server.port)
    server.serve_forever()


# The client side


@dataclass
class Served:
    kind: str
    process: subprocess.Popen[str]
    port: int
    tls: ssl.SSLContext | None

    def status(self) -> dict[str, int]:
        """VmRSS (bytes) and thread count, as the kernel records them."""
        fields = {}
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "Threads"):
                number = int(value.split()[0])
                fields[key] = number * 1024 if key == "VmRSS" else number
        return {"rss_bytes": fields["VmRSS"], "threads": fields["Threads"]}

    def stop(self) -> None:
        self.process.kill()
        self.process.wait(timeout=10)


def start(kind: str, web_config: Path | None, client_tls: ssl.SSLContext | None) -> Served:
    command = [sys.executable, "-m", "benchmarks.scrape", "--serve", kind]
    if web_config:
        command += ["--web-config", str(web_config)]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    port = int(process.stdout.readline())
    served = Served(kind, process, port, client_tls)
    time.sleep(0.5)
    return served


def connection(served: Served) -> http.client.HTTPConnection:
    if served.tls is not None:
        return http.client.HTTPSConnection("127.0.0.1", served.port, context=served.tls, timeout=30)
    return http.client.HTTPConnection("127.0.0.1", served.port, timeout=30)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def summary(latencies: list[float]) -> dict[str, float]:
    return {
        "n": len(latencies),
        "p50_ms": percentile(latencies, 0.5) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
        "max_ms": max(latencies) * 1000,
    }


def scrape_on(conn: http.client.HTTPConnection, headers: dict[str, str] | None = None) -> tuple[float, int, bytes]:
    started = time.perf_counter()
    conn.request("GET", "/metrics", headers=headers if headers is not None else PROMETHEUS_HEADERS)
    response = conn.getresponse()
    body = response.read()
    return time.perf_counter() - started, response.status, body


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def interleaved(servers: dict[str, Served], scrapes: int, kept: bool) -> dict[str, dict[str, float]]:
    """Each server scraped in turn, so all see the same machine (2 vCPUs shared
    with other jobs: the reference's figures say what the machine allowed).
    `kept`: one kept-alive connection per server, as Prometheus scrapes; else a
    new connection per scrape. Also the server's CPU per scrape, which the
    machine's load does not change."""
    conns = {kind: connection(served) for kind, served in servers.items()} if kept else {}
    latencies: dict[str, list[float]] = {kind: [] for kind in servers}
    try:
        for kind in servers:
            for _ in range(20 if kept else 2):  # warm-up (connection, TLS session, first renders)
                conn = conns[kind] if kept else connection(servers[kind])
                scrape_on(conn)
                if not kept:
                    conn.close()
        cpu = {kind: cpu_seconds(served.process.pid) for kind, served in servers.items()}
        load = os.getloadavg()[0]
        for _ in range(scrapes):
            for kind, served in servers.items():
                conn = conns[kind] if kept else connection(served)
                seconds, status, _ = scrape_on(conn)
                if not kept:
                    conn.close()
                assert status == 200, (kind, status)
                latencies[kind].append(seconds)
    finally:
        for conn in conns.values():
            conn.close()
    result = {}
    for kind, served in servers.items():
        result[kind] = summary(latencies[kind])
        result[kind]["server_cpu_ms_per_scrape"] = (cpu_seconds(served.process.pid) - cpu[kind]) / scrapes * 1000
        result[kind]["load_average"] = load
    return result


# Hostile clients


HEAD = b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: slowloris\r\nX-Padding: " + b"a" * 64 + b"\r\n"


STALLED_HELLO = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"  # a ClientHello's first bytes, no more


class Hostile:
    """One hostile connection, opened again whenever the server drops it (as an attacker would)."""

    def __init__(self, port: int, kind: str) -> None:
        self.port, self.kind = port, kind
        self.sock: socket.socket | None = None
        self.sent = 0
        self.opened = 0

    def open(self, timeout: float = 1.0) -> bool:
        try:
            self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=timeout)
        except OSError:
            self.sock = None
            return False
        self.sock.setblocking(False)
        self.sent, self.opened = 0, self.opened + 1
        if self.kind == "stalled-tls":
            self.sock.send(STALLED_HELLO)
        return True

    def dropped(self) -> bool:
        if self.sock is None:
            return True
        try:
            return self.sock.recv(4096) == b""
        except BlockingIOError:
            return False
        except OSError:
            return True

    def tick(self, may_reopen: bool) -> bool:
        """Once a second: a trickler sends its next byte; a dropped connection is
        opened again (if `may_reopen`). Whether it tried to open one."""
        if self.dropped():
            if self.sock is not None:
                self.sock.close()
                self.sock = None
            if may_reopen:
                self.open(timeout=0.1)  # a server whose backlog is full would hold each try for long
            return True
        if self.kind == "trickle" and self.sent < len(HEAD) and self.sock is not None:
            try:
                self.sock.send(HEAD[self.sent : self.sent + 1])
                self.sent += 1
            except OSError:
                pass
        return False

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()


def hostile_clients(
    served: Served, reference: Served, count: int, seconds: float, scrapes_every: float
) -> dict[str, Any]:
    """`count` connections held for `seconds`: a third idle, a third trickling a
    request head (a byte a second), a third stalled TLS handshakes (a partial
    ClientHello) on a TLS server, or more tricklers on a plain one; each opened
    again when the server drops it (its deadlines drop them after 10 s). A
    legitimate client scrapes on a new connection every `scrapes_every` seconds
    meanwhile, and the reference server (not attacked) just after, for the
    machine's share of CPU."""
    before = served.status()
    kinds = ["idle", "trickle", "stalled-tls" if served.tls is not None else "trickle"]
    hostile = [Hostile(served.port, kinds[i % 3]) for i in range(count)]
    refused = sum(1 for h in hostile if not h.open())
    connected = time.perf_counter()
    legit: list[float] = []
    on_reference: list[float] = []
    failures = 0
    peak = served.status()
    next_tick = connected + 1.0
    while time.perf_counter() - connected < seconds:
        if time.perf_counter() >= next_tick:
            reopened = 0
            for h in hostile:
                reopened += h.tick(may_reopen=reopened < 200)
            next_tick = time.perf_counter() + 1.0
        try:
            conn = connection(served)
            seconds_taken, status, _ = scrape_on(conn)
            conn.close()
            if status == 200:
                legit.append(seconds_taken)
            else:
                failures += 1
        except (OSError, http.client.HTTPException):
            failures += 1
        conn = connection(reference)
        on_reference.append(scrape_on(conn)[0])
        conn.close()
        status_now = served.status()
        peak = {k: max(peak[k], status_now[k]) for k in peak}
        time.sleep(scrapes_every)
    held = sum(1 for h in hostile if not h.dropped())
    during = served.status()
    for h in hostile:
        h.close()
    deadline = time.perf_counter() + 40
    after = served.status()
    while time.perf_counter() < deadline:  # the old server's threads end at their 30 s read timeout
        time.sleep(1)
        after = served.status()
        if after["threads"] <= before["threads"] and after["rss_bytes"] <= before["rss_bytes"] + 2 * 1048576:
            break
    return {
        "clients": count,
        "refused_at_first_connect": refused,
        "connections_opened": sum(h.opened for h in hostile),
        "held_at_end": held,
        "legit_scrapes": summary(legit) if legit else {"n": 0},
        "legit_failures": failures,
        "reference_scrapes_meanwhile": summary(on_reference),
        "load_average": os.getloadavg()[0],
        "before": before,
        "peak": peak,
        "during_end": during,
        "after": after,
        "seconds_to_after": 40 - max(0.0, deadline - time.perf_counter()),
        "rss_over_idle_bytes_peak": peak["rss_bytes"] - before["rss_bytes"],
        "rss_over_idle_bytes_after": after["rss_bytes"] - before["rss_bytes"],
    }


# Basic auth timing


def auth_timing(served: Served, rounds: int) -> dict[str, Any]:
    """Rejections of a known user's wrong password against an unknown user's, interleaved."""

    def attempt(user: str) -> float:
        conn = connection(served)
        try:
            token = base64.b64encode(f"{user}:wrong-password".encode()).decode()
            started = time.perf_counter()
            conn.request("GET", "/metrics", headers={"Authorization": f"Basic {token}"})
            response = conn.getresponse()
            response.read()
            assert response.status == 401, response.status
            return time.perf_counter() - started
        finally:
            conn.close()

    attempt("prometheus"), attempt("nobody")  # warm-up (the dummy hash is made on first use)
    known, unknown = [], []
    for _ in range(rounds):
        known.append(attempt("prometheus"))
        unknown.append(attempt("nobody"))
    known_ms, unknown_ms = statistics.median(known) * 1000, statistics.median(unknown) * 1000
    return {
        "rounds": rounds,
        "bcrypt_cost": BCRYPT_COST,
        "known_user_median_ms": known_ms,
        "unknown_user_median_ms": unknown_ms,
        "unknown_to_known_ratio": unknown_ms / known_ms,
    }


def make_pki(directory: Path) -> tuple[Path, ssl.SSLContext]:
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", "tls.key", "-out", "tls.crt"],
        cwd=directory, check=True, capture_output=True,
    )  # fmt: skip
    client = ssl.create_default_context(cafile=str(directory / "tls.crt"))
    return directory, client


def web_configs(directory: Path) -> dict[str, Path]:
    import bcrypt

    hashed = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=BCRYPT_COST)).decode()
    tls = directory / "tls.yml"
    tls.write_text("tls_server_config:\n  cert_file: tls.crt\n  key_file: tls.key\n")
    auth = directory / "auth.yml"
    auth.write_text(f"basic_auth_users:\n  prometheus: '{hashed}'\n")
    return {"tls": tls, "auth": auth}


def run_transport(
    kinds: list[str], transport: str, args: argparse.Namespace, configs: dict[str, Path], tls: ssl.SSLContext
) -> dict[str, Any]:
    config = configs["tls"] if transport == "tls" else None
    servers = {kind: start(kind, config, tls if transport == "tls" else None) for kind in kinds}
    try:
        result: dict[str, Any] = {
            "kept_alive": interleaved(servers, args.scrapes, kept=True),
            "new_connection": interleaved(servers, max(50, args.scrapes // 5), kept=False),
        }
        for kind in kinds[1:]:
            attacked = hostile_clients(servers[kind], servers["reference"], args.hostile, args.hostile_seconds, 0.05)
            result[f"hostile:{kind}"] = attacked
            print(f"bench: {kind} {transport} under {args.hostile} hostile clients done", flush=True)
        result["kept_alive_after_hostile"] = interleaved(servers, args.scrapes // 2, kept=True)
    finally:
        for served in servers.values():
            served.stop()
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--web-config", help=argparse.SUPPRESS)
    parser.add_argument("--old-ref", help="also measure the server as it was at this git revision")
    parser.add_argument("--scrapes", type=int, default=500, help="scrapes per latency measurement")
    parser.add_argument("--hostile", type=int, default=1000, help="hostile connections held at once")
    parser.add_argument("--hostile-seconds", type=float, default=15.0)
    parser.add_argument("--auth-rounds", type=int, default=30)
    parser.add_argument("--latency-only", action="store_true", help="only the kept-alive scrapes, plain and TLS")
    args = parser.parse_args()
    if args.serve:
        serve_child(args.serve, args.web_config)
        return 0

    directory = Path(tempfile.mkdtemp(prefix="lse-scrape-"))
    _, tls = make_pki(directory)
    configs = web_configs(directory)
    results: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
    }
    kinds = ["reference", "current"] + ([f"old:{args.old_ref}"] if args.old_ref else [])
    if args.latency_only:
        for transport in ("plain", "tls"):
            config = configs["tls"] if transport == "tls" else None
            servers = {kind: start(kind, config, tls if transport == "tls" else None) for kind in kinds}
            try:
                results[transport] = interleaved(servers, args.scrapes, kept=True)
            finally:
                for served in servers.values():
                    served.stop()
        print(json.dumps(results, indent=2, sort_keys=True))
        return 0
    for transport in ("plain", "tls"):
        results[transport] = run_transport(kinds, transport, args, configs, tls)
    results["basic_auth"] = {}
    for kind in kinds[1:]:
        served = start(kind, configs["auth"], None)
        try:
            results["basic_auth"][kind] = auth_timing(served, args.auth_rounds)
        finally:
            served.stop()
    served = start("current", None, None)
    try:
        conn = connection(served)
        _, _, body = scrape_on(conn, {"Accept-Encoding": "identity"})
        _, _, gzipped = scrape_on(conn)
        conn.close()
    finally:
        served.stop()
    results["body"] = {"bytes": len(body), "gzip_bytes": len(gzipped)}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "scrape.json").write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    print(report(results))
    return 0


def report(r: dict[str, Any]) -> str:
    lines = [f"body: {r['body']['bytes']} B ({r['body']['gzip_bytes']} B gzip)"]
    for transport in ("plain", "tls"):
        t = r[transport]
        for key, what in (("kept_alive", "kept alive"), ("new_connection", "new connection per scrape")):
            load = next(iter(t[key].values()))["load_average"]
            lines.append(f"\n{transport}, {what} (load average {load:.1f}): p50 / p99 ms, server CPU ms per scrape")
            for kind, s in t[key].items():
                lines.append(
                    f"  {kind:20} {s['p50_ms']:6.2f} / {s['p99_ms']:6.2f}   {s['server_cpu_ms_per_scrape']:.2f}"
                )
        for key, h in t.items():
            if not key.startswith("hostile:"):
                continue
            legit, ref = h["legit_scrapes"], h["reference_scrapes_meanwhile"]
            lines.append(
                f"  {key[8:]:20} under {h['clients']} hostile ({transport}, load {h['load_average']:.1f}): "
                f"legit p50/p99/max {legit.get('p50_ms', 0):.1f}/{legit.get('p99_ms', 0):.1f}/"
                f"{legit.get('max_ms', 0):.1f} ms (n={legit['n']}, failed {h['legit_failures']}; reference meanwhile "
                f"{ref['p50_ms']:.1f}/{ref['p99_ms']:.1f}/{ref['max_ms']:.1f}); threads {h['before']['threads']} -> "
                f"{h['peak']['threads']} -> {h['after']['threads']}; RSS +{h['rss_over_idle_bytes_peak'] / 1048576:.1f}"
                f" MiB peak, +{h['rss_over_idle_bytes_after'] / 1048576:.1f} MiB after; "
                f"{h['connections_opened']} hostile connections opened, {h['held_at_end']} held at the end"
            )
    for kind, auth in r["basic_auth"].items():
        lines.append(
            f"basic auth reject, {kind}: known user {auth['known_user_median_ms']:.1f} ms, unknown user "
            f"{auth['unknown_user_median_ms']:.1f} ms (ratio {auth['unknown_to_known_ratio']:.2f})"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
