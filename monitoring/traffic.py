"""Prediction traffic replayed from a version's own validation windows, optionally shifted.

For exercising the monitoring path end to end (``flywheel traffic``, the demo, the tests). The
windows are the ones the version's reference profile was computed on, so replayed traffic keeps
feature and prediction PSI near zero; ``shift`` moves chosen features by a multiple of their
reference range (every day of the window), which is what a regime change looks like to the
detectors.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from model_store import ModelStore
from training.contract import FEATURE_COLUMNS, INPUT_NAME


def reference_windows(store: ModelStore, model: str, version: int, split: str = "train") -> np.ndarray:
    """A split of the run that produced ``version`` (its lineage names the run); the feature profile
    was computed on the training split."""
    from training.dataset import load_features, make_windows
    from training.run_area import RunArea

    run_id = store.get_manifest(model, version).lineage.run_id
    if run_id is None:
        raise ValueError(f"{model} v{version} names no pipeline run in its lineage: nothing to replay")
    with tempfile.TemporaryDirectory(prefix="flywheel-traffic-") as scratch:
        preprocess = RunArea(store.storage, model, run_id).download("preprocess", Path(scratch) / "p")
        return make_windows(load_features(preprocess / "features"))[split].features


def regime_windows(symbols: int, start: date, days: int, drift: bool, seed: int = 7) -> np.ndarray:
    """Model inputs from freshly generated synthetic data of one regime (base or drifted).

    With the arguments of a ``flywheel data generate`` call, these are the windows of the data it
    landed: traffic that looks like the new regime, the way live traffic would after a real shift.
    """
    from training.dataset import windows_by_symbol
    from training.pandas_features import features_of_frames
    from training.synthetic import generate

    frames = generate(symbols, start, days, drift, seed)
    return windows_by_symbol(features_of_frames(frames).rename(columns={"Date": "date"}))[1]


def replay(
    windows: np.ndarray,
    profile: dict[str, Any],
    rows: int,
    rng: np.random.Generator,
    shift: dict[str, float] | None = None,
) -> np.ndarray:
    """``rows`` windows drawn with replacement; ``shift``: feature -> offset in reference ranges."""
    unknown = set(shift or {}) - set(FEATURE_COLUMNS)
    if unknown:
        raise ValueError(f"unknown features {sorted(unknown)}; the model's are {list(FEATURE_COLUMNS)}")
    features = windows[rng.integers(0, len(windows), size=rows)].astype(np.float32, copy=True)
    for name, amount in (shift or {}).items():
        edges = profile["features"][name]["edges"]
        width = edges[-1] - edges[0] if len(edges) > 1 else 1.0
        features[:, :, FEATURE_COLUMNS.index(name)] += amount * width
    return features


def send_traffic(
    gateway_url: str,
    model: str,
    features: np.ndarray,
    batch_rows: int = 32,
    version: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> dict[str, int]:
    """POST ``features`` in batches to the gateway's v2 endpoint; returns counts by HTTP status."""
    path = f"/v2/models/{model}" + (f"/versions/{version}" if version else "") + "/infer"
    statuses: dict[str, int] = {}
    with httpx.Client(base_url=gateway_url, timeout=30) as client:
        for start in range(0, len(features), batch_rows):
            chunk = features[start : start + batch_rows]
            body = {
                "inputs": [
                    {
                        "name": INPUT_NAME,
                        "shape": list(chunk.shape),
                        "datatype": "FP32",
                        "data": chunk.ravel().tolist(),
                    }
                ]
            }
            status = str(client.post(path, json=body).status_code)
            statuses[status] = statuses.get(status, 0) + 1
            if progress is not None:
                progress(len(chunk))
    return statuses
