"""Captured inference: the format gateways write and the join, replay and training steps read.

Layout, in the store's bucket (the same storage as models and datasets)::

    capture/<model>/<YYYY-MM-DD>/<HHMMSS>-<replica>-<sequence>-<nonce>.parquet

One Parquet object is one flushed batch of one gateway replica, for one model and one UTC day.
Objects are written whole with create-if-absent, so a reader never sees half a batch and a
retried flush never overwrites another. Each row is one served request (all of its rows, for a
batched request), with the columns of :data:`CAPTURE_SCHEMA`:

============  ==========================================================================
request_id    the id the response carried (``x-request-id``): what labels join on
model         model name
version       the version that answered (after any failover)
variant       the routing spec's variant name
backend       the server kind (triton, torchserve, tfserving)
replica       the gateway replica that served it
served_at     when the answer was ready (UTC, microseconds)
latency_s     backend time of the answer, failover included
entity        the caller's ``x-flywheel-entity`` header (say ``AAPL@2024-03-05``), or null:
              what a label that knows no request id joins on
rows          the batch size of the request
prediction    the first row's value (regression) or most probable class (classification)
confidence    a classifier's first-row max probability; null for a regression
inputs        JSON list of tensors ``{"name", "dtype", "shape", "data"}`` (numpy dtype names,
              ``data`` flattened in C order)
outputs       the same, for the answer
============  ==========================================================================
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from model_store.backends.base import ObjectStorage
from model_store.names import validate_name

CAPTURE_PREFIX = "capture/"
CAPTURE_SCHEMA = pa.schema(
    [
        pa.field("request_id", pa.string(), nullable=False),
        pa.field("model", pa.string(), nullable=False),
        pa.field("version", pa.int64(), nullable=False),
        pa.field("variant", pa.string(), nullable=False),
        pa.field("backend", pa.string(), nullable=False),
        pa.field("replica", pa.string(), nullable=False),
        pa.field("served_at", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("latency_s", pa.float64(), nullable=False),
        pa.field("entity", pa.string()),
        pa.field("rows", pa.int32(), nullable=False),
        pa.field("prediction", pa.float64()),
        pa.field("confidence", pa.float64()),
        pa.field("inputs", pa.string(), nullable=False),
        pa.field("outputs", pa.string(), nullable=False),
    ]
)
_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
#: Numeric tensors only: a capture must decode back to exactly what was served.
_DTYPES = {"bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
           "float16", "float32", "float64"}  # fmt: skip


def encode_tensors(tensors: Mapping[str, np.ndarray]) -> str:
    """Tensors as the capture's JSON (non-numeric ones, such as BYTES, keep only their shape)."""
    entries = []
    for name, array in tensors.items():
        entry: dict[str, Any] = {"name": name, "dtype": array.dtype.name, "shape": list(array.shape)}
        entry["data"] = array.reshape(-1) if array.dtype.name in _DTYPES else None
        entries.append(entry)
    return orjson.dumps(entries, option=orjson.OPT_SERIALIZE_NUMPY).decode()


def decode_tensors(text: str) -> dict[str, np.ndarray]:
    """The capture's JSON back to the arrays that were served (dtype and shape included)."""
    tensors = {}
    for entry in orjson.loads(text):
        if entry["data"] is None:
            raise ValueError(f"tensor {entry['name']!r} ({entry['dtype']}) was captured by shape only")
        tensors[entry["name"]] = np.asarray(entry["data"], dtype=entry["dtype"]).reshape(entry["shape"])
    return tensors


def summarise_output(
    outputs: Mapping[str, np.ndarray], classification: bool
) -> tuple[float | None, float | None]:
    """The first row's prediction and (for a classifier) its confidence, as labels are joined."""
    first = next(iter(outputs.values()), None)
    if first is None or not first.size or first.dtype.name not in _DTYPES:
        return None, None
    if classification:
        row = first.reshape(len(first), -1)[0].astype(np.float64)
        return float(np.argmax(row)), float(np.max(row))
    return float(first.reshape(-1)[0]), None


def capture_day_prefix(model: str, day: date) -> str:
    return f"{CAPTURE_PREFIX}{validate_name(model, 'model name')}/{day.isoformat()}/"


def batch_key(model: str, served_at: datetime, replica: str, sequence: int, nonce: str) -> str:
    """Sortable by time within a day; unique per replica by sequence and nonce (restarts)."""
    utc = served_at.astimezone(UTC)
    name = f"{utc:%H%M%S}-{validate_name(replica, 'replica name')}-{sequence:06d}-{nonce}.parquet"
    return capture_day_prefix(model, utc.date()) + name


def to_parquet(rows: list[dict[str, Any]]) -> bytes:
    table = pa.Table.from_pylist(rows, schema=CAPTURE_SCHEMA)
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue()


@dataclass(frozen=True)
class CaptureBatch:
    key: str
    day: date


class CaptureReader:
    """What the gateways captured for a model, by day and batch."""

    def __init__(self, storage: ObjectStorage) -> None:
        self.storage = storage

    def days(self, model: str) -> list[date]:
        prefix = f"{CAPTURE_PREFIX}{validate_name(model, 'model name')}/"
        return sorted(
            date.fromisoformat(name) for name in self.storage.list_children(prefix) if _DAY.match(name)
        )

    def batches(
        self, model: str, since: date | None = None, until: date | None = None
    ) -> Iterator[CaptureBatch]:
        """Complete batches, oldest first (an object exists only once it is whole)."""
        for day in self.days(model):
            if (since is not None and day < since) or (until is not None and day > until):
                continue
            keys = sorted(
                k for k in self.storage.list_keys(capture_day_prefix(model, day)) if k.endswith(".parquet")
            )
            for key in keys:
                yield CaptureBatch(key, day)

    def read_batch(self, batch: CaptureBatch | str, columns: list[str] | None = None) -> pa.Table:
        key = batch.key if isinstance(batch, CaptureBatch) else batch
        return pq.read_table(io.BytesIO(self.storage.get(key).data), schema=CAPTURE_SCHEMA, columns=columns)

    def read(
        self,
        model: str,
        since: date | None = None,
        until: date | None = None,
        columns: list[str] | None = None,
    ) -> pa.Table:
        """Every captured request of ``model`` in the days given, as one table (``columns`` only:
        the inputs and outputs are most of a capture's bytes)."""
        tables = [self.read_batch(batch, columns) for batch in self.batches(model, since, until)]
        if tables:
            return pa.concat_tables(tables)
        schema = CAPTURE_SCHEMA if columns is None else pa.schema([CAPTURE_SCHEMA.field(c) for c in columns])
        return schema.empty_table()
