"""Dashboards as code: the committed Grafana files are exactly what the code generates, and every
panel has a query (the queries themselves run against live Prometheus in tests/e2e)."""

from __future__ import annotations

import json

import yaml

from monitoring.grafana.build import GRAFANA_DIR, dashboard_json, generated_files
from monitoring.grafana.panels import FLYWHEEL, all_queries


def test_committed_files_match_the_generator() -> None:
    for relative, text in generated_files().items():
        committed = GRAFANA_DIR / relative
        assert committed.exists(), f"{relative} missing: run `flywheel dashboards --no-render`"
        assert committed.read_text() == text, f"{relative} is stale: run `flywheel dashboards --no-render`"


def test_dashboard_has_the_panels_the_issue_names_with_queries_and_annotations() -> None:
    model = dashboard_json()
    titles = [panel["title"] for panel in model["panels"]]
    for wanted in ("Traffic share", "Latency p50 / p99", "Error rate", "Feature drift", "Server health"):
        assert any(title.startswith(wanted) for title in titles), wanted
    assert {a["name"] for a in model["annotations"]["list"]} == {"Rollout decisions", "Retraining runs"}
    assert all(panel["targets"] and all(t["expr"] for t in panel["targets"]) for panel in model["panels"])
    assert len({panel["id"] for panel in model["panels"]}) == len(model["panels"])
    assert len(all_queries()) == sum(len(p.queries) for p in FLYWHEEL.panels) + len(FLYWHEEL.annotations)
    provisioning = yaml.safe_load((GRAFANA_DIR / "provisioning/datasources/flywheel.yml").read_text())
    assert provisioning["datasources"][0]["uid"] == model["panels"][0]["datasource"]["uid"]
    json.dumps(model)  # serialisable as Grafana imports it
