"""Real daily OHLCV: Microsoft 1986-2017 as shipped (MIT) inside ``pmdarima``, read offline.

Landed in the same Yahoo-style CSV layout ingest already reads (``Date,Open,High,Low,Close,Volume``),
so real data takes exactly the synthetic data's path through ingest, Spark and training. A date
range cuts it into batches: train on 1986-1999, then land 2000-2002 (the dot-com crash) as new
data that drifts for real.
"""

from __future__ import annotations

import io
from datetime import date
from typing import TYPE_CHECKING, Any

from model_store.names import validate_name
from tasks.stock_forecast.contract import REQUIRED_CSV_COLUMNS

if TYPE_CHECKING:
    import pandas as pd

    from flywheel.settings import FlywheelSettings

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


def land_msft(
    settings: FlywheelSettings, since: date | None = None, until: date | None = None, batch: str | None = None
) -> dict[str, Any]:
    """Write the range as ``s3://RAW_BUCKET/RAW_PREFIX/BATCH/MSFT.csv``; what was written."""
    from model_store.backends.s3 import s3_client

    frame = msft_daily(since, until)
    first, last = str(frame["Date"].iloc[0]), str(frame["Date"].iloc[-1])
    batch_name = validate_name(batch or f"msft-{first}-{last}", "batch name")
    key = f"{settings.raw_prefix}{batch_name}/{SYMBOL}.csv"
    buffer = io.StringIO()
    frame.to_csv(buffer, index=False)
    s3_client(settings).put_object(Bucket=settings.raw_bucket, Key=key, Body=buffer.getvalue().encode())
    return {
        "bucket": settings.raw_bucket,
        "key": key,
        "rows": len(frame),
        "first_day": first,
        "last_day": last,
    }
