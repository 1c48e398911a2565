"""A published version's own inputs, read back through its task: traffic to replay, references."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from model_store import ModelStore
from tasks.registry import DEFAULT_TASK
from training.pipeline import task_of
from training.run_area import RunArea


def reference_inputs(
    store: ModelStore, model: str, version: int, split: str = "train", default_task: str = DEFAULT_TASK
) -> np.ndarray:
    """One split of the run that produced ``version`` (its lineage names the run); the feature
    profile was computed on the training split."""
    run_id = store.get_manifest(model, version).lineage.run_id
    if run_id is None:
        raise ValueError(f"{model} v{version} names no pipeline run in its lineage: nothing to replay")
    task = task_of(store, model, default_task)
    with tempfile.TemporaryDirectory(prefix="flywheel-traffic-") as scratch:
        preprocess = RunArea(store.storage, model, run_id).download("preprocess", Path(scratch) / "p")
        return task.load_splits(preprocess)[split].features
