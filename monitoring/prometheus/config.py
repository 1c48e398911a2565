"""Render the monitoring configuration for the stack's ports: prometheus.yml, the rules, alertmanager.yml.

Prometheus scrapes the gateway, the drift exporter, the model agents and every replica of every
registered model-server kind, at the path its plug-in names (TF Serving's is
``/monitoring/prometheus/metrics``, which ``--monitoring_config_file`` turns on in the real server
and in the runtime alike). The server jobs, and the ``BackendDown`` rule over them, come from
``serving.backends.registry``: a new kind is scraped and alerted on without an edit here.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from flywheel.settings import FlywheelSettings

RULES_FILE = Path(__file__).with_name("rules.yml")


#: Jobs that are Flywheel's own processes; the model-server jobs are the registry's kinds.
PLATFORM_JOBS = ("gateway", "drift-exporter", "agent")


def scrape_targets(settings: FlywheelSettings) -> dict[str, tuple[list[str], str]]:
    """job -> (host:port of every replica, metrics path)."""
    from serving.agent.service import agent_layouts
    from serving.backends.factory import replica_layouts
    from serving.backends.registry import backend_kinds, get_plugin
    from serving.gateway.service import gateway_replica_ports

    host = settings.host
    targets: dict[str, tuple[list[str], str]] = {
        "gateway": ([f"{host}:{http}" for http, _ in gateway_replica_ports(settings)], "/metrics"),
        "drift-exporter": ([f"{host}:{settings.drift_exporter_port}"], "/metrics"),
        "agent": ([f"{host}:{agent.port}" for agent in agent_layouts(settings)], "/metrics"),
    }
    if settings.gateway_replicas > 1:
        targets["load-balancer"] = ([f"{host}:{settings.load_balancer_stats_port}"], "/metrics")
    for kind in backend_kinds():
        plugin = get_plugin(kind)
        port_name, path = plugin.metrics
        targets[kind] = (
            [f"{host}:{layout.ports[port_name]}" for layout in replica_layouts(settings, kind)],
            path,
        )
    return targets


def monitored_jobs() -> list[str]:
    """Every job ``BackendDown`` watches: the platform's own and each registered server kind."""
    from serving.backends.registry import backend_kinds

    return [*PLATFORM_JOBS, *backend_kinds()]


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
            {"job_name": job, "metrics_path": path, "static_configs": [{"targets": targets}]}
            for job, (targets, path) in scrape_targets(settings).items()
        ],
    }
    if alertmanager:
        config["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": [alertmanager]}]}]}
    return yaml.safe_dump(config, sort_keys=False)


#: Alerts whose ``for`` follows the ``drift_alert_for`` setting (the demo shortens it).
DRIFT_ALERTS = ("FeatureDrift", "PredictionDrift", "ModelQualityDegraded")


def backend_down_expr() -> str:
    return f'up{{job=~"{"|".join(monitored_jobs())}"}} == 0'


def render_rules(drift_alert_for: str) -> str:
    """``rules.yml`` with the drift alerts' ``for`` set; everything else exactly as tested by promtool."""
    rules = yaml.safe_load(RULES_FILE.read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            if rule.get("alert") in DRIFT_ALERTS:
                rule["for"] = drift_alert_for
            if rule.get("alert") == "BackendDown":
                rule["expr"] = backend_down_expr()
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
