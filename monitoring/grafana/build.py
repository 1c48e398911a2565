"""Grafana dashboards as code: JSON models and provisioning files generated from ``panels.py``.

``python -m monitoring.grafana.build`` (or ``flywheel dashboards``) rewrites the committed files
under ``monitoring/grafana/``; a test fails when they drift from the code. In production, mount
``provisioning/`` at ``/etc/grafana/provisioning`` and ``dashboards/`` at
``/var/lib/grafana/dashboards/flywheel``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from monitoring.grafana.panels import FLYWHEEL, Dashboard, Panel

GRAFANA_DIR = Path(__file__).parent
DATASOURCE_UID = "flywheel-prometheus"
_COLUMNS, _WIDTH, _HEIGHT = 2, 12, 8


def _panel(panel: Panel, index: int) -> dict[str, Any]:
    steps = [{"color": "green", "value": None}] + [
        {"color": color, "value": value}
        for color, value in zip(("orange", "red", "dark-red"), panel.thresholds, strict=False)
    ]
    return {
        "id": index + 1,
        "type": panel.kind,
        "title": panel.title,
        "description": panel.description,
        "datasource": {"type": "prometheus", "uid": DATASOURCE_UID},
        "gridPos": {
            "x": (index % _COLUMNS) * _WIDTH,
            "y": (index // _COLUMNS) * _HEIGHT,
            "w": _WIDTH,
            "h": _HEIGHT,
        },
        "fieldConfig": {
            "defaults": {
                "unit": panel.unit,
                "thresholds": {"mode": "absolute", "steps": steps},
                "custom": {"thresholdsStyle": {"mode": "line" if panel.thresholds else "off"}},
            },
            "overrides": [],
        },
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}, "tooltip": {"mode": "multi"}},
        "targets": [
            {
                "refId": chr(ord("A") + number),
                "datasource": {"type": "prometheus", "uid": DATASOURCE_UID},
                "expr": query.expr,
                "legendFormat": query.legend,
            }
            for number, query in enumerate(panel.queries)
        ],
    }


def dashboard_json(dashboard: Dashboard = FLYWHEEL) -> dict[str, Any]:
    return {
        "uid": dashboard.uid,
        "title": dashboard.title,
        "tags": ["flywheel"],
        "timezone": "utc",
        "schemaVersion": 39,
        "version": 1,
        "refresh": "10s",
        "time": {"from": "now-30m", "to": "now"},
        "annotations": {
            "list": [
                {
                    "name": annotation.name,
                    "datasource": {"type": "prometheus", "uid": DATASOURCE_UID},
                    "enable": True,
                    "expr": annotation.expr,
                    "titleFormat": annotation.title,
                    "iconColor": annotation.color,
                    "step": "15s",
                }
                for annotation in dashboard.annotations
            ]
        },
        "panels": [_panel(panel, index) for index, panel in enumerate(dashboard.panels)],
    }


def provisioning(prometheus_url: str = "http://127.0.0.1:9090") -> dict[str, dict[str, Any]]:
    """Relative path -> YAML document of Grafana's provisioning files."""
    return {
        "provisioning/datasources/flywheel.yml": {
            "apiVersion": 1,
            "datasources": [
                {
                    "name": "Flywheel Prometheus",
                    "uid": DATASOURCE_UID,
                    "type": "prometheus",
                    "access": "proxy",
                    "url": prometheus_url,
                    "isDefault": True,
                },
            ],
        },
        "provisioning/dashboards/flywheel.yml": {
            "apiVersion": 1,
            "providers": [
                {
                    "name": "flywheel",
                    "folder": "Flywheel",
                    "type": "file",
                    "allowUiUpdates": False,
                    "options": {"path": "/var/lib/grafana/dashboards/flywheel"},
                },
            ],
        },
    }


def generated_files(prometheus_url: str = "http://127.0.0.1:9090") -> dict[str, str]:
    """Relative path -> file text of everything this module generates."""
    files = {"dashboards/flywheel.json": json.dumps(dashboard_json(), indent=2) + "\n"}
    for path, document in provisioning(prometheus_url).items():
        files[path] = yaml.safe_dump(document, sort_keys=False)
    return files


def write(out_dir: Path = GRAFANA_DIR, prometheus_url: str = "http://127.0.0.1:9090") -> list[Path]:
    written = []
    for relative, text in generated_files(prometheus_url).items():
        path = out_dir / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        written.append(path)
    return written


if __name__ == "__main__":
    for written_path in write():
        print(written_path)
