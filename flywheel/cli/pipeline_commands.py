"""``flywheel pipeline ...``: the training pipeline's idempotent steps, one command each."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import typer
from botocore.exceptions import BotoCoreError, ClientError

from flywheel.cli.models_commands import open_store
from flywheel.cli.output import JSON_OPTION, console, emit, error_console, fail
from flywheel.settings import FlywheelSettings
from model_store import ModelStoreError

pipeline_app = typer.Typer(
    help=(
        "Training pipeline steps: ingest -> preprocess -> train -> evaluate -> package -> publish. "
        "Each is idempotent and keyed by the dataset snapshot, so a retry is safe; `run` does them all."
    ),
    no_args_is_help=True,
)

MODEL_OPTION = typer.Option(None, "--model", help="Model name (default: the model_name setting).")
RUN_OPTION = typer.Option(
    None, "--run-id", "--snapshot", help="Snapshot id of the run (default: the latest)."
)
FORCE_OPTION = typer.Option(False, "--force", help="Run the step again even if it already completed.")


@contextmanager
def _pipeline(
    ctx: typer.Context, model: str | None, run_id: str | None, as_json: bool, title: str
) -> Iterator[Any]:
    from tasks.base import PreprocessError
    from training.ingest import IngestError
    from training.package import PackagingError
    from training.pipeline import GateFailedError, PipelineContext
    from training.run_area import StepNotDoneError

    settings: FlywheelSettings = ctx.obj
    status = None if as_json else console.status(f"[bold]{title}[/]")
    progress: Callable[[str], None] = (
        (lambda message: None)
        if status is None
        else (lambda message: status.update(f"[bold]{title}[/]: {message}"))
    )
    context = PipelineContext(settings, open_store(settings), model or settings.model_name, run_id, progress)
    try:
        if status is not None:
            status.start()
        yield context
    except (
        ModelStoreError,
        IngestError,
        PreprocessError,
        PackagingError,
        GateFailedError,
        StepNotDoneError,
    ) as error:
        fail(str(error), as_json)
    except LookupError as error:
        fail(str(error).strip("'\""), as_json)
    except (BotoCoreError, ClientError) as error:
        fail(f"S3 at {settings.s3_url} failed: {error} (is `flywheel up` running?)", as_json)
    finally:
        if status is not None:
            status.stop()


def _show(result: dict[str, Any], as_json: bool, title: str) -> None:
    emit(
        result,
        as_json,
        lambda data: console.print_json(data=data) if data else console.print(f"{title}: done"),
    )


@pipeline_app.command()
def ingest(ctx: typer.Context, model: str = MODEL_OPTION, as_json: bool = JSON_OPTION) -> None:
    """Snapshot raw S3 objects no earlier snapshot took (by key and ETag). Exit code 3: nothing new."""
    from training.pipeline import step_ingest

    with _pipeline(ctx, model, None, as_json, "ingest") as context:
        result = step_ingest(context)
    _show(result, as_json, "ingest")
    if result["skipped"]:
        if not as_json:
            error_console.print("nothing new under the raw prefix: skip the run")
        raise typer.Exit(3)


@pipeline_app.command()
def preprocess(
    ctx: typer.Context,
    model: str = MODEL_OPTION,
    run_id: str = RUN_OPTION,
    force: bool = FORCE_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Spark job: clean (quarantine bad rows), features, target, time split, normalisation, drift profile."""
    from training.pipeline import step_preprocess

    with _pipeline(ctx, model, run_id, as_json, "preprocess") as context:
        result = step_preprocess(context, force)
    _show(result, as_json, "preprocess")


