"""``flywheel bench tune``: what the search costs per trial and what it gains over the defaults.

On a model's preprocessed run (the latest, or ``run_id``): the search with the given budget, then
PyTorch models trained with the defaults and with the best parameters, both scored on the run's
*test* split, the gate's holdout, which the search never saw. The validation gain is what the
search optimised; the holdout gain is what a user gets.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from training.tune import Budget, search


def run(
    context: Any, budget: Budget, progress: Callable[[str], None] = lambda message: None
) -> dict[str, Any]:
    from training.exports import torch_predict

    task = context.task
    run_area = context.resolve_run()
    with tempfile.TemporaryDirectory(prefix="flywheel-bench-tune-") as scratch:
        preprocess_dir = run_area.download("preprocess", Path(scratch) / "preprocess")
        splits = task.load_splits(preprocess_dir)
        progress(f"{task.name}: searching {budget.trials} trials")
        result = search(task, splits, preprocess_dir, budget, progress)
        holdout = {}
        for name, overrides in (("defaults", {}), ("tuned", result["best_params"])):
            progress(f"{task.name}: training with the {name} for the holdout")
            started = time.monotonic()
            model = task.train_torch(splits, preprocess_dir, task.params("pytorch", overrides))
            seconds = time.monotonic() - started
            report = task.evaluate(splits["test"].target, torch_predict(model, splits["test"].features))
            holdout[name] = {"metric": float(report[task.metric.primary]), "train_seconds": round(seconds, 2)}
    trial_seconds = [row["seconds"] for row in result["table"] if row["seconds"] is not None]
    return {
        "model": context.model,
        "task": task.name,
        "run_id": run_area.run_id,
        "examples": {name: len(split) for name, split in splits.items()},
        "metric": result["metric"],
        "direction": result["direction"],
        "trials": result["trials"],
        "pruned": result["pruned"],
        "search_seconds": result["seconds"],
        "seconds_per_trial": {
            "mean": round(sum(trial_seconds) / len(trial_seconds), 3),
            "min": min(trial_seconds),
            "max": max(trial_seconds),
        },
        "validation": {"defaults": result["default_value"], "best": result["best_value"]},
        "holdout": holdout,
        "best_params": result["best_params"],
        "seed": budget.seed,
    }
