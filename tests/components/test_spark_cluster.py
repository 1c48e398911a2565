"""The Spark standalone cluster `flywheel up` starts (FLYWHEEL_SPARK_CLUSTER=1), as real processes:
loopback only, the worker registered, and the preprocessing job giving on it exactly what it gives
in-process on local[*]."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from flywheel.settings import FlywheelSettings
from flywheel.stack.process import ProcessRecord, stop_process
from flywheel.stack.sockets import listeners
from flywheel.stack.spark_cluster import master_state, spark_cluster_services
from tasks.registry import get_task
from tasks.stock_forecast.synthetic import generate
from tests.support import REPO_ROOT, free_stack_ports, start_and_wait, wildcard_listeners
from training.content_hash import content_hash
from training.locations import LocationError, local_folder, staged_folders


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[FlywheelSettings, list[ProcessRecord]]]:
    home = tmp_path_factory.mktemp("spark-cluster")
    ports = {name: port for name, port in free_stack_ports().items() if name.startswith("spark_")}
    settings = FlywheelSettings(home=home, var_dir=home / "var", spark_cluster=True, **ports)
    records: list[ProcessRecord] = []
    try:
        for spec in spark_cluster_services(settings):
            records.append(start_and_wait(spec, settings.var_path, spec.urls["ui"], timeout_s=180))
        yield settings, records
    finally:
        for record in reversed(records):
            stop_process(record, 20)


@pytest.fixture(scope="module")
def raw_snapshot(tmp_path_factory: pytest.TempPathFactory) -> Path:
    raw = tmp_path_factory.mktemp("cluster-raw")
    batch = raw / "batch"
    batch.mkdir()
    for symbol, frame in generate(3, date(2021, 1, 4), 300, drift=False, seed=11).items():
        frame.to_csv(batch / f"{symbol}.csv", index=False)
    return raw


def test_the_cluster_listens_on_loopback_only_and_its_worker_registers(
    cluster: tuple[FlywheelSettings, list[ProcessRecord]],
) -> None:
    settings, records = cluster
    state = master_state(settings)
    assert state["url"] == settings.resolved_spark_master == f"spark://127.0.0.1:{settings.spark_master_port}"
    assert [(w["port"], w["state"], w["cores"]) for w in state["workers"]] == [
        (settings.spark_worker_port, "ALIVE", settings.spark_worker_cores)
    ]
    groups = {record.pid for record in records}
    assert wildcard_listeners(groups) == []
    held = {listener.port for listener in listeners() if listener.pgid in groups}
    assert 6066 not in held, "the master's REST submission server is off"
    assert {settings.spark_master_port, settings.spark_master_ui_port} <= held
    assert {settings.spark_worker_port, settings.spark_worker_ui_port} <= held


def test_the_same_snapshot_gives_the_same_content_on_local_and_on_the_cluster(
    cluster: tuple[FlywheelSettings, list[ProcessRecord]], raw_snapshot: Path, spark: Any, tmp_path: Path
) -> None:
    settings, _ = cluster
    local_out, cluster_out = tmp_path / "local", tmp_path / "cluster"
    local_report = get_task("stock_forecast").preprocess(spark, raw_snapshot, local_out)

    submitted = subprocess.run(
        [
            sys.executable, "training/jobs/preprocess_job.py", "--task", "stock_forecast",
            "--master", settings.resolved_spark_master,
            "--input", f"file://{raw_snapshot}", "--output", f"file://{cluster_out}",
        ],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert submitted.returncode == 0, submitted.stderr[-3000:]
    cluster_report = json.loads(submitted.stdout.strip().splitlines()[-1])
    assert cluster_report == local_report
    assert content_hash(cluster_out) == content_hash(local_out)
    ran_here = [app["name"] for app in master_state(settings)["completedapps"]]
    assert "flywheel-preprocess-stock_forecast" in ran_here, "the job ran on the cluster, not in local mode"


def test_locations_are_paths_or_uris_and_object_stores_need_the_s3_connector(
    spark: Any, tmp_path: Path
) -> None:
    assert local_folder("/data/raw") == Path("/data/raw")
    assert local_folder("file:///data/raw") == Path("/data/raw")
    assert local_folder("file://var/raw") == Path("var/raw"), "relative, as FLYWHEEL_STORE_URI reads it"
    assert local_folder("s3a://bucket/raw") is None and local_folder("s3://bucket/raw") is None
    with pytest.raises(LocationError, match="names no bucket"):
        local_folder("s3a:///raw")
    with pytest.raises(LocationError, match="unsupported location"):
        local_folder("hdfs2://x/y")
    # No hadoop-aws here (Maven is unreachable): the job says which jars a cluster brings.
    outside, output = "s3://flywheel-models/store/datasets/x/raw", str(tmp_path / "out")
    with (
        pytest.raises(LocationError, match="hadoop-aws"),
        staged_folders(spark, outside, output),
    ):
        raise AssertionError("no folder is handed out without the connector")


def test_a_staged_copy_replaces_its_destination_and_a_missing_source_is_a_clear_error(
    spark: Any, tmp_path: Path
) -> None:
    from training.locations import _copy

    source, destination = tmp_path / "run" / "preprocess", tmp_path / "staged"
    (source / "features").mkdir(parents=True)
    (source / "features" / "part-0.parquet").write_bytes(b"rows")
    (source / "report.json").write_text("{}")
    (destination / "stale").mkdir(parents=True)
    for _ in range(2):  # a rerun must not nest the copy inside the first one
        _copy(spark, f"file://{source}", f"file://{destination}")
    copied = sorted(
        str(p.relative_to(destination)) for p in destination.rglob("*") if not p.name.startswith(".")
    )
    assert copied == ["features", "features/part-0.parquet", "report.json"]
    with pytest.raises(LocationError, match="does not exist"):
        _copy(spark, f"file://{tmp_path / 'absent'}", f"file://{destination}")
