"""The cluster report from the API server's pod proxy (a stand-in API serving
real exporters' output; no API server can be had here), from a real Prometheus
scraping several real exporters as the Prometheus Operator would (target
labels on every series, honor_labels), the same Prometheus behind a real TLS,
bearer-token and tenant-header proxy (nginx), and its HTML page in headless
Chromium. The single-exporter Prometheus path is also covered in test_prometheus.py."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.harness.kube_api import KubeApiStandIn, exporter_pod, owned, pod
from tests.harness.scenario import SampleNode
from tests.integration.conftest import ServedExporter, free_port, start_with_catalog, stop_exporter
from tests.integration.oracle import duplicates, expected

ROOT = Path(__file__).resolve().parents[2]
NODE = "itest-node"


def _api_with_workloads() -> KubeApiStandIn:
    """The stand-in API server (no real one can be had here) with the sample node's pods and a Deployment."""
    api = KubeApiStandIn(NODE).start()
    api.add_owner(owned("ReplicaSet", "default", "web-5d8f", ("Deployment", "web")))
    for name in ("web-1", "web-2"):
        api.add_pod(pod("default", name, NODE, ("ReplicaSet", "web-5d8f")))
    api.add_pod(pod("other", "solo", NODE))
    return api


@pytest.fixture(scope="module")
def cluster(
    sample_node: SampleNode, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[KubeApiStandIn, ServedExporter, Path]]:
    tmp = tmp_path_factory.mktemp("report")
    api = _api_with_workloads()
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


# Three exporter pods as the Operator's ServiceMonitor would scrape them: two in
# cluster "east", one in cluster "west" (all three read the same real
# containerd; Prometheus tells them apart by their `node` target label).
OPERATOR_NODES = {"node-a": "east", "node-b": "east", "node-c": "west"}
HONOR_LABELS_OFF = "node-c"


def operator_target_labels(node: str, cluster: str) -> dict[str, str]:
    """The target labels a ServiceMonitor scrape puts on every series, plus the chart's `node` and a cluster label."""
    return {
        "namespace": "monitoring",
        "pod": f"layer-sharing-exporter-{node[-1]}x7k2",
        "service": "layer-sharing-exporter",
        "endpoint": "metrics",
        "container": "exporter",
        "job": "layer-sharing-exporter",
        "node": node,
        "cluster": cluster,
    }


@dataclass
class OperatorScrape:
    url: str
    exporters: dict[str, ServedExporter]

    def query(self, expr: str) -> list[dict[str, Any]]:
        params = urllib.parse.urlencode({"query": expr})
        with urllib.request.urlopen(f"{self.url}/api/v1/query?{params}", timeout=10) as response:
            body = json.load(response)
        assert body["status"] == "success", body
        result: list[dict[str, Any]] = body["data"]["result"]
        return result


