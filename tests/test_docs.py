"""The user docs against the code: the metric reference is generated from the
collector, every metric name the docs mention exists, every PromQL example runs
in the real promtool on series shaped like an Operator scrape of two nodes,
every chart value is in the chart's README, the README's commands (the `df`
picture, the install, the quick start) are what the code and the chart do,
docs/performance.md shows the figures the benchmarks last recorded, and every
link between the docs resolves."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from helm_python import Chart

from exporter.core.accounting import account
from exporter.outputs import df
from scripts.gen_chart_docs import documented_keys
from scripts.gen_metrics_docs import representative_families
from tests.sample_facts import sample_facts

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
CHART = ROOT / "charts" / "layer-sharing-exporter"
CHART_README = CHART / "README.md"
# What a user reads for the current state; CHANGELOG.md is history and may name
# what no longer exists, so only its links are checked.
DOCS = [README, CHART_README, *sorted((ROOT / "docs").glob("*.md"))]
RULES = ROOT / "rules" / "layer-sharing.rules.yml"
# The install command names the chart value for kube-prometheus-stack's
# `release` label before the chart defines it. Excused only while values.yaml
# lacks it; delete this once the chart has the value, and the test below then
# also checks that the monitor and the rules carry the label.

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
    "sum by (namespace) (layer_sharing_namespace_attributed_bytes)": {
        # With honorLabels (the chart's default) the exporter's namespace label is the measured pod's.
        "series": {
            f'layer_sharing_namespace_attributed_bytes{{{PODS}="a",namespace="shop"}}': 100,
            f'layer_sharing_namespace_attributed_bytes{{{PODS}="b",namespace="shop"}}': 30,
            f'layer_sharing_namespace_attributed_bytes{{{PODS}="b",namespace="batch"}}': 20,
        },
        "samples": {'{namespace="shop"}': 130, '{namespace="batch"}': 20},
    },
    "layer_sharing_image_gc_bytes_to_free > 0 and on (node, mountpoint) "
    "layer_sharing_image_gc_can_reach_low_threshold == 0": {
        # a: above the high threshold and unused images are not enough; b: they are; c: below the high one.
        "series": {
            f'layer_sharing_image_gc_bytes_to_free{{{PODS}="a",mountpoint="/var/lib/containerd"}}': 500,
            f'layer_sharing_image_gc_can_reach_low_threshold{{{PODS}="a",mountpoint="/var/lib/containerd"}}': 0,
            f'layer_sharing_image_gc_bytes_to_free{{{PODS}="b",mountpoint="/var/lib/containerd"}}': 500,
            f'layer_sharing_image_gc_can_reach_low_threshold{{{PODS}="b",mountpoint="/var/lib/containerd"}}': 1,
            f'layer_sharing_image_gc_bytes_to_free{{{PODS}="c",mountpoint="/var/lib/containerd"}}': 0,
            f'layer_sharing_image_gc_can_reach_low_threshold{{{PODS}="c",mountpoint="/var/lib/containerd"}}': 0,
        },
        "samples": {
            '{__name__="layer_sharing_image_gc_bytes_to_free",job="layer-sharing-exporter",node="a",'
            'mountpoint="/var/lib/containerd"}': 500
        },
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


def _fenced_blocks(text: str) -> list[tuple[str, str]]:
    """(info string, body) of every fenced code block."""
    return re.findall(r"^```(\w*)\n(.*?)^```", text, flags=re.S | re.M)


def _without_code(text: str) -> str:
    return re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)


def test_every_chart_value_is_in_the_charts_readme():
    """Each leaf of values.yaml is in the values table, itself or under a documented parent."""
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    table = CHART_README.read_text()
    documented = {key for key, _ in documented_keys((CHART / "values.yaml").read_text())}

    def leaves(node: Any, prefix: str) -> list[str]:
        if isinstance(node, dict) and node:
            return [leaf for k, v in node.items() for leaf in leaves(v, f"{prefix}{k}.")]
        return [prefix.rstrip(".")]

    undocumented = [
        leaf for leaf in leaves(values, "") if not any(leaf == key or leaf.startswith(key + ".") for key in documented)
    ]
    assert undocumented == []
    for key in documented:
        assert f"| `{key}` |" in table, key


def _header_words(line: str) -> list[str]:
    return re.split(r"\s{2,}", line.strip())


def _summary_shape(line: str) -> str:
    """A summary line with the node's name and every figure taken out."""
    return re.sub(r"\S*\d\S*", "#", re.sub(r"^Node \S+", "Node", line))


