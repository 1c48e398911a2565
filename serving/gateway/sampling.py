"""The drift hook: count a sample of live inputs and predictions into the reference profile's bins.

Training writes ``profile.json`` with each feature's bin edges (train deciles) and the
prediction distribution. The gateway counts sampled rows into the same bins as Prometheus
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


@dataclass(frozen=True)
class ProfileBins:
    """Bin edges per feature (in input order) and for the prediction."""

    features: tuple[tuple[str, np.ndarray], ...]
    prediction: np.ndarray | None

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
        return cls(features, edges)


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
        # A window of days per row: the newest day is the row's current feature vector.
        rows = features[:, -1, :] if features.ndim == 3 else features.reshape(len(features), -1)
        if rows.shape[-1] != len(bins.features):
            return
        for column, (name, edges) in enumerate(bins.features):
            self._count(model, version, name, edges, rows[:, column])
        if bins.prediction is not None:
            self._count(model, version, PREDICTION, bins.prediction, next(iter(outputs.values())).reshape(-1))
        self.metrics.profile_samples.labels(model, str(version)).inc(len(rows))

    def _count(self, model: str, version: int, feature: str, edges: np.ndarray, values: np.ndarray) -> None:
        # Same convention as Spark's Bucketizer: bin i holds [edge[i-1], edge[i]).
        counts = np.bincount(np.searchsorted(edges, values, side="right"), minlength=len(edges) + 1)
        for index in np.flatnonzero(counts):
            key = (model, version, feature, int(index))
            child = self._children.get(key)
            if child is None:
                child = self.metrics.profile_bins.labels(model, str(version), feature, str(index))
                self._children[key] = child
            child.inc(int(counts[index]))
