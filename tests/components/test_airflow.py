"""Airflow 3 from .venv-airflow: the metadata DB migrates and dag.test() runs a DAG to success."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

from flywheel.stack.airflow_env import airflow_environment
from tests.support import REPO_ROOT

AIRFLOW_VENV = REPO_ROOT / ".venv-airflow" / "bin"


def test_dag_test_runs_a_dag_in_the_airflow_venv(tmp_path: Path) -> None:
    dags = tmp_path / "dags"
    dags.mkdir()
    shutil.copy(Path(__file__).parent / "airflow_smoke_dag.py", dags)
    env = {**os.environ, **airflow_environment(tmp_path / "airflow", dags)}
    env.pop("PYTHONPATH", None)  # .venv-airflow must stand on its own
    migrate = subprocess.run(
        [str(AIRFLOW_VENV / "airflow"), "db", "migrate"], env=env, capture_output=True, text=True, timeout=300
    )
    assert migrate.returncode == 0, migrate.stderr[-3000:]
    result = subprocess.run(
        [str(AIRFLOW_VENV / "python"), str(Path(__file__).parent / "airflow_smoke_runner.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    assert outcome == {"run_state": "success", "tasks": {"produce": "success", "consume": "success"}}
