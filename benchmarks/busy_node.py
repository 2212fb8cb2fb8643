"""Benchmark: the exporter on a busy node, on a real containerd.

    make bench                       # or: .venv/bin/python -m benchmarks.busy_node [--images 300 --pods 110]

Builds 300 images of 8-14 layers (median 9) over 5 bases and 15 language
runtimes, runs 110 pods of 1-2 containers (some exited), leaves the rest of the
images unused, then measures the exporter (see README, Performance) and writes
a table and benchmarks/results/latest.json. Needs root (containerd).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from exporter.core.accounting import account
from exporter.sources.node import RuntimeOptions, RuntimeSource
from tests.harness.containerd import PAUSE_REF, Containerd
from tests.harness.image_env import compile_like_image, compile_like_pip_install, runtime_env
from tests.harness.images import ImageSpec, Layer, busybox_layer, write_images_tar
from tests.harness.kube_api import KubeApiStandIn, owned, pod
from tests.harness.pods import ContainerSpec, PodHandle, PodMaker
from tests.integration.conftest import ServedExporter, stop_exporter
from tests.integration.conftest import start_exporter as launch

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
SCRAPE_INTERVAL = 30.0


def small_layer(name: str, rng: random.Random) -> Layer:
    return Layer(files={f"data/{name}.bin": rng.randbytes(rng.randrange(2048, 16384))}, created_by=f"COPY {name}")


@dataclass
class BusyNode:
    refs: list[str]
    spare_refs: list[str]


def image_specs(count: int, seed: int, prefix: str = "app") -> list[ImageSpec]:
    """Images over 5 bases and 15 runtimes; 8-14 layers, median about 9."""
    rng = random.Random(seed)
    bb = busybox_layer()
    bases = [[bb, small_layer(f"os-{b}", random.Random(f"os-{b}"))] for b in range(5)]
    runtimes = [
        bases[r % 5] + [small_layer(f"rt-{r}-{k}", random.Random(f"rt-{r}-{k}")) for k in range(2)] for r in range(15)
    ]
    specs = []
    for i in range(count):
        app_layers = rng.choice([4, 4, 5, 5, 5, 5, 6, 6, 7, 8, 9, 10])  # 4 runtime layers + these: 8-14
        layers = runtimes[rng.randrange(15)] + [small_layer(f"{prefix}-{i}-{k}", rng) for k in range(app_layers)]
        specs.append(ImageSpec([f"localhost/{prefix}-{i}:1"], layers))
    return specs


def build_node(containerd: Containerd, workdir: Path, images: int, pods: int) -> tuple[BusyNode, list[PodHandle]]:
    specs = image_specs(images, seed=1)
    pause = ImageSpec([PAUSE_REF], [busybox_layer()], entrypoint=("/bin/sleep", "1000000"))
    started = time.perf_counter()
    containerd.import_image(write_images_tar([s.build() for s in (pause, *specs)], workdir / "busy.tar"))
    print(f"bench: imported {images} images in {time.perf_counter() - started:.1f}s", flush=True)
    refs = [spec.refs[0] for spec in specs]
    rng = random.Random(2)
    maker = PodMaker(containerd.endpoint, str(containerd.pod_logs))
    handles = []
    started = time.perf_counter()
    try:
        for p in range(pods):
            containers = [ContainerSpec("main", refs[rng.randrange(int(images * 0.55))])]
            if p % 2:
                containers.append(ContainerSpec("sidecar", refs[rng.randrange(int(images * 0.55))]))
            if p % 10 == 0:  # an exited container still pins its image
                pinned = refs[rng.randrange(int(images * 0.55))]
                containers.append(ContainerSpec("init", pinned, ("/bin/busybox", "true")))
            handles.append(maker.run_pod(f"ns-{p % 12}", f"pod-{p}", containers))
    finally:
        maker.close()
    print(f"bench: started {pods} pods in {time.perf_counter() - started:.1f}s", flush=True)
    return BusyNode(refs, []), handles


def kube_api_for(handles: list[PodHandle]) -> KubeApiStandIn:
    """A stand-in API server knowing the node's pods, each of one of 30 Deployments."""
    api = KubeApiStandIn("bench-node").start()
    for n, handle in enumerate(handles):
        replica_set = f"app-{n % 30}-5d8f"
        api.add_owner(owned("ReplicaSet", handle.namespace, replica_set, ("Deployment", f"app-{n % 30}")))
        api.add_pod(pod(handle.namespace, handle.name, "bench-node", ("ReplicaSet", replica_set)))
    return api


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def proc_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def scrape(url: str) -> tuple[float, bytes]:
    started = time.perf_counter()
    with urllib.request.urlopen(url, timeout=10) as response:
        body = response.read()
    return time.perf_counter() - started, body


