"""The raw API client, against the stand-in API server (no real API server can be had here)."""

from __future__ import annotations

from pathlib import Path

from tests.harness.kube_api import KubeApiStandIn


def test_the_api_is_read_without_the_generated_api_classes(api: KubeApiStandIn, tmp_path: Path):
    """CoreV1Api and friends cost ~24 MiB of RSS (pydantic signatures for every
    endpoint); the four URLs attribution and the report read go through the
    client's ApiClient, so those modules never load."""
    import subprocess
    import sys

    kubeconfig = api.kubeconfig(tmp_path / "kubeconfig")
    probe = (
        "import sys; from exporter.sources.kubernetes.api import Api as _Api; api = _Api(sys.argv[1]); "
        "print(len(api.list_pods('node-1')['items'])); "
        "print(sorted(m for m in sys.modules if m.startswith('kubernetes.client.api.')))"
    )
    result = subprocess.run([sys.executable, "-c", probe, str(kubeconfig)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:2] == ["6", "[]"]
