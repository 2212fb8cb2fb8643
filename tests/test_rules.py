"""Recording rules and alerts: generated from the chart, checked and unit-tested
by the real promtool (Debian package prometheus)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

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
    assert "SUCCESS: 29 rules found" in result.stdout


def test_promtool_unit_tests_fire_every_alert_and_respect_boundaries(promtool):
    result = subprocess.run(
        [promtool, "test", "rules", "alerts.test.yml"], cwd=ROOT / "rules" / "tests", capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    tested = (ROOT / "rules" / "tests" / "alerts.test.yml").read_text()
    alerts = [
        line.split(":", 1)[1].strip() for line in RULES.read_text().splitlines() if line.strip().startswith("- alert:")
    ]
    assert len(alerts) == 9
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
      - series: 'layer_sharing_namespace_attributed_bytes{job="layer-sharing-exporter",namespace="monitoring",\
exported_namespace="shop",pod="lse-a",node="a"}'
        values: '100x5'
      - series: 'layer_sharing_namespace_attributed_bytes{job="layer-sharing-exporter",namespace="monitoring",\
exported_namespace="shop",pod="lse-b",node="b"}'
        values: '30x5'
    promql_expr_test:
      - expr: namespace:layer_sharing_pod_attributed_bytes:sum
        eval_time: 2m
        exp_samples:
          - labels: 'namespace:layer_sharing_pod_attributed_bytes:sum{job="layer-sharing-exporter",namespace="shop"}'
            value: 130
"""


def chart_rules(values: dict[str, Any]) -> dict[str, Any]:
    """The chart's PrometheusRule groups at these values, as a rules file."""
    chart = Chart.load(ROOT / "charts" / "layer-sharing-exporter")
    try:
        rendered = chart.render(values, name="lse", namespace="monitoring")
    finally:
        chart.close()
    rule = yaml.safe_load(rendered["layer-sharing-exporter/templates/prometheusrule.yaml"])
    return {"groups": rule["spec"]["groups"]}


@pytest.mark.parametrize(
    "monitor",
    [
        {"serviceMonitor": {"enabled": True, "honorLabels": False}},
        # OpenShift user-workload monitoring renames them whatever the monitor says: the one setting says so.
        {
            "serviceMonitor": {"enabled": True},
            "measuredPodLabels": {"namespace": "exported_namespace", "pod": "exported_pod"},
        },
    ],
    ids=["honor-labels-off", "measured-pod-labels"],
)
def test_namespace_showback_without_honor_labels_uses_the_renamed_label(promtool, tmp_path, monitor):
    """With honorLabels false Prometheus renames the exporter's namespace label to
    exported_namespace; the recording rule reads that and still records `namespace`."""
    values = {"prometheusRule": {"enabled": True}, "nameOverride": "layer-sharing-exporter", **monitor}
    (tmp_path / "rules.yml").write_text(yaml.safe_dump(chart_rules(values)))
    (tmp_path / "showback.test.yml").write_text(SHOWBACK_TEST)
    result = subprocess.run(
        [promtool, "test", "rules", "showback.test.yml"], cwd=tmp_path, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_unit_tests_of_the_base_cluster_sums(promtool):
    result = subprocess.run(
        [promtool, "test", "rules", "bases.test.yml"], cwd=ROOT / "rules" / "tests", capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


CHART_ALERTS_TEST = """\
rule_files: [rules.yml]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'layer_sharing_missing_layers{job="layer-sharing-exporter",instance="a:9877",node="a"}'
        values: '3x200'
    alert_rule_test:
      - eval_time: 150m
        alertname: LayerSharingLayersMissing
        exp_alerts:
          - exp_labels: {severity: critical, team: storage, job: layer-sharing-exporter, instance: "a:9877", node: a}
            exp_annotations:
              summary: Ebenen fehlen.
              description: >-
                3 image layers on node a have had no snapshot in the configured snapshotter
                for 2h: their bytes are not counted.
              runbook_url: https://runbooks.example.com/lse#layersharinglayersmissing
      - eval_time: 100m
        alertname: LayerSharingLayersMissing
        exp_alerts: []
"""


def test_alert_labels_annotations_for_as_values_and_no_capacity_alerts_without_capacity(promtool, tmp_path):
    """additionalRuleLabels, an alert's own labels, annotations and `for`; and where the image
    filesystem's capacity is not measured, none of the alerts that need it (a fixed byte
    threshold fired on nodes the kubelet manages fine)."""
    values = {
        "nameOverride": "layer-sharing-exporter",
        "imageFilesystem": {"capacityDir": ""},
        "prometheusRule": {
            "enabled": True,
            "runbookBaseUrl": "https://runbooks.example.com/lse",
            "additionalRuleLabels": {"team": "platform"},
            "alerts": {
                "LayerSharingLayersMissing": {
                    "for": "2h",
                    "severity": "critical",
                    "labels": {"team": "storage"},
                    "annotations": {"summary": "Ebenen fehlen."},
                }
            },
        },
    }
    rules = chart_rules(values)
    alerts = {rule["alert"] for group in rules["groups"] for rule in group["rules"] if "alert" in rule}
    needing_capacity = {
        "ImageFilesystemFillingUp",
        "ImageFilesystemFillingUpForecast",
        "ImageGCCannotReclaimEnough",
        "ReclaimableImageBytesHigh",
    }
    assert alerts and not alerts & needing_capacity
    (tmp_path / "rules.yml").write_text(yaml.safe_dump(rules))
    (tmp_path / "alerts.test.yml").write_text(CHART_ALERTS_TEST)
    result = subprocess.run(
        [promtool, "test", "rules", "alerts.test.yml"], cwd=tmp_path, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("monitor", "namespace_label"),
    [
        ({"serviceMonitor": {"enabled": True}}, "namespace"),
        ({"serviceMonitor": {"enabled": True, "honorLabels": False}}, "exported_namespace"),
    ],
    ids=["honor-labels", "openshift-user-workload"],
)
def test_locality_rules_record_one_series_per_workload_under_namespace(promtool, tmp_path, monitor, namespace_label):
    """The locality service's figures, whatever label the workload's namespace arrives under,
    recorded per workload as `namespace` with the service's own pod and job labels dropped."""
    values = {"prometheusRule": {"enabled": True}, "locality": {"enabled": True}, **monitor}
    (tmp_path / "rules.yml").write_text(yaml.safe_dump(chart_rules(values)))
    test = (ROOT / "tests" / "data" / "locality_rules.test.yml").read_text()
    (tmp_path / "locality.test.yml").write_text(test.replace("NS=", f"{namespace_label}="))
    result = subprocess.run(
        [promtool, "test", "rules", "locality.test.yml"], cwd=tmp_path, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_no_locality_rules_without_the_locality_service():
    groups = chart_rules({"prometheusRule": {"enabled": True}})["groups"]
    assert "layer-sharing-locality.rules" not in {g["name"] for g in groups}
