"""Fixtures that start real servers on free ports, shared per test session where they are costly."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from flywheel.settings import FlywheelSettings
from flywheel.stack.process import ServiceSpec, stop_process
from flywheel.stack.services import s3_service
from model_store import ModelStore
from model_store.backends.s3 import S3Storage, s3_client

# The whole-pipeline run is costly: one per test session, shared by tests/training and tests/serving.
from tests.pipeline_fixtures import (  # noqa: F401
    classifier_drifted_run,
    classifier_run,
    drifted_run,
    pipeline_run,
)
from tests.support import free_stack_ports, start_and_wait


def s3_server_settings(workdir: Path) -> FlywheelSettings:
    """Settings of a private SeaweedFS under ``workdir``: free ports and its own generated key."""
    import secrets

    return FlywheelSettings(
        home=workdir,
        var_dir=workdir / "var",
        s3_secret_access_key=SecretStr(secrets.token_urlsafe(24)),
        **{name: port for name, port in free_stack_ports().items() if name.startswith(("s3_", "seaweedfs_"))},
    )


def s3_server_spec(settings: FlywheelSettings) -> ServiceSpec:
    """The S3 service exactly as `flywheel up` runs it (SeaweedFS), without its bucket creation."""
    spec = s3_service(settings)
    spec.after_start = None
    return spec


@pytest.fixture(scope="session")
def s3_settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FlywheelSettings]:
    """One real S3 endpoint (SeaweedFS, as `flywheel up` runs it) for the whole session."""
    workdir = tmp_path_factory.mktemp("s3")
    settings = s3_server_settings(workdir)
    record = start_and_wait(s3_server_spec(settings), settings.var_path, settings.s3_url)
    yield settings
    stop_process(record, 20)


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