def scrape_latencies(url: str, clients: int, per_client: int) -> list[float]:
    latencies: list[float] = []
    lock = threading.Lock()

    def worker() -> None:
        mine = [scrape(url)[0] for _ in range(per_client)]
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return latencies


def kept_alive_latencies(base: str, scrapes: int) -> list[float]:
    """Scrapes as Prometheus makes them: one kept-alive connection, the OpenMetrics
    Accept header and gzip (benchmarks/scrape.py measures the server alone)."""
    from benchmarks.scrape import PROMETHEUS_HEADERS, scrape_on

    host, port = base.split("//", 1)[1].rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        for _ in range(10):
            scrape_on(conn, PROMETHEUS_HEADERS)
        return [scrape_on(conn, PROMETHEUS_HEADERS)[0] for _ in range(scrapes)]
    finally:
        conn.close()


def series_in(body: bytes) -> int:
    return sum(1 for line in body.decode().splitlines() if line and not line.startswith("#"))


def layer_sharing_series(body: bytes) -> int:
    return sum(1 for line in body.decode().splitlines() if line.startswith("layer_sharing_"))


def start_exporter(
    endpoint: str,
    workdir: Path,
    config: str,
    interval: float,
    env: dict[str, str] | None = None,
    extra: tuple[str, ...] = (),
    python: str = sys.executable,
) -> ServedExporter:
    """The exporter as a process, as the DaemonSet runs it (the test harness's
    launcher: Python set up as the image sets it unless `env` is given)."""
    path = workdir / "config.yaml"
    path.write_text(config)
    return launch(
        endpoint,
        workdir,
        "--config",
        str(path),
        "--refresh-interval",
        str(interval),
        "--log-level",
        "warning",
        *extra,
        env=env,
        python=python,
    )


def wait_first_metrics(exporter: ServedExporter, started: float) -> float:
    """Seconds from `started` until /metrics first carries the node's figures."""
    while exporter.process.poll() is None:
        try:
            _, body = scrape(exporter.base_url + "/metrics")
            if b"layer_sharing_physical_bytes " in body:
                return time.perf_counter() - started
        except OSError:
            pass
        time.sleep(0.01)
    raise SystemExit("bench: exporter exited")


def measure_refresh(runtime: RuntimeSource) -> dict[str, float]:
    before = sum(runtime.calls.values())
    started = time.perf_counter()
    facts = runtime.snapshot()
    rpc_seconds = time.perf_counter() - started
    started = time.perf_counter()
    account(facts)
    return {
        "rpcs": sum(runtime.calls.values()) - before,
        "runtime_seconds": rpc_seconds,
        "accounting_seconds": time.perf_counter() - started,
    }


