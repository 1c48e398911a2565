"""Drift detectors over binned counts: PSI, KS, chi-squared, and a dataset-level verdict.

Everything works on counts per bin of the reference profile's edges (``profile.json``), the same
bins the gateway's sampling hook counts into. Counts from many gateway replicas simply add up,
and a window is a difference of cumulative counts, so nothing here needs raw samples.

- **PSI** per feature: ``sum((live - ref) * ln(live / ref))`` over bins, with a small floor.
- **KS** for numeric features from binned CDFs: the largest CDF gap at the bin edges (a lower
  bound of the exact KS statistic), with the asymptotic Kolmogorov p-value for ``n`` live samples
  against a reference taken as known (``scipy.special.kolmogorov``).
- **chi-squared** for categorical features and a classifier's predicted-class histogram: goodness
  of fit of live counts to the reference frequencies (``scipy.stats.chisquare``).
- A classifier's **confidence** (max softmax) is judged like a numeric feature: black-box shift
  detection on softmax outputs (Rabanser et al. 2019, "Failing Loudly").
- **Verdict**: a feature warns at PSI >= ``psi_warn`` and alerts at PSI >= ``psi_alert``, only
  with at least ``min_samples`` live samples; the dataset drifts when the alerting share of
  features reaches ``dataset_share`` (or the prediction alerts).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from scipy import special, stats

Level = Literal["ok", "warn", "alert", "insufficient"]
PSI_FLOOR = 1e-4


@dataclass(frozen=True)
class Thresholds:
    psi_warn: float = 0.1
    psi_alert: float = 0.2
    min_samples: int = 500
    dataset_share: float = 0.5


def psi(reference: np.ndarray, live_counts: np.ndarray) -> float:
    """Population stability index of live counts against reference frequencies."""
    expected = np.maximum(np.asarray(reference, dtype=np.float64), PSI_FLOOR)
    total = float(np.sum(live_counts))
    if total <= 0:
        return 0.0
    actual = np.maximum(np.asarray(live_counts, dtype=np.float64) / total, PSI_FLOOR)
    expected = expected / expected.sum()
    return float(np.sum((actual - expected) * np.log(actual / expected)))


def kolmogorov_p_value(statistic: float, samples: float) -> float:
    """P(D >= statistic) for ``samples`` draws from the reference (Kolmogorov's limit law)."""
    if samples <= 0 or statistic <= 0:
        return 1.0
    return float(special.kolmogorov(math.sqrt(samples) * statistic))


def ks_binned(reference: np.ndarray, live_counts: np.ndarray) -> tuple[float, float]:
    """(KS statistic from binned CDFs, asymptotic p-value)."""
    total = float(np.sum(live_counts))
    if total <= 0:
        return 0.0, 1.0
    expected = np.asarray(reference, dtype=np.float64)
    gap = np.max(np.abs(np.cumsum(expected / expected.sum()) - np.cumsum(live_counts) / total))
    return float(gap), kolmogorov_p_value(float(gap), total)


def chi_squared(reference: np.ndarray, live_counts: np.ndarray) -> tuple[float, float]:
    """(chi-squared statistic, p-value) of live category counts against reference frequencies."""
    total = float(np.sum(live_counts))
    expected = np.asarray(reference, dtype=np.float64)
    expected = expected / expected.sum() * total
    used = expected > 0
    if total <= 0 or used.sum() < 2:
        return 0.0, 1.0
    observed = np.asarray(live_counts, dtype=np.float64)[used]
    result = stats.chisquare(observed, expected[used] * observed.sum() / expected[used].sum())
    return float(result.statistic), float(result.pvalue)


@dataclass
class FeatureDrift:
    feature: str
    samples: float
    psi: float
    ks: float | None
    p_value: float
    level: Level

    def to_json(self) -> dict[str, Any]:
        return {
            "feature": self.feature,
            "samples": self.samples,
            "psi": round(self.psi, 5),
            "ks": None if self.ks is None else round(self.ks, 5),
            "p_value": self.p_value,
            "level": self.level,
        }


@dataclass
class DriftReport:
    features: list[FeatureDrift]
    prediction: FeatureDrift | None
    drifted_share: float
    detected: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "features": [f.to_json() for f in self.features],
            "prediction": None if self.prediction is None else self.prediction.to_json(),
            "drifted_share": round(self.drifted_share, 4),
            "detected": self.detected,
        }


