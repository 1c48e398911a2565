"""Spark preprocessing: parse and clean raw OHLCV CSVs, engineer features, split, fit, profile.

Stages, all in one Spark job (``training/jobs/preprocess_job.py --task stock_forecast`` is the
spark-submit entry):

1. **Parse and clean.** Every column is read as a string with a corrupt-record column, then cast.
   Rows that are malformed, unparsable or inconsistent go to ``quarantine/`` with a reason and
   their source file; they are counted, never fatal. Duplicate (symbol, date) rows keep one.
2. **Features** per symbol in date order (window functions): simple and log returns, 5/20-day
   rolling means and volatility of returns, 20-day volume z-score, the day's high-low range.
3. **Target**: the next day's simple return.
4. **Split** by time: the first 70 % of dates train, the next 15 % validate, the last 15 % test.
5. **Normalisation** statistics are fitted on train rows only.
6. **Profile** for drift: per-feature reference quantile bin edges and frequencies, from train.
7. **Parquet** out.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tasks.base import PreprocessError, RawDataError
from tasks.stock_forecast.contract import FEATURE_COLUMNS, REQUIRED_CSV_COLUMNS, TARGET_COLUMN, WINDOW
from training.profiles import spark_feature_profile

TRAIN_FRACTION = 0.70
VALIDATION_FRACTION = 0.15
PROFILE_BINS = 10
_CANONICAL = ("Date", "Open", "High", "Low", "Close", "Adj Close", "Volume")


@dataclass(frozen=True)
class PreprocessReport:
    rows_in: int
    rows_valid: int
    rows_quarantined: int
    quarantine_reasons: dict[str, int]
    symbols: list[str]
    split_rows: dict[str, int]
    split_cutoffs: dict[str, str]

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def check_csv_header(path: Path, source: str) -> None:
    """Refuse files whose header lacks a required column, or that hold no data row."""
    with path.open("r", encoding="utf-8", errors="replace") as handle:
        header = handle.readline().strip()
        first_row = handle.readline().strip()
    if not header:
        raise RawDataError(f"{source}: the file is empty")
    columns = [column.strip() for column in header.split(",")]
    missing = [column for column in REQUIRED_CSV_COLUMNS if column not in columns]
    if missing:
        raise RawDataError(
            f"{source}: schema mismatch: missing column(s) {', '.join(missing)}; "
            f"expected a Yahoo-style header {','.join(REQUIRED_CSV_COLUMNS)} (Adj Close optional); "
            f"got {header!r}"
        )
    if not first_row:
        raise RawDataError(f"{source}: the file has a header but no data rows")


def _csv_files(input_dir: Path) -> list[Path]:
    files = sorted(path for path in input_dir.rglob("*") if path.is_file() and path.suffix.lower() == ".csv")
    if not files:
        raise PreprocessError(f"{input_dir}: the snapshot holds no CSV files")
    for path in files:
        check_csv_header(path, str(path.relative_to(input_dir)))
    return files


def _read_raw(spark: Any, input_dir: Path) -> Any:
    """Every CSV line as canonical string columns, with its source file, symbol and field count.

    Files may order their columns differently or omit "Adj Close". Lines are read as text and
    parsed with ``from_csv`` against their own file's header, so the number of fields on each line
    is known: a line with too many or too few is malformed, whatever its values.
    """
    from pyspark.sql import functions as F

    layouts: dict[tuple[str, ...], list[str]] = {}
    for path in _csv_files(input_dir):
        with path.open("r", encoding="utf-8", errors="replace") as handle:
            header = tuple(column.strip() for column in handle.readline().strip().split(","))
        layouts.setdefault(header, []).append(str(path))
    frames = []
    for header, paths in layouts.items():
        positional = ", ".join(f"c{index} STRING" for index in range(len(header)))
        lines = (
            spark.read.text(paths)
            .withColumn("source_file", F.input_file_name())
            .where(F.trim(F.col("value")) != "")
            .where(F.regexp_replace(F.col("value"), r"\s", "") != ",".join(header).replace(" ", ""))
        )
        parsed = lines.select(
            "source_file",
            F.col("value").alias("raw_line"),
            F.size(F.split(F.col("value"), ",", -1)).alias("field_count"),
            F.lit(len(header)).alias("expected_fields"),
            F.from_csv(F.col("value"), positional).alias("row"),
        )
        position = {name: f"row.c{index}" for index, name in enumerate(header)}
        frames.append(
            parsed.select(
                "source_file",
                "raw_line",
                "field_count",
                "expected_fields",
                *[
                    F.col(position[name]).alias(name)
                    if name in position
                    else F.lit(None).cast("string").alias(name)
                    for name in _CANONICAL
                ],
            )
        )
    raw = frames[0]
    for frame in frames[1:]:
        raw = raw.unionByName(frame)
    return raw.withColumn("symbol", F.regexp_extract(F.col("source_file"), r"([^/]+)\.[cC][sS][vV]$", 1))


def parse_and_clean(spark: Any, input_dir: Path) -> tuple[Any, Any]:
    """(clean rows, quarantined rows with a ``reason``) from every CSV below ``input_dir``."""
    from pyspark.sql import functions as F

    typed = _read_raw(spark, input_dir).select(
        "symbol",
        "source_file",
        "raw_line",
        (F.col("field_count") != F.col("expected_fields")).alias("_wrong_field_count"),
        # try_* variants: under ANSI mode a bad value must become NULL (then quarantine), not an error.
        F.try_to_date(F.trim(F.col("Date")), "yyyy-MM-dd").alias("date"),
        *[
            F.trim(F.col(name)).try_cast("double").alias(name.lower())
            for name in ("Open", "High", "Low", "Close")
        ],
        F.trim(F.col("Volume")).try_cast("double").alias("volume"),
    )
    reason = (
        F.when(F.col("_wrong_field_count"), F.lit("malformed row"))
        .when(F.col("date").isNull(), F.lit("unparsable date"))
        .when(
            F.col("open").isNull() | F.col("high").isNull() | F.col("low").isNull() | F.col("close").isNull(),
            F.lit("non-numeric price"),
        )
        .when(F.col("volume").isNull(), F.lit("non-numeric volume"))
        .when((F.col("close") <= 0) | (F.col("open") <= 0) | (F.col("low") <= 0), F.lit("non-positive price"))
        .when(F.col("high") < F.col("low"), F.lit("high below low"))
        .when(F.col("volume") < 0, F.lit("negative volume"))
    )
    checked = typed.withColumn("reason", reason).cache()
    quarantined = checked.where(F.col("reason").isNotNull())
    clean = (
        checked.where(F.col("reason").isNull())
        .drop("reason", "raw_line", "_wrong_field_count")
        .dropDuplicates(["symbol", "date"])
    )
    return clean, quarantined


def engineer_features(clean: Any, require_target: bool = True) -> Any:
    """Per-symbol features in date order, plus the next-day target; rows lacking history are dropped.

    ``require_target=False`` keeps the newest day (no next day yet), which scoring wants.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    by_symbol = Window.partitionBy("symbol").orderBy("date")
    last_5 = by_symbol.rowsBetween(-4, 0)
    last_20 = by_symbol.rowsBetween(-19, 0)
    frame = (
        clean.withColumn("row_number", F.row_number().over(by_symbol))
        .withColumn("return_1d", F.col("close") / F.lag("close").over(by_symbol) - 1.0)
        .withColumn("log_return_1d", F.log(F.col("close") / F.lag("close").over(by_symbol)))
        .withColumn("return_mean_5d", F.avg("return_1d").over(last_5))
        .withColumn("return_mean_20d", F.avg("return_1d").over(last_20))
        .withColumn("volatility_5d", F.stddev_samp("return_1d").over(last_5))
        .withColumn("volatility_20d", F.stddev_samp("return_1d").over(last_20))
        .withColumn(
            "volume_zscore_20d",
            (F.col("volume") - F.avg("volume").over(last_20))
            / (F.stddev_samp("volume").over(last_20) + 1e-9),
        )
        .withColumn("high_low_range", (F.col("high") - F.col("low")) / F.col("close"))
        .withColumn(TARGET_COLUMN, F.lead("return_1d").over(by_symbol))
    )
    # The 20-day windows need 21 closes; earlier rows have partial statistics and are dropped.
    complete = frame.where(F.col("row_number") > 21)
    if require_target:
        complete = complete.where(F.col(TARGET_COLUMN).isNotNull())
    return complete.dropna(subset=list(FEATURE_COLUMNS))


