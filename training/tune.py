"""Hyperparameter search inside the retraining run: Optuna over the space the task declares.

One ``tune`` step between ``preprocess`` and the two ``train_*`` steps, not a search inside each
trainer: the task's space is shared by both frameworks' builders (the Keras model is the same
architecture as the PyTorch one), so one study decides for both, the trainers stay one training
each, and an Airflow retry of a trainer never repeats the search (the study's result is a step
result in the run area, like every other step's).

- **Objective**: the task's gate metric (``task.metric.primary``) on the *validation* split of a
  PyTorch model trained with the trial's parameters. The test split stays the gate's holdout, so
  the search never sees what the gate judges.
- **Sampler and pruner**: TPE with a fixed seed; a median pruner on the validation curve, which
  the shared training loop reports after every epoch (``training.torch_loop.EPOCH_OBSERVER``).
- **Trial 0 is the task's default parameters**, so the best trial is never worse than training
  without a search on the same data, and the gain over the defaults is measured in every run.
- **Budget**: trials and seconds (``FLYWHEEL_HPO_TRIALS``, ``FLYWHEEL_HPO_TIMEOUT_S``; each
  defaults to the task's ``search_budget``; 0 trials turns the search off). No trial starts
  after the deadline; one that is running finishes (a trial is one training, seconds long).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tasks.base import SearchDimension, Split, Task

STEP = "tune"
#: A trial is pruned only after this many epochs of its validation curve.
PRUNE_WARMUP_EPOCHS = 2


class SearchFailedError(RuntimeError):
    """Every trial failed (a training that diverged to NaN, say) or was pruned."""


@dataclass(frozen=True)
class Budget:
    trials: int
    seconds: float
    seed: int


def budget_for(task: Task, settings: Any) -> Budget:
    """The settings' budget where set, else the task's own."""
    trials = task.search_budget.trials if settings.hpo_trials is None else settings.hpo_trials
    seconds = task.search_budget.seconds if settings.hpo_timeout_s is None else settings.hpo_timeout_s
    return Budget(trials=trials, seconds=seconds, seed=settings.hpo_seed)


def _encode(value: Any) -> Any:
    """Optuna's categorical choices must be scalars: a tuple or list choice travels as JSON."""
    return json.dumps(list(value)) if isinstance(value, (tuple, list)) else value


def _decode(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) and value.startswith("[") else value


def describe_space(space: dict[str, SearchDimension]) -> dict[str, dict[str, Any]]:
    """The space as plain data, for the lineage and the Katib manifest."""
    described: dict[str, dict[str, Any]] = {}
    for name, dimension in space.items():
        if dimension.kind == "choice":
            described[name] = {"kind": "choice", "choices": [_decode(_encode(c)) for c in dimension.choices]}
        else:
            described[name] = {"kind": dimension.kind, "low": dimension.low, "high": dimension.high}
    return described


def suggest(trial: Any, name: str, dimension: SearchDimension) -> Any:
    if dimension.kind == "choice":
        return _decode(trial.suggest_categorical(name, [_encode(c) for c in dimension.choices]))
    assert dimension.low is not None and dimension.high is not None, f"{name}: a range needs low and high"
    if dimension.kind == "int":
        return trial.suggest_int(name, int(dimension.low), int(dimension.high))
    return trial.suggest_float(name, dimension.low, dimension.high, log=dimension.kind == "log_float")


def defaults_in_space(defaults: dict[str, Any], space: dict[str, SearchDimension]) -> dict[str, Any]:
    """The default parameters as a trial of the space (encoded); a default outside its dimension's
    range is left for the sampler to choose."""
    trial: dict[str, Any] = {}
    for name, dimension in space.items():
        if name not in defaults:
            continue
        value = defaults[name]
        if dimension.kind == "choice":
            encoded = [_encode(choice) for choice in dimension.choices]
            if _encode(value) in encoded:
                trial[name] = _encode(value)
        elif (
            dimension.low is not None
            and dimension.high is not None
            and dimension.low <= value <= dimension.high
        ):
            trial[name] = value
    return trial


def validation_metric(task: Task, model: Any, validation: Split) -> float:
    from training.exports import torch_predict

    report = task.evaluate(validation.target, torch_predict(model, validation.features))
    return float(report[task.metric.primary])


