"""``flywheel bench ...``: side-by-side measurements, recorded in docs/benchmarks.md."""

from __future__ import annotations

import statistics
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from flywheel.cli.output import JSON_OPTION, console, emit
from flywheel.settings import FlywheelSettings

bench_app = typer.Typer(
    help="Benchmarks that compare alternatives side by side in one run.", no_args_is_help=True
)


@bench_app.command()
def preprocess(
    ctx: typer.Context,
    rows: int = typer.Option(1_000_000, "--rows", min=10_000, help="Rows of OHLCV data (symbols x days)."),
    days: int = typer.Option(2500, "--days", min=100, help="Trading days per symbol."),
    repeats: int = typer.Option(3, "--repeats", min=1, help="Timed runs of each, after one warm-up run."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Spark preprocessing (warm session) next to a pandas baseline, on the same generated rows."""
    from loadtests.preprocess_baseline import pandas_features
    from training.preprocess import run_preprocess
    from training.spark import build_spark_session
    from training.synthetic import generate

    settings: FlywheelSettings = ctx.obj
    symbols = max(1, rows // days)
    with tempfile.TemporaryDirectory(prefix="flywheel-bench-") as scratch:
        raw = Path(scratch) / "raw"
        raw.mkdir()
        with console.status(f"generating {symbols * days:,} rows ({symbols} symbols x {days} days)"):
            for symbol, frame in generate(symbols, date(2010, 1, 4), days, drift=False, seed=1).items():
                frame.to_csv(raw / f"{symbol}.csv", index=False)
        with console.status("starting Spark"):
            started = time.perf_counter()
            spark = build_spark_session(
                master=settings.spark_master, driver_memory=settings.spark_driver_memory
            )
            session_start_s = time.perf_counter() - started
        spark.sparkContext.setLogLevel("ERROR")

        def timed(label: str, work: object) -> list[float]:
            samples = []
            for attempt in range(repeats + 1):
                with console.status(f"{label}: run {attempt + 1} of {repeats + 1} (the first warms up)"):
                    began = time.perf_counter()
                    work()  # type: ignore[operator]
                    if attempt:
                        samples.append(time.perf_counter() - began)
            return samples

        spark_samples = timed("Spark", lambda: run_preprocess(spark, raw, Path(scratch) / "out"))
        pandas_samples = timed("pandas", lambda: pandas_features(raw))
        spark.stop()
    result: dict[str, Any] = {
        "rows": symbols * days,
        "symbols": symbols,
        "repeats": repeats,
        "spark_master": settings.spark_master,
        "spark_session_start_s": round(session_start_s, 2),
        "spark_full_job_s": {"median": round(statistics.median(spark_samples), 2), "samples": spark_samples},
        "pandas_features_only_s": {
            "median": round(statistics.median(pandas_samples), 2),
            "samples": pandas_samples,
        },
    }

    def render(data: dict[str, Any]) -> None:
        table = Table(title=f"Preprocessing {data['rows']:,} rows, median of {repeats} warm runs")
        table.add_column("engine")
        table.add_column("what it does")
        table.add_column("seconds", justify="right")
        full_job = "parse, quarantine, features, split, fit, profile, Parquet"
        table.add_row(f"Spark {data['spark_master']}", full_job, str(data["spark_full_job_s"]["median"]))
        table.add_row(
            "pandas", "read CSVs, features and target only", str(data["pandas_features_only_s"]["median"])
        )
        console.print(table)
        console.print(f"Spark session start (not included): {data['spark_session_start_s']} s")

    emit(result, as_json, render)