@pipeline_app.command()
def train(
    ctx: typer.Context,
    framework: str = typer.Option("all", "--framework", help="pytorch, tensorflow, or all."),
    model: str = MODEL_OPTION,
    run_id: str = RUN_OPTION,
    force: bool = FORCE_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Train PyTorch and/or TensorFlow on the same features; test metrics next to the naive baseline."""
    from training.pipeline import FRAMEWORKS, step_train

    frameworks = FRAMEWORKS if framework == "all" else (framework,)
    results = {}
    with _pipeline(ctx, model, run_id, as_json, "train") as context:
        try:
            for name in frameworks:
                results[name] = step_train(context, name, force)
        except ValueError as error:
            fail(str(error), as_json, exit_code=2)
    _show(results, as_json, "train")


@pipeline_app.command()
def tune(
    ctx: typer.Context,
    model: str = MODEL_OPTION,
    run_id: str = RUN_OPTION,
    trials: int = typer.Option(
        None, "--trials", min=0, help="Trials to run (default: FLYWHEEL_HPO_TRIALS, else the task's budget)."
    ),
    timeout: float = typer.Option(
        None,
        "--timeout",
        min=1,
        help="Seconds after which no trial starts (default: FLYWHEEL_HPO_TIMEOUT_S).",
    ),
    seed: int = typer.Option(None, "--seed", help="The TPE sampler's seed (default: FLYWHEEL_HPO_SEED)."),
    trial: list[str] = typer.Option(
        None,
        "--trial",
        help="NAME=VALUE (0.001; a list of integers as 64x32 or JSON [64,32]); repeat for each "
        "parameter. Trains once with exactly these and prints METRIC=VALUE: one trial of an outside "
        "tuner, such as a Katib trial pod.",
    ),
    force: bool = FORCE_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Search the task's hyperparameters for this run (Optuna: TPE, median pruning on the validation
    curve, trial 0 = the defaults) and print the trials. Both trainers then take the best parameters;
    the published manifest's lineage says how it was tuned."""
    from training.tune import SearchFailedError, check_trial, parse_trial_arguments, run_one_trial, step_tune

    settings: FlywheelSettings = ctx.obj
    overrides = {"hpo_trials": trials, "hpo_timeout_s": timeout, "hpo_seed": seed}
    ctx.obj = settings.model_copy(update={k: v for k, v in overrides.items() if v is not None})
    try:
        chosen = parse_trial_arguments(trial or [])
    except ValueError as error:
        fail(str(error), as_json, exit_code=2)
    with _pipeline(ctx, model, run_id, as_json, "tune") as context:
        try:
            check_trial(context.task, chosen)
        except ValueError as error:
            fail(str(error), as_json, exit_code=2)
        try:
            result = (
                run_one_trial(context, chosen)
                if chosen
                else step_tune(context, force or overrides_set(overrides))
            )
        except SearchFailedError as error:
            fail(str(error), as_json)
    if chosen and not as_json:
        print(f"{result['metric']}={result['value']}")  # the line Katib's StdOut collector parses
        return
    emit(result, as_json, _render_tune)


def overrides_set(overrides: dict[str, Any]) -> bool:
    """A budget given on the command line asks for a new search, not the run's stored one."""
    return any(value is not None for value in overrides.values())


def _number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.5g}"


def _render_tune(result: dict[str, Any]) -> None:
    from rich.table import Table

    if result.get("skipped"):
        console.print(f"tune: skipped ({result['reason']})")
        return
    table = Table(
        title=f"{result['trials']} trials, {result['metric']} on {result['split']} ({result['direction']})"
    )
    for column in ("#", "state", result["metric"], "epochs", "seconds", "parameters"):
        table.add_column(column, justify="right" if column not in ("state", "parameters") else "left")
    for row in result["table"]:
        value = "" if row["value"] is None else f"{row['value']:.5g}"
        label = f"{row['number']}" + (" (defaults)" if row["defaults"] else "")
        table.add_row(label, row["state"].lower(), value, str(row["epochs"]), f"{row['seconds'] or 0:.1f}",
                      ", ".join(f"{k}={v}" for k, v in row["params"].items()))  # fmt: skip
    console.print(table)
    console.print(
        f"best {result['metric']} {result['best_value']:.5g} (defaults {_number(result['default_value'])}) "
        f"with {result['best_params']}; seed {result['seed']}, {result['seconds']:.0f} s"
    )


@pipeline_app.command()
def evaluate(
    ctx: typer.Context,
    model: str = MODEL_OPTION,
    run_id: str = RUN_OPTION,
    force: bool = FORCE_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Score candidate and champion on the same holdout; apply the gate. Exit code 4 when the gate fails."""
    from training.pipeline import step_evaluate

    with _pipeline(ctx, model, run_id, as_json, "evaluate") as context:
        result = step_evaluate(context, force)
    _show(result, as_json, "evaluate")
    if not result["gate"]["passed"]:
        raise typer.Exit(4)


@pipeline_app.command()
def package(
    ctx: typer.Context,
    model: str = MODEL_OPTION,
    run_id: str = RUN_OPTION,
    force: bool = FORCE_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Build the .mar, the Triton model-repository entry and the TF Serving SavedModel."""
    from training.pipeline import step_package

    with _pipeline(ctx, model, run_id, as_json, "package") as context:
        result = step_package(context, force)
    _show(result, as_json, "package")


@pipeline_app.command()
def replay(
    ctx: typer.Context,
    model: str = MODEL_OPTION,
    run_id: str = RUN_OPTION,
    force: bool = FORCE_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Replay the champion's recent captured requests through the packaged candidate on a private
    server, before it gets any live traffic: disagreement, prediction shift, and quality on joined
    labels. Exit code 4 when it fails (publish then refuses the candidate)."""
    from training.replay import step_replay

    with _pipeline(ctx, model, run_id, as_json, "replay") as context:
        result = step_replay(context, force)
    _show(result, as_json, "replay")
    if not result["passed"]:
        raise typer.Exit(4)


@pipeline_app.command()
def publish(
    ctx: typer.Context,
    model: str = MODEL_OPTION,
    run_id: str = RUN_OPTION,
    allow_failed_gate: bool = typer.Option(
        False, "--allow-failed-gate", help="Publish even if the gate failed."
    ),
    as_json: bool = JSON_OPTION,
) -> None:
    """Publish the packaged version with full lineage; once per run (a retry returns the same version)."""
    from training.pipeline import step_publish

    with _pipeline(ctx, model, run_id, as_json, "publish") as context:
        result = step_publish(context, allow_failed_gate)
    _show(result, as_json, "publish")


@pipeline_app.command("deploy")
def deploy_run(
    ctx: typer.Context,
    model: str = MODEL_OPTION,
    run_id: str = RUN_OPTION,
    backend: str = typer.Option("triton", "--backend", help="triton, torchserve or tfserving."),
    steps: str = typer.Option(
        None, "--steps", help="Canary steps in percent (default: retrain_canary_steps)."
    ),
    interval: str = typer.Option(
        None, "--interval", help="Bake time per step: 30s, 2m (default: retrain_canary_interval_s)."
    ),
    as_json: bool = JSON_OPTION,
) -> None:
    """Roll the run's published version out: a canary beside what serves now, or a first deploy.

    The rollout controller then promotes or rolls it back by itself. Deploying a version that
    already serves is a no-op, so a retried task changes nothing.
    """
    from flywheel.cli.gateway_commands import admin_call, parse_duration
    from training.pipeline import published_version_of_run

    settings: FlywheelSettings = ctx.obj
    with _pipeline(ctx, model, run_id, as_json, "deploy") as context:
        run_area = context.resolve_run()
        version = published_version_of_run(context.store, context.model, run_area.run_id)
    if version is None:
        fail(
            f"run {run_area.run_id} of {context.model} published no version (gate failed or not run)", as_json
        )
    specs = {
        spec["model"]: spec for spec in admin_call(settings, "GET", "/deployments", as_json)["deployments"]
    }
    current = specs.get(context.model)
    if current and any(variant["version"] == version for variant in current["variants"]):
        _show({"model": context.model, "version": version, "already_deployed": True}, as_json, "deploy")
        return
    body: dict[str, Any] = {
        "version": version,
        "backend": backend,
        "actor": "retrain-pipeline",
        "reason": f"run {run_area.run_id}",
    }
    if current:
        try:
            body |= {
                "strategy": "canary",
                "steps": [float(step) for step in (steps or settings.retrain_canary_steps).split(",")],
                "interval_s": parse_duration(interval) if interval else settings.retrain_canary_interval_s,
            }
            if settings.retrain_canary_analysis:
                body["params"] = {"analysis": settings.retrain_canary_analysis}
        except ValueError as error:
            fail(f"--steps/--interval: {error}", as_json, exit_code=2)
    else:
        body["strategy"] = "single"
    spec = admin_call(settings, "POST", f"/deployments/{context.model}/deploy", as_json, json=body)
    _show(
        {
            "model": context.model,
            "version": version,
            "strategy": body["strategy"],
            "revision": spec["revision"],
        },
        as_json,
        "deploy",
    )


@pipeline_app.command()
def report(
    ctx: typer.Context,
    dag_run_id: str = typer.Option(..., "--dag-run-id", help="The Airflow run being reported."),
    state: str = typer.Option(..., "--state", help="published, rejected, skipped or failed."),
    reason: str = typer.Option("", "--reason", help="Why it ended this way."),
    model: str = MODEL_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Tell the admin API how a retraining run ended (counted in flywheel_retrain_runs_total)."""
    from flywheel.cli.gateway_commands import admin_call

    settings: FlywheelSettings = ctx.obj
    body = {"model": model or settings.model_name, "run_id": dag_run_id, "state": state, "reason": reason}
    _show(admin_call(settings, "POST", "/retrain/runs", as_json, json=body), as_json, "report")


@pipeline_app.command()
def run(
    ctx: typer.Context,
    model: str = MODEL_OPTION,
    run_id: str = RUN_OPTION,
    force: bool = FORCE_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """All steps in order. Stops after ingest when nothing is new, and before publishing on a failed gate."""
    from training.pipeline import run_all

    with _pipeline(ctx, model, run_id, as_json, "pipeline") as context:
        results = run_all(context, force)
    emit(results, as_json, _render_run)


def _render_run(results: dict[str, Any]) -> None:
    if results["ingest"].get("skipped") and len(results) == 1:
        console.print("ingest: nothing new under the raw prefix; run skipped")
        return
    for step, result in results.items():
        console.print(f"[bold]{step}[/]: ", end="")
        if step.startswith("train-"):
            # The task's holdout metrics, each beside its baseline (``*_naive``) where it has one.
            metrics = result["metrics"]
            console.print(
                ", ".join(
                    f"{name} {value:.4g}"
                    + (f" (naive {metrics[name + '_naive']:.4g})" if name + "_naive" in metrics else "")
                    for name, value in metrics.items()
                    if not name.endswith("_naive")
                )
            )
        elif step == "evaluate":
            console.print("gate " + ("[green]passed[/]" if result["gate"]["passed"] else "[red]failed[/]"))
            for reason in result["gate"]["reasons"]:
                console.print(f"    {reason}")
        elif step == "publish" and "version" in result:
            console.print(f"version {result['version']}")
        elif step == "tune" and not result.get("skipped"):
            console.print(
                f"{result['trials']} trials ({result['pruned']} pruned): best {result['metric']} "
                f"{result['best_value']:.4g}, defaults {_number(result['default_value'])}"
            )
        elif step == "package":
            console.print(f"{len(result['files'])} files")
        else:
            console.print({k: v for k, v in result.items() if k not in {"files", "quarantine_reasons"}})
