"""Holdout metrics for next-day return forecasts, next to the naive (random-walk) baseline."""

from __future__ import annotations

import numpy as np


def regression_metrics(target: np.ndarray, prediction: np.ndarray) -> dict[str, float]:
    target, prediction = (
        np.asarray(target, dtype=np.float64),
        np.asarray(prediction, dtype=np.float64).reshape(-1),
    )
    error = prediction - target
    return {
        "rmse": float(np.sqrt(np.mean(error**2))),
        "mae": float(np.mean(np.abs(error))),
        "directional_accuracy": float(np.mean(np.sign(prediction) == np.sign(target))),
    }


def naive_metrics(target: np.ndarray) -> dict[str, float]:
    """The random-walk forecast (tomorrow's return is zero); its direction is 'always up'."""
    target = np.asarray(target, dtype=np.float64)
    return {
        "rmse": float(np.sqrt(np.mean(target**2))),
        "mae": float(np.mean(np.abs(target))),
        "directional_accuracy": float(np.mean(target > 0)),
    }


def holdout_report(target: np.ndarray, prediction: np.ndarray) -> dict[str, float]:
    """Model metrics, the naive baseline's as ``*_naive``, and skill = 1 - rmse / rmse_naive."""
    model = regression_metrics(target, prediction)
    naive = naive_metrics(target)
    return {
        **model,
        **{f"{key}_naive": value for key, value in naive.items()},
        "skill": 1 - model["rmse"] / naive["rmse"],
    }
