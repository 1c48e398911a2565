from __future__ import annotations

from datetime import date

import numpy as np

from tasks.stock_forecast.synthetic import generate


def lag_one_autocorrelation(closes: np.ndarray) -> float:
    returns = np.diff(closes) / closes[:-1]
    return float(np.corrcoef(returns[:-1], returns[1:])[0, 1])


def test_same_seed_same_bytes_and_yahoo_columns() -> None:
    first = generate(3, date(2021, 1, 4), 200, drift=False, seed=5)
    second = generate(3, date(2021, 1, 4), 200, drift=False, seed=5)
    assert list(first) == ["ACME", "BOLT", "CRUX"]
    for symbol in first:
        assert first[symbol].to_csv(index=False) == second[symbol].to_csv(index=False)
    frame = first["ACME"]
    assert list(frame.columns) == ["Date", "Open", "High", "Low", "Close", "Adj Close", "Volume"]
    assert (frame["High"] >= frame[["Open", "Close"]].max(axis=1)).all()
    assert (frame["Low"] <= frame[["Open", "Close"]].min(axis=1)).all()
    assert frame["Date"].iloc[0] == "2021-01-04"


def test_drift_flips_the_learnable_signal() -> None:
    base = generate(4, date(2021, 1, 4), 1500, drift=False, seed=1)
    drifted = generate(4, date(2021, 1, 4), 1500, drift=True, seed=1)
    for symbol in base:
        assert lag_one_autocorrelation(base[symbol]["Close"].to_numpy()) > 0.3
        assert lag_one_autocorrelation(drifted[symbol]["Close"].to_numpy()) < -0.25
        assert drifted[symbol]["Volume"].mean() > 2 * base[symbol]["Volume"].mean()
