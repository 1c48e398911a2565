"""The hyperparameter search on the session's real pipeline run: budget, seed, defaults, lineage, CLI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

from flywheel.cli.main import app
from tasks.base import Split
from tasks.registry import get_task
from tests.pipeline_fixtures import MODEL, PipelineRun
from training.torch_loop import EPOCH_OBSERVER, fit_early_stopping
from training.tune import Budget, search, validation_metric


@pytest.fixture(scope="module")
def preprocessed(pipeline_run: PipelineRun, tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path]:
    """v1's run: its splits and preprocess folder, as the tune step reads them."""
    run = pipeline_run.context(pipeline_run.base["ingest"]["snapshot_id"]).resolve_run()
    folder = run.download("preprocess", tmp_path_factory.mktemp("tune") / "preprocess")
    return get_task("stock_forecast").load_splits(folder), folder


def test_the_same_seed_picks_the_same_parameters_within_the_trial_budget(
    preprocessed: tuple[dict[str, Split], Path],
) -> None:
    splits, folder = preprocessed
    task = get_task("stock_forecast")
    first = search(task, splits, folder, Budget(trials=4, seconds=600, seed=3))
    again = search(task, splits, folder, Budget(trials=4, seconds=600, seed=3))
    assert first["trials"] == again["trials"] == 4
    assert [row["params"] for row in first["table"]] == [row["params"] for row in again["table"]]
    assert first["best_params"] == again["best_params"]
    assert first["best_value"] == pytest.approx(again["best_value"])
    # Trial 0 is the task's defaults; the best is never worse (RMSE: lower is better).
    defaults = first["table"][0]
    assert defaults["defaults"] and defaults["params"] == {
        name: list(value) if isinstance(value, tuple) else value
        for name, value in task.params("pytorch").items()
        if name in task.search_space()
    }
    assert first["direction"] == "minimize" and first["metric"] == "rmse"
    assert first["best_value"] <= first["default_value"]
    # The defaults' value is what training with the defaults gives on the same validation split.
    trained = task.train_torch(splits, folder, task.params("pytorch"))
    assert validation_metric(task, trained, splits["validation"]) == pytest.approx(first["default_value"])
    assert first["seed"] == 3 and set(first["search_space"]) == set(task.search_space())


def test_no_trial_starts_after_the_wall_clock_budget(preprocessed: tuple[dict[str, Split], Path]) -> None:
    from datetime import datetime

    splits, folder = preprocessed
    task = get_task("stock_forecast")
    result = search(task, splits, folder, Budget(trials=50, seconds=0.001, seed=7))
    assert result["trials"] == 1, "the first trial ran past 1 ms, so no second one started"
    assert result["table"][0]["state"] == "COMPLETE"
    result = search(task, splits, folder, Budget(trials=10_000, seconds=1.5, seed=7))
    began = datetime.fromisoformat(result["started_at"])
    offsets = [(datetime.fromisoformat(row["started_at"]) - began).total_seconds() for row in result["table"]]
    assert result["trials"] < 10_000, "the deadline, not the trial count, ended the search"
    assert max(offsets) <= 1.5 + 0.05, f"a trial started after the deadline: {max(offsets):.3f} s"


def test_the_training_loop_reports_each_epoch_and_a_pruning_raise_stops_it() -> None:
    model = torch.nn.Linear(2, 1)
    features, target = torch.randn(64, 2), torch.randn(64, 1)
    seen: list[tuple[int, float]] = []

    def observe(epoch: int, score: float) -> None:
        seen.append((epoch, score))
        if epoch == 2:
            raise RuntimeError("pruned")

    token = EPOCH_OBSERVER.set(observe)
    try:
        with pytest.raises(RuntimeError, match="pruned"):
            fit_early_stopping(
                model,
                torch.optim.SGD(model.parameters(), lr=0.01),
                lambda batch: torch.nn.functional.mse_loss(model(features[batch]), target[batch]),
                64,
                lambda: -float(torch.nn.functional.mse_loss(model(features), target)),
                epochs=10,
                batch_size=16,
                patience=10,
                seed=1,
            )
    finally:
        EPOCH_OBSERVER.reset(token)
    assert [epoch for epoch, _ in seen] == [0, 1, 2]
    assert EPOCH_OBSERVER.get() is None