def assess_feature(
    name: str,
    reference: np.ndarray,
    live_counts: np.ndarray,
    thresholds: Thresholds,
    categorical: bool = False,
) -> FeatureDrift:
    samples = float(np.sum(live_counts))
    value = psi(reference, live_counts)
    if categorical:
        ks_value, (_, p_value) = None, chi_squared(reference, live_counts)
    else:
        ks_value, p_value = ks_binned(reference, live_counts)
    if samples < thresholds.min_samples:
        level: Level = "insufficient"
    elif value >= thresholds.psi_alert:
        level = "alert"
    elif value >= thresholds.psi_warn:
        level = "warn"
    else:
        level = "ok"
    return FeatureDrift(name, samples, value, ks_value, p_value, level)


def assess(
    profile: Mapping[str, Any], live: Mapping[str, np.ndarray], thresholds: Thresholds = Thresholds()
) -> DriftReport:
    """Compare live bin counts per feature (and ``prediction``) with the training profile."""
    features = []
    for name, entry in (profile.get("features") or {}).items():
        if name in live:
            features.append(assess_feature(name, np.asarray(entry["frequencies"]), live[name], thresholds))
    # A classifier's max-softmax confidence is judged like a feature (KS): it falls when inputs
    # leave what the model knows, before any label arrives.
    confidence = profile.get("confidence")
    if confidence and "frequencies" in confidence and "confidence" in live:
        features.append(
            assess_feature(
                "confidence", np.asarray(confidence["frequencies"]), live["confidence"], thresholds
            )
        )
    prediction = None
    reference = profile.get("prediction")
    if reference and "frequencies" in reference and "prediction" in live:
        prediction = assess_feature(
            "prediction",
            np.asarray(reference["frequencies"]),
            live["prediction"],
            thresholds,
            categorical=reference.get("kind") == "classes",  # predicted-class histogram: chi-squared
        )
    judged = [f for f in features if f.level != "insufficient"]
    share = sum(f.level == "alert" for f in judged) / len(judged) if judged else 0.0
    detected = bool(judged) and (
        share >= thresholds.dataset_share or (prediction is not None and prediction.level == "alert")
    )
    return DriftReport(features, prediction, share, detected)


@dataclass
class SlidingWindow:
    """Live counts over the last ``seconds`` or the last ``samples`` (whichever is set).

    Fed with cumulative counts (what Prometheus counters give); keeps timestamped snapshots and
    answers ``newest - oldest snapshot inside the window``.
    """

    seconds: float | None = None
    samples: int | None = None
    _snapshots: deque[tuple[float, dict[str, np.ndarray]]] = field(default_factory=deque)

    def add(self, at: float, cumulative: Mapping[str, np.ndarray]) -> None:
        self._snapshots.append((at, {k: np.asarray(v, dtype=np.float64) for k, v in cumulative.items()}))
        if self.seconds is not None:
            while len(self._snapshots) > 2 and self._snapshots[1][0] <= at - self.seconds:
                self._snapshots.popleft()

    def went_backwards(self, cumulative: Mapping[str, np.ndarray]) -> bool:
        """True when a cumulative count is below the last one seen: the counters were reset."""
        if not self._snapshots:
            return False
        last = self._snapshots[-1][1]
        return any(
            np.any(np.asarray(values, dtype=np.float64) < last[key])
            for key, values in cumulative.items()
            if key in last and len(last[key]) == len(values)
        )

    def counts(self) -> dict[str, np.ndarray]:
        if not self._snapshots:
            return {}
        newest = self._snapshots[-1][1]
        base = self._snapshots[0][1]
        if self.samples is not None:
            # The latest snapshot whose difference still holds at least `samples` rows.
            for _, snapshot in reversed(self._snapshots):
                base = snapshot
                first = next(iter(newest))
                if float(np.sum(newest[first] - snapshot.get(first, 0))) >= self.samples:
                    break
        return {name: counts - base.get(name, np.zeros_like(counts)) for name, counts in newest.items()}
