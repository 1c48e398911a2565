"""The whole pipeline on real S3, real Spark and both trainers: metrics, gate, lineage, idempotency."""

from __future__ import annotations

import pytest

from model_store.datasets import DatasetStore
from tests.pipeline_fixtures import MODEL, PipelineRun
from training.pipeline import FRAMEWORKS, step_preprocess, step_publish, step_train


def test_first_run_beats_the_naive_baseline_and_becomes_champion(pipeline_run: PipelineRun) -> None:
    results = pipeline_run.base
    assert results["ingest"]["new_objects"] == 4
    for framework in FRAMEWORKS:
        metrics = results[f"train-{framework}"]["metrics"]
        assert metrics["rmse"] < metrics["rmse_naive"], framework
        assert metrics["directional_accuracy"] > 0.5, framework
    gate = results["evaluate"]["gate"]
    assert gate["passed"] and gate["champion_version"] is None
    assert any("naive baseline" in reason for reason in gate["reasons"])
    assert results["publish"]["version"] == 1
    # The first alias move made v1 champion (later tests may have promoted v2 since).
    first_move = pipeline_run.store.alias_history(MODEL)[0]
    assert (first_move["alias"], first_move["from"], first_move["to"]) == ("champion", None, 1)


def test_manifest_carries_full_lineage(pipeline_run: PipelineRun) -> None:
    manifest = pipeline_run.store.get_manifest(MODEL, 1)
    # Serving tests may already have landed the drifted batch: look up v1's own snapshot.
    snapshot = DatasetStore(pipeline_run.store.storage).get(MODEL, pipeline_run.base["ingest"]["snapshot_id"])
    assert manifest.lineage.dataset_snapshot == snapshot.snapshot_id == manifest.lineage.run_id
    assert manifest.lineage.dataset_hash == snapshot.content_hash
    assert len(manifest.lineage.source_objects) == 4
    assert all(
        source.startswith(f"s3://{pipeline_run.settings.raw_bucket}/raw/base/")
        for source in manifest.lineage.source_objects
    )
    assert manifest.lineage.git_sha and len(manifest.lineage.git_sha) == 40
    assert {"torch", "tensorflow-cpu", "pyspark"} <= set(manifest.lineage.packages)
    assert manifest.lineage.params["pytorch"]["seed"] == 7
    assert manifest.gate is not None and manifest.gate.passed
    assert manifest.metrics["pytorch_rmse"] == pytest.approx(
        pipeline_run.base["evaluate"]["candidate"]["pytorch"]["rmse"]
    )
    paths = {artifact.path for artifact in manifest.artifacts}
    assert {
        f"torchserve/{MODEL}.mar",
        f"triton/{MODEL}/config.pbtxt",
        f"triton/{MODEL}/1/model.py",
        f"triton/{MODEL}/1/model.pt",
        "savedmodel/1/saved_model.pb",
        "torchscript/model.pt",
        "profile.json",
    } <= paths
    assert [spec.shape for spec in manifest.signature.inputs] == [[-1, 10, 8]]
    assert manifest.task == "stock_forecast" and manifest.output.kind == "regression"
    assert (pipeline_run.store.registration(MODEL) or {})["task"] == "stock_forecast"


def test_steps_are_idempotent(pipeline_run: PipelineRun) -> None:
    context = pipeline_run.context(pipeline_run.base["ingest"]["snapshot_id"])
    versions_before = pipeline_run.store.list_versions(MODEL)
    assert step_preprocess(context) == pipeline_run.base["preprocess"]
    assert step_train(context, "pytorch") == pipeline_run.base["train-pytorch"]
    assert step_publish(context) == {"version": 1, "already_published": True}
    assert pipeline_run.store.list_versions(MODEL) == versions_before


def test_no_new_data_skips_the_run(pipeline_run: PipelineRun) -> None:
    from training.pipeline import run_all

    # 4 base objects, plus 4 drifted ones if another test already ran the drifted batch.
    landed = 4 if pipeline_run.drifted is None else 8
    assert run_all(pipeline_run.context()) == {
        "ingest": {"skipped": True, "reason": "no new raw objects", "already_seen": landed}
    }


def test_drift_degrades_the_old_model_and_retraining_recovers(drifted_run: PipelineRun) -> None:
    assert drifted_run.drifted is not None
    evaluation = drifted_run.drifted["evaluate"]
    for framework in FRAMEWORKS:
        base_rmse = drifted_run.base["evaluate"]["candidate"][framework]["rmse"]
        champion_on_drift = evaluation["champion"][framework]
        candidate_on_drift = evaluation["candidate"][framework]
        # Degrades: v1 on drifted data loses to the naive forecast it used to beat.
        assert champion_on_drift["rmse"] > champion_on_drift["rmse_naive"], framework
        assert champion_on_drift["directional_accuracy"] < 0.5, framework
        assert champion_on_drift["rmse"] > base_rmse
        # Recovers: the retrained model beats both v1 and the naive forecast on the same holdout.
        assert candidate_on_drift["rmse"] < champion_on_drift["rmse"], framework
        assert candidate_on_drift["rmse"] < candidate_on_drift["rmse_naive"], framework
    assert evaluation["gate"]["passed"] and evaluation["gate"]["champion_version"] == 1
    assert drifted_run.drifted["publish"]["version"] == 2
    manifest = drifted_run.store.get_manifest(MODEL, 2)
    assert all("/raw/drift/" in source for source in manifest.lineage.source_objects)
