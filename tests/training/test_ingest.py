"""Incremental ingest against the real S3 endpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from flywheel.settings import FlywheelSettings
from model_store.backends.file import FileStorage
from model_store.backends.s3 import s3_client
from model_store.datasets import DatasetStore
from tasks.registry import get_task
from tests.conftest import new_bucket
from training.ingest import IngestError, ingest

STOCK = get_task("stock_forecast")

GOOD = b"Date,Open,High,Low,Close,Adj Close,Volume\n2024-01-02,10,11,9,10.5,10.5,1000\n"


@pytest.fixture
def landing(s3_settings: FlywheelSettings) -> tuple[Any, str]:
    return s3_client(s3_settings), new_bucket(s3_settings)


def test_only_new_objects_are_snapshotted(landing: tuple[Any, str], tmp_path: Path) -> None:
    client, bucket = landing
    storage = FileStorage(tmp_path / "store")
    client.put_object(Bucket=bucket, Key="raw/b1/AAA.csv", Body=GOOD)
    client.put_object(Bucket=bucket, Key="raw/b1/BBB.csv", Body=GOOD)
    client.put_object(Bucket=bucket, Key="raw/b1/notes.txt", Body=b"ignored: not a CSV")
    first = ingest(client, bucket, "raw/", storage, "prices", STOCK)
    assert first.snapshot is not None and first.new_objects == 2
    assert [o.key for o in first.snapshot.objects] == ["raw/b1/AAA.csv", "raw/b1/BBB.csv"]
    assert storage.get(f"datasets/prices/{first.snapshot.snapshot_id}/raw/b1/AAA.csv").data == GOOD

    again = ingest(client, bucket, "raw/", storage, "prices", STOCK)
    assert again.skipped and again.already_seen == 2

    client.put_object(Bucket=bucket, Key="raw/b2/CCC.csv", Body=GOOD)
    client.put_object(Bucket=bucket, Key="raw/b1/AAA.csv", Body=GOOD + b"2024-01-03,10,11,9,10.7,10.7,900\n")
    second = ingest(client, bucket, "raw/", storage, "prices", STOCK)
    assert second.snapshot is not None
    assert [o.key for o in second.snapshot.objects] == ["raw/b1/AAA.csv", "raw/b2/CCC.csv"], "rewritten = new"
    assert second.snapshot.parent == first.snapshot.snapshot_id
    assert second.snapshot.content_hash != first.snapshot.content_hash
    assert [s.snapshot_id for s in DatasetStore(storage).list_snapshots("prices")] == [
        first.snapshot.snapshot_id,
        second.snapshot.snapshot_id,
    ]


def test_a_retried_ingest_lands_on_the_same_snapshot(landing: tuple[Any, str], tmp_path: Path) -> None:
    client, bucket = landing
    client.put_object(Bucket=bucket, Key="raw/x/AAA.csv", Body=GOOD)
    first = ingest(client, bucket, "raw/", FileStorage(tmp_path / "one"), "prices", STOCK)
    second = ingest(client, bucket, "raw/", FileStorage(tmp_path / "two"), "prices", STOCK)
    assert first.snapshot and second.snapshot
    assert first.snapshot.snapshot_id == second.snapshot.snapshot_id


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "the file is empty"),
        (b"Date,Open,High,Low,Close,Adj Close,Volume\n", "header but no data rows"),
        (
            b"day,price\n2024-01-02,3\n",
            "schema mismatch: missing column(s) Date, Open, High, Low, Close, Volume",
        ),
    ],
)
def test_bad_files_are_refused_by_name_and_nothing_is_written(
    landing: tuple[Any, str], tmp_path: Path, body: bytes, message: str
) -> None:
    client, bucket = landing
    storage = FileStorage(tmp_path / "store")
    client.put_object(Bucket=bucket, Key="raw/b1/GOOD.csv", Body=GOOD)
    client.put_object(Bucket=bucket, Key="raw/b1/ZBAD.csv", Body=body)
    with pytest.raises(IngestError) as error:
        ingest(client, bucket, "raw/", storage, "prices", STOCK)
    assert f"s3://{bucket}/raw/b1/ZBAD.csv" in str(error.value)
    assert message in str(error.value)
    assert DatasetStore(storage).list_snapshots("prices") == []


def test_data_of_a_run_that_failed_before_publishing_is_resumed_not_skipped(
    landing: tuple[Any, str], s3_settings: FlywheelSettings, tmp_path: Path
) -> None:
    """A run that ingested and then failed leaves a snapshot nobody trained on: the next run takes
    it up (ingest would otherwise call its objects seen and skip). A gate verdict finishes it."""
    from model_store import ModelStore
    from training.pipeline import PipelineContext, step_ingest
    from training.run_area import RunArea

    client, bucket = landing
    settings = s3_settings.model_copy(update={"raw_bucket": bucket})
    store = ModelStore.open(f"file://{tmp_path / 'store'}")
    client.put_object(Bucket=bucket, Key="raw/b1/AAA.csv", Body=GOOD)
    first = step_ingest(PipelineContext(settings, store, "resumer"))
    assert first["skipped"] is False and first["new_objects"] == 1

    # The run died after ingest (preprocess or training failed): the next run carries it on.
    retry = PipelineContext(settings, store, "resumer")
    again = step_ingest(retry)
    assert again == {**first, "resumed": True, "new_objects": 0}
    assert retry.run_id == first["snapshot_id"]

    # Once the gate has said no, the snapshot is finished: nothing new means skip.
    verdict = tmp_path / "evaluate"
    verdict.mkdir()
    RunArea(store.storage, "resumer", first["snapshot_id"]).upload(
        "evaluate", verdict, {"gate": {"passed": False, "reasons": ["worse than the champion"]}}
    )
    assert step_ingest(PipelineContext(settings, store, "resumer"))["skipped"] is True
