"""Windowing for scoring: every window of every symbol, keyed by the newest day's date."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tasks.stock_forecast.contract import FEATURE_COLUMNS, WINDOW
from tasks.stock_forecast.dataset import windows_by_symbol


def frame(symbol: str, days: int, offset: float) -> pd.DataFrame:
    dates = pd.date_range("2024-01-01", periods=days, freq="D")
    values = {name: offset + np.arange(days, dtype=float) for name in FEATURE_COLUMNS}
    return pd.DataFrame({"symbol": symbol, "date": dates, **values})


def test_windows_never_cross_symbols_and_skip_short_histories() -> None:
    # Shuffled rows: the function orders by symbol and date itself.
    features = pd.concat([frame("BBB", WINDOW + 2, 1000.0), frame("AAA", WINDOW, 0.0), frame("CCC", 3, 0.0)])
    keys, windows = windows_by_symbol(features.sample(frac=1.0, random_state=1))
    assert windows.shape == (1 + 3, WINDOW, len(FEATURE_COLUMNS))
    assert list(keys["symbol"]) == ["AAA", "BBB", "BBB", "BBB"]
    assert keys["date"].iloc[0] == pd.Timestamp("2024-01-01") + pd.Timedelta(days=WINDOW - 1)
    # AAA's only window ends on its last day; BBB's windows hold only BBB's values, oldest first.
    assert windows[0, -1, 0] == WINDOW - 1
    assert windows[1, 0, 0] == 1000.0 and windows[3, -1, 0] == 1000.0 + WINDOW + 1
    with pytest.raises(ValueError, match="complete features"):
        windows_by_symbol(frame("CCC", 3, 0.0))