def time_split(features: Any) -> tuple[Any, dict[str, str]]:
    """Label rows train/validation/test by date cut-offs shared by every symbol."""
    from pyspark.sql import functions as F

    dates = sorted(row["date"] for row in features.select("date").distinct().collect())
    if len(dates) < 3 * WINDOW:
        raise PreprocessError(
            f"only {len(dates)} distinct trading days remain after cleaning and feature warm-up; "
            f"at least {3 * WINDOW} are needed for a train/validation/test split"
        )
    validation_start = dates[int(len(dates) * TRAIN_FRACTION)]
    test_start = dates[int(len(dates) * (TRAIN_FRACTION + VALIDATION_FRACTION))]
    split = (
        F.when(F.col("date") < F.lit(validation_start), F.lit("train"))
        .when(F.col("date") < F.lit(test_start), F.lit("validation"))
        .otherwise(F.lit("test"))
    )
    cutoffs = {"validation_start": validation_start.isoformat(), "test_start": test_start.isoformat()}
    return features.withColumn("split", split), cutoffs


def fit_normalisation(train: Any) -> dict[str, dict[str, float]]:
    from pyspark.sql import functions as F

    aggregates = []
    for column in FEATURE_COLUMNS:
        aggregates += [F.avg(column).alias(f"{column}__mean"), F.stddev_pop(column).alias(f"{column}__std")]
    row = train.agg(*aggregates).first()
    return {
        column: {"mean": float(row[f"{column}__mean"]), "std": max(float(row[f"{column}__std"]), 1e-8)}
        for column in FEATURE_COLUMNS
    }


