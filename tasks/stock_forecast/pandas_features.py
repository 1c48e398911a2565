"""The Spark job's features in single-process pandas: the same per-symbol features and target.

Two users: the preprocessing benchmark's baseline (the do-it-yourself alternative to Spark; no
quarantine, split or profile, which is the bulk of the work) and synthetic traffic that should
look like a given data regime (``monitoring.traffic.regime_windows``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from tasks.stock_forecast.contract import TARGET_COLUMN


def pandas_features(input_dir: Path) -> pd.DataFrame:
    """Features of every CSV below ``input_dir`` (the file name is the symbol)."""
    return features_of_frames({path.stem: pd.read_csv(path) for path in sorted(input_dir.rglob("*.csv"))})


def features_of_frames(frames: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Features of Yahoo-style frames (Date, Open, High, Low, Close, Volume), keyed by symbol."""
    data = pd.concat(
        [frame.assign(symbol=symbol) for symbol, frame in frames.items()], ignore_index=True
    ).sort_values(["symbol", "Date"])
    grouped = data.groupby("symbol", sort=False)
    data["return_1d"] = grouped["Close"].pct_change()
    data["log_return_1d"] = np.log(data["Close"] / grouped["Close"].shift(1))
    returns = data.groupby("symbol", sort=False)["return_1d"]
    data["return_mean_5d"] = returns.transform(lambda s: s.rolling(5, min_periods=1).mean())
    data["return_mean_20d"] = returns.transform(lambda s: s.rolling(20, min_periods=1).mean())
    data["volatility_5d"] = returns.transform(lambda s: s.rolling(5, min_periods=2).std())
    data["volatility_20d"] = returns.transform(lambda s: s.rolling(20, min_periods=2).std())
    volume = grouped["Volume"]
    mean_20 = volume.transform(lambda s: s.rolling(20, min_periods=1).mean())
    std_20 = volume.transform(lambda s: s.rolling(20, min_periods=2).std())
    data["volume_zscore_20d"] = (data["Volume"] - mean_20) / (std_20 + 1e-9)
    data["high_low_range"] = (data["High"] - data["Low"]) / data["Close"]
    data[TARGET_COLUMN] = returns.shift(-1)
    data["row_number"] = grouped.cumcount() + 1
    return data[(data["row_number"] > 21) & data[TARGET_COLUMN].notna()].dropna()
