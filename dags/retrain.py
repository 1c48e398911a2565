"""The retraining DAG: ingest -> Spark preprocess -> tune -> PyTorch || TensorFlow -> evaluate -> replay
-> publish -> canary.

Thin wiring: every task runs one ``flywheel pipeline ...`` step from the platform's ``.venv``, which
does the work and is idempotent (keyed by the dataset snapshot), so Airflow's retries are safe.

- **Triggers**: the schedule (``FLYWHEEL_RETRAIN_SCHEDULE``, a cron expression; empty turns it
  off) is also the new-data check: ingest finds the raw objects no snapshot took and skips the
  run when there are none. Drift alerts arrive through the retrain bridge with conf
  ``{model, reason, alert_labels}``; ``flywheel retrain NAME`` triggers by hand. ``data_prefix``
  (default: the raw prefix) says where ingest looks.
- **Branch**: ``evaluate`` compares the candidate with the champion on the same holdout. A
  passing gate continues to package -> publish -> deploy (a canary the rollout controller
  promotes or rolls back); a failing one goes to ``gate_failed`` and the reasons are recorded.
- **Report**: the last task tells the admin API how the run ended (published, rejected or
  skipped); a failed run is reported by the DAG's failure callback. Both count into
  ``flywheel_retrain_runs_total``, which the ``RetrainFailed`` alert watches.

- **Runners** (``FLYWHEEL_DAG_RUNNER``, see ``flywheel_runners.py``): ``local`` runs each step as a
  BashOperator beside Airflow; ``kubernetes`` as a KubernetesPodOperator in the platform image
  (``train_*`` with a GPU, on GPU nodes); ``spark-submit`` runs ``preprocess`` as a
  SparkSubmitOperator against the configured cluster and the rest locally.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pendulum
from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import Param, dag, task

# The runners sit beside this file. Airflow 3 puts the DAG folder on sys.path when it parses a bundle,
# but a bare DagBag or dag.test() does not.
if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.append(str(Path(__file__).resolve().parent))
from flywheel_runners import FLYWHEEL, HOME, flywheel_step

MODEL = os.environ.get("FLYWHEEL_MODEL_NAME", "stock-forecaster")
RAW_PREFIX = os.environ.get("FLYWHEEL_RAW_PREFIX", "raw/")
SCHEDULE = os.environ.get("FLYWHEEL_RETRAIN_SCHEDULE", "*/10 * * * *") or None
#: Exit codes of `flywheel pipeline ...` that are outcomes, not failures.
NOTHING_NEW, GATE_FAILED = 3, 4


def step(task_id: str, command: str, **kwargs: Any) -> Any:
    """``flywheel pipeline COMMAND`` for the run's model, run by the configured runner."""
    return flywheel_step(
        task_id,
        ["pipeline", *command.split(), "--model", "{{ params.model }}", "--json"],
        env={"FLYWHEEL_RAW_PREFIX": "{{ params.data_prefix }}"},  # where ingest looks for new objects
        **kwargs,
    )


def flywheel(*args: str, ok: tuple[int, ...] = (0,)) -> tuple[int, Any]:
    """Run a flywheel command with --json; returns (exit code, parsed output)."""
    result = subprocess.run([FLYWHEEL, *args, "--json"], capture_output=True, text=True, cwd=HOME)
    print(result.stdout[-4000:], result.stderr[-4000:], sep="\n")
    if result.returncode not in ok:
        raise RuntimeError(f"flywheel {' '.join(args)} exited {result.returncode}")
    return result.returncode, json.loads(result.stdout) if result.stdout.strip() else None


def report_failure(context: dict[str, Any]) -> None:
    """DAG failure callback: count the failed run where monitoring sees it (RetrainFailed)."""
    run = context["dag_run"]
    model = (run.conf or {}).get("model", MODEL)
    flywheel(
        "pipeline",
        "report",
        "--model",
        model,
        "--dag-run-id",
        run.run_id,
        "--state",
        "failed",
        "--reason",
        str(context.get("reason") or "a task failed"),
    )


