"""Recording rules and alerts: generated from the chart, checked and unit-tested
by the real promtool (Debian package prometheus)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helm_python import Chart

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "rules" / "layer-sharing.rules.yml"


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool not found: run scripts/setup.sh (Debian package prometheus)")
    return path


def test_rules_file_is_generated_from_the_chart():
    result = subprocess.run(
        [sys.executable, "-m", "scripts.gen_rules", "--check"], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


def test_promtool_check_rules(promtool):
    result = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 21 rules found" in result.stdout


def test_promtool_unit_tests_fire_every_alert_and_respect_boundaries(promtool):
    result = subprocess.run(
        [promtool, "test", "rules", "alerts.test.yml"], cwd=ROOT / "rules" / "tests", capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    tested = (ROOT / "rules" / "tests" / "alerts.test.yml").read_text()
    alerts = [
        line.split(":", 1)[1].strip() for line in RULES.read_text().splitlines() if line.strip().startswith("- alert:")
    ]
    assert len(alerts) == 8
    for alert in alerts:
        assert f"alertname: {alert}" in tested, alert


def test_every_runbook_anchor_exists():
    runbook = (ROOT / "docs" / "runbook.md").read_text().lower()
    for line in RULES.read_text().splitlines():
        if "runbook_url:" in line:
            anchor = line.rsplit("#", 1)[1].strip()
            assert f"## {anchor}" in runbook, anchor


SHOWBACK_TEST = """\
rule_files: [rules.yml]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'layer_sharing_pod_attributed_bytes{job="layer-sharing-exporter",namespace="monitoring",\
exported_namespace="shop",pod="lse-a",exported_pod="web-1",node="a"}'
        values: '100x5'
      - series: 'layer_sharing_pod_attributed_bytes{job="layer-sharing-exporter",namespace="monitoring",\
exported_namespace="shop",pod="lse-b",exported_pod="web-2",node="b"}'
        values: '30x5'
    promql_expr_test:
      - expr: namespace:layer_sharing_pod_attributed_bytes:sum
        eval_time: 2m
        exp_samples:
          - labels: 'namespace:layer_sharing_pod_attributed_bytes:sum{job="layer-sharing-exporter",namespace="shop"}'
            value: 130
"""


def test_namespace_showback_without_honor_labels_uses_the_renamed_label(promtool, tmp_path):
    """With honorLabels false Prometheus renames the exporter's namespace label to
    exported_namespace; the recording rule reads that and still records `namespace`."""
    chart = Chart.load(ROOT / "charts" / "layer-sharing-exporter")
    try:
        values = {
            "prometheusRule": {"enabled": True},
            "serviceMonitor": {"enabled": True, "honorLabels": False},
            "nameOverride": "layer-sharing-exporter",
        }
        rendered = chart.render(values, name="lse", namespace="monitoring")
    finally:
        chart.close()
    rule = yaml.safe_load(rendered["layer-sharing-exporter/templates/prometheusrule.yaml"])
    (tmp_path / "rules.yml").write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    (tmp_path / "showback.test.yml").write_text(SHOWBACK_TEST)
    result = subprocess.run(
        [promtool, "test", "rules", "showback.test.yml"], cwd=tmp_path, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
