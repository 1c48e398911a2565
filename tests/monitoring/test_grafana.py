"""Dashboards as code: the committed Grafana files are exactly what the code generates, and every
panel has a query (the queries themselves run against live Prometheus in tests/e2e)."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from monitoring.grafana.build import GRAFANA_DIR, dashboard_json, generated_files
from monitoring.grafana.panels import FLYWHEEL, all_queries


def test_committed_files_match_the_generator() -> None:
    regenerate = "run `.venv/bin/python -m monitoring.grafana.build`"
    for relative, text in generated_files().items():
        committed = GRAFANA_DIR / relative
        assert committed.exists(), f"{relative} missing: {regenerate}"
        assert committed.read_text() == text, f"{relative} is stale: {regenerate}"


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


def test_the_rendered_axis_spans_the_data_and_versions_of_one_feature_pair_up(tmp_path: Path) -> None:
    from monitoring.grafana.render import RenderedPanel, _line_styles, data_span, render_png

    times = [1000.0 + 2 * index for index in range(90)]  # three minutes of data
    drift = RenderedPanel(
        "Feature drift (PSI) per feature",
        [
            (f"m v{version} {feature}", times, [0.1] * 90, {"version": str(version), "feature": feature})
            for version in (1, 2)
            for feature in ("ret_1d", "volume_z")
        ],
    )
    start, end = data_span([drift], (0.0, 1000.0 + 900))  # asked for 15 minutes
    assert 990 < start < 1000 and 1178 < end < 1190
    styles = dict(zip([legend for legend, *_ in drift.series], _line_styles(drift.series), strict=True))
    assert styles["m v1 ret_1d"][0] == styles["m v2 ret_1d"][0] != styles["m v2 volume_z"][0]
    assert styles["m v2 ret_1d"][1] == "-" and styles["m v1 ret_1d"][1] == "--", "newest solid, older dashed"
    png = render_png([drift, RenderedPanel("Server health", [])], [], tmp_path / "p.png", (0.0, 1900.0))
    assert png.stat().st_size > 10_000
