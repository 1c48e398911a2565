"""Quality checks of a rollout beyond errors and latency: joined labels, and CBPE before they exist.

- **Joined labels** (the durable label join, ``joined/<model>/joined.parquet``, not gateway
  memory): of the captured requests each version served since the rollout began, how many were
  right (a classifier's class; a regression's direction of change). A sequential test, the same
  Beta-posterior comparison as feedback: the step fails once P(candidate worse than stable)
  passes ``quality_confidence`` with at least ``min_feedback`` candidate labels.
- **CBPE** (classifiers, ``monitoring/estimate.py``): each version's accuracy estimated from its
  live confidence counts in the window and its profile's calibration map. A candidate estimated
  more than ``max_estimated_accuracy_drop`` below the stable one does not pass: the step holds
  until joined labels confirm it (``min_feedback`` candidate labels, and a posterior that leans
  not-worse) or refute it (the labels check fails it). Only when no label confirms it within
  ``max_label_wait_s`` of the step does the estimate fail the step: an early warning holds, it
  does not decide, unless nothing else ever speaks.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np

from monitoring.estimate import estimated_accuracy
from serving.rollout.analysis import VariantCounters, Verdict, probability_worse


@dataclass(frozen=True)
class LabelCounts:
    """Joined labels of one version's answers: how many, and how many were right."""

    total: int = 0
    correct: int = 0

    def as_counters(self) -> VariantCounters:
        return VariantCounters(feedback=float(self.total), reward=float(self.correct))


def label_counts(
    joined: Any, versions: dict[str, int], since: datetime, classification: bool
) -> dict[str, LabelCounts]:
    """Per variant name, the joined labels of requests its version served at or after ``since``."""
    counts = {name: LabelCounts() for name in versions}
    if joined is None or joined.num_rows == 0:
        return counts
    frame = joined.select(["version", "served_at", "prediction", "label"]).to_pandas()
    frame = frame[frame["served_at"] >= since]
    for name, version in versions.items():
        rows = frame[frame["version"] == version]
        prediction, label = rows["prediction"].to_numpy(np.float64), rows["label"].to_numpy(np.float64)
        right = prediction == label if classification else np.sign(prediction) == np.sign(label)
        counts[name] = LabelCounts(len(rows), int(right.sum()))
    return counts


def _calibrated(counters: VariantCounters, calibration: list[float] | None) -> float | None:
    if calibration is None or not counters.confidence_bins:
        return None
    counts = np.zeros(len(calibration))
    for index, count in counters.confidence_bins.items():
        if 0 <= int(index) < len(counts):
            counts[int(index)] = count
    return estimated_accuracy({"confidence": {"accuracy": calibration}}, counts)


def quality_verdict(
    stable: VariantCounters,
    candidate: VariantCounters,
    limits: dict[str, float],
    labels: tuple[LabelCounts, LabelCounts] | None = None,
    calibrations: tuple[list[float] | None, list[float] | None] = (None, None),
    step_elapsed_s: float = 0.0,
) -> Verdict | None:
    """A failing or holding verdict from labels and CBPE, or None when they have nothing against
    the candidate. ``labels`` and ``calibrations`` are (stable, candidate). A CBPE hold that lasts
    past ``max_label_wait_s`` into the step fails it: labels that never come confirm nothing."""
    metrics: dict[str, Any] = {}
    worse = None
    if labels is not None:
        stable_labels, candidate_labels = labels
        worse = probability_worse(stable_labels.as_counters(), candidate_labels.as_counters())
        metrics |= {
            "stable_labels": stable_labels.total,
            "candidate_labels": candidate_labels.total,
            "p_candidate_worse_on_labels": None if worse is None else round(worse, 4),
        }
        if (
            worse is not None
            and candidate_labels.total >= limits["min_feedback"]
            and worse > limits["quality_confidence"]
        ):
            return Verdict(False, [f"joined labels say the candidate is worse (P = {worse:.3f})"], metrics)
    stable_estimate = _calibrated(stable, calibrations[0])
    candidate_estimate = _calibrated(candidate, calibrations[1])
    metrics |= {
        "stable_estimated_accuracy": stable_estimate,
        "candidate_estimated_accuracy": candidate_estimate,
    }
    enough = (
        sum(stable.confidence_bins.values()) >= limits["min_requests"]
        and sum(candidate.confidence_bins.values()) >= limits["min_requests"]
    )
    if stable_estimate is None or candidate_estimate is None or not enough:
        return None
    if candidate_estimate >= stable_estimate - limits["max_estimated_accuracy_drop"]:
        return None
    confirmed = (
        labels is not None
        and labels[1].total >= limits["min_feedback"]
        and worse is not None
        and worse <= 0.5
    )
    if confirmed:
        return None
    if step_elapsed_s > limits["max_label_wait_s"]:
        return Verdict(
            False,
            [
                f"CBPE estimated the candidate's accuracy at {candidate_estimate:.3f} against the "
                f"stable's {stable_estimate:.3f} and no joined labels confirmed it within "
                f"{limits['max_label_wait_s']:.0f} s"
            ],
            metrics,
        )
    return Verdict(
        None,
        [
            f"holding: CBPE estimates the candidate's accuracy at {candidate_estimate:.3f} against the "
            f"stable's {stable_estimate:.3f}; waiting for joined labels to confirm or refute it"
        ],
        metrics,
    )


def with_quality(verdict: Verdict, quality: Verdict | None) -> Verdict:
    """The traffic analysis' verdict, failed or held by what labels and CBPE say (``quality``)."""
    if quality is None:
        return verdict
    metrics = {**verdict.metrics, **quality.metrics}
    if verdict.passed is False:
        return Verdict(False, verdict.reasons, metrics)
    if quality.passed is False:
        return Verdict(False, quality.reasons, metrics)
    if verdict.passed is True:
        return Verdict(None, quality.reasons, metrics)
    return Verdict(None, [*verdict.reasons, *quality.reasons], metrics)
