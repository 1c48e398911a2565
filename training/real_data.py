"""Real daily OHLCV: Microsoft 1986-2017 as shipped (MIT) inside ``pmdarima``, read offline.

Landed in the same Yahoo-style CSV layout ingest already reads (``Date,Open,High,Low,Close,Volume``),
so real data takes exactly the synthetic data's path through ingest, Spark and training. A date
range cuts it into batches: train on 1986-1999, then land 2000-2002 (the dot-com crash) as new
data that drifts for real.
"""

from __future__ import annotations

from datetime import date
from typing import TYPE_CHECKING

from training.contract import REQUIRED_CSV_COLUMNS

if TYPE_CHECKING:
    import pandas as pd

SYMBOL = "MSFT"
FIRST_DAY, LAST_DAY = date(1986, 3, 13), date(2017, 11, 10)


def msft_daily(since: date | None = None, until: date | None = None) -> pd.DataFrame:
    """Microsoft's daily OHLCV between ``since`` and ``until`` (inclusive), oldest first."""
    from pmdarima.datasets import load_msft

    frame = load_msft()
    dates = frame["Date"].astype(str)
    keep = (dates >= (since or FIRST_DAY).isoformat()) & (dates <= (until or LAST_DAY).isoformat())
    selected = frame.loc[keep, list(REQUIRED_CSV_COLUMNS)].sort_values("Date").reset_index(drop=True)
    if selected.empty:
        raise ValueError(
            f"no {SYMBOL} trading days between {since or FIRST_DAY} and {until or LAST_DAY}; "
            f"the data covers {FIRST_DAY} to {LAST_DAY}"
        )
    return selected
