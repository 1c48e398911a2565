"""Prediction traffic replayed from a version's own inputs, optionally shifted.

For exercising the monitoring path end to end (``flywheel traffic``, the demo, the tests). The
inputs are the ones the version's reference profile was computed on (the task reads them from the
run's preprocessing output, ``training/reference_inputs.py``), so replayed traffic keeps feature
and prediction PSI near zero; ``shift`` moves chosen features by a multiple of their reference
range, which is what a regime change looks like to the detectors. Feature names, their order
and where they sit in the input come from ``profile.json``, never from a task.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import numpy as np

from model_store.manifest import Signature


def replay(
    windows: np.ndarray,
    profile: dict[str, Any],
    rows: int,
    rng: np.random.Generator,
    shift: dict[str, float] | None = None,
) -> np.ndarray:
    """``rows`` inputs drawn with replacement; ``shift``: feature -> offset in reference ranges.

    A profiled feature is the last axis of the input (every step of a window moves with it).
    """
    names = list(profile.get("features") or {})
    view = profile.get("input_view", "last_step")
    if shift and view not in ("last_step", "flat"):
        raise ValueError(
            f"--shift moves input columns, but this profile bins {view!r} (statistics of each input, "
            "not its columns): drift such a model with other inputs (the task's data tools)"
        )
    unknown = set(shift or {}) - set(names)
    if unknown:
        raise ValueError(f"unknown features {sorted(unknown)}; the profile's are {names}")
    features = windows[rng.integers(0, len(windows), size=rows)].astype(np.float32, copy=True)
    for name, amount in (shift or {}).items():
        edges = profile["features"][name]["edges"]
        width = edges[-1] - edges[0] if len(edges) > 1 else 1.0
        features[..., names.index(name)] += amount * width
    return features


def send_traffic(
    gateway_url: str,
    model: str,
    signature: Signature,
    features: np.ndarray,
    batch_rows: int = 32,
    version: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> dict[str, int]:
    """POST ``features`` in batches to the gateway's v2 endpoint as the signature's input; returns
    counts by HTTP status."""
    spec = signature.inputs[0]
    path = f"/v2/models/{model}" + (f"/versions/{version}" if version else "") + "/infer"
    statuses: dict[str, int] = {}
    with httpx.Client(base_url=gateway_url, timeout=30) as client:
        for start in range(0, len(features), batch_rows):
            chunk = features[start : start + batch_rows]
            body = {
                "inputs": [
                    {
                        "name": spec.name,
                        "shape": list(chunk.shape),
                        "datatype": spec.datatype,
                        "data": chunk.ravel().tolist(),
                    }
                ]
            }
            status = str(client.post(path, json=body).status_code)
            statuses[status] = statuses.get(status, 0) + 1
            if progress is not None:
                progress(len(chunk))
    return statuses
