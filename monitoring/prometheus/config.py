"""Render ``prometheus.yml`` for the stack's ports: the gateway, Triton and TorchServe.

The TF-Serving-protocol runtime has no monitoring endpoint (the real TF Serving's is opt-in via
``--monitoring_config_file``); its traffic is covered by the gateway's per-variant metrics.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from flywheel.settings import FlywheelSettings

RULES_FILE = Path(__file__).with_name("rules.yml")


def scrape_targets(settings: FlywheelSettings) -> dict[str, tuple[str, str]]:
    """job -> (host:port, metrics path)."""
    host = settings.host
    return {
        "gateway": (f"{host}:{settings.gateway_http_port}", "/metrics"),
        "triton": (f"{host}:{settings.triton_metrics_port}", "/metrics"),
        "torchserve": (f"{host}:{settings.torchserve_metrics_port}", "/metrics"),
    }


def render_config(
    settings: FlywheelSettings,
    scrape_interval_s: float = 5.0,
    alertmanager: str | None = None,
    rule_files: list[Path] | None = None,
) -> str:
    config: dict[str, object] = {
        "global": {
            "scrape_interval": f"{scrape_interval_s:g}s",
            "evaluation_interval": f"{scrape_interval_s:g}s",
        },
        "rule_files": [str(path) for path in (rule_files if rule_files is not None else [RULES_FILE])],
        "scrape_configs": [
            {"job_name": job, "metrics_path": path, "static_configs": [{"targets": [target]}]}
            for job, (target, path) in scrape_targets(settings).items()
        ],
    }
    if alertmanager:
        config["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": [alertmanager]}]}]}
    return yaml.safe_dump(config, sort_keys=False)
