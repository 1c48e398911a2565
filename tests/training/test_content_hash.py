"""The content hash of a preprocessing output: equal for equal content, whatever the files look like."""

from __future__ import annotations

import json
from itertools import pairwise
from pathlib import Path

import numpy as np
import pandas as pd

from training.content_hash import content_hash


def write_output(folder: Path, rows: pd.DataFrame, parts: int, report: dict[str, object]) -> Path:
    (folder / "features").mkdir(parents=True)
    bounds = np.linspace(0, len(rows), parts + 1).astype(int)
    for index, (start, end) in enumerate(pairwise(bounds)):
        rows.iloc[start:end].to_parquet(folder / "features" / f"part-{index:05d}-{index * 7919}.parquet")
    (folder / "report.json").write_text(json.dumps(report, indent=index))
    return folder


def test_equal_content_hashes_equal_and_any_change_shows(tmp_path: Path) -> None:
    rows = pd.DataFrame(
        {
            "image_id": ["a", "b", "c", "d"],
            "pixels": [bytes([i] * 8) for i in range(4)],  # images are bytes: hashed, not choked on
            "mean": [0.1 + 0.2, 0.5, 1e-9, 3.0],
            "vector": [np.arange(3, dtype="float32") + i for i in range(4)],
        }
    )
    report = {"rows": 4, "split": {"train": 3, "test": 1}}
    one = content_hash(write_output(tmp_path / "one", rows, 1, report))
    # Other part files, another row order, floats off in the last bits, keys in another order.
    shuffled = rows.iloc[[3, 1, 0, 2]].copy()
    shuffled["mean"] = shuffled["mean"] * (1 + 1e-15)
    two = content_hash(
        write_output(tmp_path / "two", shuffled, 2, {"split": {"test": 1, "train": 3}, "rows": 4})
    )
    assert one == two
    changed = rows.copy()
    changed.loc[1, "pixels"] = bytes([9] * 8)
    assert content_hash(write_output(tmp_path / "three", changed, 1, report)) != one
    assert content_hash(write_output(tmp_path / "four", rows, 1, {**report, "rows": 5})) != one
