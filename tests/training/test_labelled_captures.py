"""Served traffic back into training: labelled captures become raw data ingest snapshots."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
from prometheus_client import CollectorRegistry

from flywheel.settings import FlywheelSettings
from model_store import ModelStore
from model_store.backends.s3 import s3_client
from model_store.labels import LabelStore, normalise_labels
from serving.gateway.capture import CaptureWriter
from tasks.fashion_mnist.data import select
from tasks.registry import get_task
from tests.conftest import new_bucket
from training.ingest import ingest
from training.labelled_captures import materialise, record_for_key

FASHION = get_task("fashion_mnist")


def test_labelled_captures_land_once_as_a_raw_batch_that_ingest_takes(
    s3_settings: FlywheelSettings, tmp_path: Path
) -> None:
    bucket = new_bucket(s3_settings)
    settings = s3_settings.model_copy(update={"raw_bucket": bucket, "raw_prefix": "raw/"})
    client = s3_client(settings)
    store = ModelStore.open(f"file://{tmp_path / 'store'}")
    _, images, truth = select("test", 0, 12)
    writer = CaptureWriter(store.storage, CollectorRegistry(), "gateway", 1.0)
    for number, image in enumerate(images):
        probabilities = np.full((1, 10), 0.1, np.float32)
        writer.offer("c", 1, "triton-v1", "triton", f"r{number}", {"images": image[None].astype(np.float32)},
                     {"probabilities": probabilities}, 0.01, True, None)  # fmt: skip
    asyncio.run(writer.flush())
    # Ten of the twelve get labels; two of them only after the first batch was taken.
    labels = LabelStore(store.storage)
    first_labels = pa.table({"request_id": [f"r{n}" for n in range(8)], "label": truth[:8]})
    labels.write("c", normalise_labels(first_labels, "cli"), "cli")

    assert materialise(settings, store, "c", FASHION, client, min_rows=9) is None, "too few labelled yet"
    first = materialise(settings, store, "c", FASHION, client, min_rows=5)
    assert (
        first is not None and first["rows"] == 8 and first["raw_key"].startswith("raw/labelled-captures/c/")
    )
    assert len(first["capture_batches"]) == 1 and len(first["label_files"]) == 1
    body = client.get_object(Bucket=bucket, Key=first["raw_key"])["Body"].read()
    frame = pd.read_parquet(io.BytesIO(body))
    assert list(frame["label"]) == list(truth[:8]), "each request with the label it got"
    pixels = np.frombuffer(frame["pixels"].iloc[3], dtype=np.uint8).reshape(28, 28)
    np.testing.assert_array_equal(pixels, images[3])

    assert materialise(settings, store, "c", FASHION, client, min_rows=1) is None, "nothing is taken twice"
    labels.write(
        "c", normalise_labels(pa.table({"request_id": ["r8", "r9"], "label": truth[8:10]}), "cli"), "cli"
    )
    second = materialise(settings, store, "c", FASHION, client, min_rows=1)
    assert second is not None and second["rows"] == 2

    snapshot = ingest(client, bucket, "raw/", store.storage, "c", FASHION).snapshot
    assert snapshot is not None and len(snapshot.objects) == 2, (
        "ingest checks and takes both like landed data"
    )
    records = [record_for_key(store, "c", item.key) for item in snapshot.objects]
    assert sorted(record["rows"] for record in records if record) == [2, 8]
    assert record_for_key(store, "c", "raw/fashion/base.parquet") is None
    # Another classifier on the same landing prefix never takes c's labelled traffic.
    assert ingest(client, bucket, "raw/", store.storage, "other-classifier", FASHION).snapshot is None


def test_a_task_that_serves_features_never_trains_on_its_captures(
    s3_settings: FlywheelSettings, tmp_path: Path
) -> None:
    store = ModelStore.open(f"file://{tmp_path / 'store'}")
    forecaster = get_task("stock_forecast")
    assert materialise(s3_settings, store, "f", forecaster, client=None, min_rows=1) is None
