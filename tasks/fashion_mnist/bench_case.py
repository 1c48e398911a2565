"""The classifier's retrain, timed step by step: ingest to publish on this machine's stack.

Lands ``count`` labelled images under a prefix of its own, registers a model of its own
(``classifier-bench-<UTC time>``) and runs every pipeline step in order, timing each one. A second
round lands inverted images and retrains against the first version as champion, so the numbers
cover a retrain after drift, including the champion's scoring in the gate.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from flywheel.settings import FlywheelSettings
from model_store import ModelStore
from tasks.fashion_mnist.data import land_batch


def timed_run(context: Any, progress: Callable[[str], None]) -> dict[str, Any]:
    from tasks.base import FRAMEWORKS
    from training.pipeline import (
        step_evaluate,
        step_ingest,
        step_package,
        step_preprocess,
        step_publish,
        step_train,
    )

    seconds: dict[str, float] = {}
    results: dict[str, Any] = {}
    steps: list[tuple[str, Callable[[], Any]]] = [
        ("ingest", lambda: step_ingest(context)),
        ("preprocess", lambda: step_preprocess(context)),
        *[(f"train-{f}", lambda f=f: step_train(context, f)) for f in FRAMEWORKS],
        ("evaluate", lambda: step_evaluate(context)),
        ("package", lambda: step_package(context)),
        ("publish", lambda: step_publish(context)),
    ]
    started = time.perf_counter()
    for name, run in steps:
        progress(name)
        began = time.perf_counter()
        results[name] = run()
        seconds[name] = round(time.perf_counter() - began, 1)
    seconds["total"] = round(time.perf_counter() - started, 1)
    evaluation = results["evaluate"]
    return {
        "seconds": seconds,
        "train_images": results["preprocess"]["split_rows"]["train"],
        "candidate": evaluation["candidate"],
        "champion": evaluation["champion"],
        "gate": evaluation["gate"],
        "version": results["publish"].get("version"),
    }


def run(settings: FlywheelSettings, count: int, progress: Callable[[str], None]) -> dict[str, Any]:
    from training.pipeline import PipelineContext

    model = f"classifier-bench-{datetime.now(UTC):%Y%m%d-%H%M%S}"
    settings = settings.model_copy(update={"raw_prefix": f"bench/{model}/", "model_name": model})
    store = ModelStore.open(settings.resolve_store_uri(), settings)
    store.register(model, "fashion_mnist", actor="bench")
    rounds = {}
    land_batch(settings, "first", count=count)
    context = PipelineContext(settings, store, model)
    rounds["first model"] = timed_run(context, lambda step: progress(f"first model: {step}"))
    land_batch(settings, "inverted", start=count, count=count // 2, transform="invert")
    context = PipelineContext(settings, store, model)
    rounds["retrain after inverted images"] = timed_run(context, lambda step: progress(f"retrain: {step}"))
    return {"model": model, "images": count, "rounds": rounds}
