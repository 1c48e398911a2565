"""The DAG files parse in .venv-airflow without errors or cycles and wire the expected tasks."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from flywheel.stack.airflow_env import airflow_environment
from tests.support import REPO_ROOT

AIRFLOW_PYTHON = REPO_ROOT / ".venv-airflow" / "bin" / "python"


@pytest.fixture(scope="module")
def dags(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    home = tmp_path_factory.mktemp("airflow-home")
    env = {**os.environ, **airflow_environment(home, REPO_ROOT / "dags"), "FLYWHEEL_RETRAIN_SCHEDULE": ""}
    env["FLYWHEEL_BATCH_SCORE_SCHEDULE"] = "0 * * * *"
    env.pop("PYTHONPATH", None)
    result = subprocess.run(
        [str(AIRFLOW_PYTHON), str(Path(__file__).with_name("dag_report.py")), str(REPO_ROOT / "dags")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    report: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["import_errors"] == {}, report["import_errors"]
    return report["dags"]


def test_retrain_dag_wires_ingest_to_canary_with_a_gate_branch(dags: dict[str, Any]) -> None:
    dag = dags["flywheel_retrain"]
    assert dag["tasks"] == sorted(
        ["ingest", "preprocess", "train_pytorch", "train_tensorflow", "evaluate", "gate_failed",
         "package", "publish", "deploy", "report"]
    )  # fmt: skip
    edges = {tuple(edge) for edge in dag["edges"]}
    assert edges == {
        ("ingest", "preprocess"),
        ("preprocess", "train_pytorch"),
        ("preprocess", "train_tensorflow"),
        ("train_pytorch", "evaluate"),
        ("train_tensorflow", "evaluate"),
        ("evaluate", "package"),
        ("evaluate", "gate_failed"),
        ("package", "publish"),
        ("publish", "deploy"),
        ("deploy", "report"),
        ("gate_failed", "report"),
    }
    assert {"model", "data_prefix", "reason", "alert_labels"} <= set(dag["params"])
    assert dag["max_active_runs"] == 1 and dag["has_failure_callback"]
    assert all(retries >= 1 for retries in dag["retries"].values())
    assert all(dag["timeouts"].values())
    assert dag["schedule"] == "NullTimetable", "FLYWHEEL_RETRAIN_SCHEDULE='' turns the schedule off"


def test_batch_score_dag_runs_one_scoring_task_with_retries(dags: dict[str, Any]) -> None:
    dag = dags["flywheel_batch_score"]
    assert dag["tasks"] == ["score"] and dag["edges"] == []
    assert {"model", "label_share"} <= set(dag["params"])
    assert dag["retries"]["score"] >= 1 and dag["timeouts"]["score"]