def run_preprocess(spark: Any, input_dir: Path, output_dir: Path) -> PreprocessReport:
    """The whole job: CSVs under ``input_dir`` -> Parquet, quarantine and JSON under ``output_dir``."""
    from pyspark.sql import functions as F

    output_dir.mkdir(parents=True, exist_ok=True)
    clean, quarantined = parse_and_clean(spark, input_dir)
    reasons = {row["reason"]: row["count"] for row in quarantined.groupBy("reason").count().collect()}
    rows_quarantined = sum(reasons.values())
    rows_valid = clean.count()
    if rows_valid == 0:
        per_file = (
            quarantined.groupBy("source_file", "reason").count().orderBy(F.desc("count")).limit(5).collect()
        )
        detail = "; ".join(f"{row['source_file']}: {row['count']} rows, {row['reason']}" for row in per_file)
        raise PreprocessError(
            f"every row was quarantined ({rows_quarantined} rows): {detail or 'no rows at all'}"
        )
    quarantined.select("source_file", "reason", "raw_line", "symbol", "date").coalesce(1).write.mode(
        "overwrite"
    ).parquet(str(output_dir / "quarantine"))

    features, cutoffs = time_split(engineer_features(clean))
    features = features.cache()
    train = features.where(F.col("split") == "train")
    normalisation = fit_normalisation(train)
    profile = spark_feature_profile(train, FEATURE_COLUMNS, PROFILE_BINS)
    columns = ["symbol", "date", *FEATURE_COLUMNS, TARGET_COLUMN, "split"]
    features.select(*columns).orderBy("symbol", "date").coalesce(1).write.mode("overwrite").parquet(
        str(output_dir / "features")
    )
    split_rows = {row["split"]: row["count"] for row in features.groupBy("split").count().collect()}
    symbols = sorted(row["symbol"] for row in features.select("symbol").distinct().collect())
    (output_dir / "normalization.json").write_text(json.dumps(normalisation, indent=2))
    (output_dir / "profile.json").write_text(
        json.dumps(
            {"input_view": "last_step", "window": WINDOW, "bins": PROFILE_BINS, "features": profile}, indent=2
        )
    )
    report = PreprocessReport(
        rows_in=rows_valid + rows_quarantined,
        rows_valid=rows_valid,
        rows_quarantined=rows_quarantined,
        quarantine_reasons=reasons,
        symbols=symbols,
        split_rows=split_rows,
        split_cutoffs=cutoffs,
    )
    (output_dir / "report.json").write_text(json.dumps(report.as_dict(), indent=2))
    features.unpersist()
    return report
