"""The label join: captured predictions meet the truth that arrived later, and live quality follows.

:func:`join` is a pure function of the captures and the label files in a window of days, so a
run is idempotent and order does not matter: a label that lands before its prediction's capture
is flushed simply matches on a later run (it stays in ``labels/``, counted as pending until then).
A label names its request by id, or by the task's entity key (every capture of that entity gets
it, whichever version served it: that is how versions are compared on the same truth). The
newest label of a request or entity wins, so a corrected label is a newer file.

:class:`LabelJoiner` writes the result to ``joined/<model>/joined.parquet`` by compare-and-swap:
two joiners racing (the exporter and a DAG task, say) never overwrite each other silently; the
loser reports it and its next run starts from the winner's state.

:func:`quality` reduces joined rows to live metrics per version over a sliding window of the
newest ``window`` labels: RMSE, MAE and directional accuracy for a regression; accuracy and
expected calibration error (ten confidence bins) for a classifier.
"""

from __future__ import annotations

import io
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from model_store.backends.base import ObjectStorage
from model_store.capture import CaptureReader
from model_store.errors import PreconditionFailedError
from model_store.labels import LabelStore, joined_key, read_joined

log = logging.getLogger(__name__)
CAPTURE_COLUMNS = ["request_id", "entity", "version", "variant", "served_at", "prediction", "confidence"]
JOINED_COLUMNS = [*CAPTURE_COLUMNS, "label", "labelled_at", "label_file", "matched_by"]
CALIBRATION_BINS = 10


class JoinConflictError(RuntimeError):
    """Another joiner wrote ``joined/<model>/`` since this one read it (its result stands)."""


@dataclass
class JoinReport:
    model: str
    captured: int
    labels: int
    joined: int
    #: Labels that matched no captured request yet (their capture unflushed, or never sampled).
    pending: int
    label_files: list[str] = field(default_factory=list)
    seconds: float = 0.0
    key: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "model": self.model, "captured": self.captured, "labels": self.labels, "joined": self.joined,
            "pending": self.pending, "label_files": len(self.label_files), "seconds": round(self.seconds, 3),
            "key": self.key,
        }  # fmt: skip


def _newest(labels: pd.DataFrame, key: str) -> pd.DataFrame:
    """The newest label per key: by ``labelled_at``, then by file (label file names start with
    their UTC write time), then by position in the file; a stable sort, so ties never flip."""
    named = labels[labels[key].notna()]
    ordered = named.sort_values(["labelled_at", "label_file"], kind="stable")
    return ordered.drop_duplicates(key, keep="last")


