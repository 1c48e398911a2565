"""The forecaster's ground truth from later raw data: each day's next-day return, per symbol.

A forecast made from a window ending on day D (entity ``SYMBOL@D``, as the caller sends it in
``x-flywheel-entity``) predicts the simple return from D's close to the next trading day's; once a
batch holding that next day lands, the return is known. Same definition as the training target
(``preprocess.py``: ``lead(return_1d)``), computed with pandas: a labels pass reads a few CSVs.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

_SYMBOL = re.compile(r"([^/]+)\.csv$", re.IGNORECASE)


def next_day_returns(raw_files: dict[str, Path]) -> pd.DataFrame:
    """``entity`` (``SYMBOL@YYYY-MM-DD``) and ``label`` for every day whose next day is known."""
    closes = []
    for key, path in raw_files.items():
        match = _SYMBOL.search(key)
        if match is None:
            continue
        frame = pd.read_csv(path, usecols=["Date", "Close"])
        frame["date"] = pd.to_datetime(
            frame["Date"].astype(str).str.strip(), format="%Y-%m-%d", errors="coerce"
        )
        frame["close"] = pd.to_numeric(frame["Close"], errors="coerce")
        frame["symbol"] = match.group(1)
        closes.append(frame.dropna(subset=["date", "close"])[["symbol", "date", "close"]])
    if not closes:
        return pd.DataFrame({"entity": pd.Series(dtype=str), "label": pd.Series(dtype=float)})
    # A day may appear in several batches (a re-sent file): one close per symbol and day.
    days = pd.concat(closes).drop_duplicates(["symbol", "date"], keep="last").sort_values(["symbol", "date"])
    days["label"] = days.groupby("symbol")["close"].shift(-1) / days["close"] - 1.0
    known = days.dropna(subset=["label"])
    entity = known["symbol"] + "@" + known["date"].dt.strftime("%Y-%m-%d")
    return pd.DataFrame({"entity": entity.to_numpy(), "label": known["label"].to_numpy()})
