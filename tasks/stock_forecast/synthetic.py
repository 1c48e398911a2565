"""Seeded synthetic OHLCV data with a learnable, switchable signal.

Daily returns follow a regime-dependent AR(1): ``r_t = mean + ar * r_{t-1} + volatility * e_t``.
In the base regime the coefficient is positive (momentum), so yesterday's return predicts
today's and a model beats the zero-return baseline. ``--drift`` switches to a mean-reverting,
more volatile, higher-volume regime: a model trained before the change predicts the wrong sign
and measurably degrades; a model retrained after it recovers.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class Regime:
    ar_coefficient: float
    volatility: float
    mean_return: float
    volume_level: float


BASE_REGIME = Regime(ar_coefficient=0.45, volatility=0.012, mean_return=0.0003, volume_level=2_000_000)
DRIFTED_REGIME = Regime(ar_coefficient=-0.40, volatility=0.022, mean_return=-0.0002, volume_level=6_000_000)
DEFAULT_SYMBOLS = ("ACME", "BOLT", "CRUX", "DYNA", "EPIC", "FLUX", "GLOW", "HALO")


def generate_symbol(
    symbol: str, start: date, days: int, regime: Regime, seed: int, start_price: float = 100.0
) -> pd.DataFrame:
    """One symbol's history as a Yahoo-style frame: Date, Open, High, Low, Close, Adj Close, Volume."""
    # The symbol joins the seed so symbols differ but each stays reproducible on its own.
    rng = np.random.default_rng([seed, *symbol.encode()])
    shocks = rng.standard_normal(days)
    returns = np.empty(days)
    previous = 0.0
    for index in range(days):
        previous = regime.mean_return + regime.ar_coefficient * previous + regime.volatility * shocks[index]
        returns[index] = previous
    close = start_price * np.cumprod(1.0 + returns)
    previous_close = np.concatenate([[start_price], close[:-1]])
    open_ = previous_close * (1.0 + rng.normal(0.0, regime.volatility / 4, days))
    high = np.maximum(open_, close) * (1.0 + np.abs(rng.normal(0.0, regime.volatility / 2, days)))
    low = np.minimum(open_, close) * (1.0 - np.abs(rng.normal(0.0, regime.volatility / 2, days)))
    volume = regime.volume_level * np.exp(rng.normal(0.0, 0.25, days)) * (1.0 + 20.0 * np.abs(returns))
    dates = pd.bdate_range(start=start, periods=days)
    return pd.DataFrame(
        {
            "Date": dates.strftime("%Y-%m-%d"),
            "Open": open_.round(4),
            "High": high.round(4),
            "Low": low.round(4),
            "Close": close.round(4),
            "Adj Close": close.round(4),
            "Volume": volume.round().astype(np.int64),
        }
    )


def generate(
    symbols: int | list[str], start: date, days: int, drift: bool, seed: int
) -> dict[str, pd.DataFrame]:
    """Frames for several symbols; ``drift`` selects the drifted regime."""
    names = list(DEFAULT_SYMBOLS[:symbols]) if isinstance(symbols, int) else symbols
    if isinstance(symbols, int) and symbols > len(DEFAULT_SYMBOLS):
        names += [f"SYM{index:03d}" for index in range(len(DEFAULT_SYMBOLS), symbols)]
    regime = DRIFTED_REGIME if drift else BASE_REGIME
    return {name: generate_symbol(name, start, days, regime, seed) for name in names}


def regime_windows(symbols: int, start: date, days: int, drift: bool, seed: int = 7) -> np.ndarray:
    """Model inputs from freshly generated synthetic data of one regime (base or drifted).

    With the arguments of a ``flywheel data generate`` call, these are the windows of the data it
    landed: traffic that looks like the new regime, the way live traffic would after a real shift.
    """
    from tasks.stock_forecast.dataset import windows_by_symbol
    from tasks.stock_forecast.pandas_features import features_of_frames

    frames = generate(symbols, start, days, drift, seed)
    return windows_by_symbol(features_of_frames(frames).rename(columns={"Date": "date"}))[1]
