"""Recording rules and alerts: generated from the chart, checked and unit-tested
by the real promtool (Debian package prometheus)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

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
    assert "SUCCESS: 22 rules found" in result.stdout


def test_promtool_unit_tests_fire_every_alert_and_respect_boundaries(promtool):
    result = subprocess.run(
        [promtool, "test", "rules", "alerts.test.yml"], cwd=ROOT / "rules" / "tests", capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    tested = (ROOT / "rules" / "tests" / "alerts.test.yml").read_text()
    alerts = [
        line.split(":", 1)[1].strip() for line in RULES.read_text().splitlines() if line.strip().startswith("- alert:")
    ]
    assert len(alerts) == 6
    for alert in alerts:
        assert f"alertname: {alert}" in tested, alert


def test_every_runbook_anchor_exists():
    runbook = (ROOT / "docs" / "runbook.md").read_text().lower()
    for line in RULES.read_text().splitlines():
        if "runbook_url:" in line:
            anchor = line.rsplit("#", 1)[1].strip()
            assert f"## {anchor}" in runbook, anchor


def test_promtool_unit_tests_of_the_base_cluster_sums(promtool):
    result = subprocess.run(
        [promtool, "test", "rules", "bases.test.yml"], cwd=ROOT / "rules" / "tests", capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout
