"""``flywheel bench tune``: time per trial and the gain over the defaults (``training/tune_bench.py``)."""

from __future__ import annotations

from typing import Any

import typer
from rich.table import Table

from flywheel.cli.bench_commands import bench_app
from flywheel.cli.output import JSON_OPTION, console, emit, fail


@bench_app.command()
def tune(
    ctx: typer.Context,
    models: list[str] = typer.Argument(..., help="Models whose latest preprocessed run to search."),
    trials: int = typer.Option(16, "--trials", min=1, help="Trials per model."),
    timeout: float = typer.Option(
        600, "--timeout", min=1, help="Seconds per model after which no trial starts."
    ),
    seed: int = typer.Option(7, "--seed", help="The TPE sampler's seed."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Search each model's latest preprocessed run, then train the defaults and the best parameters
    and score both on the run's holdout: seconds per trial, and the quality gained over the
    defaults on validation (what the search optimised) and on the holdout (what a user gets)."""
    from flywheel.cli.models_commands import open_store
    from training.pipeline import PipelineContext
    from training.run_area import StepNotDoneError
    from training.tune import Budget, SearchFailedError
    from training.tune_bench import run

    settings = ctx.obj
    store = open_store(settings)
    results = []
    with console.status("tune bench") as status:
        for model in models:
            context = PipelineContext(settings, store, model, None, lambda message: status.update(message))
            try:
                results.append(run(context, Budget(trials, timeout, seed), status.update))
            except (LookupError, StepNotDoneError) as error:
                fail(f"{model}: {error} (run `flywheel pipeline preprocess --model {model}` first)", as_json)
            except SearchFailedError as error:
                fail(f"{model}: {error}", as_json)

    def render(data: list[dict[str, Any]]) -> None:
        table = Table(title="hyperparameter search: defaults against the best of the search (PyTorch)")
        for column in ("model", "metric", "trials (pruned)", "s per trial", "validation", "holdout"):
            table.add_column(column, justify="left" if column == "model" else "right")
        for row in data:
            per_trial = row["seconds_per_trial"]
            validation, holdout = row["validation"], row["holdout"]
            table.add_row(
                row["model"],
                f"{row['metric']} ({row['direction'][:3]})",
                f"{row['trials']} ({row['pruned']})",
                f"{per_trial['mean']:.2f} ({per_trial['min']:.2f}-{per_trial['max']:.2f})",
                f"{validation['defaults']:.4g} -> {validation['best']:.4g}",
                f"{holdout['defaults']['metric']:.4g} -> {holdout['tuned']['metric']:.4g}",
            )
        console.print(table)
        for row in data:
            console.print(f"{row['model']}: best {row['best_params']} (seed {row['seed']})")

    emit(results, as_json, render)
