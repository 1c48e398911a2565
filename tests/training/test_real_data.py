"""Real MSFT daily data: landed in S3 as Yahoo-style CSV by the CLI, and clean for the Spark job."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd

from flywheel.settings import FlywheelSettings
from flywheel.stack.buckets import ensure_bucket
from model_store.backends.s3 import s3_client
from tasks.stock_forecast.contract import REQUIRED_CSV_COLUMNS
from tasks.stock_forecast.preprocess import parse_and_clean
from tasks.stock_forecast.real_data import msft_daily
from tests.support import REPO_ROOT


def land(settings: FlywheelSettings, *args: str) -> Any:
    env = {**os.environ, **settings.as_env()}
    result = subprocess.run(
        [sys.executable, "-m", "flywheel", "data", "msft", *args, "--json"],
        env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout)


def test_the_cli_lands_the_1990s_and_the_crash_as_two_batches_the_spark_job_reads_cleanly(
    s3_settings: FlywheelSettings, spark: Any, tmp_path: Path
) -> None:
    client = s3_client(s3_settings)
    ensure_bucket(s3_settings, s3_settings.raw_bucket)
    nineties = land(s3_settings, "--until", "1999-12-31")
    crash = land(s3_settings, "--since", "2000-01-01", "--until", "2002-12-31")
    assert nineties["first_day"] == "1986-03-13" and nineties["last_day"] <= "1999-12-31"
    assert crash["first_day"] >= "2000-01-01" and crash["last_day"] <= "2002-12-31"
    assert nineties["key"].endswith("/MSFT.csv") and nineties["key"] != crash["key"]
    assert nineties["rows"] + crash["rows"] == len(msft_daily(until=pd.Timestamp("2002-12-31").date()))

    raw = tmp_path / "raw" / "batch"
    raw.mkdir(parents=True)
    body = client.get_object(Bucket=s3_settings.raw_bucket, Key=nineties["key"])["Body"].read()
    frame = pd.read_csv(io.BytesIO(body))
    assert tuple(frame.columns) == REQUIRED_CSV_COLUMNS and len(frame) == nineties["rows"]
    (raw / "MSFT.csv").write_bytes(body)
    clean, quarantined = parse_and_clean(spark, tmp_path / "raw")
    assert quarantined.count() == 0, quarantined.limit(5).collect()
    assert clean.count() == nineties["rows"]


def test_a_range_outside_the_data_is_refused_clearly(s3_settings: FlywheelSettings) -> None:
    env = {**os.environ, **s3_settings.as_env()}
    result = subprocess.run(
        [sys.executable, "-m", "flywheel", "data", "msft", "--since", "2020-01-01", "--json"],
        env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2
    assert "covers 1986-03-13 to 2017-11-10" in result.stdout + result.stderr
