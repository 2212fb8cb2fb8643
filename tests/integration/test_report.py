"""The cluster report from the API server's pod proxy (a stand-in API serving
real exporters' output; no API server can be had here), and its HTML page in
headless Chromium. The Prometheus path is tested in test_prometheus.py."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness.kube_api import KubeApiStandIn, exporter_pod, owned, pod
from tests.harness.scenario import SampleNode
from tests.integration.conftest import ServedExporter, start_with_catalog, stop_exporter
from tests.integration.oracle import duplicates, expected

ROOT = Path(__file__).resolve().parents[2]
NODE = "itest-node"


@pytest.fixture(scope="module")
def cluster(
    sample_node: SampleNode, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[KubeApiStandIn, ServedExporter, Path]]:
    tmp = tmp_path_factory.mktemp("report")
    api = KubeApiStandIn(NODE).start()
    api.add_owner(owned("ReplicaSet", "default", "web-5d8f", ("Deployment", "web")))
    for name in ("web-1", "web-2"):
        api.add_pod(pod("default", name, NODE, ("ReplicaSet", "web-5d8f")))
    api.add_pod(pod("other", "solo", NODE))
    kubeconfig = api.kubeconfig(tmp / "kubeconfig")
    exporter = start_with_catalog(
        sample_node,
        tmp,
        "--kubernetes",
        "--kubeconfig",
        str(kubeconfig),
        "--node-name",
        NODE,
        "--refresh-interval",
        "0.5",
    )
    exporter.wait_for(
        lambda: (
            exporter.value(
                "layer_sharing_workload_pods", namespace="default", workload="web", workload_kind="Deployment"
            )
            == 2
        ),
        what="workloads",
    )
    # Two exporter pods: the real one, and one on a node whose pod proxy fails.
    api.exporter_pods = [
        exporter_pod("monitoring", "lse-abcde", NODE),
        exporter_pod("monitoring", "lse-ghost", "ghost"),
    ]
    api.proxied[("monitoring", "lse-abcde", 9877)] = exporter.base_url
    yield api, exporter, kubeconfig
    stop_exporter(exporter)
    api.stop()


def report(kubeconfig: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "exporter", "report", "--kubeconfig", str(kubeconfig), *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_report_through_the_pod_proxy_matches_the_exporter(sample_node: SampleNode, cluster):
    _, exporter, kubeconfig = cluster
    result = report(kubeconfig, "--output", "json")
    assert result.returncode == 1, result.stderr  # one node unreachable: partial report
    doc = json.loads(result.stdout)
    want = expected(sample_node)
    assert [n["node"] for n in doc["nodes"]] == [NODE]
    assert (doc["totals"]["physical"], doc["totals"]["logical"], doc["totals"]["reclaimable"]) == (
        want.physical,
        want.logical,
        want.reclaimable,
    )
    assert doc["nodes"][0]["content"] == want.content
    # Duplicated content and what image GC assumes, exact against ctr.
    dups = duplicates(want.usage, [image.diff_ids for image in sample_node.images.values()])
    assert (doc["totals"]["duplicate_layers"], doc["totals"]["duplicate_bytes"]) == dups
    unused = {"base", "tool"}
    assert doc["totals"]["unused_logical"] == sum(want.image_size[sample_node.images[k].image_id] for k in unused)
    base_os = next(b for b in doc["bases"] if b["base"] == "base-os")
    assert (base_os["version"], base_os["versions"], base_os["drift"]) == ("", 1, 0)
    assert doc["unreachable"][0]["node"] == "ghost" and "503" in doc["unreachable"][0]["error"]
    web = next(w for w in doc["workloads"] if w["name"] == "web")
    assert (web["kind"], web["pods"], web["on_catalog"]) == ("Deployment", 2, True)
    assert "node ghost unreachable" in result.stderr


def test_report_tables_and_csv(cluster):
    _, _, kubeconfig = cluster
    table = report(kubeconfig, "--view", "bases", "--top", "2")
    assert table.returncode == 1 and "base-os" in table.stdout and "BYTES" in table.stdout
    assert "in 1 duplicate layer copies" in " ".join(table.stdout.split())
    bases_csv = report(kubeconfig, "--output", "csv", "--view", "bases")
    assert bases_csv.stdout.splitlines()[0] == "base,version,source,nodes,images,pods,bytes,versions,drift"
    csv_out = report(kubeconfig, "--output", "csv", "--view", "workloads", "--sort", "pods")
    assert csv_out.stdout.splitlines()[0] == "namespace,kind,workload,nodes,pods,attributed,bases,on_catalog"
    assert report(kubeconfig, "--output", "yaml").returncode == 2
    assert report(kubeconfig, "--sort", "colour").returncode == 2


def test_report_exit_code_when_nothing_answers(tmp_path: Path):
    api = KubeApiStandIn(NODE).start()
    kubeconfig = api.kubeconfig(tmp_path / "kubeconfig")
    try:
        result = report(kubeconfig)
        assert result.returncode == 3 and "no running exporter pods" in result.stderr
    finally:
        api.stop()


def test_kubectl_plugin_is_installed():
    plugin = shutil.which("kubectl-layer_sharing", path=str(Path(sys.executable).parent))
    assert plugin, "console script kubectl-layer_sharing missing"
    result = subprocess.run([plugin, "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "--prometheus-url" in result.stdout


def test_html_page_renders_in_headless_chromium(cluster, tmp_path: Path):
    _, _, kubeconfig = cluster
    page = tmp_path / "report.html"
    assert report(kubeconfig, "--output", "html", str(page)).returncode == 1
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.fail("chromium not found: run scripts/setup.sh (Debian package chromium)")
    flags = [
        chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--enable-logging=stderr",
        "--v=0",
    ]
    dom = subprocess.run([*flags, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    console_errors = [line for line in dom.stderr.splitlines() if "CONSOLE" in line and "ERROR" in line.upper()]
    assert console_errors == []
    for label in ("Image bytes per node", "Base images and the images on them"):
        assert label in dom.stdout
    svgs = re.findall(r"<svg.*?</svg>", dom.stdout, re.DOTALL)
    assert len(svgs) == 2 and all(svg.count("<rect") >= 3 for svg in svgs)
    shot = ROOT / "docs" / "report-screenshot.png"
    result = subprocess.run(
        [*flags, f"--screenshot={shot}", "--window-size=1100,1400", "--hide-scrollbars", page.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0 and shot.stat().st_size > 20_000, result.stderr[-2000:]
