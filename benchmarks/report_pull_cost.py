"""Benchmark: `report --view pull-cost` for 10 references over 100 nodes (issue 27: <= 10 s).

    .venv/bin/python -m benchmarks.report_pull_cost [--nodes 100] [--repeat 3]

The nodes are stand-in exporters (tests/harness/pull_cost_nodes.py) answering GET
/pull-cost from recorded holdings with the exporter's own answer function, each
holding a busy node's worth of chains and blobs (3,000 chains, 6,000 blobs) and a
random share of the references' bases; they are reached through the stand-in for
the Kubernetes API server's pod proxy (tests/harness/kube_api.py). The 10
references (busy-node-shaped images, 8-14 layers) are served by the loopback
registry. The report runs as a subprocess (`--output json`, process start
included); its registry total must equal the sum of pull_costs computed here
in-process.

Reference in the same run: the transport alone, the same questions asked through
the same stand-in proxy by plain urllib with the report's concurrency (16), and
`report --view pull-cost` over the same nodes for one reference. Writes
benchmarks/results/report_pull_cost.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from benchmarks.busy_node import image_specs
from benchmarks.pull_cost import timed
from exporter.core.pull_cost import CONTAINERD, NodeHoldings, RemoteImage, RemoteLayer, rollout
from exporter.pull_cost_wire import holdings_queries
from tests.harness.image_env import image_python_env
from tests.harness.kube_api import KubeApiStandIn, exporter_pod
from tests.harness.pull_cost_nodes import PullCostNodes
from tests.harness.registry import Registry

RESULTS = Path(__file__).resolve().parent / "results"
REFERENCES = 10


def _digest(rng: random.Random) -> str:
    return "sha256:" + rng.randbytes(32).hex()


def _holdings(images: list[RemoteImage], rng: random.Random) -> NodeHoldings:
    """A busy node's chains and blobs, holding each reference's first layers with some chance."""
    chains: dict[str, int | None] = {_digest(rng): rng.randrange(1, 1 << 24) for _ in range(3000)}
    blobs = {_digest(rng) for _ in range(6000)}
    diff_bytes = {}
    for image in images:
        held = rng.randrange(len(image.layers) + 1)
        for layer, chain_id in zip(image.layers[:held], image.chain_ids[:held], strict=True):
            size = layer.size * 3
            chains[chain_id] = size
            blobs.add(layer.digest)
            diff_bytes[layer.diff_id] = size
    return NodeHoldings(CONTAINERD, chains, frozenset(blobs), diff_bytes, True, True, {})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="lse-bench-report-pc-"))
    registry = Registry().start()
    api = KubeApiStandIn("unused").start()
    nodes: PullCostNodes | None = None
    try:
        built = [spec.build() for spec in image_specs(REFERENCES, seed=27, prefix="roll")]
        refs = [registry.push(f"roll-{i}", "1", image) for i, image in enumerate(built)]
        images = [
            RemoteImage(
                ref,
                image.manifest.digest,
                image.config.digest,
                len(image.config.data),
                tuple(RemoteLayer(b.digest, len(b.data), d) for b, d in zip(image.layers, image.diff_ids, strict=True)),
            )
            for ref, image in zip(refs, built, strict=True)
        ]
        rng = random.Random(27)
        names = [f"node-{i:03d}" for i in range(args.nodes)]
        holdings = {name: _holdings(images, rng) for name in names}
        nodes = PullCostNodes(dict(holdings)).start()
        for name in names:
            api.exporter_pods.append(exporter_pod("monitoring", f"lse-{name}", name))
            api.proxied[("monitoring", f"lse-{name}", 9877)] = nodes.url(name)
        kubeconfig = str(api.kubeconfig(workdir / "kubeconfig"))
        env = image_python_env()
        command = [sys.executable, "-m", "exporter", "report", "--kubeconfig", kubeconfig, "--view", "pull-cost"]
        report_s, one_ref_s, transport_s = [], [], []
        output = ""
        for _ in range(args.repeat):
            elapsed, output = timed([*command, *refs, "-o", "json"], env)
            report_s.append(elapsed)
            one_ref_s.append(timed([*command, refs[0], "-o", "json"], env)[0])
            transport_s.append(_transport(api, names, images))
        doc = json.loads(output)
        expected = rollout(images, holdings)
        assert doc["registry_bytes"] == expected.registry_bytes, (doc["registry_bytes"], expected.registry_bytes)
        assert doc["warm_nodes"] == expected.warm_nodes and doc["nodes_answered"] == args.nodes
        results = {
            "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
            "nodes": args.nodes,
            "references": REFERENCES,
            "layers": sum(len(i.layers) for i in images),
            "questions_per_node": len(holdings_queries(images)),
            "report_seconds": {"median": statistics.median(report_s), "all": report_s},
            "report_one_reference_seconds": {"median": statistics.median(one_ref_s), "all": one_ref_s},
            "transport_only_seconds": {"median": statistics.median(transport_s), "all": transport_s},
            "registry_bytes": doc["registry_bytes"],
            "warm_nodes": doc["warm_nodes"],
        }
    finally:
        if nodes is not None:
            nodes.stop()
        api.stop()
        registry.stop()
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "report_pull_cost.json").write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    print(
        f"report --view pull-cost, {REFERENCES} references over {args.nodes} nodes: "
        f"{results['report_seconds']['median']:.2f} s median (process start included; budget 10 s); "
        f"one reference: {results['report_one_reference_seconds']['median']:.2f} s; the transport alone "
        f"(same questions, same proxy, urllib): {results['transport_only_seconds']['median']:.2f} s; "
        f"{results['questions_per_node']} questions per node; {results['registry_bytes']} B leaving the registry, "
        f"{results['warm_nodes']} warm nodes (= computed in-process)"
    )
    return 0


def _transport(api: KubeApiStandIn, names: list[str], images: list[RemoteImage]) -> float:
    """The same questions through the same stand-in proxy, by plain urllib, 16 at a time."""
    queries = [urllib.parse.urlencode(q) for q in holdings_queries(images)]

    def one(name: str) -> None:
        for query in queries:
            url = f"{api.url}/api/v1/namespaces/monitoring/pods/lse-{name}:9877/proxy/pull-cost?{query}"
            with urllib.request.urlopen(url, timeout=30) as response:
                response.read()

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(one, names))
    return time.perf_counter() - started


if __name__ == "__main__":
    sys.exit(main())
