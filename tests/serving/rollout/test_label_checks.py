"""Rollout checks on joined labels and CBPE: fail on labels, hold on an estimate until labels speak."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from prometheus_client import CollectorRegistry

from model_store.labels import LabelStore, normalise_labels, read_joined
from model_store.manifest import OutputKind, OutputSpec
from model_store.store import ModelStore
from monitoring.join import LabelJoiner
from serving.gateway.capture import CaptureWriter
from serving.rollout.analysis import DEFAULT_THRESHOLDS, VariantCounters, Verdict
from serving.rollout.context import RolloutContext
from serving.rollout.label_checks import LabelCounts, label_counts, quality_verdict, with_quality
from serving.routing.spec import RoutingSpec

LIMITS = dict(DEFAULT_THRESHOLDS)
# A profile's confidence entry: validation rows mostly confident (bin 2), each bin's accuracy.
CONFIDENCE = {"edges": [0.5, 0.8], "frequencies": [0.1, 0.2, 0.7], "accuracy": [0.2, 0.5, 0.9]}
EXPECTED = 0.1 * 0.2 + 0.2 * 0.5 + 0.7 * 0.9  # 0.75 on validation-like traffic


def confident(counts: list[float]) -> VariantCounters:
    return VariantCounters(confidence_bins={str(index): count for index, count in enumerate(counts)})


def test_joined_labels_fail_a_candidate_the_posterior_calls_worse() -> None:
    labels = (LabelCounts(100, 90), LabelCounts(40, 20))
    verdict = quality_verdict(VariantCounters(), VariantCounters(), LIMITS, labels)
    assert verdict is not None and verdict.passed is False and "joined labels" in verdict.reasons[0]
    assert verdict.metrics["candidate_labels"] == 40
    too_few = (LabelCounts(100, 90), LabelCounts(10, 5))
    assert quality_verdict(VariantCounters(), VariantCounters(), LIMITS, too_few) is None, "not yet sure"


def test_a_candidate_estimated_well_below_its_own_validation_accuracy_holds_until_labels_confirm() -> None:
    # Live, the candidate is unsure on most requests: CBPE says 0.2 x 300 / 300, far below 0.75.
    stable, candidate = confident([0, 0, 300]), confident([300, 0, 0])
    pair = (CONFIDENCE, CONFIDENCE)
    held = quality_verdict(stable, candidate, LIMITS, None, pair)
    assert held is not None and held.passed is None and "CBPE" in held.reasons[0]
    assert held.metrics["candidate_estimated_accuracy"] == 0.2
    assert held.metrics["candidate_expected_accuracy"] == pytest.approx(EXPECTED)
    expired = quality_verdict(stable, candidate, LIMITS, None, pair, step_elapsed_s=4000)
    assert expired is not None and expired.passed is False and "no joined labels" in expired.reasons[0]
    confirmed = (LabelCounts(50, 40), LabelCounts(50, 42))
    assert quality_verdict(stable, candidate, LIMITS, confirmed, pair) is None
    # No stable labels to compare with: the candidate's own labels must meet its validation accuracy.
    assert quality_verdict(stable, candidate, LIMITS, (LabelCounts(), LabelCounts(20, 18)), pair) is None
    wrong = quality_verdict(stable, candidate, LIMITS, (LabelCounts(), LabelCounts(20, 0)), pair)
    assert wrong is not None and wrong.passed is None and wrong.metrics["candidate_labelled_accuracy"] == 0.0
    assert held.reasons == quality_verdict(stable, confident([290, 10, 0]), LIMITS, None, pair).reasons, (
        "the reason stays the same as the estimate moves: a hold is recorded once"
    )
    # Traffic like its validation data, a stale stable CBPE misjudges, no calibration map, or too
    # few confidences: nothing to say.
    assert quality_verdict(confident([300, 0, 0]), confident([30, 60, 210]), LIMITS, None, pair) is None
    assert quality_verdict(stable, candidate, LIMITS, None, (None, None)) is None
    assert quality_verdict(stable, confident([5, 0, 0]), LIMITS, None, pair) is None


def test_quality_turns_a_pass_into_a_hold_and_never_rescues_a_failure() -> None:
    passing, failing = Verdict(True, ["ok"], {"a": 1}), Verdict(False, ["p99"], {})
    hold = Verdict(None, ["holding: CBPE"], {"b": 2})
    assert with_quality(passing, None) is passing
    assert with_quality(passing, hold) == Verdict(None, ["holding: CBPE"], {"a": 1, "b": 2})
    assert with_quality(failing, hold).passed is False and with_quality(failing, hold).reasons == ["p99"]
    assert with_quality(passing, Verdict(False, ["labels"], {})).reasons == ["labels"]


def test_the_context_counts_joined_labels_served_since_the_rollout_began(tmp_path: Path) -> None:
    store = ModelStore.open(f"file://{tmp_path / 'store'}")
    (tmp_path / "model.pt").write_bytes(b"weights")
    output = OutputSpec(kind=OutputKind.CLASSIFICATION, class_names=["a", "b"])
    for _ in range(2):
        store.publish("m", {"model.pt": tmp_path / "model.pt"}, framework="pytorch", output=output)
    writer = CaptureWriter(store.storage, CollectorRegistry(), "gateway", 1.0)
    for number in range(30):
        version, row = (1, [0.9, 0.1]) if number % 3 else (2, [0.2, 0.8])
        writer.offer("m", version, f"v{version}", "triton", f"r{number}", {"x": np.zeros((1, 2), np.float32)},
                     {"y": np.array([row], np.float32)}, 0.01, True, None)  # fmt: skip
    asyncio.run(writer.flush())
    labels = normalise_labels(
        pa.table({"request_id": [f"r{n}" for n in range(30)], "label": [1] * 30}), "cli"
    )
    LabelStore(store.storage).write("m", labels, "cli")
    LabelJoiner(store.storage).run("m")
    started = datetime.now(UTC) - timedelta(minutes=5)
    spec = RoutingSpec.model_validate({
        "model": "m", "strategy": "canary",
        "variants": [{"name": "v1", "version": 1, "backend": "triton", "weight": 50},
                     {"name": "v2", "version": 2, "backend": "triton", "weight": 50}],
        "rollout": {"stable": "v1", "candidate": "v2", "steps": [50, 100], "interval_s": 5,
                    "started_at": started},
    })  # fmt: skip
    context = RolloutContext(store, source=None, gateway_url="http://127.0.0.1:1", holder="test")  # type: ignore[arg-type]
    stable, candidate = spec.variant("v1"), spec.variant("v2")
    assert context.label_evidence(spec, stable, candidate) == (LabelCounts(20, 0), LabelCounts(10, 10))
    later = spec.model_copy(
        update={"rollout": spec.rollout.model_copy(update={"started_at": datetime.now(UTC)})}
    )  # type: ignore[union-attr]
    assert context.label_evidence(later, stable, candidate) == (LabelCounts(), LabelCounts()), "served before"
    joined = read_joined(store.storage, "m")
    assert joined is not None
    # As a regression the same rows are judged by direction: class 0 "predicts" no change, never right.
    assert label_counts(joined, {"x": 1}, started, classification=False) == {"x": LabelCounts(20, 0)}
