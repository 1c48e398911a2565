"""A publish that fails half-way leaves nothing visible, and the retried publish lands once."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.pipeline_fixtures import MODEL, PipelineRun
from training.pipeline import GateFailedError, step_publish


def test_failed_publish_leaves_no_version_and_retry_succeeds(
    pipeline_run: PipelineRun, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = pipeline_run.store.list_versions(MODEL)
    run_id = pipeline_run.base["ingest"]["snapshot_id"]
    context = pipeline_run.context(run_id)
    # Pretend the earlier publish never happened by republishing under another model name.
    context.model = "forecaster-retry"
    context.settings = context.settings.model_copy(update={"dataset_name": MODEL})
    storage = pipeline_run.store.storage
    real_put_file = storage.put_file
    uploads: list[str] = []

    def failing_put_file(key: str, source: Path) -> str:
        if key.startswith("models/forecaster-retry/"):
            uploads.append(key)
            if len(uploads) == 3:
                raise ConnectionError("S3 went away mid-publish")
        return real_put_file(key, source)

    monkeypatch.setattr(storage, "put_file", failing_put_file)
    # The run area belongs to the original model name; point the retry's run area at it.
    monkeypatch.setattr(context, "resolve_run", lambda: _run_area(pipeline_run, run_id))
    with pytest.raises(ConnectionError):
        step_publish(context)
    assert pipeline_run.store.list_versions("forecaster-retry") == []
    monkeypatch.setattr(storage, "put_file", real_put_file)
    assert step_publish(context)["version"] == 2, "the half-claimed number 1 is skipped"
    assert step_publish(context) == {"version": 2, "already_published": True}
    assert pipeline_run.store.list_versions("forecaster-retry") == [2]
    assert pipeline_run.store.list_versions(MODEL) == before


def _run_area(pipeline_run: PipelineRun, run_id: str):  # type: ignore[no-untyped-def]
    from training.run_area import RunArea

    return RunArea(pipeline_run.store.storage, MODEL, run_id)


def test_publish_refuses_a_failed_gate(pipeline_run: PipelineRun, monkeypatch: pytest.MonkeyPatch) -> None:
    context = pipeline_run.context(pipeline_run.base["ingest"]["snapshot_id"])
    context.model = "forecaster-gated"
    context.settings = context.settings.model_copy(update={"dataset_name": MODEL})
    run = _run_area(pipeline_run, context.run_id or "")
    recorded = run.result("evaluate")
    assert recorded is not None
    failed = {**recorded, "gate": {**recorded["gate"], "passed": False, "reasons": ["pytorch: rmse worse"]}}
    monkeypatch.setattr(type(run), "result", lambda self, step: failed if step == "evaluate" else recorded)
    monkeypatch.setattr(context, "resolve_run", lambda: run)
    with pytest.raises(GateFailedError, match="pytorch: rmse worse"):
        step_publish(context)
    assert pipeline_run.store.list_versions("forecaster-gated") == []
