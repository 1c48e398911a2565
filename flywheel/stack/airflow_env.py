"""Environment for Airflow 3 processes run from ``.venv-airflow``.

Airflow reads its configuration from ``AIRFLOW__SECTION__KEY`` variables; this is the one place
that builds them, so the stack, the tests and ``dag.test()`` runs agree.
"""

from __future__ import annotations

from pathlib import Path


def airflow_environment(airflow_home: Path, dags_folder: Path) -> dict[str, str]:
    """SQLite metadata DB under ``airflow_home``; no examples; new DAGs unpaused; LocalExecutor."""
    return {
        "AIRFLOW_HOME": str(airflow_home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": "4",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{airflow_home / 'airflow.db'}",
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(airflow_home / "logs"),
        # INFO: a task's log holds what its step printed (BashOperator logs output at INFO), which
        # is what someone reading a failed run in the UI or `airflow tasks logs` needs.
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
    }