@pytest.fixture(scope="module")
def operator_scrape(sample_node: SampleNode, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorScrape]:
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("prometheus not found: run scripts/setup.sh (Debian package prometheus)")
    tmp = tmp_path_factory.mktemp("report-operator")
    api = _api_with_workloads()
    kubeconfig = api.kubeconfig(tmp / "kubeconfig")
    exporters: dict[str, ServedExporter] = {}
    process: subprocess.Popen[bytes] | None = None
    try:
        for node in OPERATOR_NODES:
            workdir = tmp / node
            workdir.mkdir()
            exporters[node] = start_with_catalog(
                sample_node, workdir, "--kubernetes", "--kubeconfig", str(kubeconfig), "--node-name", NODE
            )
        for exporter in exporters.values():
            exporter.wait_for(partial(web_pods_attributed, exporter), what="workloads")
        config = {
            "global": {"scrape_interval": "1s"},
            "scrape_configs": [
                {
                    "job_name": f"serviceMonitor/monitoring/layer-sharing-exporter/{honor}",
                    # What the chart's ServiceMonitor sets; node-c is scraped by a
                    # hand-written job without it (its namespace label is then the target's).
                    "honor_labels": honor,
                    "static_configs": [
                        {
                            "targets": [exporters[node].base_url.removeprefix("http://")],
                            "labels": operator_target_labels(node, cluster),
                        }
                        for node, cluster in OPERATOR_NODES.items()
                        if (node != HONOR_LABELS_OFF) == honor
                    ],
                }
                for honor in (True, False)
            ],
        }
        (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
        port = free_port()
        with open(tmp / "prometheus.log", "wb") as log:
            process = subprocess.Popen(
                [
                    binary,
                    f"--config.file={tmp / 'prometheus.yml'}",
                    f"--storage.tsdb.path={tmp / 'data'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        scrape = OperatorScrape(f"http://127.0.0.1:{port}", exporters)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and process.poll() is None:
            try:
                if len(scrape.query('layer_sharing_workload_pods{workload="web"}')) == len(OPERATOR_NODES):
                    break
            except OSError:
                pass
            time.sleep(0.5)
        else:
            pytest.fail("Prometheus never scraped the exporters:\n" + (tmp / "prometheus.log").read_text()[-3000:])
        yield scrape
    finally:
        if process is not None:
            process.terminate()
            process.wait(timeout=20)
        for exporter in exporters.values():
            stop_exporter(exporter)
        api.stop()


def web_pods_attributed(exporter: ServedExporter) -> bool:
    labels = {"namespace": "default", "workload": "web", "workload_kind": "Deployment"}
    return exporter.value("layer_sharing_workload_pods", **labels) == 2


def prometheus_report(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "exporter", "report", "--prometheus-url", url, *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_prometheus_adds_operator_target_labels(operator_scrape: OperatorScrape):
    # The premise: node-level series carry every target label; the exporter's
    # own pod series keep their namespace and pod with honor_labels, and
    # become exported_namespace and exported_pod without.
    physical = operator_scrape.query("layer_sharing_physical_bytes")
    assert len(physical) == 3
    assert all(
        {"namespace", "pod", "service", "endpoint", "container", "job", "instance", "node", "cluster"}
        <= set(series["metric"])
        for series in physical
    )
    pods = {
        series["metric"]["node"]: series["metric"]
        for series in operator_scrape.query(
            'layer_sharing_pod_bytes{pod="web-1"} or layer_sharing_pod_bytes{exported_pod="web-1"}'
        )
    }
    assert {node: labels["namespace"] for node, labels in pods.items()} == {
        "node-a": "default",
        "node-b": "default",
        "node-c": "monitoring",
    }
    assert pods["node-c"]["exported_namespace"] == "default"


def test_report_behind_the_operator_is_exact(sample_node: SampleNode, operator_scrape: OperatorScrape):
    want = expected(sample_node)
    truth = operator_scrape.exporters["node-a"]
    result = prometheus_report(operator_scrape.url, "--output", "json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert sorted(n["node"] for n in doc["nodes"]) == sorted(OPERATOR_NODES)
    for row in doc["nodes"]:
        assert row["up"] is True
        assert (row["physical"], row["logical"], row["reclaimable"], row["content"]) == (
            want.physical,
            want.logical,
            want.reclaimable,
            want.content,
        )
        assert (row["images"], row["pods"], row["shared"], row["unique"]) == (
            truth.value("layer_sharing_images"),
            truth.value("layer_sharing_pods"),
            truth.value("layer_sharing_shared_bytes"),
            truth.value("layer_sharing_unique_bytes"),
        )
    assert doc["totals"] == {
        "nodes": 3,
        "physical": 3 * want.physical,
        "logical": 3 * want.logical,
        "saved": 3 * (want.logical - want.physical),
        "reclaimable": 3 * want.reclaimable,
        "content": 3 * want.content,
        "unused_logical": 3 * int(truth.value("layer_sharing_unused_logical_bytes") or 0),
        "duplicate_bytes": 3 * int(truth.value("layer_sharing_duplicate_bytes") or 0),
        "duplicate_layers": 3 * int(truth.value("layer_sharing_duplicate_layers") or 0),
    }
    assert doc["totals"]["duplicate_layers"] > 0  # the sample node stores one diff on two parents
    metrics = truth.metrics()
    bases = {
        (dict(labels)["base"], dict(labels)["version"], dict(labels)["source"]): int(value)
        for (name, labels), value in metrics.items()
        if name == "layer_sharing_base_bytes"
    }
    assert {(b["base"], b["version"], b["source"]): b["bytes"] for b in doc["bases"]} == {
        k: 3 * v for k, v in bases.items()
    }
    assert all(b["nodes"] == 3 for b in doc["bases"])
    web = next(w for w in doc["workloads"] if w["name"] == "web")
    assert (web["namespace"], web["kind"], web["nodes"], web["pods"], web["on_catalog"]) == (
        "default",
        "Deployment",
        3,
        6,
        True,
    )
    attributed = truth.value(
        "layer_sharing_workload_attributed_bytes", namespace="default", workload="web", workload_kind="Deployment"
    )
    assert web["attributed"] == 3 * int(attributed or 0)
    sizes = {
        dict(labels)["image"]: int(value)
        for (name, labels), value in metrics.items()
        if name == "layer_sharing_image_size_bytes"
    }
    assert {i["image"]: i["size"] for i in doc["images"]} == {k: 3 * v for k, v in sizes.items()}
    assert all(i["nodes"] == 3 for i in doc["images"])


def test_prometheus_selector_narrows_to_one_cluster(sample_node: SampleNode, operator_scrape: OperatorScrape):
    want = expected(sample_node)
    result = prometheus_report(operator_scrape.url, "--prometheus-selector", 'cluster="east"', "--output", "json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert [n["node"] for n in doc["nodes"]] == ["node-a", "node-b"]
    assert (doc["totals"]["physical"], doc["totals"]["reclaimable"]) == (2 * want.physical, 2 * want.reclaimable)
    assert next(w for w in doc["workloads"] if w["name"] == "web")["pods"] == 4
    table = prometheus_report(
        operator_scrape.url, "--prometheus-selector", 'cluster="west"', "--view", "images", "--top", "2"
    )
    assert table.returncode == 0 and "1 nodes" in table.stdout, table.stderr
    nothing = prometheus_report(operator_scrape.url, "--prometheus-selector", 'cluster="north"')
    assert nothing.returncode == 3 and "no layer_sharing_up series" in nothing.stderr


# Thanos, Mimir, OpenShift's Thanos Querier: Prometheus's API behind TLS and a
# bearer token (and Mimir's tenant header). A real nginx (Debian package) in front
# of the real Prometheus above, with a CA and certificate made by the real openssl.
TOKEN = "s3cret-token"
TENANT = "team-a"


@dataclass
class AuthProxy:
    url: str
    ca_file: Path
    token_file: Path


def _make_certificates(directory: Path) -> tuple[Path, Path, Path]:
    """A CA, and a server certificate it signs for 127.0.0.1 and localhost."""
    ca_key, ca_crt = directory / "ca.key", directory / "ca.crt"
    key, csr, crt = directory / "server.key", directory / "server.csr", directory / "server.crt"
    ext = directory / "san.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n")
    for command in (
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", ca_key, "-out", ca_crt,
         "-days", "2", "-subj", "/CN=itest-ca"],
        ["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr, "-subj", "/CN=127.0.0.1"],
        ["openssl", "x509", "-req", "-in", csr, "-CA", ca_crt, "-CAkey", ca_key, "-CAcreateserial", "-out", crt,
         "-days", "2", "-extfile", ext],
    ):  # fmt: skip
        subprocess.run([str(c) for c in command], check=True, capture_output=True, timeout=60)
    return ca_crt, crt, key


NGINX_CONF = """\
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log info;
events {{ worker_connections 64; }}
http {{
  access_log {dir}/access.log;
  client_body_temp_path {dir}/body;
  proxy_temp_path {dir}/proxy;
  fastcgi_temp_path {dir}/fastcgi;
  uwsgi_temp_path {dir}/uwsgi;
  scgi_temp_path {dir}/scgi;
  server {{
    listen 127.0.0.1:{port} ssl;
    ssl_certificate {crt};
    ssl_certificate_key {key};
    location / {{
      # As an OAuth or Mimir gateway would: a bearer token, then the tenant, then an extra header.
      if ($http_authorization != "Bearer {token}") {{ return 401 "missing or wrong bearer token\\n"; }}
      if ($http_x_scope_orgid != "{tenant}") {{ return 403 "no such tenant\\n"; }}
      if ($http_x_team != "platform") {{ return 403 "no team header\\n"; }}
      proxy_pass {upstream};
    }}
  }}
}}
"""


@pytest.fixture(scope="module")
def auth_proxy(operator_scrape: OperatorScrape, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthProxy]:
    binary = shutil.which("nginx")
    if binary is None:
        pytest.fail("nginx not found: run scripts/setup.sh --test (Debian package nginx)")
    tmp = tmp_path_factory.mktemp("auth-proxy")
    ca, crt, key = _make_certificates(tmp)
    port = free_port()
    conf = tmp / "nginx.conf"
    conf.write_text(
        NGINX_CONF.format(
            dir=tmp, port=port, crt=crt, key=key, token=TOKEN, tenant=TENANT, upstream=operator_scrape.url
        )
    )
    token_file = tmp / "token"
    token_file.write_text(TOKEN + "\n")
    with open(tmp / "nginx.stderr", "wb") as log:
        process = subprocess.Popen(
            [binary, "-c", str(conf), "-p", str(tmp), "-g", "daemon off;"], stdout=subprocess.DEVNULL, stderr=log
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail("nginx did not start:\n" + (tmp / "nginx.stderr").read_text()[-2000:])
                time.sleep(0.2)
        yield AuthProxy(f"https://127.0.0.1:{port}", ca, token_file)
    finally:
        process.terminate()
        process.wait(timeout=20)


def _auth_flags(proxy: AuthProxy) -> list[str]:
    return [
        "--prometheus-bearer-token-file",
        str(proxy.token_file),
        "--prometheus-ca-file",
        str(proxy.ca_file),
        "--prometheus-tenant",
        TENANT,
        "--prometheus-header",
        "X-Team: platform",
    ]


def test_report_through_a_tls_bearer_token_proxy_is_exact(sample_node: SampleNode, auth_proxy: AuthProxy):
    want = expected(sample_node)
    result = prometheus_report(auth_proxy.url, *_auth_flags(auth_proxy), "--output", "json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert sorted(n["node"] for n in doc["nodes"]) == sorted(OPERATOR_NODES)
    assert (doc["totals"]["physical"], doc["totals"]["reclaimable"]) == (3 * want.physical, 3 * want.reclaimable)
    # The same with the token given inline, and with verification off instead of the CA.
    inline = [
        f for f in _auth_flags(auth_proxy) if f not in ("--prometheus-bearer-token-file", str(auth_proxy.token_file))
    ]
    insecure = [
        "--prometheus-bearer-token",
        TOKEN,
        "--prometheus-insecure-skip-verify",
        *[f for f in inline if f not in ("--prometheus-ca-file", str(auth_proxy.ca_file))],
    ]
    again = prometheus_report(auth_proxy.url, *insecure, "--output", "json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["totals"] == doc["totals"]


@pytest.mark.parametrize(
    ("drop", "code", "message"),
    [
        # No token: the proxy answers 401, and the report says so with what to give.
        (("--prometheus-bearer-token-file",), 3, "answered 401: missing or wrong bearer token"),
        (("--prometheus-tenant",), 3, "answered 403: no such tenant"),
        (("--prometheus-header",), 3, "answered 403: no team header"),
        # Without the CA, the certificate is not trusted: no answer at all, the connection error code.
        (("--prometheus-ca-file",), 4, "TLS certificate not trusted"),
    ],
)
def test_report_behind_the_proxy_says_what_is_missing(auth_proxy: AuthProxy, drop, code, message):
    flags = _auth_flags(auth_proxy)
    for flag in drop:
        i = flags.index(flag)
        del flags[i : i + 2]
    result = prometheus_report(auth_proxy.url, *flags)
    assert result.returncode == code, result.stderr
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
