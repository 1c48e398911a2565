"""Inference capture: what a gateway buffers, how it flushes to the store, and what it drops."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from model_store.backends.base import ObjectStorage
from model_store.backends.file import FileStorage
from model_store.capture import CAPTURE_SCHEMA, CaptureReader, decode_tensors, encode_tensors
from model_store.store import ModelStore
from serving.gateway.capture import CaptureWriter


def writer(storage: ObjectStorage, **options: Any) -> CaptureWriter:
    return CaptureWriter(storage, CollectorRegistry(), "gateway-0", **{"sample_rate": 1.0, **options})


def offer(capture: CaptureWriter, model: str, request_id: str, **options: Any) -> bool:
    images = np.arange(2 * 4, dtype=np.float32).reshape(2, 4) + len(request_id)
    probabilities = np.array([[0.1, 0.7, 0.2], [0.5, 0.25, 0.25]], dtype=np.float32)
    return capture.offer(
        model, options.pop("version", 3), "triton-v3", "triton", request_id, {"images": images},
        {"probabilities": probabilities}, 0.004, True, options.pop("headers", None),
    )  # fmt: skip


def counter(capture: CaptureWriter, model: str, outcome: str) -> float:
    value = capture.metrics.records.labels(model, outcome)._value.get()
    return float(value)


def test_captured_requests_land_as_parquet_batches_that_decode_to_what_was_served(store: ModelStore) -> None:
    capture = writer(store.storage)
    for number in range(5):
        assert offer(capture, "classifier", f"req-{number}", headers={"x-flywheel-entity": f"item-{number}"})
    assert offer(capture, "other-model", "req-x")
    assert asyncio.run(capture.flush()) == 6
    assert capture.buffered == 0

    reader = CaptureReader(store.storage)
    today = datetime.now(UTC).date()
    assert reader.days("classifier") == [today]
    [batch] = list(reader.batches("classifier"))
    assert batch.key.startswith(f"capture/classifier/{today.isoformat()}/") and "-gateway-0-" in batch.key
    table = reader.read("classifier")
    assert table.schema.equals(CAPTURE_SCHEMA)
    rows = table.to_pylist()
    assert [row["request_id"] for row in rows] == [f"req-{n}" for n in range(5)]
    assert [row["entity"] for row in rows] == [f"item-{n}" for n in range(5)]
    first = rows[0]
    assert (first["model"], first["version"], first["variant"], first["backend"], first["replica"]) == (
        "classifier", 3, "triton-v3", "triton", "gateway-0",
    )  # fmt: skip
    assert first["rows"] == 2 and first["prediction"] == 1.0 and first["confidence"] == pytest.approx(0.7)
    inputs = decode_tensors(first["inputs"])
    assert inputs["images"].dtype == np.float32 and inputs["images"].shape == (2, 4)
    np.testing.assert_array_equal(inputs["images"], np.arange(8, dtype=np.float32).reshape(2, 4) + 5)
    assert decode_tensors(first["outputs"])["probabilities"].shape == (2, 3)
    assert [row["request_id"] for row in reader.read("other-model").to_pylist()] == ["req-x"]
    assert counter(capture, "classifier", "written") == 5


def test_the_header_opts_a_request_out_or_in_whatever_the_rate(tmp_path: Path) -> None:
    never = writer(FileStorage(tmp_path), sample_rate=0.0)
    assert not offer(never, "m", "a")
    assert offer(never, "m", "c", headers={"x-flywheel-capture": " ON "})
    always = writer(FileStorage(tmp_path))
    assert not offer(always, "m", "d", headers={"x-flywheel-capture": "off"})
    assert not offer(always, "m", "e", headers={"x-flywheel-capture": "0"})
    # An entity a label could never name (too long, control characters) is not kept; the request is.
    assert offer(always, "m", "f", headers={"x-flywheel-entity": "x" * 300})
    assert offer(always, "m", "g", headers={"x-flywheel-entity": "bad\nline"})
    asyncio.run(always.flush())
    asyncio.run(never.flush())
    rows = CaptureReader(FileStorage(tmp_path)).read("m").to_pylist()
    assert sorted((row["request_id"], row["entity"]) for row in rows) == [
        ("c", None),
        ("f", None),
        ("g", None),
    ]


def test_a_full_buffer_drops_and_counts_instead_of_growing(tmp_path: Path) -> None:
    capture = writer(FileStorage(tmp_path), max_buffered_bytes=3 * (32 + 24))  # three requests' arrays
    accepted = [offer(capture, "m", f"r{n}") for n in range(5)]
    assert accepted == [True, True, True, False, False]
    assert counter(capture, "m", "dropped_full") == 2
    asyncio.run(capture.flush())
    assert offer(capture, "m", "after-flush"), "a flush frees the room"


class FailingStorage(FileStorage):
    """A real file store whose puts fail while ``failing`` is set (S3 unreachable, say); ``None``
    fails every put but the first. ``during_put`` runs inside each put, as requests that arrive
    while a flush is writing."""

    failing: bool | None = True
    puts = 0
    during_put: Any = None

    def put_if_absent(self, key: str, data: bytes) -> str:
        self.puts += 1
        if self.during_put is not None:
            self.during_put()
        if self.failing or (self.failing is None and self.puts > 1):
            raise ConnectionError("S3 at 127.0.0.1:9000 is unreachable")
        return super().put_if_absent(key, data)


def test_a_failing_store_keeps_the_batch_and_a_later_flush_writes_it_once(tmp_path: Path) -> None:
    storage = FailingStorage(tmp_path)
    capture = writer(storage, max_buffered_bytes=3 * 56)  # three requests' arrays
    for number in range(3):
        offer(capture, "m", f"r{number}")
    # Two requests arrive while the failing flush writes: the batch goes back in front of them and
    # the oldest beyond the bound are dropped, counted as the store's fault.
    storage.during_put = lambda: [offer(capture, "m", name) for name in ("r3", "r4")]
    assert asyncio.run(capture.flush()) == 0
    storage.during_put = None
    assert capture.buffered == 3 and capture.metrics.write_errors._value.get() == 1
    assert counter(capture, "m", "dropped_store") == 2
    storage.failing = False
    assert asyncio.run(capture.flush()) == 3
    rows = CaptureReader(storage).read("m").to_pylist()
    assert [row["request_id"] for row in rows] == ["r2", "r3", "r4"]
    assert asyncio.run(capture.flush()) == 0, "written once"


def test_a_flush_that_fails_half_way_writes_the_rest_later_without_duplicates(tmp_path: Path) -> None:
    storage = FailingStorage(tmp_path)
    storage.failing = None  # the first object is written, the second refused
    capture = writer(storage)
    offer(capture, "first", "a")
    offer(capture, "second", "b")
    assert asyncio.run(capture.flush()) == 1
    storage.failing = False
    assert asyncio.run(capture.flush()) == 1
    reader = CaptureReader(storage)
    assert [row["request_id"] for row in reader.read("first").to_pylist()] == ["a"]
    assert [row["request_id"] for row in reader.read("second").to_pylist()] == ["b"]


def test_the_run_loop_flushes_when_a_batch_is_full_before_the_interval(tmp_path: Path) -> None:
    async def scenario() -> list[str]:
        capture = writer(FileStorage(tmp_path), flush_interval_s=3600, batch_records=3)
        task = asyncio.create_task(capture.run())
        try:
            for number in range(3):
                offer(capture, "m", f"r{number}")
            reader = CaptureReader(FileStorage(tmp_path))
            for _ in range(200):
                if list(reader.batches("m")):
                    break
                await asyncio.sleep(0.05)  # polling the store for the flush the full batch woke
            return [row["request_id"] for row in reader.read("m").to_pylist()]
        finally:
            task.cancel()

    assert asyncio.run(scenario()) == ["r0", "r1", "r2"]


def test_tensors_round_trip_and_non_numeric_ones_keep_their_shape_only() -> None:
    tensors = {"x": np.array([[1, 2]], dtype=np.int64), "flag": np.array([True, False])}
    decoded = decode_tensors(encode_tensors(tensors))
    assert {name: (a.dtype.name, a.shape) for name, a in decoded.items()} == {
        "x": ("int64", (1, 2)), "flag": ("bool", (2,)),
    }  # fmt: skip
    text = encode_tensors({"names": np.array([b"a", b"bc"], dtype=object)})
    with pytest.raises(ValueError, match="captured by shape only"):
        decode_tensors(text)


def test_a_failing_store_backs_off_and_a_full_buffer_does_not_wake_the_flush_meanwhile(
    tmp_path: Path,
) -> None:
    import time

    storage = FailingStorage(tmp_path)
    capture = writer(storage, batch_records=2, flush_interval_s=10)
    offer(capture, "m", "r0")
    assert asyncio.run(capture.flush()) == 0
    assert capture._retry_at >= time.monotonic() + 9, "the next try waits out the interval at least"
    capture._wake.clear()
    for number in range(1, 4):
        offer(capture, "m", f"r{number}")
    assert not capture._wake.is_set(), "no flush per request while the store is down"
    storage.failing = False
    assert asyncio.run(capture.flush()) == 4 and capture._retry_at == 0.0


def test_a_batch_that_cannot_be_encoded_is_dropped_and_counted_not_retried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import serving.gateway.capture as module

    encode = module.to_parquet

    def refuse_bad(rows: list[dict[str, Any]]) -> bytes:
        if rows[0]["model"] == "bad":
            raise ValueError("cannot encode")
        return encode(rows)

    monkeypatch.setattr(module, "to_parquet", refuse_bad)
    capture = writer(FileStorage(tmp_path))
    offer(capture, "bad", "b0")
    offer(capture, "good", "g0")
    assert asyncio.run(capture.flush()) == 1 and capture.buffered == 0
    assert counter(capture, "bad", "dropped_encode") == 1
    assert [row["request_id"] for row in CaptureReader(FileStorage(tmp_path)).read("good").to_pylist()] == [
        "g0"
    ]


def test_a_replica_name_that_cannot_be_a_key_is_refused_at_start(tmp_path: Path) -> None:
    from model_store.errors import InvalidNameError

    with pytest.raises(InvalidNameError, match="gateway replica name"):
        CaptureWriter(FileStorage(tmp_path), CollectorRegistry(), "../gw", 1.0)
