"""Quality before labels exist: confidence-based performance estimation (CBPE) for classifiers.

The method (as NannyML describes it; nannyml itself conflicts with our pins): if the model's
confidence is calibrated, the expected accuracy of a set of predictions is the mean of their
calibrated confidences. Calibration here is histogram binning, fitted where labels are known,
on the validation set at training time: ``profile.json``'s ``confidence.accuracy`` holds each
confidence bin's accuracy. Live, the gateway already counts sampled confidences into the same
bins (mergeable counters, nothing new on the request path), so the estimate over any window is

    estimated accuracy = sum over bins of (live count x validation accuracy) / live count

Its assumption is CBPE's: P(correct | confidence) stays what it was on validation data. Shifts
that keep it (more hard inputs, fewer easy ones) are estimated well; a shift that makes the model
confidently wrong (inverted images) is not, and ``docs/benchmarks.md`` records by how much.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def calibration_map(profile: dict[str, Any]) -> np.ndarray | None:
    """Each confidence bin's validation accuracy, or None (a regression, an imported model)."""
    accuracy = (profile.get("confidence") or {}).get("accuracy")
    return None if accuracy is None else np.asarray(accuracy, dtype=np.float64)


def estimated_accuracy(profile: dict[str, Any], confidence_counts: np.ndarray) -> float | None:
    """CBPE's accuracy estimate for a window of live confidence counts (None: nothing to estimate)."""
    calibration = calibration_map(profile)
    counts = np.asarray(confidence_counts, dtype=np.float64)
    if calibration is None or len(calibration) != len(counts) or counts.sum() <= 0:
        return None
    return float(np.dot(counts, calibration) / counts.sum())


def estimate_from_probabilities(profile: dict[str, Any], probabilities: np.ndarray) -> float | None:
    """The same estimate from softmax outputs directly (benchmarks, replay): bin, then weigh."""
    confidence = np.asarray(probabilities, dtype=np.float64).reshape(len(probabilities), -1).max(axis=1)
    edges = (profile.get("confidence") or {}).get("edges")
    if edges is None:
        return None
    counts = np.bincount(np.searchsorted(edges, confidence, side="right"), minlength=len(edges) + 1)
    return estimated_accuracy(profile, counts)