def churn(containerd: Containerd, workdir: Path, node: BusyNode, handles: list[PodHandle], pods: int) -> None:
    """10 new images and 20 pod churns (10 removed, 10 created)."""
    new = image_specs(10, seed=99, prefix="new")
    containerd.import_image(write_images_tar([s.build() for s in new], workdir / "new.tar"))
    maker = PodMaker(containerd.endpoint, str(containerd.pod_logs))
    try:
        for handle in handles[:10]:
            maker.remove_pod(handle)
        for i in range(10):
            handles.append(maker.run_pod("churn", f"churn-{i}", [ContainerSpec("main", new[i].refs[0])]))
    finally:
        maker.close()
    del handles[:10]


def ctr_reference(containerd: Containerd, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        containerd.ctr("images", "ls")
        containerd.ctr("snapshots", "--snapshotter", "overlayfs", "usage")
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--pods", type=int, default=110)
    parser.add_argument("--scrapes", type=int, default=400, help="scrapes per latency measurement")
    parser.add_argument("--cpu-seconds", type=float, default=60.0, help="length of the CPU measurement")
    args = parser.parse_args()

    # The exporter runs below as the image runs it (its Python settings, read
    # from the Dockerfile); the image has its bytecode precompiled, so do that
    # too, or the cold start would include compiling it.
    compile_like_image()
    # ...and for the comparison run with Python's default settings.
    compile_like_pip_install()
    workdir = Path(tempfile.mkdtemp(prefix="lse-bench-"))
    containerd = Containerd(workdir / "containerd")
    results: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "python_settings": runtime_env(),
        },
        "node": {"images": args.images, "pods": args.pods},
    }
    exporter = None
    try:
        containerd.start()
        results["machine"]["containerd"] = containerd.binaries.version()
        node, handles = build_node(containerd, workdir, args.images, args.pods)
        time.sleep(11)  # let containerd's 10 s stats collection see every snapshot

        # The runtime work per refresh, in process.
        runtime = RuntimeSource(RuntimeOptions(endpoint=containerd.endpoint, rpc_timeout=30))
        cold = measure_refresh(runtime)
        steady = [measure_refresh(runtime) for _ in range(20)]
        facts = runtime.snapshot()
        results["node"].update(
            containers=len(facts.containers),
            layers=len(account(facts).layers),
            unused_images=sum(1 for i in account(facts).images if not i.in_use),
            layers_per_image_median=statistics.median(len(i.diff_ids) for i in facts.images if i.image_id),
        )
        results["refresh_cold"] = cold
        results["refresh_unchanged"] = {
            "rpcs": steady[-1]["rpcs"],
            "runtime_seconds_p50": statistics.median(s["runtime_seconds"] for s in steady),
            "accounting_seconds_p50": statistics.median(s["accounting_seconds"] for s in steady),
        }
        churn(containerd, workdir, node, handles, args.pods)
        results["refresh_after_churn"] = measure_refresh(runtime)
        runtime.close()
        results["ctr_reference_seconds"] = ctr_reference(containerd)
        results["ratio_refresh_unchanged_to_ctr"] = (
            results["refresh_unchanged"]["runtime_seconds_p50"] + results["refresh_unchanged"]["accounting_seconds_p50"]
        ) / results["ctr_reference_seconds"]

        # The exporter as the DaemonSet runs it: a process, defaults.
        started = time.perf_counter()
        exporter = start_exporter(containerd.endpoint, workdir, "{}\n", interval=SCRAPE_INTERVAL)
        results["cold_start_seconds"] = wait_first_metrics(exporter, started)
        base = exporter.base_url
        _, body = scrape(base + "/metrics")
        results["series_default"] = {
            "total": series_in(body),
            "layer_sharing": layer_sharing_series(body),
            "bytes": len(body),
        }
        for clients in (1, 4):
            latencies = scrape_latencies(base + "/metrics", clients, args.scrapes // clients)
            results[f"scrape_seconds_{clients}_clients"] = {
                "p50": percentile(latencies, 0.5),
                "p99": percentile(latencies, 0.99),
                "n": len(latencies),
            }
        latencies = kept_alive_latencies(base, args.scrapes)
        results["scrape_seconds_kept_alive"] = {
            "p50": percentile(latencies, 0.5),
            "p99": percentile(latencies, 0.99),
            "n": len(latencies),
        }
        # CPU at a 30 s scrape interval: one refresh and one scrape per 30 s.
        cpu_start, wall_start = proc_cpu_seconds(exporter.process.pid), time.perf_counter()
        deadline = wall_start + args.cpu_seconds
        while time.perf_counter() < deadline:
            scrape(base + "/metrics")
            time.sleep(min(SCRAPE_INTERVAL, max(0.0, deadline - time.perf_counter())))
        idle_cpu = proc_cpu_seconds(exporter.process.pid) - cpu_start
        idle_wall = time.perf_counter() - wall_start
        results["peak_rss_mib"] = proc_peak_rss_mib(exporter.process.pid)
        stop_exporter(exporter)

        # CPU per refresh+scrape cycle, measured at a 1 s refresh interval.
        exporter = start_exporter(containerd.endpoint, workdir, "{}\n", interval=1.0)
        wait_first_metrics(exporter, time.perf_counter())
        base = exporter.base_url
        cpu_start, wall_start = proc_cpu_seconds(exporter.process.pid), time.perf_counter()
        cycles = 0
        while time.perf_counter() - wall_start < 20:
            scrape(base + "/metrics")
            cycles += 1
            time.sleep(1.0)
        busy_cpu = proc_cpu_seconds(exporter.process.pid) - cpu_start
        busy_wall = time.perf_counter() - wall_start
        refreshes = busy_wall / 1.0
        per_cycle = busy_cpu / max(refreshes, 1)
        results["peak_rss_mib"] = max(results["peak_rss_mib"], proc_peak_rss_mib(exporter.process.pid))
        stop_exporter(exporter)
        per_hour = per_cycle * 3600 / SCRAPE_INTERVAL
        results["cpu"] = {
            "seconds_per_refresh_and_scrape": per_cycle,
            "seconds_per_hour_at_30s": per_hour,
            "millicores_at_30s": per_hour / 3.6,
            "measured_idle_millicores_at_30s": idle_cpu / idle_wall * 1000,
        }

        # Every optional family on.
        exporter = start_exporter(
            containerd.endpoint,
            workdir,
            "metrics: {images_top_n: 0, bases_top_n: 0, layers_top_n: 100000, pods: true}\n",
            interval=SCRAPE_INTERVAL,
        )
        wait_first_metrics(exporter, time.perf_counter())
        _, body = scrape(exporter.base_url + "/metrics")
        results["series_everything_on"] = {
            "total": series_in(body),
            "layer_sharing": layer_sharing_series(body),
            "bytes": len(body),
        }
        stop_exporter(exporter)

        # The same start and scrapes with Python's default settings: what the
        # image's environment (its bytecode cache, MALLOC_ARENA_MAX; see the Dockerfile) saves.
        exporter = start_exporter(containerd.endpoint, workdir, "{}\n", SCRAPE_INTERVAL, env=dict(os.environ))
        wait_first_metrics(exporter, time.perf_counter())
        for clients in (1, 4):
            scrape_latencies(exporter.base_url + "/metrics", clients, args.scrapes // clients)
        results["peak_rss_mib_default_python"] = proc_peak_rss_mib(exporter.process.pid)
        stop_exporter(exporter)

        # With workload attribution (--kubernetes, on in the chart), against the
        # stand-in API server (no real one here) knowing every pod's owner.
        exporter = None
        api = kube_api_for(handles)
        try:
            exporter = start_exporter(
                containerd.endpoint,
                workdir,
                "{}\n",
                SCRAPE_INTERVAL,
                extra=(
                    "--kubernetes",
                    "--kubeconfig",
                    str(api.kubeconfig(workdir / "kubeconfig")),
                    "--node-name",
                    "bench-node",
                ),
            )
            # The first refresh may come before the watcher's first list; the next is an interval later.
            exporter.wait_for(
                lambda: b'workload_kind="Deployment"' in scrape(exporter.base_url + "/metrics")[1],
                timeout=2 * SCRAPE_INTERVAL + 10,
                what="workloads",
            )
            for clients in (1, 4):
                scrape_latencies(exporter.base_url + "/metrics", clients, args.scrapes // clients)
            results["peak_rss_mib_with_kubernetes"] = proc_peak_rss_mib(exporter.process.pid)
            stop_exporter(exporter)
            exporter = None
        finally:
            api.stop()
    finally:
        if exporter is not None and exporter.process.poll() is None:
            stop_exporter(exporter)
        containerd.cleanup()

    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "latest.json").write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    print(report(results))
    return 0


def report(r: dict[str, Any]) -> str:
    ms = 1000.0
    rows = [
        (
            "node",
            f"{r['node']['images']} images ({r['node']['unused_images']} unused), {r['node']['layers']} layers, "
            f"{r['node']['pods']} pods, {r['node']['containers']} containers",
        ),
        ("cold start to first complete /metrics", f"{r['cold_start_seconds']:.2f} s"),
        (
            "scrape p50 / p99, 1 client",
            f"{r['scrape_seconds_1_clients']['p50'] * ms:.1f} / {r['scrape_seconds_1_clients']['p99'] * ms:.1f} ms",
        ),
        (
            "scrape p50 / p99, 4 clients",
            f"{r['scrape_seconds_4_clients']['p50'] * ms:.1f} / {r['scrape_seconds_4_clients']['p99'] * ms:.1f} ms",
        ),
        (
            "scrape p50 / p99, kept alive, OpenMetrics + gzip",
            f"{r['scrape_seconds_kept_alive']['p50'] * ms:.1f} / {r['scrape_seconds_kept_alive']['p99'] * ms:.1f} ms",
        ),
        (
            "first refresh (cold caches)",
            f"{r['refresh_cold']['rpcs']} RPCs, "
            f"{r['refresh_cold']['runtime_seconds'] * ms:.0f} ms runtime + "
            f"{r['refresh_cold']['accounting_seconds'] * ms:.0f} ms accounting",
        ),
        (
            "refresh, nothing changed",
            f"{r['refresh_unchanged']['rpcs']} RPCs, "
            f"{r['refresh_unchanged']['runtime_seconds_p50'] * ms:.1f} ms runtime + "
            f"{r['refresh_unchanged']['accounting_seconds_p50'] * ms:.1f} ms accounting",
        ),
        (
            "refresh after 10 new images, 20 pod churns",
            f"{r['refresh_after_churn']['rpcs']} RPCs, {r['refresh_after_churn']['runtime_seconds'] * ms:.0f} ms",
        ),
        (
            "ctr images ls + ctr snapshots usage",
            f"{r['ctr_reference_seconds'] * ms:.0f} ms "
            f"(unchanged refresh / ctr = {r['ratio_refresh_unchanged_to_ctr']:.2f})",
        ),
        (
            "peak RSS",
            f"{r['peak_rss_mib']:.1f} MiB ({r['peak_rss_mib_default_python']:.1f} MiB with Python's default "
            f"settings, {r['peak_rss_mib_with_kubernetes']:.1f} MiB with --kubernetes)",
        ),
        (
            "CPU at a 30 s interval",
            f"{r['cpu']['millicores_at_30s']:.2f} millicores ({r['cpu']['seconds_per_hour_at_30s']:.1f} CPU s/hour)",
        ),
        (
            "series at defaults",
            f"{r['series_default']['layer_sharing']} layer_sharing_* "
            f"({r['series_default']['total']} with process_*), {r['series_default']['bytes']} B",
        ),
        ("series, every optional family on", f"{r['series_everything_on']['layer_sharing']} layer_sharing_*"),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)


if __name__ == "__main__":
    sys.exit(main())
