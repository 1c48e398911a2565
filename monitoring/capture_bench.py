"""What the data flywheel costs: capture on the request path, its flush, and the label join.

- ``offer``: nanoseconds per :meth:`CaptureWriter.offer` call, for a request the draw skips and for
  one it captures, with a window model's and an image model's tensor shapes: the whole cost a
  served request pays (encoding and I/O happen later, in the flush thread);
- ``flush``: captured requests encoded and written per second (Parquet to the given storage);
- ``join``: seconds for a label join over N captured requests and as many labels.

In-process and single-threaded, so the numbers are the code's, not the network's.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import numpy as np
import pyarrow as pa
from prometheus_client import CollectorRegistry

from model_store.backends.base import ObjectStorage
from model_store.labels import LabelStore, normalise_labels
from monitoring.join import LabelJoiner
from serving.gateway.capture import CaptureWriter

SHAPES = {"window 1x10x8": ((1, 10, 8), (1, 1)), "image 1x28x28": ((1, 28, 28), (1, 10))}


def _offer_ns(
    storage: ObjectStorage, shape: tuple[tuple[int, ...], tuple[int, ...]], rate: float, calls: int
) -> float:
    writer = CaptureWriter(storage, CollectorRegistry(), "bench", rate, batch_records=10**9,
                           max_buffered_bytes=1 << 40)  # fmt: skip
    inputs = {"x": np.zeros(shape[0], np.float32)}
    outputs = {"y": np.zeros(shape[1], np.float32)}
    headers: dict[str, str] = {}
    started = time.perf_counter_ns()
    for number in range(calls):
        writer.offer("bench", 1, "v1", "triton", str(number), inputs, outputs, 0.001, False, headers)
    return (time.perf_counter_ns() - started) / calls


def run(
    storage: ObjectStorage, calls: int = 100_000, join_sizes: tuple[int, ...] = (1_000, 10_000)
) -> dict[str, Any]:
    report: dict[str, Any] = {"offer_ns": {}, "flush": {}, "join": {}}
    for name, shape in SHAPES.items():
        report["offer_ns"][name] = {
            "not sampled (rate 0)": round(_offer_ns(storage, shape, 0.0, calls)),
            "captured (rate 1)": round(_offer_ns(storage, shape, 1.0, calls)),
        }
        writer = CaptureWriter(storage, CollectorRegistry(), "bench", 1.0, batch_records=10**9,
                               max_buffered_bytes=1 << 40)  # fmt: skip
        records = 5_000
        for number in range(records):
            writer.offer(f"flush-{name.split()[0]}", 1, "v1", "triton", str(number),
                         {"x": np.random.default_rng(number).random(shape[0], dtype=np.float32)},
                         {"y": np.zeros(shape[1], np.float32)}, 0.001, False, None)  # fmt: skip
        started = time.perf_counter()
        asyncio.run(writer.flush())
        seconds = time.perf_counter() - started
        report["flush"][name] = {
            "requests": records,
            "seconds": round(seconds, 3),
            "per_second": round(records / seconds),
        }
    for size in join_sizes:
        model = f"join-{size}"
        writer = CaptureWriter(storage, CollectorRegistry(), "bench", 1.0, batch_records=10**9,
                               max_buffered_bytes=1 << 40)  # fmt: skip
        for number in range(size):
            writer.offer(model, 1, "v1", "triton", f"r{number}", {"x": np.zeros((1, 10, 8), np.float32)},
                         {"y": np.zeros((1, 1), np.float32)}, 0.001, False, None)  # fmt: skip
        asyncio.run(writer.flush())
        labels = normalise_labels(
            pa.table({"request_id": [f"r{n}" for n in range(size)], "label": np.zeros(size)}), "bench"
        )
        LabelStore(storage).write(model, labels, "bench")
        joined = LabelJoiner(storage).run(model)
        report["join"][f"{size} requests + {size} labels"] = {
            "seconds": round(joined.seconds, 3),
            "joined": joined.joined,
        }
    return report