def test_the_readme_df_picture_is_what_df_prints():
    """The README's `df` output has the summary and the tables' columns `df` prints today."""
    (picture,) = [
        body for _, body in _fenced_blocks(README.read_text()) if body.startswith("$ layer-sharing-exporter df")
    ]
    lines = picture.splitlines()[1:]
    report = account(sample_facts())
    assert report.duplicates, "the sample node must show every table the picture shows"
    summary = df.summary(report).splitlines()
    assert [_summary_shape(line) for line in lines[: len(summary)]] == [_summary_shape(line) for line in summary]
    headers = [df.images_table(report), df.bases_table(report), df.duplicates_table(report)]
    expected = [_header_words(table.splitlines()[0]) for table in headers]
    shown = [_header_words(line) for line in lines if line.split(" ", 1)[0] in {"IMAGE", "BASE", "DIFF"}]
    assert shown == expected


def test_the_readme_quick_start_is_make_demo_and_make_test_which_ci_runs():
    blocks = [body for _, body in _fenced_blocks(README.read_text()) if body.startswith("make ")]
    (quick_start,) = blocks
    commands = [line.split("#", 1)[0].strip() for line in quick_start.splitlines() if line.startswith("make ")]
    assert commands == ["make demo", "make test"]
    targets = re.findall(r"^([a-z-]+):", (ROOT / "Makefile").read_text(), flags=re.M)
    assert {"demo", "test"} <= set(targets)
    assert "make test" in (ROOT / ".ci" / "run").read_text().splitlines()


def _helm_install(text: str) -> tuple[dict[str, Any], list[str]]:
    """The values of the doc's `helm install ... --set k=v` command, and its --set keys."""
    (command,) = [
        body.split("helm install", 1)[1].replace("\\\n", " ")
        for _, body in _fenced_blocks(text)
        if "helm install" in body
    ]
    values: dict[str, Any] = {}
    keys = re.findall(r"--set (\S+)=", command)
    for key, raw in re.findall(r"--set (\S+?)=(\S+)", command):
        value: Any = {"true": True, "false": False}.get(raw, int(raw) if raw.isdigit() else raw)
        *parents, leaf = key.split(".")
        node = values
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return values, keys


def _in_values(values: dict[str, Any], key: str) -> bool:
    node: Any = values
    for part in key.split("."):
        if not (isinstance(node, dict) and part in node):
            return bool(node == {})  # a free-form map such as labels takes any key
        node = node[part]
    return True


@pytest.mark.parametrize("doc", [README, CHART_README], ids=lambda p: str(p.relative_to(ROOT)))
def test_the_install_command_in_the_docs_is_valid_for_the_chart(doc):
    """Every --set names a chart value, the chart renders with them, and the image is the one built."""
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    values, keys = _helm_install(doc.read_text())
    assert [key for key in keys if not _in_values(defaults, key)] == []
    chart = Chart.load(CHART)
    try:
        rendered = chart.render(values, name="layer-sharing-exporter", namespace="monitoring", is_install=True)
    finally:
        chart.close()
    objects = [d for path, t in rendered.items() if path.endswith(".yaml") for d in yaml.safe_load_all(t) if d]
    kinds = {o["kind"] for o in objects}
    assert {"DaemonSet", "ServiceMonitor", "PrometheusRule"} <= kinds
    built = re.search(r"docker build -t (\S+)", README.read_text())
    assert built is not None
    (daemonset,) = [o for o in objects if o["kind"] == "DaemonSet"]
    images = [c["image"] for c in daemonset["spec"]["template"]["spec"]["containers"]]
    assert built.group(1) in images
    assert "monitoringLabels.release" in keys
    for o in objects:
        if o["kind"] in {"ServiceMonitor", "PodMonitor", "PrometheusRule"}:
            assert o["metadata"]["labels"].get("release") == "kube-prometheus-stack", o["kind"]


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    anchors = set()
    for heading in re.findall(r"^#{1,6} (.+)$", _without_code(path.read_text()), flags=re.M):
        slug = _slug(heading)
        anchors.add(slug if slug not in seen else f"{slug}-{seen[slug]}")
        seen[slug] = seen.get(slug, 0) + 1
    return anchors


