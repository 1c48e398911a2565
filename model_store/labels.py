"""Ground truth that arrives after the prediction: label files in the store, joined to captures.

Layout, beside ``capture/``::

    labels/<model>/<YYYY-MM-DD>/<source>-<HHMMSS>-<nonce>.parquet

A label file is written whole with create-if-absent (a reader never sees half of one) and never
changed; a corrected label is a newer file, and the newest label of a request or entity wins.
Columns (:data:`LABEL_SCHEMA`):

============  ==========================================================================
request_id    the served request's id, when the labeller knows it (a labelling queue does)
entity        otherwise the task's entity key the caller sent as ``x-flywheel-entity``
              (the forecaster: ``SYMBOL@YYYY-MM-DD``, the day the window ends)
label         the truth: a class index, or a regression's value (the forecaster: the return
              from that day's close to the next trading day's)
labelled_at   when the truth became known (UTC)
source        who says so: ``cli``, ``raw-prices``, a labelling tool's name
============  ==========================================================================

Every row needs a request id or an entity.
"""

from __future__ import annotations

import io
import re
import secrets
from collections.abc import Iterator
from datetime import UTC, date, datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from model_store.backends.base import ObjectStorage
from model_store.names import validate_name

LABELS_PREFIX = "labels/"
LABEL_SCHEMA = pa.schema(
    [
        pa.field("request_id", pa.string()),
        pa.field("entity", pa.string()),
        pa.field("label", pa.float64(), nullable=False),
        pa.field("labelled_at", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("source", pa.string(), nullable=False),
    ]
)
_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


class LabelError(ValueError):
    """A label file that cannot be used (missing columns, rows naming nothing, bad values)."""


def normalise_labels(
    table: pa.Table, source: str, labelled_at: datetime | None = None, classes: int | None = None
) -> pa.Table:
    """Any table with ``label`` and ``request_id`` and/or ``entity`` columns -> :data:`LABEL_SCHEMA`.
    ``classes``: a classifier's class count; its labels must be class indices below it."""
    names = set(table.column_names)
    if "label" not in names or not names & {"request_id", "entity"}:
        raise LabelError(
            f"labels need a 'label' column and a 'request_id' or 'entity' column; got {sorted(names)}"
        )
    rows = table.num_rows
    when = labelled_at or datetime.now(UTC)

    def strings(name: str) -> pa.Array:
        if name not in names:
            return pa.nulls(rows, pa.string())
        text = pc.utf8_trim_whitespace(pc.cast(table[name], pa.string()).combine_chunks())
        return pc.if_else(
            pc.equal(text, ""), pa.scalar(None, pa.string()), text
        )  # a blank cell names nothing

    request_id, entity = strings("request_id"), strings("entity")
    try:
        label = pc.cast(table["label"], pa.float64()).combine_chunks()
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as error:
        raise LabelError(f"the 'label' column must be numbers: {error}") from None
    if label.null_count or (rows and not pc.all(pc.is_finite(label)).as_py()):
        raise LabelError("every label must be a finite number")
    if classes is not None and rows:
        values = label.to_numpy(zero_copy_only=False)
        bad = values[(values != np.floor(values)) | (values < 0) | (values >= classes)]
        if len(bad):
            raise LabelError(
                f"a label of this classifier is a class index from 0 to {classes - 1}; got {bad[0]:g}"
            )
    unnamed = pc.and_(pc.is_null(request_id), pc.is_null(entity))
    if rows and pc.any(unnamed).as_py():
        raise LabelError("every label row needs a request_id or an entity")
    stamps = pa.array([when] * rows, pa.timestamp("us", tz="UTC"))
    if "labelled_at" in names:
        given = pc.cast(table["labelled_at"], pa.timestamp("us", tz="UTC")).combine_chunks()
        stamps = pc.if_else(pc.is_null(given), stamps, given)  # a blank time: when it was stored
    return pa.Table.from_arrays(
        [request_id, entity, label, stamps, pa.array([source] * rows, pa.string())], schema=LABEL_SCHEMA
    )


class LabelStore:
    def __init__(self, storage: ObjectStorage) -> None:
        self.storage = storage

    def write(self, model: str, table: pa.Table, source: str) -> str:
        """Store one label file (already normalised); returns its key."""
        validate_name(model, "model name")
        validate_name(source, "label source")
        if not table.schema.equals(LABEL_SCHEMA):
            table = normalise_labels(table, source)
        now = datetime.now(UTC)
        # The write time first: within a day, file names sort in the order labels arrived.
        name = f"{now:%H%M%S%f}-{source}-{secrets.token_hex(4)}.parquet"
        key = f"{LABELS_PREFIX}{model}/{now.date().isoformat()}/{name}"
        sink = io.BytesIO()
        pq.write_table(table, sink, compression="zstd")
        self.storage.put_if_absent(key, sink.getvalue())
        return key

    def files(self, model: str, since: date | None = None) -> Iterator[str]:
        prefix = f"{LABELS_PREFIX}{validate_name(model, 'model name')}/"
        for day in sorted(name for name in self.storage.list_children(prefix) if _DAY.match(name)):
            if since is not None and date.fromisoformat(day) < since:
                continue
            yield from sorted(k for k in self.storage.list_keys(f"{prefix}{day}/") if k.endswith(".parquet"))

    def read_file(self, key: str) -> pa.Table:
        table = pq.read_table(io.BytesIO(self.storage.get(key).data))
        return table.append_column("label_file", pa.array([key] * table.num_rows, pa.string()))

    def read(self, model: str, since: date | None = None) -> pa.Table:
        """Every label of ``model``, with the file each came from (``label_file``)."""
        tables = [self.read_file(key) for key in self.files(model, since)]
        if not tables:
            return LABEL_SCHEMA.append(pa.field("label_file", pa.string())).empty_table()
        return pa.concat_tables(tables)


JOINED_PREFIX = "joined/"


def joined_key(model: str) -> str:
    """Where the label join of ``model`` lives (``monitoring/join.py`` writes it by compare-and-swap)."""
    return f"{JOINED_PREFIX}{validate_name(model, 'model name')}/joined.parquet"


def read_joined(storage: ObjectStorage, model: str) -> pa.Table | None:
    """The last label join of ``model`` (captured requests with their labels), None before the first."""
    from model_store.errors import ObjectNotFoundError

    try:
        data = storage.get(joined_key(model)).data
    except ObjectNotFoundError:
        return None
    return pq.read_table(io.BytesIO(data))
