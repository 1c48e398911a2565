"""Labels that later raw data reveals (the forecaster's next-day returns), written for the join.

Only entities the gateways captured and that have no label yet are written, so running this
after every data batch adds one small file per batch and never repeats a label.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from flywheel.settings import FlywheelSettings
from model_store import ModelStore
from model_store.capture import CaptureReader
from model_store.labels import LabelStore, normalise_labels
from training.ingest import list_raw_objects
from training.pipeline import task_of

SOURCE = "raw-data"


@dataclass
class DerivedLabels:
    model: str
    raw_objects: int
    known: int
    captured_entities: int
    written: int
    key: str | None

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def derive_labels(settings: FlywheelSettings, store: ModelStore, model: str, client: Any) -> DerivedLabels:
    """Read the raw objects under ``raw_prefix``, let the model's task name the truths they reveal,
    and store those for captured entities still without a label. ValueError for a task whose
    labels come from people, not data."""
    task = task_of(store, model, settings.default_task)
    if task.labels_from_raw({}) is None:  # said before any S3 traffic
        raise ValueError(
            f"{model}'s task {task.name} finds no labels in raw data: import them (`flywheel labels import`)"
        )
    objects = list_raw_objects(client, settings.raw_bucket, settings.raw_prefix, task.raw_suffixes)
    with tempfile.TemporaryDirectory(prefix="flywheel-labels-") as scratch:
        files = {}
        for number, item in enumerate(objects):
            local = Path(scratch) / f"{number}{Path(item['key']).suffix}"
            client.download_file(settings.raw_bucket, item["key"], str(local))
            files[item["key"]] = local
        truths = task.labels_from_raw(files)
    assert truths is not None
    labels = LabelStore(store.storage)
    captured = (
        CaptureReader(store.storage)
        .read(model, columns=["entity"])
        .column("entity")
        .drop_null()
        .unique()
        .to_pylist()
    )
    already = set(labels.read(model).column("entity").drop_null().to_pylist())
    wanted = truths[truths["entity"].isin(set(captured) - already)]
    key = None
    if len(wanted):
        table = normalise_labels(pa.Table.from_pandas(wanted, preserve_index=False), SOURCE)
        key = labels.write(model, table, SOURCE)
    return DerivedLabels(model, len(objects), len(truths), len(captured), len(wanted), key)
