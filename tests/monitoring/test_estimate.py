"""CBPE: accuracy estimated from confidences alone, against the accuracy labels reveal."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from model_store.store import ModelStore
from monitoring.estimate import estimate_from_probabilities, estimated_accuracy
from monitoring.exporter import DriftExporter
from training.profiles import class_profile


def calibrated(rows: int, low: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Softmax outputs over 3 classes whose max is right with exactly its own probability."""
    rng = np.random.default_rng(seed)
    confidence = rng.uniform(low, 1.0, rows)
    predicted = rng.integers(0, 3, rows)
    probabilities = np.empty((rows, 3))
    probabilities[:] = ((1 - confidence) / 2)[:, None]
    probabilities[np.arange(rows), predicted] = confidence
    correct = rng.random(rows) < confidence
    target = np.where(correct, predicted, (predicted + 1) % 3)
    return probabilities, target


def test_the_profile_holds_each_confidence_bins_validation_accuracy() -> None:
    probabilities = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.45, 0.55]] * 5)
    target = np.array([0, 1, 1, 1] * 5)
    profile = class_profile(probabilities, ["a", "b"], confidence_bins=2, target=target)
    confidence = profile["confidence"]
    assert len(confidence["accuracy"]) == len(confidence["edges"]) + 1
    # Bin 0 holds confidences 0.55 and 0.7 (both right), bin 1 holds 0.8 (wrong) and 0.9 (right).
    assert confidence["accuracy"] == [1.0, 0.5]
    assert "accuracy" not in class_profile(probabilities, ["a", "b"])["confidence"], "no labels, no map"


def test_the_estimate_follows_accuracy_when_the_mix_of_easy_and_hard_inputs_shifts() -> None:
    validation, validation_target = calibrated(20_000, 0.34, seed=1)
    profile = class_profile(validation, ["a", "b", "c"], 10, validation_target)
    for low, seed in ((0.34, 2), (0.34, 3)):
        live, target = calibrated(5_000, low, seed)
        realised = float(np.mean(live.argmax(axis=1) == target))
        assert estimate_from_probabilities(profile, live) == pytest.approx(realised, abs=0.03)
    # A shift towards hard inputs: accuracy falls, and the estimate falls with it before any label.
    hard = calibrated(5_000, 0.34, seed=4)[0]
    hard[:, :] = np.where(hard == hard.max(axis=1, keepdims=True), hard * 0.6 + 0.4 * 0.34, hard)
    assert estimate_from_probabilities(profile, hard) < estimate_from_probabilities(profile, validation) - 0.1
    assert estimated_accuracy({"confidence": {"edges": [0.5]}}, np.array([3, 4])) is None, "no map"
    assert estimated_accuracy(profile, np.zeros(len(profile["confidence"]["accuracy"]))) is None


def test_the_exporter_publishes_the_estimate_from_the_gateways_confidence_counts(tmp_path: Path) -> None:
    validation, target = calibrated(5_000, 0.34, seed=5)
    profile = class_profile(validation, ["a", "b", "c"], 10, target)
    (tmp_path / "profile.json").write_text(json.dumps(profile))
    store = ModelStore.open(f"file://{tmp_path / 'store'}")
    store.publish("c", {"profile.json": tmp_path / "profile.json"}, framework="pytorch")
    accuracy = profile["confidence"]["accuracy"]
    # The gateway's cumulative confidence counts (the first reading starts the window): 600 in the
    # lowest bin, then 900 more in the highest.
    readings = iter([{0: 0.0}, {0: 600.0}, {0: 600.0, len(accuracy) - 1: 900.0}])
    registry = CollectorRegistry()
    exporter = DriftExporter(
        store, lambda: {("c", "1"): {"confidence": next(readings)}}, registry, window_s=60
    )

    def estimate() -> float | None:
        labels = {"model": "c", "version": "1", "metric": "accuracy"}
        return registry.get_sample_value("flywheel_estimated_quality", labels)

    exporter.collect_once(now=0.0)
    assert estimate() is None, "an empty window estimates nothing"
    exporter.collect_once(now=1.0)
    assert estimate() == pytest.approx(accuracy[0])
    exporter.collect_once(now=2.0)
    assert estimate() == pytest.approx((600 * accuracy[0] + 900 * accuracy[-1]) / 1500)
