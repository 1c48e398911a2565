"""Inference capture on the gateway: a sample of served requests, flushed as Parquet to the store.

The format and layout are ``model_store.capture``'s. What this module adds is the cost control:

- **The hot path** (:meth:`CaptureWriter.offer`) is one random draw, a header lookup and an
  append of references to the arrays already decoded and answered; no copy, no encoding, no I/O.
  The ``x-flywheel-capture`` header overrides the draw per request: ``off`` (also ``0``, ``no``,
  ``false``) opts a request out, ``on`` (``1``, ``yes``, ``true``) captures it whatever the rate,
  as a tracing header forces a trace.
- **Bounded memory.** Buffered records count by the bytes of their arrays; an offer beyond
  ``max_buffered_bytes`` is dropped and counted (``flywheel_capture_records_total{outcome="dropped_full"}``)
  rather than growing the process or waiting.
- **The flush** (:meth:`CaptureWriter.run`) wakes every ``flush_interval_s``, or as soon as
  ``batch_records`` are waiting, and encodes and writes in a worker thread, one object per model
  and UTC day, create-if-absent. A store that fails keeps the batch buffered for the next flush;
  when that would exceed the bound, the oldest records go, counted as ``dropped_store``. Retries
  back off (the flush interval, doubling up to five minutes); a record that cannot be encoded is
  dropped at once and counted as ``dropped_encode``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import secrets
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge

from model_store.backends.base import ObjectStorage
from model_store.capture import batch_key, encode_tensors, summarise_output, to_parquet
from model_store.errors import PreconditionFailedError
from model_store.names import validate_name
from serving.backends.base import Tensors

log = logging.getLogger(__name__)
CAPTURE_HEADER = "x-flywheel-capture"
ENTITY_HEADER = "x-flywheel-entity"
_OFF = frozenset({"off", "0", "no", "false"})
_ON = frozenset({"on", "1", "yes", "true"})
MAX_ENTITY = 256
MAX_BACKOFF_S = 300.0
KEY_ATTEMPTS = 5


@dataclass(slots=True)
class CapturedRequest:
    """References to what was served; encoded only at flush time, off the request path."""

    served_at: float
    model: str
    version: int
    variant: str
    backend: str
    request_id: str
    entity: str | None
    latency_s: float
    classification: bool
    inputs: Tensors
    outputs: Tensors
    size: int

    def row(self, replica: str) -> dict[str, Any]:
        prediction, confidence = summarise_output(self.outputs, self.classification)
        first = next(iter(self.inputs.values()), None)
        return {
            "request_id": self.request_id,
            "model": self.model,
            "version": self.version,
            "variant": self.variant,
            "backend": self.backend,
            "replica": replica,
            "served_at": datetime.fromtimestamp(self.served_at, UTC),
            "latency_s": self.latency_s,
            "entity": self.entity,
            "rows": int(first.shape[0]) if first is not None and first.ndim else 1,
            "prediction": prediction,
            "confidence": confidence,
            "inputs": encode_tensors(self.inputs),
            "outputs": encode_tensors(self.outputs),
        }


class CaptureMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.records = Counter(
            "flywheel_capture_records",
            "Captured requests by model and outcome (written, or dropped by reason: full, store).",
            ["model", "outcome"],
            registry=registry,
        )
        self.batches = Counter(
            "flywheel_capture_batches", "Capture objects written to the store, per model.", ["model"],
            registry=registry,
        )  # fmt: skip
        self.write_errors = Counter(
            "flywheel_capture_write_errors", "Flushes the store refused (their batch is retried).",
            registry=registry,
        )  # fmt: skip
        self.buffered_bytes = Gauge(
            "flywheel_capture_buffered_bytes", "Bytes of captured arrays waiting for the next flush.",
            registry=registry, multiprocess_mode="livesum",
        )  # fmt: skip


class CaptureWriter:
    def __init__(
        self,
        storage: ObjectStorage,
        registry: CollectorRegistry,
        replica: str,
        sample_rate: float,
        flush_interval_s: float = 10.0,
        batch_records: int = 2000,
        max_buffered_bytes: int = 64 * 1024 * 1024,
    ) -> None:
        self.storage = storage
        self.replica = validate_name(replica, "gateway replica name")  # it goes into every object key
        self.sample_rate = sample_rate
        self.flush_interval_s = flush_interval_s
        self.batch_records = batch_records
        self.max_buffered_bytes = max_buffered_bytes
        self.metrics = CaptureMetrics(registry)
        self._buffer: deque[CapturedRequest] = deque()
        self._buffered_bytes = 0
        self._sequence = 0
        #: Distinguishes this process's objects from an earlier run of the same replica.
        self._nonce = secrets.token_hex(3)
        self._wake = asyncio.Event()
        self._dropped: dict[tuple[str, str], Any] = {}
        #: After a failed flush, no retry before this (monotonic): a store that is down is not
        #: hammered, and a full buffer does not wake the flush on every request meanwhile.
        self._retry_at = 0.0
        self._failures = 0

    # The request path -----------------------------------------------------------------------------
    @property
    def _buffered_bytes(self) -> int:
        return self._bytes_waiting

    @_buffered_bytes.setter
    def _buffered_bytes(self, value: int) -> None:
        # Set on every change (sampled requests and flushes only), not read at scrape time: a
        # callback gauge is invisible to the sum over gateway workers (multiprocess mode).
        self._bytes_waiting = value
        self.metrics.buffered_bytes.set(value)

    def offer(
        self,
        model: str,
        version: int,
        variant: str,
        backend: str,
        request_id: str,
        inputs: Tensors,
        outputs: Tensors,
        latency_s: float,
        classification: bool,
        headers: Mapping[str, str] | None,
    ) -> bool:
        """Buffer the request if it is sampled (or asked for); True when it was buffered."""
        asked = headers.get(CAPTURE_HEADER) if headers else None
        if asked is not None:
            asked = asked.strip().lower()
            if asked in _OFF:
                return False
        if asked not in _ON and (self.sample_rate <= 0 or random.random() >= self.sample_rate):
            return False
        size = sum(a.nbytes for a in inputs.values()) + sum(a.nbytes for a in outputs.values())
        if self._buffered_bytes + size > self.max_buffered_bytes:
            self._count_drop(model, "full")
            return False
        entity = headers.get(ENTITY_HEADER) if headers else None
        if entity is not None and (len(entity) > MAX_ENTITY or not entity.isprintable()):
            entity = None  # a label cannot join on it; the request itself is fine
        self._buffer.append(
            CapturedRequest(time.time(), model, version, variant, backend, request_id, entity, latency_s,
                            classification, dict(inputs), dict(outputs), size)
        )  # fmt: skip
        self._buffered_bytes += size
        if len(self._buffer) >= self.batch_records and not self._failures:
            self._wake.set()
        return True

    def _count_drop(self, model: str, reason: str) -> None:
        child = self._dropped.get((model, reason))
        if child is None:
            child = self._dropped[(model, reason)] = self.metrics.records.labels(model, f"dropped_{reason}")
        child.inc()

    # The flush ----------------------------------------------------------------------------------
    @property
    def buffered(self) -> int:
        return len(self._buffer)

    async def run(self) -> None:
        """Flush forever (a task of the gateway process); a failing store backs the retries off."""
        while True:
            wait_s = max(self.flush_interval_s, self._retry_at - time.monotonic())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait_s)
            self._wake.clear()
            try:
                await self.flush()
            except Exception:  # never let the flush task die: capture would stop for good
                log.exception("capture flush failed unexpectedly; the next flush tries again")

    async def flush(self) -> int:
        """Write everything buffered now; returns the records written (what a failing store did not
        take stays buffered for the next flush)."""
        taken = list(self._buffer)
        if not taken:
            return 0
        self._buffer.clear()
        self._buffered_bytes = 0
        try:
            written = await asyncio.to_thread(self._write, taken)
        except PartialFlushError as error:
            self.metrics.write_errors.inc()
            self._failures += 1
            backoff = min(MAX_BACKOFF_S, self.flush_interval_s * 2 ** (self._failures - 1))
            self._retry_at = time.monotonic() + backoff
            log.warning("capture flush failed, retrying in %.0f s: %s", backoff, error)
            self._requeue(error.unwritten)
            return error.written
        self._failures, self._retry_at = 0, 0.0
        return written

    def _requeue(self, taken: list[CapturedRequest]) -> None:
        """Put a failed batch back in front of what arrived meanwhile, dropping the oldest over the bound."""
        arrived = list(self._buffer)
        self._buffer = deque(taken + arrived)
        self._buffered_bytes = sum(record.size for record in self._buffer)
        while self._buffer and self._buffered_bytes > self.max_buffered_bytes:
            oldest = self._buffer.popleft()
            self._buffered_bytes -= oldest.size
            self._count_drop(oldest.model, "store")

    def _write(self, taken: list[CapturedRequest]) -> int:
        """One object per model and UTC day; each object is whole or absent."""
        groups: dict[tuple[str, str], list[CapturedRequest]] = {}
        for record in taken:
            day = datetime.fromtimestamp(record.served_at, UTC).date().isoformat()
            groups.setdefault((record.model, day), []).append(record)
        pending = list(groups.values())
        written = 0
        while pending:
            records = pending[0]
            try:
                body = to_parquet([record.row(self.replica) for record in records])
            except Exception as error:  # a record that cannot be encoded never will be: drop, count
                log.warning("dropping %d captured requests of %s that cannot be encoded: %s",
                            len(records), records[0].model, error)  # fmt: skip
                for record in records:
                    self._count_drop(record.model, "encode")
                pending.pop(0)
                continue
            first = datetime.fromtimestamp(records[0].served_at, UTC)
            for _ in range(KEY_ATTEMPTS):
                self._sequence += 1
                key = batch_key(records[0].model, first, self.replica, self._sequence, self._nonce)
                try:
                    self.storage.put_if_absent(key, body)
                    break
                except PreconditionFailedError:
                    continue  # the key exists (a clock or nonce collision): the next sequence number
                except Exception as error:  # any store failure: what is not written yet is kept
                    unwritten = [record for group in pending for record in group]
                    raise PartialFlushError(unwritten, written, error) from error
            else:
                unwritten = [record for group in pending for record in group]
                collided = RuntimeError(f"{KEY_ATTEMPTS} object keys in a row already existed")
                raise PartialFlushError(unwritten, written, collided)
            pending.pop(0)
            written += len(records)
            self.metrics.batches.labels(records[0].model).inc()
            self.metrics.records.labels(records[0].model, "written").inc(len(records))
        return written


class PartialFlushError(Exception):
    """The store failed part-way: ``unwritten`` go back to the buffer, the rest are stored."""

    def __init__(self, unwritten: list[CapturedRequest], written: int, cause: Exception) -> None:
        super().__init__(f"{cause} ({written} requests written, {len(unwritten)} kept for the next flush)")
        self.unwritten = unwritten
        self.written = written
