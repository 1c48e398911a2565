"""The whole loop on one real stack, in order: a DAG run publishes and deploys v1; a REST-triggered run
with nothing new skips; calm traffic fires nothing; drifted traffic fires FeatureDrift, which
reaches the bridge through Alertmanager and starts exactly one Airflow run; new data retrains by
itself and the canary promotes the new version; every dashboard query has data from all of that."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from flywheel.stack.airflow import airflow_stack_environment, dags_folder
from flywheel.stack.airflow_env import airflow_environment
from model_store.datasets import DatasetStore
from monitoring.grafana.panels import all_queries
from monitoring.grafana.render import query_range, render
from tests.e2e.loop_stack import DAG_ID, MODEL, LoopStack, Traffic
from tests.support import REPO_ROOT, wait_until

pytestmark = pytest.mark.timeout(900)
DRIFT_ALERTS = 'ALERTS{alertname=~"FeatureDrift|PredictionDrift"}'


def generate(stack: LoopStack, *args: str) -> None:
    stack.flywheel_json("data", "generate", "--symbols", "4", "--days", "500", *args)


def test_dag_test_publishes_v1_with_lineage_and_deploys_it(loop_stack: LoopStack, tmp_path: Path) -> None:
    stack = loop_stack
    wait_until(lambda: stack.airflow.dag(DAG_ID) is not None, 120, "the dag-processor to parse the DAG")
    # Paused while dag.test() runs, so the per-minute schedule does not ingest the same data beside it.
    stack.airflow.set_paused(DAG_ID, True)
    generate(stack, "--start", "2021-01-04")

    # dag.test() in .venv-airflow with its own metadata DB; its tasks act on the stack (FLYWHEEL_*).
    env = {
        **os.environ,
        **airflow_stack_environment(stack.settings),
        **airflow_environment(tmp_path / "airflow", dags_folder()),
    }
    env.pop("PYTHONPATH", None)
    airflow = str(REPO_ROOT / ".venv-airflow" / "bin")
    migrate = subprocess.run([f"{airflow}/airflow", "db", "migrate"], env=env, capture_output=True, text=True)
    assert migrate.returncode == 0, migrate.stderr[-3000:]
    result = subprocess.run(
        [f"{airflow}/python", str(Path(__file__).with_name("dag_test_runner.py")), str(dags_folder())],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    assert outcome["run_state"] == "success", outcome
    assert outcome["tasks"]["gate_failed"] == "skipped" and outcome["tasks"]["deploy"] == "success", outcome

    manifest = stack.store.get_manifest(MODEL, 1)
    snapshot = DatasetStore(stack.store.storage).latest(MODEL)
    assert manifest.lineage.dataset_snapshot == snapshot.snapshot_id
    assert manifest.lineage.dataset_hash == snapshot.content_hash
    spec = stack.http.get(
        f"{stack.settings.gateway_url}/admin/deployments/{MODEL}", headers=stack.admin_headers
    )
    assert [(v["version"], v["weight"]) for v in spec.json()["variants"]] == [(1, 100.0)]


def test_a_rest_triggered_run_with_nothing_new_skips_cleanly(loop_stack: LoopStack) -> None:
    stack = loop_stack
    stack.airflow.set_paused(DAG_ID, False)
    result = stack.flywheel_json("retrain", MODEL, "--reason", "manual", "--wait", "--timeout", "300")
    assert result["state"] == "success"
    assert result["tasks"]["ingest"] == "skipped" and result["tasks"]["report"] == "success"
    assert {task for task, state in result["tasks"].items() if state == "success"} == {"report"}
    metrics = stack.http.get(f"{stack.settings.gateway_url}/metrics").text
    assert f'flywheel_retrain_runs_total{{model="{MODEL}",state="skipped"}}' in metrics


def test_calm_traffic_fires_no_drift_alert(loop_stack: LoopStack) -> None:
    stack = loop_stack
    with Traffic(stack) as traffic:
        wait_until(
            lambda: (
                stack.exporter_gauge("flywheel_drift_window_samples").get(f'model="{MODEL}",version="1"', 0)
                >= 2000
            ),
            120,
            "a full drift window of calm traffic",
            interval_s=0.5,
        )
        wait_until(lambda: len(stack.prometheus("flywheel_feature_psi")) == 8, 30, "Prometheus to scrape PSI")
        seen: list[float] = []
        deadline = time.monotonic() + 15  # several rule evaluations (1 s) beyond the alerts' 2 s `for`
        while time.monotonic() < deadline:
            assert stack.prometheus(DRIFT_ALERTS) == [], "no drift alert, not even pending"
            seen += [float(s["value"][1]) for s in stack.prometheus("flywheel_feature_psi")]
            time.sleep(1)  # sampling the alert state over time, not waiting for a server
    assert traffic.statuses.keys() == {"200"}
    assert seen and max(seen) < 0.2
    assert stack.runs("alert__") == []


def test_drifted_traffic_fires_feature_drift_and_starts_exactly_one_run(loop_stack: LoopStack) -> None:
    stack = loop_stack
    url = f"{stack.settings.gateway_url}/admin/alerts"
    assert stack.http.post(url, json={"status": "firing", "alerts": []}).status_code == 401
    malformed = stack.http.post(
        url, content=b'{"status": "firing", "alerts": [{}]}', headers=stack.admin_headers
    )
    assert malformed.status_code == 400 and "error" in malformed.json()

    with Traffic(stack, shift={"volatility_5d": 2.0}, seed=1):
        wait_until(
            lambda: any(
                a["metric"]["alertname"] == "FeatureDrift" and a["metric"].get("feature") == "volatility_5d"
                for a in stack.prometheus('ALERTS{alertstate="firing"}')
            ),
            120,
            "FeatureDrift on volatility_5d to fire",
            interval_s=0.5,
        )
        wait_until(
            lambda: len(stack.runs("alert__")) >= 1, 60, "the bridge to trigger the DAG", interval_s=0.5
        )
        # Keep drifting well past Alertmanager's group interval: repeats must not start more runs.
        time.sleep(15)  # observing that nothing more happens; no server is being waited for
    runs = stack.runs("alert__")
    assert len(runs) == 1, [run["dag_run_id"] for run in runs]
    [run] = runs
    assert run["conf"]["model"] == MODEL and "FeatureDrift" in run["conf"]["reason"]
    assert any(labels.get("feature") == "volatility_5d" for labels in run["conf"]["alert_labels"])
    outbox = stack.http.get(f"{stack.settings.gateway_url}/admin/retrain", headers=stack.admin_headers).json()
    assert outbox["pending"] == [] and [e["trigger"]["dag_run_id"] for e in outbox["delivered"]] == [
        run["dag_run_id"]
    ]
    finished = stack.wait_run_finished(run["dag_run_id"], 300)
    assert finished["state"] == "success"  # skipped inside: the alert came without new data


def test_new_data_retrains_by_itself_and_the_canary_promotes_the_new_version(loop_stack: LoopStack) -> None:
    stack = loop_stack
    before = {run["dag_run_id"] for run in stack.runs()}
    generate(stack, "--start", "2023-01-02", "--drift")
    landed = time.monotonic()
    with Traffic(stack, seed=2):

        def scheduled_run_published() -> bool:
            return any(
                run["run_type"] == "scheduled"
                and run["dag_run_id"] not in before
                and run["state"] == "success"
                for run in stack.runs()
            ) and 2 in stack.store.list_versions(MODEL)

        wait_until(scheduled_run_published, 300, "a scheduled run to take the new data and publish v2", 1)
        wait_until(
            lambda: stack.store.aliases(MODEL).get("champion") == 2,
            180,
            "the canary of v2 to promote itself",
            interval_s=1,
        )
    loop_s = time.monotonic() - landed
    spec = stack.http.get(
        f"{stack.settings.gateway_url}/admin/deployments/{MODEL}", headers=stack.admin_headers
    )
    assert [(v["version"], v["weight"]) for v in spec.json()["variants"]] == [(2, 100.0)]
    manifest = stack.store.get_manifest(MODEL, 2)
    assert manifest.gate is not None and manifest.gate.passed
    print(f"new data -> v2 serving 100 %: {loop_s:.0f} s")


def test_every_dashboard_query_returns_data_and_the_panels_render(
    loop_stack: LoopStack, tmp_path: Path
) -> None:
    stack = loop_stack
    end = time.time()
    empty = [
        where
        for where, expr in all_queries()
        if not query_range(stack.settings.prometheus_url, expr, end - 900, end, 5)
    ]
    assert empty == [], f"queries without data: {empty}"
    rendered = render(stack.settings.prometheus_url, tmp_path, minutes=15)
    assert Path(rendered["png"]).stat().st_size > 20_000
    assert all(count > 0 for count in rendered["panels"].values()), rendered["panels"]
    assert rendered["annotations"] >= 2
