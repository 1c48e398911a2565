"""The real-data case: train on Microsoft 1986-1999, meet 2000-2002 (the crash), retrain.

Runs the real pipeline (S3 ingest, Spark, PyTorch and TensorFlow, the gate, publish) twice on a
model of its own, under a raw prefix of its own, against a running stack's S3:

1. land 1986-1999 and train v1;
2. the crash years through v1's eyes: per-feature PSI and KS of their newest-day features against
   v1's training profile (what the drift monitor would report), and v1's RMSE on them next to the
   naive (zero-return) forecast;
3. land 2000-2002 and run the pipeline again: the new snapshot holds only the new objects, so v2
   trains on the crash years, and the gate scores v2 and v1 on the same late-2002 holdout.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from flywheel.settings import FlywheelSettings
from model_store import ModelStore
from monitoring.drift import ks_binned, psi

MODEL_PREFIX = "msft"
TRAIN_UNTIL = date(1999, 12, 31)
CRASH = (date(2000, 1, 1), date(2002, 12, 31))


def crash_windows() -> tuple[np.ndarray, np.ndarray]:
    """(windows, next-day targets) of the crash years, computed as serving traffic would be."""
    from tasks.stock_forecast.contract import TARGET_COLUMN, WINDOW
    from tasks.stock_forecast.dataset import windows_by_symbol
    from tasks.stock_forecast.pandas_features import features_of_frames
    from tasks.stock_forecast.real_data import SYMBOL, msft_daily

    features = features_of_frames({SYMBOL: msft_daily(*CRASH)}).rename(columns={"Date": "date"})
    features = features.dropna().reset_index(drop=True)
    _, windows = windows_by_symbol(features)
    targets = features.sort_values("date")[TARGET_COLUMN].to_numpy(dtype=np.float32)[WINDOW - 1 :]
    return windows, targets


def drift_against(profile: dict[str, Any], windows: np.ndarray) -> dict[str, dict[str, float]]:
    """PSI and KS per feature of the windows' newest day against the profile (the gateway's bins)."""
    report = {}
    for column, (name, entry) in enumerate(profile["features"].items()):
        edges = np.asarray(entry["edges"], dtype=np.float64)
        counts = np.bincount(
            np.searchsorted(edges, windows[:, -1, column], side="right"), minlength=len(edges) + 1
        )
        reference = np.asarray(entry["frequencies"], dtype=np.float64)
        statistic, p_value = ks_binned(reference, counts)
        report[name] = {"psi": round(psi(reference, counts), 3), "ks": round(statistic, 3), "ks_p": p_value}
    return report


def score_version(
    store: ModelStore, model: str, version: int, windows: np.ndarray, targets: np.ndarray
) -> dict[str, float]:
    import torch

    from tasks.stock_forecast.metrics import holdout_report

    with tempfile.TemporaryDirectory(prefix="flywheel-real-") as scratch:
        store.fetch(model, version, Path(scratch), prefix="torchscript/")
        scripted = torch.jit.load(str(Path(scratch) / "torchscript" / "model.pt")).eval()
        with torch.no_grad():
            prediction = scripted(torch.as_tensor(windows)).numpy().reshape(-1)
    return {key: round(value, 6) for key, value in holdout_report(targets, prediction).items()}


def run(settings: FlywheelSettings, progress: Callable[[str], None]) -> dict[str, Any]:
    """Each call uses a model and raw prefix of its own (``msft-<UTC time>``): ingest only takes
    objects no earlier snapshot took, so a second run on the same names would find nothing new."""
    from tasks.stock_forecast.real_data import land_msft
    from training.pipeline import PipelineContext, run_all, step_package, step_publish

    model = f"{MODEL_PREFIX}-{datetime.now(UTC):%Y%m%d-%H%M%S}"
    settings = settings.model_copy(update={"raw_prefix": f"real/{model}/", "model_name": model})
    store = ModelStore.open(settings.resolve_store_uri(), settings)

    def pipeline(title: str) -> tuple[dict[str, Any], int]:
        context = PipelineContext(
            settings, store, model, None, lambda message: progress(f"{title}: {message}")
        )
        results = run_all(context)
        if "version" not in results["publish"]:
            # Next-day returns of a real stock are close to unpredictable, and the gate says so.
            # Published anyway, with the failed gate in its manifest, to carry the story on.
            step_package(context)
            results["publish"] = step_publish(context, allow_failed_gate=True)
        return results, int(results["publish"]["version"])

    progress("landing 1986-1999")
    landed_before = land_msft(settings, until=TRAIN_UNTIL, batch="msft-1986-1999")
    first, v1 = pipeline("v1 on 1986-1999")
    profile = orjson.loads(store.read_artifact(model, v1, "profile.json"))
    progress("the crash years through v1's eyes")
    windows, targets = crash_windows()
    drift = drift_against(profile, windows)
    v1_on_crash = score_version(store, model, v1, windows, targets)
    progress("landing 2000-2002")
    landed_crash = land_msft(settings, *CRASH, batch="msft-2000-2002")
    second, v2 = pipeline("v2 on 2000-2002")
    evaluation = second["evaluate"]
    return {
        "model": model,
        "landed": [landed_before, landed_crash],
        "v1": {
            "version": v1,
            "gate": first["evaluate"]["gate"],
            "holdout_1990s": first["evaluate"]["candidate"],
        },
        "crash_drift_vs_v1_profile": drift,
        "v1_on_all_crash_windows": v1_on_crash,
        "v2": {
            "version": v2,
            "gate": evaluation["gate"],
            "holdout_late_2002": {"v2": evaluation["candidate"], "v1": evaluation["champion"]},
        },
    }
