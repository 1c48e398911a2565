"""Reference distributions for drift, in the shape ``profile.json`` and the gateway's sampler share."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def distribution_profile(values: np.ndarray, bins: int = 10) -> dict[str, Any]:
    """Quantile bin edges and frequencies, the same shape as a feature's entry in profile.json."""
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    edges = sorted(set(np.quantile(values, [index / bins for index in range(1, bins)]).tolist()))
    counts = np.bincount(np.searchsorted(edges, values, side="right"), minlength=len(edges) + 1)
    return {"edges": edges, "frequencies": (counts / len(values)).tolist(), "count": len(values)}


def class_profile(
    probabilities: np.ndarray,
    class_names: list[str],
    confidence_bins: int = 10,
    target: np.ndarray | None = None,
) -> dict[str, Any]:
    """A classifier's output references: ``prediction`` is the predicted-class histogram (bin i is
    class i; chi-squared), ``confidence`` the max-softmax distribution in quantile bins (KS).

    With the true classes (``target``, the validation set's), ``confidence.accuracy`` holds each
    confidence bin's accuracy: the calibration map that confidence-based performance estimation
    (CBPE) applies to live confidence counts to estimate accuracy before any label arrives.
    """
    probabilities = np.asarray(probabilities, dtype=np.float64).reshape(len(probabilities), -1)
    counts = np.bincount(probabilities.argmax(axis=1), minlength=len(class_names))
    confidence = probabilities.max(axis=1)
    profile = {
        "prediction": {
            "kind": "classes",
            "classes": class_names,
            "frequencies": (counts / max(len(probabilities), 1)).tolist(),
            "count": len(probabilities),
        },
        "confidence": distribution_profile(confidence, confidence_bins),
    }
    if target is not None:
        profile["confidence"]["accuracy"] = binned_accuracy(
            confidence,
            probabilities.argmax(axis=1) == np.asarray(target).reshape(-1),
            profile["confidence"]["edges"],
        )
    return profile


def binned_accuracy(confidence: np.ndarray, correct: np.ndarray, edges: list[float]) -> list[float]:
    """Accuracy of the rows in each confidence bin (the gateway's ``searchsorted`` rule). A bin no
    validation row fell in gets its mean edge, the confidence a calibrated model would have there."""
    index = np.searchsorted(edges, confidence, side="right")
    bounds = [0.0, *edges, 1.0]
    accuracy = []
    for b in range(len(edges) + 1):
        members = index == b
        accuracy.append(float(correct[members].mean()) if members.any() else (bounds[b] + bounds[b + 1]) / 2)
    return accuracy


def spark_feature_profile(train: Any, columns: Sequence[str], bins: int = 10) -> dict[str, Any]:
    """Reference bins for drift from a Spark frame: inner edges at the columns' train quantiles,
    frequencies of train rows per bin (Spark's Bucketizer, the gateway's ``searchsorted`` rule)."""
    from pyspark.ml.feature import Bucketizer

    probabilities = [index / bins for index in range(1, bins)]
    quantiles = train.approxQuantile(list(columns), probabilities, 0.001)
    total = train.count()
    profile: dict[str, Any] = {}
    for column, edges in zip(columns, quantiles, strict=True):
        inner = sorted(set(edges))
        bucketizer = Bucketizer(
            splits=[float("-inf"), *inner, float("inf")],
            inputCol=column,
            outputCol="bin",
            handleInvalid="keep",
        )
        counts = {
            int(row["bin"]): row["count"]
            for row in bucketizer.transform(train).groupBy("bin").count().collect()
        }
        profile[column] = {
            "edges": inner,
            "frequencies": [counts.get(index, 0) / total for index in range(len(inner) + 1)],
            "count": total,
        }
    return profile
