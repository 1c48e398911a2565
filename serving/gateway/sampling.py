"""The drift hook: count a sample of live inputs and predictions into the reference profile's bins.

Training writes ``profile.json`` with each feature's bin edges (train deciles), how an input
becomes rows of those features (``input_view``: ``last_step`` takes the newest step of a
window, ``flat`` flattens each row, ``row_stats`` reduces each row to its mean and standard
deviation, ``none`` bins no input), and the output's references: ``prediction`` (a value in
quantile bins, or a classifier's predicted class: bin i is class i) and a classifier's
``confidence`` (the max softmax probability, in quantile bins).
The gateway counts sampled rows into the same bins as Prometheus
counters, which add up across replicas and over any window, so the drift monitor can compute
PSI from ``rate()`` without the gateway keeping windows. Cost control: a request is sampled with
probability ``sample_rate``, and the counting runs after the response is sent
(``loop.call_soon``), one vectorised ``searchsorted`` per feature.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass
from typing import Any

import numpy as np

from serving.backends.base import Tensors
from serving.gateway.metrics import GatewayMetrics

PREDICTION = "prediction"
CONFIDENCE = "confidence"
INPUT_VIEWS = ("last_step", "flat", "row_stats", "none")


@dataclass(frozen=True)
class ProfileBins:
    """Bin edges per feature (in input order) and for the prediction."""

    features: tuple[tuple[str, np.ndarray], ...]
    prediction: np.ndarray | None
    input_view: str = "last_step"
    #: A classifier's class count: the prediction is counted by predicted class, not by edges.
    classes: int | None = None
    confidence: np.ndarray | None = None

    @classmethod
    def from_profile(cls, profile: dict[str, Any]) -> ProfileBins:
        features = tuple(
            (name, np.asarray(entry["edges"], dtype=np.float64))
            for name, entry in (profile.get("features") or {}).items()
        )
        prediction = profile.get(PREDICTION)
        edges = (
            np.asarray(prediction["edges"], dtype=np.float64)
            if prediction and "edges" in prediction
            else None
        )
        view = str(profile.get("input_view", "last_step"))
        if view not in INPUT_VIEWS:
            raise ValueError(f"profile input_view {view!r} is not one of {', '.join(INPUT_VIEWS)}")
        classes = (
            len(prediction["frequencies"]) if prediction and prediction.get("kind") == "classes" else None
        )
        confidence = (profile.get(CONFIDENCE) or {}).get("edges")
        return cls(
            features,
            edges,
            view,
            classes,
            None if confidence is None else np.asarray(confidence, dtype=np.float64),
        )

    def rows(self, features: np.ndarray) -> np.ndarray | None:
        """The input as one row of profiled features per request row, or None when it has none."""
        if self.input_view == "none" or not self.features:
            return None
        if self.input_view == "last_step" and features.ndim >= 3:
            features = features[:, -1]
        rows = features.reshape(len(features), -1)
        if self.input_view == "row_stats":
            return np.stack([rows.mean(axis=1), rows.std(axis=1)], axis=1)
        return rows


class ProfileSampler:
    def __init__(self, metrics: GatewayMetrics, sample_rate: float) -> None:
        self.metrics = metrics
        self.sample_rate = sample_rate
        self._children: dict[tuple[str, int, str, int], Any] = {}

    def maybe_record(
        self, bins: ProfileBins | None, model: str, version: int, inputs: Tensors, outputs: Tensors
    ) -> None:
        """Cheap on the hot path: one random draw; the counting is deferred past the response."""
        if bins is None or self.sample_rate <= 0 or random.random() >= self.sample_rate:
            return
        asyncio.get_running_loop().call_soon(self.record, bins, model, version, inputs, outputs)

    def record(self, bins: ProfileBins, model: str, version: int, inputs: Tensors, outputs: Tensors) -> None:
        if len(inputs) != 1 or len(outputs) != 1:
            return  # the profile describes a single-input, single-output model
        features = next(iter(inputs.values()))
        rows = bins.rows(features)
        if rows is not None and rows.shape[-1] == len(bins.features):
            for column, (name, edges) in enumerate(bins.features):
                self._count(model, version, name, edges, rows[:, column])
        output = next(iter(outputs.values()))
        if bins.classes is not None:
            probabilities = output.reshape(len(output), -1)
            counts = np.bincount(np.argmax(probabilities, axis=1), minlength=bins.classes)
            self._add(model, version, PREDICTION, counts)
            if bins.confidence is not None:
                self._count(model, version, CONFIDENCE, bins.confidence, probabilities.max(axis=1))
        elif bins.prediction is not None:
            self._count(model, version, PREDICTION, bins.prediction, output.reshape(-1))
        self.metrics.profile_samples.labels(model, str(version)).inc(len(features))

    def _count(self, model: str, version: int, feature: str, edges: np.ndarray, values: np.ndarray) -> None:
        # Same convention as Spark's Bucketizer: bin i holds [edge[i-1], edge[i]).
        self._add(model, version, feature, np.bincount(np.searchsorted(edges, values, side="right")))

    def _add(self, model: str, version: int, feature: str, counts: np.ndarray) -> None:
        for index in np.flatnonzero(counts):
            key = (model, version, feature, int(index))
            child = self._children.get(key)
            if child is None:
                child = self.metrics.profile_bins.labels(model, str(version), feature, str(index))
                self._children[key] = child
            child.inc(int(counts[index]))
