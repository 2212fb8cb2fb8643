"""Benchmark: `report --prometheus-url` against a real Prometheus holding 1,000 nodes' series.

    make bench-report          # or: .venv/bin/python -m benchmarks.report_prometheus [--nodes 1000]
    .venv/bin/python -m benchmarks.report_prometheus --profile fleet --nodes 5000

The per-node series are the real exporter's exposition (its collector at the
default metric settings, or the fleet profile of docs/performance.md with
`--profile fleet`) of a busy-node-shaped node: 300 images of 8-14 layers
over 5 bases and 15 runtimes, 110 pods in 40 workloads, as benchmarks/busy_node.py
builds on containerd (under 1,000 series at the defaults, under 150 in the fleet
profile). Four such nodes (different seeds)
stand for the cluster, repeated over `--nodes` nodes, each with its own `node`
and `instance` and the target labels a Prometheus Operator scrape adds (with
honor_labels, the exporter's own namespace/pod labels win).

They are written as OpenMetrics with one timestamp, backfilled into a fresh TSDB
with `promtool tsdb create-blocks-from openmetrics`, and served by a real
Prometheus on loopback. Backfilled samples are older than the default 5 minute
lookback by the time Prometheus is up, so this Prometheus runs with
`--query.lookback-delta=24h` (and a long retention, so the block is kept): an
instant query at "now" then sees them, as it sees live scraped series.

The report runs as a subprocess (`--output json`); wall time and peak RSS come
from os.wait4 for that process alone. Totals must equal the generated data
exactly. `--old-ref REV` also runs the report as it was at git REV (the
download-every-series approach), for comparison. Writes
benchmarks/results/report.json (report_fleet.json for the fleet profile) and
prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from exporter.core.accounting import account
from exporter.core.facts import ImageFacts, LayerBlob, NodeFacts, SnapshotUsage, Workload
from exporter.core.state import RefreshStatus
from exporter.outputs.collector import HealthCollector, LayerSharingCollector, MetricsOptions
from tests.fakes import container, digest, pod
from tests.integration.conftest import free_port

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
TARGET_SECONDS, TARGET_RSS_MIB = 10.0, 200.0
TEMPLATES = 4
NODE_FIGURES = {
    "physical": "layer_sharing_physical_bytes",
    "logical": "layer_sharing_logical_bytes",
    "reclaimable": "layer_sharing_reclaimable_bytes",
    "content": "layer_sharing_content_bytes",
}


def busy_node_facts(seed: int, images: int = 300, pods: int = 110, workloads: int = 40) -> NodeFacts:
    """A node shaped like benchmarks/busy_node.py's, as facts (no runtime needed)."""
    rng = random.Random(seed)
    bases = [[f"os-{b}-0", f"os-{b}-1"] for b in range(5)]
    runtimes = [bases[r % 5] + [f"rt-{r}-{k}" for k in range(2)] for r in range(15)]
    image_facts = []
    usage: dict[str, SnapshotUsage] = {}
    blobs: dict[str, tuple[LayerBlob, ...]] = {}
    present: dict[str, int] = {}
    for i in range(images):
        app_layers = rng.choice([4, 4, 5, 5, 5, 5, 6, 6, 7, 8, 9, 10])
        names = runtimes[rng.randrange(15)] + [f"app-{seed}-{i}-{k}" for k in range(app_layers)]
        image = ImageFacts(
            image_id=digest(f"img-{seed}-{i}"),
            repo_tags=(f"registry.example/team-{i % 12}/app-{i}:{seed}",),
            diff_ids=tuple(digest(n) for n in names),
            compressed_size=rng.randrange(10_000_000, 400_000_000),
        )
        image_facts.append(image)
        blobs[image.image_id] = tuple(LayerBlob(digest(f"blob-{n}"), len(n) * 1_000_003) for n in names)
        present.update((blob.digest, blob.size) for blob in blobs[image.image_id])
        for chain_id in image.chain_ids:
            if chain_id not in usage:
                usage[chain_id] = SnapshotUsage(size=rng.randrange(4096, 300_000_000), inodes=rng.randrange(1, 5000))
    pause = ImageFacts(image_id=digest("pause"), repo_tags=("registry.k8s.io/pause:3.9",), diff_ids=(digest("p"),))
    usage[pause.chain_ids[0]] = SnapshotUsage(size=311_296, inodes=20)
    pod_facts, containers, owners = [], [], {}
    for p in range(pods):
        namespace, name = f"team-{p % 8}", f"svc-{p % workloads}-{p:03d}"
        pod_facts.append(pod(namespace, name))
        owners[(namespace, name)] = Workload("Deployment", f"svc-{p % workloads}")
        for c in range(rng.choice([1, 1, 2])):
            image = image_facts[rng.randrange(images // 3)]
            state = "exited" if rng.random() < 0.1 else "running"
            containers.append(container(f"c{c}", image, namespace, name, state=state, writable=rng.randrange(0, 10**8)))
    return NodeFacts(
        images=(pause, *image_facts),
        containers=tuple(containers),
        pods=tuple(pod_facts),
        layer_usage=usage,
        layer_blobs=blobs,
        present_blobs=present,
        sandbox_image_ids=frozenset({pause.image_id}),
        node_name=f"template-{seed}",
        runtime_name="containerd",
        runtime_version="1.7.22",
        workloads=owners,
    )


# The metric settings measured: the defaults, and the fleet profile docs/performance.md documents
# (node, namespace showback, bases and the top images; no pod or workload series).
PROFILES = {
    "defaults": MetricsOptions(),
    "fleet": MetricsOptions(images_top_n=5, bases_top_n=5, pods=False, workloads=False, workload_bases=False),
}


def exposition(facts: NodeFacts, options: MetricsOptions | None = None) -> str:
    """The exporter's /metrics body for these facts, at the given metric settings (default: the defaults)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(HealthCollector(RefreshStatus(generation=1, up=True)))
    registry.register(LayerSharingCollector(account(facts), None, options or MetricsOptions()))
    return generate_latest(registry).decode()


@dataclass
class Template:
    families: list[tuple[str, str, list[tuple[str, dict[str, str], float]]]]  # (family, type, samples)
    series: int


def parse(text: str) -> Template:
    families = []
    series = 0
    for family in text_string_to_metric_families(text):
        if not family.name.startswith("layer_sharing_"):
            continue
        samples = [(s.name, dict(s.labels), s.value) for s in family.samples]
        series += len(samples)
        families.append((family.name, family.type, samples))
    return Template(families, series)


def target_labels(index: int) -> dict[str, str]:
    """What the chart's ServiceMonitor scrape puts on every series of node `index`."""
    return {
        "cluster": "bench",
        "container": "exporter",
        "endpoint": "metrics",
        "instance": f"10.{index // 250}.{index % 250}.7:9877",
        "job": "layer-sharing-exporter",
        "namespace": "monitoring",
        "node": f"node-{index:04d}",
        "pod": f"layer-sharing-exporter-{index:04d}",
        "service": "layer-sharing-exporter",
    }


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def write_openmetrics(templates: list[Template], nodes: int, path: Path, timestamp: float) -> int:
    """Every node's series, family by family (OpenMetrics keeps a family's samples together)."""
    written = 0
    node_labels = [target_labels(i) for i in range(nodes)]
    with open(path, "w") as out:
        for f, (family, kind, _) in enumerate(templates[0].families):
            if not any(t.families[f][2] for t in templates):
                continue
            out.write(f"# TYPE {family} {kind}\n")
            lines = []
            for i, target in enumerate(node_labels):
                _, _, samples = templates[i % len(templates)].families[f]
                for name, own, value in samples:
                    labels = target | own  # honor_labels: the exporter's own labels win
                    body = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(labels.items()))
                    lines.append(f"{name}{{{body}}} {value:.17g} {timestamp:.3f}\n")
            out.writelines(lines)
            written += len(lines)
        out.write("# EOF\n")
    return written


def node_figures(templates: list[Template]) -> list[dict[str, int]]:
    """Each template node's own figures (physical, logical, reclaimable, content)."""
    per_template: list[dict[str, int]] = []
    for template in templates:
        figures: dict[str, int] = defaultdict(int)
        for _, _, samples in template.families:
            for name, labels, value in samples:
                for key, metric in NODE_FIGURES.items():
                    if name == metric and not labels:
                        figures[key] = int(value)
        per_template.append(figures)
    return per_template


def expected_totals(templates: list[Template], nodes: int) -> dict[str, int]:
    per_template = node_figures(templates)
    totals = {key: sum(per_template[i % len(templates)][key] for i in range(nodes)) for key in NODE_FIGURES}
    totals["nodes"] = nodes
    totals["saved"] = totals["logical"] - totals["physical"]
    return totals


def start_prometheus(data: Path, workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    binary = shutil.which("prometheus")
    if binary is None:
        raise SystemExit("prometheus not found: run scripts/setup.sh (Debian package prometheus)")
    (workdir / "prometheus.yml").write_text("global: {}\n")
    port = free_port()
    log = open(workdir / "prometheus.log", "wb")  # noqa: SIM115 - kept open for the process's life
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={workdir / 'prometheus.yml'}",
            f"--storage.tsdb.path={data}",
            "--storage.tsdb.retention.time=100y",
            "--query.lookback-delta=24h",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        try:
            with urllib.request.urlopen(url + "/-/ready", timeout=5) as response:
                if response.status == 200:
                    return process, url
        except OSError:
            pass
        time.sleep(0.5)
    raise SystemExit("Prometheus never became ready:\n" + (workdir / "prometheus.log").read_text()[-3000:])


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) a process has used so far, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _cap_memory() -> None:
    # The download-every-series approach can take gigabytes: stop it at 8 GiB
    # (a MemoryError) rather than starve the machine.
    resource.setrlimit(resource.RLIMIT_AS, (8 << 30, 8 << 30))


def run_report(
    url: str, cwd: Path, timeout: float, prometheus_pid: int, output: tuple[str, ...] = ("--output", "json")
) -> dict[str, Any]:
    """One report as a subprocess: its wall time, peak RSS (os.wait4, this process alone), the
    CPU Prometheus spent answering it, and its output."""
    prometheus_before = cpu_seconds(prometheus_pid)
    command = [sys.executable, "-m", "exporter", "report", "--prometheus-url", url, *output]
    command += ["--timeout", f"{timeout:g}"]
    started = time.perf_counter()
    with tempfile.TemporaryFile() as stdout, tempfile.TemporaryFile() as stderr:
        process = subprocess.Popen(command, cwd=cwd, stdout=stdout, stderr=stderr, preexec_fn=_cap_memory)
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - started
        prometheus_cpu = cpu_seconds(prometheus_pid) - prometheus_before
        stdout.seek(0)
        stderr.seek(0)
        out, err = stdout.read().decode(), stderr.read().decode()
    return {
        "exit_code": process.returncode,
        "wall_seconds": round(wall, 3),
        "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),  # ru_maxrss is KiB on Linux
        "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 3),
        "prometheus_cpu_seconds": round(prometheus_cpu, 2),
        "stdout": out,
        "stderr": err[-2000:],
    }


def check(doc: dict[str, Any], want: dict[str, int], templates: list[Template], nodes: int) -> list[str]:
    per_template = node_figures(templates)
    problems = [
        f"{row['node']}: {row['physical']} physical"
        for row in doc["nodes"]
        if row["physical"] != per_template[int(row["node"].removeprefix("node-")) % len(templates)]["physical"]
    ][:5]
    for key, value in want.items():
        if doc["totals"].get(key) != value:
            problems.append(f"totals.{key}: {doc['totals'].get(key)} != {value}")
    if len(doc["nodes"]) != nodes or not all(n["up"] for n in doc["nodes"]):
        problems.append(f"{len(doc['nodes'])} node rows, {sum(not n['up'] for n in doc['nodes'])} not up")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--profile", choices=sorted(PROFILES), default="defaults", help="the metric settings")
    parser.add_argument("--timeout", type=float, default=60.0, help="the report's --timeout (per query)")
    parser.add_argument("--old-ref", default="", help="also run the report as it was at this git revision")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (TSDB, logs)")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="bench-report-"))
    prometheus: subprocess.Popen[bytes] | None = None
    try:
        started = time.perf_counter()
        options = PROFILES[args.profile]
        templates = [parse(exposition(busy_node_facts(seed), options)) for seed in range(1, TEMPLATES + 1)]
        per_node = [t.series for t in templates]
        if len({len(t.families) for t in templates}) != 1:
            raise SystemExit("templates differ in families")
        openmetrics = workdir / "series.om"
        timestamp = time.time()
        series = write_openmetrics(templates, args.nodes, openmetrics, timestamp)
        print(
            f"bench: {series:,} series ({per_node} per node) written in {time.perf_counter() - started:.1f}s "
            f"({openmetrics.stat().st_size / 2**20:.0f} MiB)",
            flush=True,
        )
        started = time.perf_counter()
        data = workdir / "data"
        backfill = subprocess.run(
            ["promtool", "tsdb", "create-blocks-from", "openmetrics", str(openmetrics), str(data)],
            capture_output=True,
            text=True,
        )
        if backfill.returncode != 0:
            raise SystemExit("promtool backfill failed:\n" + backfill.stderr[-3000:])
        backfill_seconds = time.perf_counter() - started
        openmetrics.unlink()
        print(f"bench: promtool backfilled the TSDB in {backfill_seconds:.1f}s", flush=True)
        started = time.perf_counter()
        prometheus, url = start_prometheus(data, workdir)
        print(f"bench: Prometheus ready in {time.perf_counter() - started:.1f}s", flush=True)

        want = expected_totals(templates, args.nodes)
        runs: dict[str, dict[str, Any]] = {}
        # The first report reads the freshly opened block from disk; a live
        # Prometheus holds these series in its head, so the second is the usual case.
        runs["aggregated, first query"] = run_report(url, ROOT, args.timeout, prometheus.pid)
        runs["aggregated, again"] = run_report(url, ROOT, args.timeout, prometheus.pid)
        # The default table shows one view: only the node figures are asked.
        runs["aggregated, nodes view (csv)"] = run_report(
            url, ROOT, args.timeout, prometheus.pid, ("--output", "csv", "--view", "nodes")
        )
        if args.old_ref:
            old_tree = workdir / "old"
            old_tree.mkdir()
            archive = subprocess.run(["git", "-C", str(ROOT), "archive", args.old_ref, "exporter"], capture_output=True)
            subprocess.run(["tar", "-x", "-C", str(old_tree)], input=archive.stdout, check=True)
            runs[f"every series ({args.old_ref})"] = run_report(url, old_tree, args.timeout, prometheus.pid)

        rows = []
        for name, run in runs.items():
            problems = [f"exit {run['exit_code']}: {run['stderr'].strip()[-300:]}"] if run["exit_code"] != 0 else []
            if not problems and "csv" in name:
                lines = run["stdout"].splitlines()
                if len(lines) != args.nodes + 1:
                    problems = [f"{len(lines) - 1} csv rows"]
            elif not problems:
                problems = check(json.loads(run["stdout"]), want, templates, args.nodes)
            run["exact"] = not problems
            run["problems"] = problems
            del run["stdout"]
            rows.append((name, run))

        result = {
            "profile": args.profile,
            "nodes": args.nodes,
            "series": series,
            "series_per_node": per_node,
            "backfill_seconds": round(backfill_seconds, 1),
            "expected_totals": want,
            "targets": {"wall_seconds": TARGET_SECONDS, "peak_rss_mib": TARGET_RSS_MIB},
            "runs": {name: run for name, run in rows},
            "machine": {
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
                "prometheus": subprocess.run(["prometheus", "--version"], capture_output=True, text=True)
                .stdout.splitlines()[0]
                .strip(),
                "load_average_1m": round(os.getloadavg()[0], 2),
            },
        }
        RESULTS.mkdir(parents=True, exist_ok=True)
        name = "report.json" if args.profile == "defaults" else f"report_{args.profile}.json"
        (RESULTS / name).write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
        targets = f"targets: ≤ {TARGET_SECONDS:g} s, ≤ {TARGET_RSS_MIB:g} MiB"
        print(f"\n{args.nodes:,} nodes ({args.profile}), {series:,} series in Prometheus ({targets})")
        print(f"{'report':32s} {'wall s':>8s} {'peak RSS MiB':>13s} {'CPU s':>7s} {'Prometheus CPU s':>17s}  exact")
        for name, run in rows:
            print(
                f"{name:32s} {run['wall_seconds']:8.2f} {run['peak_rss_mib']:13.1f} {run['cpu_seconds']:7.2f} "
                f"{run['prometheus_cpu_seconds']:17.2f}  "
                f"{'yes' if run['exact'] else 'NO: ' + '; '.join(run['problems'])}"
            )
        ok = all(
            run["exact"] and run["wall_seconds"] <= TARGET_SECONDS and run["peak_rss_mib"] <= TARGET_RSS_MIB
            for _, run in rows[:3]
        )
        return 0 if ok else 1
    finally:
        if prometheus is not None:
            prometheus.terminate()
            prometheus.wait(timeout=60)
        if args.keep:
            print(f"bench: kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
