"""From the preprocessed Parquet to model-ready windows: [n, WINDOW, features] -> next-day return."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from tasks.base import Split
from tasks.stock_forecast.contract import FEATURE_COLUMNS, TARGET_COLUMN, WINDOW

SPLITS = ("train", "validation", "test")


def load_features(parquet_dir: Path) -> pd.DataFrame:
    frame = pd.read_parquet(parquet_dir)
    return frame.sort_values(["symbol", "date"]).reset_index(drop=True)


def make_windows(frame: pd.DataFrame) -> dict[str, Split]:
    """Features float32 [n, WINDOW, features], targets [n]. Windows never cross symbols; a window
    belongs to the split of its last (prediction) day."""
    pieces: dict[str, tuple[list[np.ndarray], list[np.ndarray]]] = {split: ([], []) for split in SPLITS}
    for _, rows in frame.groupby("symbol", sort=True):
        if len(rows) < WINDOW:
            continue
        values = rows[list(FEATURE_COLUMNS)].to_numpy(dtype=np.float32)
        windows = np.lib.stride_tricks.sliding_window_view(values, WINDOW, axis=0).transpose(0, 2, 1)
        targets = rows[TARGET_COLUMN].to_numpy(dtype=np.float32)[WINDOW - 1 :]
        splits = rows["split"].to_numpy()[WINDOW - 1 :]
        for split in SPLITS:
            mask = splits == split
            pieces[split][0].append(windows[mask])
            pieces[split][1].append(targets[mask])
    result = {}
    for split, (features, targets) in pieces.items():
        if not features or sum(len(t) for t in targets) == 0:
            raise ValueError(f"the {split} split has no complete {WINDOW}-day window")
        result[split] = Split(np.concatenate(features), np.concatenate(targets))
    return result


def windows_by_symbol(features: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray]:
    """Every window of every symbol, no split: (symbol and date of each window's newest day, windows).

    For scoring and replaying data the model has not been trained on; ``features`` needs
    ``symbol``, ``date`` and the feature columns.
    """
    keys, windows = [], []
    for symbol, rows in features.sort_values(["symbol", "date"]).groupby("symbol", sort=True):
        if len(rows) < WINDOW:
            continue
        values = rows[list(FEATURE_COLUMNS)].to_numpy(dtype=np.float32)
        windows.append(np.lib.stride_tricks.sliding_window_view(values, WINDOW, axis=0).transpose(0, 2, 1))
        keys.append(pd.DataFrame({"symbol": symbol, "date": rows["date"].to_numpy()[WINDOW - 1 :]}))
    if not windows:
        raise ValueError(f"no symbol has {WINDOW} days of complete features")
    return pd.concat(keys, ignore_index=True), np.concatenate(windows)


def normalisation_arrays(normalisation: dict[str, dict[str, float]]) -> tuple[np.ndarray, np.ndarray]:
    mean = np.array([normalisation[c]["mean"] for c in FEATURE_COLUMNS], dtype=np.float32)
    std = np.array([normalisation[c]["std"] for c in FEATURE_COLUMNS], dtype=np.float32)
    return mean, std
