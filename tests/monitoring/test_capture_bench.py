"""`flywheel bench capture` measures what it says: offers, a flush that lands, a join that matches."""

from __future__ import annotations

from pathlib import Path

from model_store.backends.file import FileStorage
from model_store.capture import CaptureReader
from monitoring.capture_bench import run


def test_the_bench_times_offers_writes_the_flush_and_joins_every_label(tmp_path: Path) -> None:
    storage = FileStorage(tmp_path)
    report = run(storage, calls=1000, join_sizes=(200,))
    for costs in report["offer_ns"].values():
        assert set(costs) == {"not sampled (rate 0)", "captured (rate 1)"}
        assert all(value > 0 for value in costs.values())
    assert all(flush["requests"] == 5000 for flush in report["flush"].values())
    assert CaptureReader(storage).read("flush-image").num_rows == 5000, "the timed flush really wrote"
    [join] = report["join"].values()
    assert join["joined"] == 200 and join["seconds"] > 0
