"""The label join and live quality: captures written by the gateway's writer, labels by the label store."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from prometheus_client import CollectorRegistry

from model_store.backends.file import FileStorage
from model_store.labels import LabelError, LabelStore, normalise_labels
from model_store.store import ModelStore
from monitoring.join import JoinConflictError, LabelJoiner, expected_calibration_error, quality
from serving.gateway.capture import CaptureWriter


def capture(
    storage: Any, served: list[tuple[str, int, list[float], str | None]], classification: bool = True
) -> None:
    """(request id, version, output row, entity) per request, flushed as the gateway would."""
    writer = CaptureWriter(storage, CollectorRegistry(), "gateway", 1.0)
    for request_id, version, row, entity in served:
        headers = {"x-flywheel-entity": entity} if entity else {}
        writer.offer("m", version, f"v{version}", "triton", request_id, {"x": np.zeros((1, 2), np.float32)},
                     {"y": np.array([row], np.float32)}, 0.01, classification, headers)  # fmt: skip
    asyncio.run(writer.flush())


def labels(**columns: list[Any]) -> pa.Table:
    return normalise_labels(pa.table(columns), "test")


def test_labels_join_by_request_id_or_entity_and_the_newest_label_wins(store: ModelStore) -> None:
    storage = store.storage
    capture(storage, [("a", 1, [0.9, 0.1], None), ("b", 1, [0.2, 0.8], None), ("c", 2, [0.3, 0.7], "item-7"),
                      ("d", 1, [0.6, 0.4], "item-7"), ("e", 2, [0.5, 0.5], None)])  # fmt: skip
    label_store = LabelStore(storage)
    label_store.write("m", labels(request_id=["a", "b", "zzz"], label=[0, 0, 1]), "first")
    label_store.write("m", labels(entity=["item-7"], label=[1]), "entities")
    # A correction of b arrives later: it replaces the first label of b.
    label_store.write(
        "m", labels(request_id=["b"], label=[1], labelled_at=[datetime(2099, 1, 1, tzinfo=UTC)]), "fix"
    )

    report = LabelJoiner(storage).run("m")
    assert (report.captured, report.labels, report.joined, report.pending) == (5, 5, 4, 1), report
    joined = LabelJoiner(storage).read("m").set_index("request_id")
    assert joined.loc["a", "label"] == 0 and joined.loc["b", "label"] == 1
    assert set(joined.index) == {"a", "b", "c", "d"}, "e has no label; zzz names no captured request"
    assert joined.loc["c", "matched_by"] == "entity" and joined.loc["d", "label"] == 1
    assert len(report.label_files) == 3

    live = quality(joined.reset_index(), classification=True, window=100)
    assert live[1]["labels"] == 3 and live[1]["accuracy"] == pytest.approx(2 / 3)  # a and b right, d wrong
    assert live[2] == {"labels": 1, "accuracy": 1.0, "calibration_error": pytest.approx(0.3)}


def test_a_label_that_arrives_before_its_capture_is_joined_on_a_later_run(tmp_path: Path) -> None:
    storage = FileStorage(tmp_path)
    LabelStore(storage).write("m", labels(request_id=["early"], label=[2.5]), "cli")
    first = LabelJoiner(storage).run("m")
    assert (first.joined, first.pending) == (0, 1)
    capture(storage, [("early", 3, [2.0], None)], classification=False)
    second = LabelJoiner(storage).run("m")
    assert (second.joined, second.pending) == (1, 0)
    again = LabelJoiner(storage).run("m")
    assert again.joined == 1, "a rerun with nothing new gives the same join"
    live = quality(LabelJoiner(storage).read("m"), classification=False, window=10)
    assert live[3]["rmse"] == pytest.approx(0.5) and live[3]["mae"] == pytest.approx(0.5)
    assert live[3]["directional_accuracy"] == 1.0


def test_two_joiners_racing_never_overwrite_silently(tmp_path: Path) -> None:
    storage = FileStorage(tmp_path)
    capture(storage, [("a", 1, [0.1], None)], classification=False)
    LabelStore(storage).write("m", labels(request_id=["a"], label=[0.2]), "cli")
    LabelJoiner(storage).run("m")

    class Racing(LabelJoiner):
        """Reads the labels, then another joiner takes a newer label in and writes first."""

        def _labels(self, model: str, since: Any) -> Any:
            seen = super()._labels(model, since)
            LabelStore(storage).write("m", labels(request_id=["a"], label=[0.3]), "newer")
            LabelJoiner(storage).run(model)
            return seen

    with pytest.raises(JoinConflictError, match="another joiner"):
        Racing(storage).run("m")
    assert LabelJoiner(storage).read("m")["label"].tolist() == [0.3], "the winner's join stands"


def test_bad_label_files_are_refused_with_what_is_wrong() -> None:
    with pytest.raises(LabelError, match="'label' column"):
        normalise_labels(pa.table({"request_id": ["a"]}), "cli")
    with pytest.raises(LabelError, match="request_id or an entity"):
        normalise_labels(pa.table({"request_id": ["a", None], "label": [1, 2]}), "cli")
    with pytest.raises(LabelError, match="finite"):
        normalise_labels(pa.table({"request_id": ["a"], "label": [float("nan")]}), "cli")
    with pytest.raises(LabelError, match="numbers"):
        normalise_labels(pa.table({"request_id": ["a"], "label": ["cat"]}), "cli")


def test_calibration_error_is_zero_when_confidence_matches_accuracy() -> None:
    confidence = np.array([0.75] * 4 + [0.25] * 4)
    correct = np.array([1, 1, 1, 0, 1, 0, 0, 0], dtype=np.float64)
    assert expected_calibration_error(confidence, correct) == pytest.approx(0.0)
    assert expected_calibration_error(np.array([0.95, 0.95]), np.array([0.0, 0.0])) == pytest.approx(0.95)


def test_the_quality_exporter_publishes_live_and_holdout_quality_once_enough_labels_joined(
    tmp_path: Path,
) -> None:
    from prometheus_client import generate_latest

    from model_store.manifest import OutputKind, OutputSpec
    from monitoring.quality import QualityExporter

    store = ModelStore.open(f"file://{tmp_path / 'store'}")
    artifact = tmp_path / "model.pt"
    artifact.write_bytes(b"weights")
    output = OutputSpec(kind=OutputKind.CLASSIFICATION, class_names=["a", "b"])
    for _ in range(2):
        store.publish(
            "m",
            {"model.pt": artifact},
            framework="pytorch",
            output=output,
            metrics={"pytorch_accuracy": 0.9, "tensorflow_accuracy": 0.8},
        )
    # v1 answers class 0 (wrong for every label), v2 class 1 (right), 60 requests each.
    served = [(f"r{n}", 1 + n % 2, [0.8, 0.2] if n % 2 == 0 else [0.3, 0.7], None) for n in range(120)]
    capture(store.storage, served)
    LabelStore(store.storage).write("m", labels(request_id=[r for r, *_ in served], label=[1] * 120), "cli")
    registry = CollectorRegistry()
    exporter = QualityExporter(store, registry, window=500, min_labels=50)
    live = exporter.collect_once()["m"]
    assert live[1]["accuracy"] == 0.0 and live[2]["accuracy"] == 1.0
    text = generate_latest(registry).decode()
    assert 'flywheel_live_quality{metric="accuracy",model="m",version="1"} 0.0' in text
    assert 'flywheel_holdout_quality{metric="accuracy",model="m",version="2"} 0.9' in text
    assert 'flywheel_quality_labels{model="m",version="2"} 60.0' in text
    assert 'flywheel_label_join_pending{model="m"} 0.0' in text

    quiet = CollectorRegistry()
    QualityExporter(store, quiet, window=500, min_labels=61).collect_once()
    assert "flywheel_live_quality{" not in generate_latest(quiet).decode(), "too few labels: no verdict"


def test_a_version_the_gateways_no_longer_serve_has_its_quality_withdrawn(tmp_path: Path) -> None:
    from prometheus_client import generate_latest

    from model_store.manifest import OutputKind, OutputSpec
    from monitoring.quality import QualityExporter

    store = ModelStore.open(f"file://{tmp_path / 'store'}")
    (tmp_path / "model.pt").write_bytes(b"weights")
    output = OutputSpec(kind=OutputKind.CLASSIFICATION, class_names=["a", "b"])
    store.publish("m", {"model.pt": tmp_path / "model.pt"}, framework="pytorch", output=output)
    capture(store.storage, [(f"r{n}", 1, [0.8, 0.2], None) for n in range(60)])
    LabelStore(store.storage).write(
        "m", labels(request_id=[f"r{n}" for n in range(60)], label=[0] * 60), "cli"
    )
    from serving.routing.spec import RoutingSpec
    from serving.routing.spec_store import SpecStore

    store.publish("m", {"model.pt": tmp_path / "model.pt"}, framework="pytorch", output=output)
    specs = SpecStore(store.storage)

    def serve_only(version: int) -> None:
        variant = {"name": f"triton-v{version}", "version": version, "backend": "triton", "weight": 100}
        specs.update("m", lambda _: RoutingSpec(model="m", variants=[variant]), actor="test", action="deploy")

    def published() -> str:
        return generate_latest(registry).decode()

    registry = CollectorRegistry()
    exporter = QualityExporter(store, registry, min_labels=50)
    exporter.collect_once()  # no routing spec yet: every version with labels is published
    assert 'flywheel_live_quality{metric="accuracy",model="m",version="1"} 1.0' in published()
    serve_only(1)
    exporter.collect_once()
    assert 'flywheel_live_quality{metric="accuracy",model="m",version="1"} 1.0' in published()
    serve_only(2)  # v1 retired: its quality is withdrawn, so its alert resolves
    exporter.collect_once()
    assert "flywheel_live_quality{" not in published()


def test_an_id_that_names_two_different_requests_is_left_out_and_a_repeated_record_counts_once(
    tmp_path: Path,
) -> None:
    storage = FileStorage(tmp_path)
    capture(storage, [("same", 1, [0.9, 0.1], None), ("reused", 1, [0.9, 0.1], None)])
    capture(storage, [("reused", 1, [0.1, 0.9], None)])  # a client reusing its id for another request
    LabelStore(storage).write("m", labels(request_id=["same", "reused"], label=[0, 1]), "cli")
    report = LabelJoiner(storage).run("m")
    assert report.joined == 1 and LabelJoiner(storage).read("m")["request_id"].tolist() == ["same"]


def test_blank_cells_name_nothing_and_classifier_labels_must_be_class_indices() -> None:
    table = normalise_labels(pa.table({"request_id": ["r1", ""], "entity": [None, "AAPL@2024-01-02"],
                                       "label": [1.0, 0.5]}), "cli")  # fmt: skip
    assert table["request_id"].to_pylist() == ["r1", None]
    with pytest.raises(LabelError, match="request_id or an entity"):
        normalise_labels(pa.table({"request_id": [" "], "label": [1]}), "cli")
    with pytest.raises(LabelError, match=r"class index from 0 to 9; got 2\.7"):
        normalise_labels(pa.table({"request_id": ["a", "b"], "label": [3, 2.7]}), "cli", classes=10)
    with pytest.raises(LabelError, match="got 12"):
        normalise_labels(pa.table({"request_id": ["a"], "label": [12]}), "cli", classes=10)
    stamped = normalise_labels(pa.table({"request_id": ["a"], "label": [1], "labelled_at": [None]}), "cli")
    assert stamped["labelled_at"][0].as_py() is not None, "a blank time is when it was stored"
