"""The user docs against the code: the metric reference is generated from the
collector, every metric name the docs mention exists, and every PromQL example
runs in the real promtool on series shaped like an Operator scrape of two nodes."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from scripts.gen_metrics_docs import representative_families

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
RULES = ROOT / "rules" / "layer-sharing.rules.yml"

# What an Operator scrape adds to every series of one node's exporter.
NODE_A = 'job="layer-sharing-exporter",namespace="monitoring",pod="lse-a1",instance="10.0.0.1:9877",node="a"'
NODE_B = 'job="layer-sharing-exporter",namespace="monitoring",pod="lse-b7",instance="10.0.0.2:9877",node="b"'
KSM = 'job="kube-state-metrics",namespace="shop",container="app"'
PODS = 'job="layer-sharing-exporter",node'
IMAGE_AA = "docker.io/library/app@sha256:" + "a" * 64

# One case per ```promql block of the docs: series as Prometheus would hold
# them, and what the example must return.
CASES: dict[str, dict[str, Any]] = {
    "sum by (node) (layer_sharing_logical_bytes - layer_sharing_physical_bytes)": {
        "series": {
            f"layer_sharing_logical_bytes{{{NODE_A}}}": 1000,
            f"layer_sharing_physical_bytes{{{NODE_A}}}": 400,
            f"layer_sharing_logical_bytes{{{NODE_B}}}": 500,
            f"layer_sharing_physical_bytes{{{NODE_B}}}": 350,
        },
        "samples": {'{node="a"}': 600, '{node="b"}': 150},
    },
    "1 - sum(layer_sharing_physical_bytes) / sum(layer_sharing_logical_bytes)": {
        "series": {
            f"layer_sharing_logical_bytes{{{NODE_A}}}": 1000,
            f"layer_sharing_physical_bytes{{{NODE_A}}}": 400,
            f"layer_sharing_logical_bytes{{{NODE_B}}}": 500,
            f"layer_sharing_physical_bytes{{{NODE_B}}}": 350,
        },
        # 1 - 750 / 1500, not the mean of the nodes' 0.6 and 0.3.
        "samples": {"{}": 0.5},
    },
    "kube_pod_container_info * on (image_id) group_left (base) label_replace( topk by (image_ref) (1, max by "
    '(image_ref, base) (layer_sharing_image_info)), "image_id", "$1", "image_ref", "(.*)" )': {
        # The same image on two nodes: two image_info series for one image_id,
        # which the join before the fix refused (many-to-many).
        "series": {
            f'kube_pod_container_info{{{KSM},pod="web-1",image_id="{IMAGE_AA}"}}': 1,
            f'kube_pod_container_info{{{KSM},pod="web-2",image_id="{IMAGE_AA}"}}': 1,
            f'layer_sharing_image_info{{{NODE_A},image_id="sha256:{"c" * 64}",image="app:1",'
            f'image_ref="{IMAGE_AA}",base="debian-12"}}': 1,
            f'layer_sharing_image_info{{{NODE_B},image_id="sha256:{"c" * 64}",image="app:1",'
            f'image_ref="{IMAGE_AA}",base="debian-12"}}': 1,
        },
        "samples": {
            f'{{{KSM},pod="web-1",image_id="{IMAGE_AA}",base="debian-12"}}': 1,
            f'{{{KSM},pod="web-2",image_id="{IMAGE_AA}",base="debian-12"}}': 1,
        },
    },
    "sum by (namespace) (layer_sharing_pod_attributed_bytes)": {
        # With honorLabels (the chart's default) the exporter's namespace label is the measured pod's.
        "series": {
            f'layer_sharing_pod_attributed_bytes{{{PODS}="a",namespace="shop",pod="web-1"}}': 100,
            f'layer_sharing_pod_attributed_bytes{{{PODS}="b",namespace="shop",pod="web-2"}}': 30,
            f'layer_sharing_pod_attributed_bytes{{{PODS}="b",namespace="batch",pod="job-1"}}': 20,
        },
        "samples": {'{namespace="shop"}': 130, '{namespace="batch"}': 20},
    },
}


def _normalise(expr: str) -> str:
    return " ".join(line.split("#", 1)[0].strip() for line in expr.splitlines() if line.strip()).replace("  ", " ")


def promql_examples() -> list[tuple[str, str]]:
    found = []
    for path in DOCS:
        for block in re.findall(r"```promql\n(.*?)```", path.read_text(), flags=re.S):
            found.append((path.name, _normalise(block)))
    return found


def test_metric_reference_is_generated_from_the_collector():
    result = subprocess.run(
        [sys.executable, "-m", "scripts.gen_metrics_docs", "--check"], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


def _family_names() -> set[str]:
    return {f.name + ("_total" if f.type == "counter" else "") for f in representative_families()}


def test_the_generated_reference_lists_every_family_of_the_collector():
    text = (ROOT / "docs" / "metrics.md").read_text()
    names = _family_names()
    assert len(names) > 40
    for name in names:
        assert f"| `{name}` |" in text, name


def test_every_metric_name_in_the_docs_exists():
    """A name the docs mention that the collector does not export is a broken query for the reader."""
    names = _family_names()
    unknown = set()
    for path in [*DOCS, RULES]:
        # Recording rules (level:metric:operation) name their own series.
        text = re.sub(r"[a-z_]+:layer_sharing_[a-z0-9_]+:[a-z0-9_]+", "", path.read_text())
        for name in re.findall(r"\blayer_sharing_[a-z0-9_]*[a-z0-9](?![a-z0-9_*])", text):
            if name not in names:
                unknown.add((path.name, name))
    assert unknown == set()


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool not found: run scripts/setup.sh (Debian package prometheus)")
    return path


def test_every_promql_example_has_a_case():
    examples = {expr for _, expr in promql_examples()}
    assert examples == {_normalise(e) for e in CASES}


def test_every_promql_example_runs_in_promtool(promtool, tmp_path):
    tests = []
    for doc, expr in promql_examples():
        case = next(c for e, c in CASES.items() if _normalise(e) == expr)
        tests.append(
            {
                "interval": "1m",
                "name": f"{doc}: {expr[:60]}",
                "input_series": [{"series": s, "values": f"{v}x5"} for s, v in case["series"].items()],
                "promql_expr_test": [
                    {
                        "expr": expr,
                        "eval_time": "2m",
                        "exp_samples": [{"labels": labels, "value": v} for labels, v in case["samples"].items()],
                    }
                ],
            }
        )
    (tmp_path / "docs.test.yml").write_text(yaml.safe_dump({"evaluation_interval": "1m", "tests": tests}))
    result = subprocess.run([promtool, "test", "rules", "docs.test.yml"], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