@dag(
    dag_id="flywheel_retrain",
    description="Retrain on new data or drift, gate against the champion, publish and canary.",
    schedule=SCHEDULE,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,  # steps default to the latest snapshot: runs go one after another
    dagrun_timeout=timedelta(hours=1),
    default_args={
        "retries": 1,
        "retry_delay": timedelta(seconds=10),
        "execution_timeout": timedelta(minutes=20),
    },
    params={
        "model": Param(MODEL, type="string", description="Model to retrain."),
        "data_prefix": Param(
            RAW_PREFIX,
            type="string",
            pattern=r"^[A-Za-z0-9_./-]*$",
            description="Raw-data key prefix to ingest.",
        ),
        "reason": Param("schedule", type="string", description="Why this run: schedule, drift, manual."),
        "alert_labels": Param([], type="array", description="Labels of the alerts that triggered it."),
    },
    on_failure_callback=report_failure,
    tags=["flywheel"],
)
def flywheel_retrain() -> None:
    # Exit code 3: nothing new under the raw prefix, so the whole run is skipped.
    ingest = step("ingest", "ingest", skip_on_exit_code=NOTHING_NEW)
    preprocess = step("preprocess", "preprocess", spark=True)
    # The hyperparameter search: one study both trainers take (training/tune.py says why).
    tune = step("tune", "tune", gpu=True)
    trainers = [
        step(f"train_{name}", f"train --framework {name}", gpu=True) for name in ("pytorch", "tensorflow")
    ]

    @task.branch(task_id="evaluate")
    def evaluate(params: dict[str, Any] | None = None) -> str:
        code, result = flywheel("pipeline", "evaluate", "--model", params["model"], ok=(0, GATE_FAILED))
        gate = result["gate"]
        if code == 0 and gate["passed"]:
            return "package"
        print("evaluation gate failed:", "; ".join(gate.get("reasons", [])))
        return "gate_failed"

    @task.branch(task_id="replay")
    def replay(params: dict[str, Any] | None = None) -> str:
        # The champion's recent captured traffic through the candidate, before any live traffic.
        code, result = flywheel("pipeline", "replay", "--model", params["model"], ok=(0, GATE_FAILED))
        if code == 0 and result["passed"]:
            return "publish"
        print("replay failed:", "; ".join(result.get("reasons", [])))
        return "replay_failed"

    gate_failed = EmptyOperator(task_id="gate_failed")
    replay_failed = EmptyOperator(task_id="replay_failed")
    package, publish, deploy = (step(name, name) for name in ("package", "publish", "deploy"))

    @task(task_id="report", trigger_rule="none_failed")
    def report(params: dict[str, Any] | None = None, ti: Any = None, dag_run: Any = None) -> str:
        # From the run's task states, not the branch's XCom: on Airflow 3 the branch's pull came
        # back empty and every published run was reported as skipped.
        states = ti.get_task_states(
            dag_id=dag_run.dag_id,
            task_ids=["publish", "gate_failed", "replay_failed"],
            run_ids=[dag_run.run_id],
        ).get(dag_run.run_id, {})
        replay_failed = states.get("replay_failed") == "success"
        state = (
            "published"
            if states.get("publish") == "success"
            else "rejected"
            if states.get("gate_failed") == "success" or replay_failed
            else "skipped"
        )
        reason = (
            f"{params['reason']}: "
            + {
                "skipped": "no new data under the raw prefix",
                "rejected": "the replay before the canary failed"
                if replay_failed
                else "the evaluation gate failed",
                "published": "published and deployed as a canary",
            }[state]
        )
        flywheel(
            "pipeline",
            "report",
            "--model",
            params["model"],
            "--dag-run-id",
            dag_run.run_id,
            "--state",
            state,
            "--reason",
            reason,
        )
        return state

    branch = evaluate()
    replayed = replay()
    ingest >> preprocess >> tune >> trainers >> branch
    branch >> package >> replayed >> publish >> deploy
    branch >> gate_failed
    replayed >> replay_failed
    [deploy, gate_failed, replay_failed] >> report()


retrain = flywheel_retrain()