def test_a_published_manifest_says_how_its_version_was_tuned(pipeline_run: PipelineRun) -> None:
    tuned = pipeline_run.base["tune"]
    assert not tuned["skipped"] and tuned["trials"] == pipeline_run.settings.hpo_trials
    tuning = pipeline_run.store.get_manifest(MODEL, 1).lineage.tuning
    assert tuning is not None
    assert tuning["best_params"] == tuned["best_params"] and tuning["trials"] == tuned["trials"]
    assert tuning["seed"] == 7 and tuning["metric"] == "rmse" and tuning["split"] == "validation"
    assert set(tuning["search_space"]) == {"learning_rate", "batch_size", "hidden"}
    assert tuning["search_space"]["learning_rate"]["kind"] == "log_float"
    assert tuning["best_value"] <= tuning["default_value"]
    # Both trainers took the best parameters.
    params = pipeline_run.store.get_manifest(MODEL, 1).lineage.params
    for framework in ("pytorch", "tensorflow"):
        assert {name: params[framework][name] for name in tuning["best_params"]} == tuning["best_params"]


def test_the_cli_prints_the_trials_and_runs_one_outside_trial(
    pipeline_run: PipelineRun, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("flywheel.cli.main.FlywheelSettings", lambda: pipeline_run.settings)
    run_id = pipeline_run.base["ingest"]["snapshot_id"]
    runner = CliRunner()
    shown = runner.invoke(app, ["pipeline", "tune", "--run-id", run_id, "--json"])
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.stdout)["best_params"] == pipeline_run.base["tune"]["best_params"]
    table = runner.invoke(app, ["pipeline", "tune", "--run-id", run_id])
    assert table.exit_code == 0 and "(defaults)" in table.stdout and "best rmse" in table.stdout, table.output

    # One trial as Katib's trial pod runs it: the metric on a line its StdOut collector parses.
    one = ["--trial", "learning_rate=0.003", "--trial", "hidden=[32, 16]"]
    trial = runner.invoke(app, ["pipeline", "tune", "--run-id", run_id, *one])
    assert trial.exit_code == 0, trial.output
    name, _, value = trial.stdout.strip().splitlines()[-1].partition("=")
    assert name == "rmse" and float(value) > 0
    unknown = runner.invoke(app, ["pipeline", "tune", "--run-id", run_id, "--trial", "dropout=0.5", "--json"])
    assert unknown.exit_code == 2
    assert "not in stock_forecast's search space" in json.loads(unknown.stdout)["error"]
    malformed = runner.invoke(app, ["pipeline", "tune", "--run-id", run_id, "--trial", "0.5", "--json"])
    assert malformed.exit_code == 2 and "NAME=VALUE" in json.loads(malformed.stdout)["error"]
    refusals = {
        "hidden=5": "is not one of",
        "learning_rate=3": "is outside",
        "batch_size=64x32": "is not one of",
        "learning_rate=fast": "is not a number",
    }
    for bad, message in refusals.items():
        refused = runner.invoke(app, ["pipeline", "tune", "--run-id", run_id, "--trial", bad, "--json"])
        assert refused.exit_code == 2 and message in json.loads(refused.stdout)["error"], refused.output
    # What Katib passes for a list choice (no space, no glob character) is the same trial.
    katib_form = runner.invoke(
        app, ["pipeline", "tune", "--run-id", run_id, "--trial", "hidden=32x16", "--json"]
    )
    assert katib_form.exit_code == 0 and json.loads(katib_form.stdout)["params"] == {"hidden": [32, 16]}


def test_the_bench_scores_the_defaults_and_the_best_on_the_holdout(pipeline_run: PipelineRun) -> None:
    from training.tune_bench import run

    context = pipeline_run.context(pipeline_run.base["ingest"]["snapshot_id"])
    result = run(context, Budget(trials=3, seconds=600, seed=7))
    assert result["task"] == "stock_forecast" and result["trials"] == 3 and result["metric"] == "rmse"
    assert result["validation"]["best"] <= result["validation"]["defaults"]
    assert set(result["holdout"]) == {"defaults", "tuned"}
    assert all(score["metric"] > 0 for score in result["holdout"].values())
    assert 0 < result["seconds_per_trial"]["min"] <= result["seconds_per_trial"]["max"]
    assert result["examples"]["test"] == len(
        get_task("stock_forecast").load_splits(
            context.resolve_run().download("preprocess", Path(context.settings.home) / "bench-check")
        )["test"]
    )