def unambiguous(captures: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Captures whose request id names one request. The same record written twice (a flush retried
    after a put that succeeded but timed out) counts once; an id that names different requests (a
    client reusing ids) is left out of the join, so a label can never reach the wrong request."""
    captures = captures.drop_duplicates(["request_id", "served_at", "version"])
    repeated = captures["request_id"].duplicated(keep=False)
    return captures[~repeated], int(captures.loc[repeated, "request_id"].nunique())


def join(captures: pd.DataFrame, labels: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Joined rows (one per captured request that has a label) and how many labels are pending."""
    captures, _ = unambiguous(captures[CAPTURE_COLUMNS])
    label_columns = ["label", "labelled_at", "label_file"]
    by_id = _newest(labels, "request_id")
    matched_id = captures.merge(by_id[["request_id", *label_columns]], on="request_id", how="inner")
    matched_id["matched_by"] = "request_id"
    rest = captures[~captures["request_id"].isin(matched_id["request_id"]) & captures["entity"].notna()]
    by_entity = _newest(labels[labels["request_id"].isna()], "entity")
    matched_entity = rest.merge(by_entity[["entity", *label_columns]], on="entity", how="inner")
    matched_entity["matched_by"] = "entity"
    joined = pd.concat([matched_id, matched_entity], ignore_index=True)[JOINED_COLUMNS]
    used_ids = set(matched_id["request_id"])
    used_entities = set(matched_entity["entity"])
    pending = int(
        (~by_id["request_id"].isin(used_ids)).sum() + (~by_entity["entity"].isin(used_entities)).sum()
    )
    return joined.sort_values("served_at", ignore_index=True), pending


def quality(joined: pd.DataFrame, classification: bool, window: int) -> dict[int, dict[str, float]]:
    """Live metrics per version over its newest ``window`` joined labels (by serving time)."""
    result: dict[int, dict[str, float]] = {}
    for version, rows in joined.groupby("version"):
        rows = rows.sort_values("served_at").tail(window)
        prediction = rows["prediction"].to_numpy(dtype=np.float64)
        label = rows["label"].to_numpy(dtype=np.float64)
        metrics: dict[str, float] = {"labels": float(len(rows))}
        if classification:
            correct = (prediction == label).astype(np.float64)
            metrics["accuracy"] = float(correct.mean())
            metrics["calibration_error"] = expected_calibration_error(
                rows["confidence"].to_numpy(np.float64), correct
            )
        else:
            error = prediction - label
            metrics["rmse"] = float(np.sqrt(np.mean(error**2)))
            metrics["mae"] = float(np.mean(np.abs(error)))
            metrics["directional_accuracy"] = float(np.mean(np.sign(prediction) == np.sign(label)))
        result[int(version)] = metrics
    return result


def expected_calibration_error(
    confidence: np.ndarray, correct: np.ndarray, bins: int = CALIBRATION_BINS
) -> float:
    """Mean |accuracy - confidence| over equal-width confidence bins, weighted by their rows."""
    known = ~np.isnan(confidence)
    confidence, correct = confidence[known], correct[known]
    if not len(confidence):
        return float("nan")
    index = np.minimum((confidence * bins).astype(int), bins - 1)
    total = 0.0
    for b in np.unique(index):
        members = index == b
        total += members.sum() * abs(correct[members].mean() - confidence[members].mean())
    return float(total / len(confidence))


class LabelJoiner:
    """Captures and label files never change once written, so a long-lived joiner (the drift
    exporter's) keeps what it read and downloads only the objects that are new since its last run;
    objects that leave the window are forgotten."""

    def __init__(self, storage: ObjectStorage, window_days: int = 7) -> None:
        self.storage = storage
        self.window_days = window_days
        self.captures = CaptureReader(storage)
        self.labels = LabelStore(storage)
        self._capture_cache: dict[str, pa.Table] = {}
        self._label_cache: dict[str, pa.Table] = {}

    def _captures(self, model: str, since: date) -> pd.DataFrame:
        keys = [batch.key for batch in self.captures.batches(model, since=since)]
        for key in keys:
            if key not in self._capture_cache:
                self._capture_cache[key] = self.captures.read_batch(key, columns=CAPTURE_COLUMNS)
        prefix = f"capture/{model}/"
        for stale in [k for k in self._capture_cache if k.startswith(prefix) and k not in set(keys)]:
            del self._capture_cache[stale]
        if not keys:
            return pd.DataFrame(columns=CAPTURE_COLUMNS)
        return pa.concat_tables([self._capture_cache[key] for key in keys]).to_pandas()

    def _labels(self, model: str, since: date) -> pd.DataFrame:
        keys = list(self.labels.files(model, since))
        for key in keys:
            if key not in self._label_cache:
                self._label_cache[key] = self.labels.read_file(key)
        prefix = f"labels/{model}/"
        for stale in [k for k in self._label_cache if k.startswith(prefix) and k not in set(keys)]:
            del self._label_cache[stale]
        if not keys:
            return self.labels.read(model, since).to_pandas()
        return pa.concat_tables([self._label_cache[key] for key in keys]).to_pandas()

    @staticmethod
    def joined_key(model: str) -> str:
        return joined_key(model)

    def run(self, model: str, today: date | None = None) -> JoinReport:
        """Join the window's captures and labels; write the result by compare-and-swap."""
        started = time.perf_counter()
        since = (today or datetime.now(UTC).date()) - timedelta(days=self.window_days)
        etag = self.storage.etag(self.joined_key(model))
        captures = self._captures(model, since)
        labels = self._labels(model, since)
        joined, pending = join(captures, labels)
        sink = io.BytesIO()
        pq.write_table(pa.Table.from_pandas(joined, preserve_index=False), sink, compression="zstd")
        try:
            if etag is None:
                self.storage.put_if_absent(self.joined_key(model), sink.getvalue())
            else:
                self.storage.put_if_match(self.joined_key(model), sink.getvalue(), etag)
        except PreconditionFailedError:
            raise JoinConflictError(
                f"the join of {model} was written by another joiner meanwhile; its result stands"
            ) from None
        return JoinReport(
            model, len(captures), len(labels), len(joined), pending,
            sorted(set(labels["label_file"])), time.perf_counter() - started, self.joined_key(model),
        )  # fmt: skip

    def read(self, model: str) -> pd.DataFrame:
        """The last join's rows (empty before the first)."""
        table = read_joined(self.storage, model)
        return pd.DataFrame(columns=JOINED_COLUMNS) if table is None else table.to_pandas()