def search(
    task: Task,
    splits: dict[str, Split],
    preprocess_dir: Path,
    budget: Budget,
    progress: Callable[[str], None] = lambda message: None,
) -> dict[str, Any]:
    """Run the study; return its trials and the best parameters (plain data)."""
    import optuna

    from training.torch_loop import EPOCH_OBSERVER

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = task.search_space()
    if not space:
        raise ValueError(f"task {task.name} declares no search space (Task.search_space)")
    maximise = task.metric.higher_is_better
    sampler = optuna.samplers.TPESampler(
        seed=budget.seed, n_startup_trials=max(2, min(10, budget.trials // 3))
    )
    pruner = optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=PRUNE_WARMUP_EPOCHS)
    study = optuna.create_study(
        direction="maximize" if maximise else "minimize", sampler=sampler, pruner=pruner
    )
    defaults = defaults_in_space(task.params("pytorch"), space)
    # Trial 0 is "the defaults" only when every searched default lies in its dimension.
    study.enqueue_trial(defaults, user_attrs={"defaults": len(defaults) == len(space)})

    def objective(trial: optuna.Trial) -> float:
        chosen = {name: suggest(trial, name, dimension) for name, dimension in space.items()}
        progress(f"trial {trial.number + 1} of {budget.trials}: {chosen}")

        def observe(epoch: int, score: float) -> None:
            # The loop's validation score is higher-is-better; the study's direction may not be.
            trial.report(score if maximise else -score, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"epoch {epoch + 1}: below the median of earlier trials")

        token = EPOCH_OBSERVER.set(observe)
        try:
            model = task.train_torch(splits, preprocess_dir, task.params("pytorch", chosen))
        finally:
            EPOCH_OBSERVER.reset(token)
        return validation_metric(task, model, splits["validation"])

    started, search_started = time.monotonic(), datetime.now(UTC)
    # A trial whose training fails (diverged to NaN and never scored, out of memory) is recorded as
    # FAIL and the search goes on; if none completes, SearchFailedError names every state.
    study.optimize(
        objective,
        n_trials=budget.trials,
        timeout=budget.seconds,
        catch=(ArithmeticError, AssertionError, RuntimeError, ValueError),
    )
    trials = [_trial_row(trial) for trial in study.trials]
    complete = [row for row in trials if row["state"] == "COMPLETE"]
    if not complete:
        states = ", ".join(f"trial {row['number']} {row['state'].lower()}" for row in trials)
        raise SearchFailedError(f"no trial of the search completed ({states}); nothing to choose from")
    best = study.best_trial
    default_value = next(
        (row["value"] for row in trials if row["defaults"] and row["value"] is not None), None
    )
    return {
        "skipped": False,
        "metric": task.metric.primary,
        "direction": "maximize" if maximise else "minimize",
        "split": "validation",
        "best_params": {name: _decode(value) for name, value in best.params.items()},
        "best_value": best.value,
        "default_value": default_value,
        "trials": len(trials),
        "pruned": sum(row["state"] == "PRUNED" for row in trials),
        "seed": budget.seed,
        "budget": {"trials": budget.trials, "seconds": budget.seconds},
        "seconds": round(time.monotonic() - started, 3),
        "started_at": search_started.isoformat(),
        "search_space": describe_space(space),
        "sampler": "TPESampler",
        "pruner": f"MedianPruner(n_warmup_steps={PRUNE_WARMUP_EPOCHS})",
        "table": trials,
    }


def _trial_row(trial: Any) -> dict[str, Any]:
    duration = trial.duration.total_seconds() if trial.duration is not None else None
    return {
        "number": trial.number,
        "params": {name: _decode(value) for name, value in trial.params.items()},
        # A pruned trial's stored value is its last epoch's score, not a result: shown as none.
        "value": trial.value if trial.state.name == "COMPLETE" else None,
        "state": trial.state.name,
        "seconds": None if duration is None else round(duration, 3),
        "epochs": len(trial.intermediate_values),
        "started_at": trial.datetime_start.astimezone(UTC).isoformat() if trial.datetime_start else None,
        "defaults": bool(trial.user_attrs.get("defaults")),
    }


def step_tune(context: Any, force: bool = False) -> dict[str, Any]:
    """The run's search: trials to ``tune/trials.json`` in the run area, the best parameters in the
    step's result (which both trainers take)."""
    import tempfile

    run = context.resolve_run()
    if not force and (done := run.result(STEP)):
        return dict(done)
    task, budget = context.task, budget_for(context.task, context.settings)
    if budget.trials <= 0 or not task.search_space():
        why = "search is off (FLYWHEEL_HPO_TRIALS=0)" if budget.trials <= 0 else "the task declares no space"
        return run.upload_result(STEP, {"skipped": True, "reason": why})
    with tempfile.TemporaryDirectory(prefix="flywheel-tune-") as scratch:
        preprocess_dir = run.download("preprocess", Path(scratch) / "preprocess")
        splits = task.load_splits(preprocess_dir)
        context.progress(f"searching {budget.trials} trials, at most {budget.seconds:g} s")
        result = search(task, splits, preprocess_dir, budget, context.progress)
        output = Path(scratch) / "out"
        output.mkdir()
        (output / "trials.json").write_text(json.dumps(result["table"], indent=2))
        summary = {key: value for key, value in result.items() if key != "table"}
        return run.upload(STEP, output, summary | {"table": result["table"]})


def katib_value(choice: Any) -> str:
    """A choice as an outside tuner passes it on a command line: a list of integers as ``64x32``.
    Katib's StdOut collector runs the trial through ``sh -c`` with the arguments joined unquoted,
    so a value must hold no space and no glob character (``[64, 32]`` would split and glob)."""
    if isinstance(choice, (list, tuple)) and all(isinstance(item, int) for item in choice):
        return "x".join(str(item) for item in choice)
    return json.dumps(choice) if isinstance(choice, (list, tuple)) else str(choice)


def parse_trial_arguments(arguments: list[str]) -> dict[str, Any]:
    """``NAME=VALUE`` pairs: VALUE as JSON where it is JSON (``0.001``, ``[64, 32]``), ``64x32`` as
    a list of integers, anything else as text."""
    chosen: dict[str, Any] = {}
    for argument in arguments:
        name, separator, text = argument.partition("=")
        if not separator or not name.strip():
            raise ValueError(f"--trial takes NAME=VALUE, got {argument!r}")
        if re.fullmatch(r"\d+(x\d+)+", text):
            chosen[name.strip()] = [int(item) for item in text.split("x")]
            continue
        try:
            chosen[name.strip()] = json.loads(text)
        except json.JSONDecodeError:
            chosen[name.strip()] = text
    return chosen


def check_trial(task: Task, chosen: dict[str, Any]) -> None:
    """Refuse names outside the task's space and values outside their dimension, before training."""
    space = task.search_space()
    unknown = set(chosen) - set(space)
    if unknown:
        raise ValueError(f"{sorted(unknown)} are not in {task.name}'s search space {sorted(space)}")
    for name, value in chosen.items():
        dimension = space[name]
        if dimension.kind == "choice":
            allowed = [_decode(_encode(choice)) for choice in dimension.choices]
            if value not in allowed:
                raise ValueError(f"{name}={value!r} is not one of {allowed}")
        elif isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{name}={value!r} is not a number")
        elif not (
            dimension.low is not None
            and dimension.high is not None
            and dimension.low <= value <= dimension.high
        ):
            raise ValueError(f"{name}={value} is outside [{dimension.low}, {dimension.high}]")
        elif dimension.kind == "int" and not float(value).is_integer():
            raise ValueError(f"{name}={value} is not an integer")


def run_one_trial(context: Any, chosen: dict[str, Any]) -> dict[str, Any]:
    """Train once with ``chosen`` over the defaults and score it as a trial would be scored: what
    an outside tuner's trial (a Katib trial pod) runs. Nothing is written to the run area."""
    import tempfile

    task = context.task
    check_trial(task, chosen)
    run = context.resolve_run()
    with tempfile.TemporaryDirectory(prefix="flywheel-trial-") as scratch:
        preprocess_dir = run.download("preprocess", Path(scratch) / "preprocess")
        splits = task.load_splits(preprocess_dir)
        started = time.monotonic()
        model = task.train_torch(splits, preprocess_dir, task.params("pytorch", chosen))
        value = validation_metric(task, model, splits["validation"])
    return {"metric": task.metric.primary, "value": value, "split": "validation", "params": chosen,
            "seconds": round(time.monotonic() - started, 3)}  # fmt: skip


def tuned_overrides(run: Any, task: Task, framework: str) -> dict[str, Any]:
    """The run's best parameters that this framework's builder takes (none without a search)."""
    tuned = run.result(STEP)
    if not tuned or tuned.get("skipped"):
        return {}
    known = task.params(framework)
    return {name: value for name, value in tuned["best_params"].items() if name in known}


def tuning_lineage(result: dict[str, Any] | None) -> dict[str, Any] | None:
    """What a manifest says about how its version was tuned."""
    if not result or result.get("skipped"):
        return None
    keys = ("best_params", "best_value", "default_value", "metric", "direction", "split", "trials",
            "pruned", "seed", "budget", "search_space", "sampler", "pruner")  # fmt: skip
    return {key: result[key] for key in keys if key in result}
