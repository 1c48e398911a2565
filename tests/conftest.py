"""Fixtures that start real servers on free ports, shared per test session where they are costly."""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from flywheel.settings import FlywheelSettings
from flywheel.stack.process import ServiceSpec, stop_process
from model_store import ModelStore
from model_store.backends.s3 import S3Storage, s3_client

# The whole-pipeline run is costly: one per test session, shared by tests/training and tests/serving.
from tests.pipeline_fixtures import (  # noqa: F401
    classifier_drifted_run,
    classifier_run,
    drifted_run,
    pipeline_run,
)
from tests.support import REPO_ROOT, free_port, http_ok, start_and_wait


def s3_server_spec(port: int, data_dir: Path) -> ServiceSpec:
    return ServiceSpec(
        name=f"s3-{port}",
        argv=[
            sys.executable,
            "-m",
            "flywheel.stack.s3_server",
            "--port",
            str(port),
            "--data-dir",
            str(data_dir),
        ],
        probe=lambda: None if http_ok(f"http://127.0.0.1:{port}/") else "down",
        cwd=REPO_ROOT,
    )


@pytest.fixture(scope="session")
def s3_settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FlywheelSettings]:
    """One real S3 endpoint (moto's server, durable launcher) for the whole session."""
    workdir = tmp_path_factory.mktemp("s3")
    port = free_port()
    record = start_and_wait(s3_server_spec(port, workdir / "data"), workdir, f"http://127.0.0.1:{port}/")
    yield FlywheelSettings(home=workdir, var_dir=workdir / "var", s3_port=port)
    stop_process(record, 10)


def new_bucket(settings: FlywheelSettings) -> str:
    bucket = f"test-{uuid.uuid4().hex[:12]}"
    s3_client(settings).create_bucket(Bucket=bucket)
    return bucket


@pytest.fixture(params=["file", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ModelStore:
    """A model store on each backend: a temp folder, and a fresh bucket on the real S3 endpoint."""
    if request.param == "file":
        return ModelStore.open(f"file://{tmp_path / 'store'}")
    settings: FlywheelSettings = request.getfixturevalue("s3_settings")
    return ModelStore(S3Storage(s3_client(settings), new_bucket(settings), "store"))


@pytest.fixture(scope="session")
def spark(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """One Spark session for the whole test run: starting one costs 14-16 s here. Its driver logs
    go to a file, as the commands' sessions do (``session.flywheel_log_file`` names it)."""
    from training.spark import build_spark_session

    log_file = tmp_path_factory.mktemp("spark-logs") / "spark.log"
    session = build_spark_session(app_name="flywheel-tests", log_file=log_file)
    session.flywheel_log_file = log_file  # type: ignore[attr-defined]
    yield session
    session.stop()
