"""One real pipeline run per test session (S3 endpoint, Spark, both trainers), shared by the tests."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from flywheel.settings import FlywheelSettings
from model_store import ModelStore
from model_store.backends.s3 import s3_client
from tasks.stock_forecast.synthetic import generate
from training.pipeline import PipelineContext, run_all

MODEL = "forecaster"


def upload_batch(settings: FlywheelSettings, batch: str, drift: bool, start: date, days: int = 600) -> None:
    client = s3_client(settings)
    for symbol, frame in generate(4, start, days, drift, seed=11).items():
        client.put_object(
            Bucket=settings.raw_bucket,
            Key=f"{settings.raw_prefix}{batch}/{symbol}.csv",
            Body=frame.to_csv(index=False).encode(),
        )


@dataclass
class PipelineRun:
    settings: FlywheelSettings
    store: ModelStore
    base: dict[str, Any]
    drifted: dict[str, Any] | None = None

    def context(self, run_id: str | None = None) -> PipelineContext:
        return PipelineContext(self.settings, self.store, MODEL, run_id)


def pipeline_settings(s3_settings: FlywheelSettings, home: Path) -> FlywheelSettings:
    from tests.conftest import new_bucket

    return s3_settings.model_copy(
        update={
            "home": home,
            "var_dir": home / "var",
            "raw_bucket": new_bucket(s3_settings),
            # A folder store here; the stack tests and the end-to-end loop run the s3:// default.
            "store_uri": f"file://{home / 'var' / 'store'}",
            "model_name": MODEL,
            # A real search in every run, kept to two trials (the defaults and one TPE pick):
            # tests/training/test_tune.py runs the longer searches.
            "hpo_trials": 2,
        }
    )


@pytest.fixture(scope="session")
def pipeline_run(
    s3_settings: FlywheelSettings, spark: Any, tmp_path_factory: pytest.TempPathFactory
) -> PipelineRun:
    """Base data -> a full run publishing v1 (the champion)."""
    settings = pipeline_settings(s3_settings, tmp_path_factory.mktemp("pipeline"))
    store = ModelStore.open(settings.resolve_store_uri(), settings)
    upload_batch(settings, "base", drift=False, start=date(2021, 1, 4))
    run = PipelineRun(settings, store, base={})
    run.base = run_all(run.context())
    return run


@pytest.fixture(scope="session")
def drifted_run(pipeline_run: PipelineRun) -> PipelineRun:
    """Drifted data lands after v1: the next run evaluates v1 on it and retrains."""
    upload_batch(pipeline_run.settings, "drift", drift=True, start=date(2023, 1, 2))
    pipeline_run.drifted = run_all(pipeline_run.context())
    return pipeline_run


CLASSIFIER = "classifier"


@dataclass
class ClassifierRun:
    settings: FlywheelSettings
    store: ModelStore
    base: dict[str, Any]
    drifted: dict[str, Any] | None = None

    def context(self, run_id: str | None = None) -> PipelineContext:
        return PipelineContext(self.settings, self.store, CLASSIFIER, run_id)


@pytest.fixture(scope="session")
def classifier_run(pipeline_run: PipelineRun) -> ClassifierRun:
    """4,000 labelled Fashion-MNIST images -> a registered classifier's full run publishing v1.

    In the forecaster's store and landing bucket: one store, two tasks (ingest takes each task's
    own kind of raw object), so one serving stack hosts both.
    """
    from tasks.fashion_mnist.data import land_batch

    settings = pipeline_run.settings.model_copy(update={"model_name": CLASSIFIER})
    store = pipeline_run.store
    store.register(CLASSIFIER, "fashion_mnist")
    land_batch(settings, "base", count=4000)
    run = ClassifierRun(settings, store, base={})
    run.base = run_all(run.context())
    return run


@pytest.fixture(scope="session")
def classifier_drifted_run(classifier_run: ClassifierRun) -> ClassifierRun:
    """Inverted images land after v1 (a new camera): the next run scores v1 on them and retrains."""
    from tasks.fashion_mnist.data import land_batch

    land_batch(classifier_run.settings, "inverted", start=4000, count=3000, transform="invert")
    classifier_run.drifted = run_all(classifier_run.context())
    return classifier_run
