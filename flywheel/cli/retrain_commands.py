"""``flywheel retrain NAME``: trigger the retraining DAG through Airflow's REST API and follow it."""

from __future__ import annotations

import contextlib
import secrets
import time
from datetime import UTC, datetime
from typing import Any

import typer
from rich.live import Live
from rich.table import Table

from flywheel.airflow_client import AirflowClient, AirflowError
from flywheel.cli.output import JSON_OPTION, console, emit, fail
from flywheel.settings import FlywheelSettings
from flywheel.stack.credentials import airflow_password

FINISHED = {"success", "failed"}
STATE_STYLE = {
    "success": "green",
    "failed": "red",
    "upstream_failed": "red",
    "skipped": "dim",
    "running": "cyan",
}


def _table(run_id: str, run_state: str, tasks: dict[str, str | None]) -> Table:
    table = Table(title=f"{run_id}: {run_state}", title_justify="left")
    table.add_column("task")
    table.add_column("state")
    for task_id, state in tasks.items():
        style = STATE_STYLE.get(state or "", "")
        table.add_row(task_id, f"[{style}]{state or 'waiting'}[/]" if style else (state or "waiting"))
    return table


def _tasks(client: AirflowClient, dag_id: str, run_id: str) -> dict[str, str | None]:
    return {task.task_id: task.state for task in client.task_states(dag_id, run_id)}


def retrain(
    ctx: typer.Context,
    name: str = typer.Argument(None, help="Model to retrain (default: the model_name setting)."),
    reason: str = typer.Option("manual", "--reason", help="Recorded in the run's conf and report."),
    data_prefix: str = typer.Option(
        None, "--data-prefix", help="Raw-data key prefix the run ingests (default: the raw_prefix setting)."
    ),
    wait: bool = typer.Option(False, "--wait", help="Follow the run task by task until it ends."),
    timeout: float = typer.Option(3600, "--timeout", help="Seconds to wait with --wait."),
    follow: str = typer.Option(
        None,
        "--follow",
        help="Follow this existing run (e.g. one a drift alert started) instead of triggering.",
    ),
    as_json: bool = JSON_OPTION,
) -> None:
    """Start the retraining DAG for NAME now (ingest skips it when no new data landed).

    The run id is printed; Airflow's UI at the airflow_port shows the same run. With --wait the
    exit code is 1 when the run fails or --timeout passes.
    """
    settings: FlywheelSettings = ctx.obj
    model = name or settings.model_name
    dag_id = settings.retrain_dag_id
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    run_id = follow or f"cli__{model}__{stamp}__{secrets.token_hex(2)}"
    try:
        password = airflow_password(settings, create=False)
    except FileNotFoundError as error:
        fail(str(error), as_json)
    conf: dict[str, Any] = {
        "model": model,
        "reason": reason,
        "data_prefix": data_prefix or settings.raw_prefix,
        "alert_labels": [],
    }
    try:
        with AirflowClient(settings.resolved_airflow_url, settings.airflow_username, password) as client:
            if client.dag(dag_id) is None:
                fail(f"Airflow has no DAG {dag_id!r} (yet): is the stack up and dags/ parsed?", as_json)
            if follow:
                conf = client.dag_run(dag_id, run_id).get("conf") or {}
            else:
                client.trigger(dag_id, run_id, conf)
            result: dict[str, Any] = {"dag_id": dag_id, "dag_run_id": run_id, "conf": conf, "state": "queued"}
            if wait or follow:
                result |= _follow(client, dag_id, run_id, timeout, as_json)
    except AirflowError as error:
        fail(f"{error} (Airflow at {settings.resolved_airflow_url})", as_json)
    emit(result, as_json, lambda data: console.print(f"{data['dag_run_id']}: {data['state']}"))
    if result["state"] != "success" and (wait or follow):
        raise typer.Exit(1)


def _follow(client: AirflowClient, dag_id: str, run_id: str, timeout: float, as_json: bool) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    state, tasks = "queued", _tasks(client, dag_id, run_id)
    live = Live(_table(run_id, state, tasks), console=console)
    with live if not as_json else contextlib.nullcontext():
        while time.monotonic() < deadline:
            state = client.dag_run(dag_id, run_id)["state"]
            tasks = _tasks(client, dag_id, run_id)
            if not as_json:
                live.update(_table(run_id, state, tasks))
            if state in FINISHED:
                break
            time.sleep(2)  # polling Airflow's run state; not waiting for a server to start
        else:
            state = "timed out"
    return {"state": state, "tasks": tasks}