def test_every_link_between_the_docs_resolves():
    broken = []
    for doc in [*DOCS, ROOT / "CHANGELOG.md"]:
        for target in re.findall(r"\]\(([^)\s]+)\)", _without_code(doc.read_text())):
            if re.match(r"[a-z]+:", target):
                continue
            path, _, anchor = target.partition("#")
            resolved = (doc.parent / path).resolve() if path else doc
            missing_anchor = bool(anchor) and resolved.suffix == ".md" and anchor not in _anchors(resolved)
            if not resolved.exists() or missing_anchor:
                broken.append((doc.name, target))
    assert broken == []


def test_the_readme_points_to_every_doc():
    linked = {(README.parent / t).resolve() for t in re.findall(r"\]\(([^)#\s]+)", README.read_text())}
    expected = {*(ROOT / "docs").glob("*.md"), CHART_README, ROOT / "CHANGELOG.md"}
    assert expected - linked == set()


def test_the_readme_stays_a_five_minute_read():
    """Details belong in docs/; the README says what it answers, shows df, installs, and points on."""
    assert len(README.read_text().splitlines()) <= 200


# Headline figures of docs/performance.md and where the benchmarks record them:
# (results file, path in it, how the doc prints it).
PERFORMANCE_FIGURES = [
    ("latest.json", "cold_start_seconds", "{:.2f} s"),
    ("latest.json", "scrape_seconds_1_clients.p99", "{:.1f} ms", 1000),
    ("latest.json", "scrape_seconds_4_clients.p99", "{:.1f} ms", 1000),
    ("latest.json", "cpu.millicores_at_30s", "{:.1f} millicores"),
    ("latest.json", "peak_rss_mib", "{:.1f} MiB"),
    ("latest.json", "peak_rss_mib_with_kubernetes", "{:.1f} MiB"),
    ("latest.json", "series_default.total", "{:,}"),
    ("wasted_busy.json", "pip_install.peak_rss_mib", "{:.1f} MiB"),
    ("wasted_busy.json", "pip_install.rss_done_mib", "{:.1f} MiB"),
    ("wasted_busy.json", "image.rss_done_mib", "{:.1f} MiB"),
    ("wasted.json", "gzip.ratio_to_tar", "({:.2f}×)"),
    ("wasted.json", "zstd.ratio_to_tar", "({:.2f}×"),
    ("wasted.json", "zstd.exporter.peak_rss_over_idle_mib", "+{:.1f} MiB"),
    ("containers_storage.json", "unchanged_read_ms", "{:.3f} ms"),
    ("series_budget.json", "defaults.series", "| {:,} ("),
    ("series_budget.json", "fleet.series", "| {:,} ("),
    ("report.json", "series", "{:,}"),
    ("report_fleet.json", "series", "{:,}"),
    ("pull_cost.json", "pull_cost_seconds.median", "{:,.0f} ms", 1000),
    ("pull_cost.json", "ctr_images_ls_seconds.median", "{:,.0f} ms", 1000),
    ("pull_cost.json", "ratio_pull_cost_to_ctr", "({:.2f}×"),
    ("pull_cost.json", "runtime_read.targeted.calls", "{:,} calls"),
    ("pull_cost.json", "runtime_read.whole_refresh.calls", "{:,} calls"),
    ("report_pull_cost.json", "report_seconds.median", "{:.2f} s", 1),
]


@pytest.mark.parametrize("figure", PERFORMANCE_FIGURES, ids=lambda f: f"{f[0]}:{f[1]}")
def test_performance_doc_shows_the_recorded_benchmark_figures(figure):
    """docs/performance.md holds the current figures: re-run a benchmark, update the doc."""
    results, path, printed, *scale = figure
    value: Any = json.loads((ROOT / "benchmarks" / "results" / results).read_text())
    for part in path.split("."):
        value = value[part]
    text = printed.format(value * scale[0] if scale else value)
    assert text in (ROOT / "docs" / "performance.md").read_text(), text


def test_every_make_target_is_in_the_development_table():
    """One Makefile entry per job a person runs, each one documented."""
    phony = next(line for line in (ROOT / "Makefile").read_text().splitlines() if line.startswith(".PHONY:"))
    table = (ROOT / "docs" / "development.md").read_text()
    missing = [t for t in phony.split(":", 1)[1].split() if f"`make {t}`" not in table]
    assert missing == []
