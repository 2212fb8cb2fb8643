"""`catalog REF...` against the loopback registry: YAML the config accepts, and clear refusals."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
import yaml

from exporter.cli.main import main
from exporter.config import parse_bases
from tests.harness.images import ImageSpec, data_layer
from tests.harness.registry import Registry


def test_references_become_catalog_entries(capsys, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    registry = Registry(auth=("robot", "pw"), bearer=True).start()
    try:
        auth = base64.b64encode(b"robot:pw").decode()
        (tmp_path / "config.json").write_text(json.dumps({"auths": {registry.host: {"auth": auth}}}))
        monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
        base12 = ImageSpec(["d:12"], [data_layer("cat-12", 100)]).build()
        base11 = ImageSpec(["d:11"], [data_layer("cat-11", 100)]).build()
        arm = ImageSpec(["d:11"], [data_layer("cat-11-arm", 100)], architecture="arm64").build()
        registry.push("lib/debian", "12", base12)
        ref11, _ = registry.push_index("lib/debian", "11", {"amd64": base11, "arm64": arm})
        by_digest = f"{registry.host}/lib/debian@{base12.manifest.digest}"
        assert main(["catalog", f"{registry.host}/lib/debian:12", ref11, f"pinned={by_digest}"]) == 0
        out = capsys.readouterr().out
        assert out.startswith("# layer-sharing-exporter catalog, platform linux/amd64")
        entries = yaml.safe_load(out)["bases"]
        assert entries == [
            {"name": f"{registry.host}/lib/debian", "version": "12", "diff_ids": list(base12.diff_ids)},
            {"name": f"{registry.host}/lib/debian", "version": "11", "diff_ids": list(base11.diff_ids)},
            {"name": "pinned", "version": base12.manifest.digest[7:19], "diff_ids": list(base12.diff_ids)},
        ]
        assert [s.version for s in parse_bases(entries)] == ["12", "11", base12.manifest.digest[7:19]]
        assert main(["catalog", "--platform", "linux/arm64", ref11]) == 0
        assert yaml.safe_load(capsys.readouterr().out)["bases"][0]["diff_ids"] == list(arm.diff_ids)
        # The same name and version twice is no catalog.
        assert main(["catalog", ref11, ref11]) == 2
        assert "bases[0] and bases[1]" in capsys.readouterr().err
        monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "none"))
        assert main(["catalog", ref11]) == 1
        assert f"no credentials for {registry.host}" in capsys.readouterr().err
    finally:
        registry.stop()


def test_bad_arguments_exit_2(capsys):
    assert main(["catalog", "--platform", "linux", "x/y:1"]) == 2
    assert "os/architecture" in capsys.readouterr().err
    assert main(["catalog", "--registry-endpoint", "docker.io", "x/y:1"]) == 2
    assert main(["catalog", "x/y@md5:1"]) == 2
