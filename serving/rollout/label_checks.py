"""Quality checks of a rollout beyond errors and latency: joined labels, and CBPE before they exist.

- **Joined labels** (the durable label join, ``joined/<model>/joined.parquet``, not gateway
  memory): of the captured requests each version served since the rollout began, how many were
  right (a classifier's class; a regression's direction of change). A sequential test, the same
  Beta-posterior comparison as feedback: the step fails once P(candidate worse than stable)
  passes ``quality_confidence`` with at least ``min_feedback`` candidate labels.
- **CBPE** (classifiers, ``monitoring/estimate.py``): the candidate's accuracy estimated from its
  live confidence counts in the window and its profile's calibration map. A candidate estimated
  more than ``max_estimated_accuracy_drop`` below the accuracy its calibration implies on its
  validation data does not pass: the step holds
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


def _calibrated(counters: VariantCounters, confidence: dict[str, Any] | None) -> float | None:
    """CBPE's estimate from a window's confidence counts and the profile's ``confidence`` entry."""
    if confidence is None or "accuracy" not in confidence or not counters.confidence_bins:
        return None
    counts = np.zeros(len(confidence["accuracy"]))
    for index, count in counters.confidence_bins.items():
        if 0 <= int(index) < len(counts):
            counts[int(index)] = count
    return estimated_accuracy({"confidence": confidence}, counts)


def expected_accuracy(confidence: dict[str, Any] | None) -> float | None:
    """The accuracy the profile's calibration implies on validation-like traffic."""
    if confidence is None or "accuracy" not in confidence or "frequencies" not in confidence:
        return None
    return float(np.dot(confidence["frequencies"], confidence["accuracy"]))


def quality_verdict(
    stable: VariantCounters,
    candidate: VariantCounters,
    limits: dict[str, float],
    labels: tuple[LabelCounts, LabelCounts] | None = None,
    confidences: tuple[dict[str, Any] | None, dict[str, Any] | None] = (None, None),
    step_elapsed_s: float = 0.0,
) -> Verdict | None:
    """A failing or holding verdict from labels and CBPE, or None when they have nothing against
    the candidate. ``labels`` and ``confidences`` (each version's profile ``confidence`` entry,
    with its calibration map) are (stable, candidate).

    CBPE compares the candidate with *itself*: its estimate on live traffic against the accuracy
    its calibration implies on validation data. Not with the stable version: after a drift
    retrain the stale stable is the one CBPE misjudges (confidently wrong on the new inputs), as
    the canary's PSI check is against the candidate's own reference for the same reason. A hold
    that lasts past ``max_label_wait_s`` into the step fails it: labels that never come confirm
    nothing."""
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
    candidate_estimate = _calibrated(candidate, confidences[1])
    expected = expected_accuracy(confidences[1])
    metrics |= {
        "stable_estimated_accuracy": _calibrated(stable, confidences[0]),
        "candidate_estimated_accuracy": candidate_estimate,
        "candidate_expected_accuracy": expected,
    }
    if candidate_estimate is None or expected is None:
        return None
    if sum(candidate.confidence_bins.values()) < limits["min_requests"]:
        return None
    if candidate_estimate >= expected - limits["max_estimated_accuracy_drop"]:
        return None
    if labels is not None and labels[1].total >= limits["min_feedback"]:
        candidate_labels = labels[1]
        if worse is not None:
            confirmed = worse <= 0.5  # the labels lean towards not worse than the stable
        else:
            # No stable labels to compare with (blue idle after the switch, say): the candidate's
            # own labelled accuracy must be where its validation data says it should be.
            labelled_accuracy = candidate_labels.correct / candidate_labels.total
            confirmed = labelled_accuracy >= expected - limits["max_estimated_accuracy_drop"]
            metrics["candidate_labelled_accuracy"] = round(labelled_accuracy, 4)
        if confirmed:
            return None
    # Numbers in the metrics, not the reason: a hold is recorded once, not on every new estimate.
    estimate = "CBPE estimates the candidate's accuracy on live traffic well below its validation accuracy"
    if step_elapsed_s > limits["max_label_wait_s"]:
        waited = limits["max_label_wait_s"]
        return Verdict(
            False,
            [
                f"{estimate} ({candidate_estimate:.3f} vs {expected:.3f}), and no joined labels "
                f"confirmed it within {waited:.0f} s"
            ],
            metrics,
        )
    return Verdict(None, [f"holding: {estimate}; waiting for joined labels to confirm or refute it"], metrics)


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
