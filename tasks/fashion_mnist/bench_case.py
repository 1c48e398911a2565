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


def drift_detection(store: ModelStore, model: str, version: int, images: int = 2000) -> dict[str, Any]:
    """What the drift monitor reports for each injected shift: the version's TorchScript run on
    ``images`` test images, binned into its own profile the way the gateway bins live traffic.
    Each case also compares the accuracy CBPE estimates from those confidence counts alone with
    the accuracy the test labels reveal."""
    import tempfile
    from pathlib import Path

    import numpy as np
    import orjson
    import torch

    from monitoring.drift import Thresholds, assess
    from serving.gateway.sampling import ProfileBins
    from tasks.fashion_mnist.data import select, transform_images

    profile = orjson.loads(store.read_artifact(model, version, "profile.json"))
    with tempfile.TemporaryDirectory(prefix="flywheel-bench-") as scratch:
        store.fetch(model, version, Path(scratch), prefix="torchscript/")
        scripted = torch.jit.load(str(Path(scratch) / "torchscript" / "model.pt")).eval()
    _, clean, truth = select("test", 0, images)
    _, shifted, shifted_truth = select("test", 0, images * 3, classes=[0, 1, 2, 3, 4])
    half = images // 2
    cases = {
        "none": (clean, truth),
        "invert": (transform_images(clean, "invert"), truth),
        "half inverted": (np.concatenate([clean[:half], transform_images(clean[half:], "invert")]), truth),
        "rotate": (transform_images(clean, "rotate"), truth),
        "noise": (transform_images(clean, "noise", seed=1), truth),
        "classes 0-4 only": (shifted[:images], shifted_truth[:images]),
    }

    bins = ProfileBins.from_profile(profile)  # what the gateway bins, read from the profile
    assert bins.confidence is not None and bins.classes is not None

    def counts(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
        # The gateway's rule (Spark's Bucketizer): bin i holds [edge[i-1], edge[i]).
        return np.bincount(np.searchsorted(edges, values, side="right"), minlength=len(edges) + 1)

    report = {}
    for name, (batch, labels) in cases.items():
        inputs = batch.astype(np.float32)
        with torch.no_grad():
            probabilities = scripted(torch.as_tensor(inputs)).numpy()
        rows = bins.rows(inputs)
        assert rows is not None
        live = {
            feature: counts(rows[:, column], edges) for column, (feature, edges) in enumerate(bins.features)
        }
        live["confidence"] = counts(probabilities.max(axis=1), bins.confidence)
        live["prediction"] = np.bincount(probabilities.argmax(axis=1), minlength=bins.classes)
        verdict = assess(profile, live, Thresholds(min_samples=100))
        report[name] = {
            **{f.feature: {"psi": round(f.psi, 3), "p_value": f.p_value} for f in verdict.features},
            "prediction": None
            if verdict.prediction is None
            else {"psi": round(verdict.prediction.psi, 3), "chi2_p": verdict.prediction.p_value},
            "drift_detected": verdict.detected,
            **cbpe_against_labels(profile, live["confidence"], probabilities, labels),
        }
    return report


def cbpe_against_labels(
    profile: dict[str, Any], confidence_counts: Any, probabilities: Any, labels: Any
) -> dict[str, float | None]:
    """CBPE's estimate from the confidence counts, the accuracy the labels give, and the error."""
    import numpy as np

    from monitoring.estimate import estimated_accuracy

    estimate = estimated_accuracy(profile, confidence_counts)
    realised = float(np.mean(probabilities.argmax(axis=1) == labels))
    return {
        "estimated_accuracy": None if estimate is None else round(estimate, 4),
        "realised_accuracy": round(realised, 4),
        "estimate_error": None if estimate is None else round(estimate - realised, 4),
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
    progress("drift detection on v1 for each injected shift")
    detection = drift_detection(store, model, rounds["first model"]["version"])
    land_batch(settings, "inverted", start=count, count=count // 2, transform="invert")
    context = PipelineContext(settings, store, model)
    rounds["retrain after inverted images"] = timed_run(context, lambda step: progress(f"retrain: {step}"))
    report = {"model": model, "images": count, "rounds": rounds, "drift_detection_v1": detection}
    retrained = rounds["retrain after inverted images"]["version"]
    if retrained is not None:
        progress(f"drift detection and CBPE on v{retrained}")
        report[f"drift_detection_v{retrained}"] = drift_detection(store, model, retrained)
    return report
