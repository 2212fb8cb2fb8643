"""The report's pod-proxy source against the stand-in API server proxying to a
real exporter HTTP server, plain and TLS (a real TLS handshake)."""

from __future__ import annotations

import subprocess
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest

from exporter.outputs import webconfig
from exporter.sources.kubernetes.pod_proxy import ExporterPod, exporter_pods, fetch_through_pod_proxy
from tests.harness.kube_api import KubeApiStandIn, exporter_pod
from tests.serving import serving


def _serve(web: webconfig.WebConfig | None) -> Iterator[int]:
    with serving(web, refreshed=True) as served:
        yield served.port


@pytest.fixture
def tls_exporter(tmp_path: Path) -> Iterator[int]:
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=exporter",
         "-keyout", "tls.key", "-out", "tls.crt"],
        cwd=tmp_path, check=True, capture_output=True,
    )  # fmt: skip
    config = tmp_path / "web.yml"
    config.write_text("tls_server_config:\n  cert_file: tls.crt\n  key_file: tls.key\n")
    yield from _serve(webconfig.load(config))


@pytest.fixture
def plain_exporter() -> Iterator[int]:
    yield from _serve(None)


def test_a_tls_exporter_is_read_over_https_through_the_pod_proxy(
    api: KubeApiStandIn, tls_exporter: int, plain_exporter: int, tmp_path: Path
):
    kubeconfig = str(api.kubeconfig(tmp_path / "kubeconfig"))
    api.exporter_pods = [
        exporter_pod("monitoring", "lse-tls", "node-a", tls=True),
        exporter_pod("monitoring", "lse-plain", "node-b"),
    ]
    api.proxied[("monitoring", "lse-tls", 9877)] = f"https://127.0.0.1:{tls_exporter}/"
    api.proxied[("monitoring", "lse-plain", 9877)] = f"http://127.0.0.1:{plain_exporter}/"
    pods = exporter_pods(kubeconfig, "", "app.kubernetes.io/name=layer-sharing-exporter")
    assert pods == [
        ExporterPod("monitoring", "lse-tls", "node-a", "https"),
        ExporterPod("monitoring", "lse-plain", "node-b", "http"),
    ]
    texts, failed = fetch_through_pod_proxy(kubeconfig, pods, 9877, 10)
    assert failed == []
    assert all("layer_sharing_physical_bytes 2450.0" in texts[node] for node in ("node-a", "node-b"))
    assert any("/pods/https:lse-tls:9877/proxy/metrics" in urllib.parse.unquote(r) for r in api.requests)


def test_the_scheme_can_be_forced(api: KubeApiStandIn, tls_exporter: int, tmp_path: Path):
    kubeconfig = str(api.kubeconfig(tmp_path / "kubeconfig"))
    api.exporter_pods = [exporter_pod("monitoring", "lse-tls", "node-a")]  # probes say nothing of TLS
    api.proxied[("monitoring", "lse-tls", 9877)] = f"https://127.0.0.1:{tls_exporter}/"
    selector = "app.kubernetes.io/name=layer-sharing-exporter"
    _, failed = fetch_through_pod_proxy(kubeconfig, exporter_pods(kubeconfig, "", selector), 9877, 10)
    assert [node for node, _ in failed] == ["node-a"]  # plain HTTP to a TLS port
    texts, failed = fetch_through_pod_proxy(kubeconfig, exporter_pods(kubeconfig, "", selector, "https"), 9877, 10)
    assert failed == [] and "layer_sharing_up 1.0" in texts["node-a"]
