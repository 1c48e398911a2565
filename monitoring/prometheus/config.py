"""Render the monitoring configuration for the stack's ports: prometheus.yml, the rules, alertmanager.yml.

Prometheus scrapes the gateway, the drift exporter, Triton, TorchServe and the TF-Serving runtime
(at TF Serving's ``/monitoring/prometheus/metrics``, which ``--monitoring_config_file`` turns on in
the real server and in the runtime alike).
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
        "drift-exporter": (f"{host}:{settings.drift_exporter_port}", "/metrics"),
        "triton": (f"{host}:{settings.triton_metrics_port}", "/metrics"),
        "torchserve": (f"{host}:{settings.torchserve_metrics_port}", "/metrics"),
        # TF Serving's own path, enabled by --monitoring_config_file (the runtime takes the same flag).
        "tfserving": (f"{host}:{settings.tfserving_rest_port}", "/monitoring/prometheus/metrics"),
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


#: Alerts whose ``for`` follows the ``drift_alert_for`` setting (the demo shortens it).
DRIFT_ALERTS = ("FeatureDrift", "PredictionDrift")


def render_rules(drift_alert_for: str) -> str:
    """``rules.yml`` with the drift alerts' ``for`` set; everything else exactly as tested by promtool."""
    rules = yaml.safe_load(RULES_FILE.read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            if rule.get("alert") in DRIFT_ALERTS:
                rule["for"] = drift_alert_for
    return yaml.safe_dump(rules, sort_keys=False)


def render_alertmanager_config(
    settings: FlywheelSettings, token_file: str, webhook_url: str | None = None
) -> str:
    """Retraining alerts go to the gateway's retrain bridge, grouped per model; the rest are kept only.

    The bridge sits behind the admin API's bearer token, read from ``token_file`` (never inlined).
    """
    retrain_alerts = [name.strip() for name in settings.retrain_alerts.split(",") if name.strip()]
    config = {
        "route": {
            "receiver": "record-only",
            "group_by": ["alertname", "model"],
            "group_wait": "1s",
            "group_interval": "10s",
            "repeat_interval": "1h",
            "routes": [
                {
                    "receiver": "retrain-bridge",
                    "matchers": [f'alertname=~"{"|".join(retrain_alerts)}"'],
                    "group_by": ["model"],
                    "group_wait": "1s",
                    "group_interval": "10s",
                    "repeat_interval": "30m",
                }
            ],
        },
        "receivers": [
            {"name": "record-only"},
            {
                "name": "retrain-bridge",
                "webhook_configs": [
                    {
                        "url": webhook_url or f"{settings.gateway_url}/admin/alerts",
                        "send_resolved": True,
                        "http_config": {"authorization": {"type": "Bearer", "credentials_file": token_file}},
                    }
                ],
            },
        ],
    }
    return yaml.safe_dump(config, sort_keys=False)
