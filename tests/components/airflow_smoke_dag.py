"""A two-task DAG for the Airflow smoke test: a TaskFlow task hands a value to a BashOperator."""

from __future__ import annotations

import pendulum
from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import dag, task


@dag(
    dag_id="flywheel_smoke", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False
)
def flywheel_smoke():  # type: ignore[no-untyped-def]
    @task
    def produce() -> int:
        return 21

    consume = BashOperator(
        task_id="consume",
        bash_command="test {{ ti.xcom_pull(task_ids='produce') }} -eq 21 && echo consumed",
    )
    produce() >> consume


smoke = flywheel_smoke()
