"""Served traffic back into training: captured requests whose labels came back become raw data.

Before ingest lists the landing prefix, :func:`materialise` takes the model's joined labels
(``monitoring/join.py``) that no earlier batch took, reads those requests' captured inputs, and
lets the task write them as one raw object of its own kind (``Task.raw_from_captures``), under

    s3://<raw_bucket>/<raw_prefix>labelled-captures/<model>/<batch id>.<suffix>

so the normal ingest snapshots it like any landed batch: a drift or quality alert with no new
raw data still has something to train on. The batch id is a hash of its request ids, so a
retried run writes the same object again, and a record in the store,

    labelled/<model>/<batch id>.json   (request ids, capture batches, label files)

is written last, create-if-absent: requests it names are never taken twice, and the published
version's lineage names the capture batches and label files that went into it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from datetime import UTC, datetime
from typing import Any

import numpy as np

from flywheel.settings import FlywheelSettings
from model_store import ModelStore
from model_store.capture import CaptureReader, decode_tensors
from model_store.errors import ObjectNotFoundError, PreconditionFailedError
from model_store.names import validate_name
from monitoring.join import JoinConflictError, LabelJoiner
from tasks.base import Task
from training.ingest import LABELLED_CAPTURES_FOLDER

LABELLED_PREFIX = "labelled/"
RAW_FOLDER = LABELLED_CAPTURES_FOLDER


def records(store: ModelStore, model: str) -> list[dict[str, Any]]:
    """Every labelled-capture batch of ``model`` so far."""
    prefix = f"{LABELLED_PREFIX}{validate_name(model, 'model name')}/"
    return [json.loads(store.storage.get(key).data) for key in sorted(store.storage.list_keys(prefix))]


def record_for_key(store: ModelStore, model: str, raw_key: str) -> dict[str, Any] | None:
    """The record of the batch a raw object came from, or None for ordinary landed data."""
    if RAW_FOLDER not in raw_key:
        return None
    batch_id = raw_key.rsplit("/", 1)[-1].split(".", 1)[0]
    try:
        return dict(json.loads(store.storage.get(f"{LABELLED_PREFIX}{model}/{batch_id}.json").data))
    except ObjectNotFoundError:
        return None


def materialise(
    settings: FlywheelSettings, store: ModelStore, model: str, task: Task, client: Any, min_rows: int
) -> dict[str, Any] | None:
    """Write the joined labels no batch took yet as raw data; None when there are fewer than
    ``min_rows`` of them or the task cannot express served inputs as raw data."""
    if not task.learns_from_captures:
        return None  # the forecaster and its like: what they serve is not their raw data
    joiner = LabelJoiner(store.storage, settings.label_join_window_days)
    # Fresh: labels that arrived since the exporter's last join count. Losing the race means
    # another joiner just wrote a fresh one: read that.
    with contextlib.suppress(JoinConflictError):
        joiner.run(model)
    joined = joiner.read(model)
    taken = {request_id for record in records(store, model) for request_id in record["request_ids"]}
    fresh = joined[~joined["request_id"].isin(taken)].drop_duplicates("request_id")
    if len(fresh) < min_rows:
        return None
    wanted = dict(zip(fresh["request_id"], fresh["label"], strict=True))
    inputs: dict[str, dict[str, np.ndarray]] = {}
    batches: set[str] = set()
    reader = CaptureReader(store.storage)
    for batch in reader.batches(model):
        table = reader.read_batch(batch, columns=["request_id", "inputs"])
        for request_id, encoded in zip(
            table["request_id"].to_pylist(), table["inputs"].to_pylist(), strict=True
        ):
            if request_id in wanted and request_id not in inputs:
                inputs[request_id] = decode_tensors(encoded)
                batches.add(batch.key)
    ids = sorted(inputs)
    if len(ids) < min_rows:
        return None  # captures outside the window: their labels cannot be used
    written = task.raw_from_captures(ids, [inputs[i] for i in ids], np.asarray([wanted[i] for i in ids]))
    if written is None:
        return None
    suffix, body = written
    batch_id = hashlib.sha256("\n".join(ids).encode()).hexdigest()[:16]
    # Under the model's dataset name, which is what its ingest takes (FLYWHEEL_DATASET_NAME, else the model).
    key = f"{settings.raw_prefix}{RAW_FOLDER}{settings.dataset_name or model}/{batch_id}{suffix}"
    client.put_object(Bucket=settings.raw_bucket, Key=key, Body=body)
    record = {
        "batch_id": batch_id,
        "raw_key": key,
        "rows": len(ids),
        "request_ids": ids,
        "capture_batches": sorted(batches),
        "label_files": sorted(set(fresh[fresh["request_id"].isin(ids)]["label_file"])),
        "created_at": datetime.now(UTC).isoformat(),
    }
    with contextlib.suppress(PreconditionFailedError):  # a retried run: the same requests, the same record
        store.storage.put_if_absent(f"{LABELLED_PREFIX}{model}/{batch_id}.json", json.dumps(record).encode())
    return {key: value for key, value in record.items() if key != "request_ids"}
