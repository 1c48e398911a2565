"""Prometheus configuration and rules, checked and unit-tested by the real promtool."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from flywheel.settings import FlywheelSettings
from monitoring.prometheus.config import RULES_FILE, render_config

PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=60, check=False)


def test_rules_are_valid_and_their_unit_tests_pass() -> None:
    checked = promtool("check", "rules", str(RULES_FILE))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = promtool("test", "rules", str(RULES_FILE.with_name("rules_test.yml")))
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


def test_rendered_config_passes_promtool_and_names_every_target(tmp_path: Path) -> None:
    settings = FlywheelSettings(home=tmp_path, gateway_http_port=19080, triton_metrics_port=18002)
    config = tmp_path / "prometheus.yml"
    config.write_text(render_config(settings, alertmanager="127.0.0.1:19093"))
    checked = promtool("check", "config", str(config))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    text = config.read_text()
    assert "127.0.0.1:19080" in text and "127.0.0.1:18002" in text and "127.0.0.1:19093" in text


@pytest.mark.parametrize(
    "alert",
    ["FeatureDrift", "PredictionDrift", "CanaryErrorRate", "HighLatencyP99", "BackendDown", "RetrainFailed"],
)
def test_every_alert_the_issue_names_exists_and_is_unit_tested(alert: str) -> None:
    assert f"alert: {alert}" in RULES_FILE.read_text()
    assert f"alertname: {alert}" in RULES_FILE.with_name("rules_test.yml").read_text()
