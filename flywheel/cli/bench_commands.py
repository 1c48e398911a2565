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


@bench_app.command()
def backends(
    ctx: typer.Context,
    reference: str = typer.Argument("stock-forecaster:latest", help="NAME[:VERSION] to load and measure."),
    requests: int = typer.Option(300, "--requests", min=20, help="Sequential single requests per server."),
    concurrent_requests: int = typer.Option(
        1200, "--concurrent-requests", min=50, help="Requests at concurrency 8."
    ),
    concurrency: int = typer.Option(8, "--concurrency", min=1, max=64),
    as_json: bool = JSON_OPTION,
) -> None:
    """Per server, in one run: single-request p50/p99 latency and throughput at concurrency 8 (1 row each).

    Goes through each server's Flywheel adapter and native protocol, on a running stack (`flywheel up`).
    """
    import asyncio

    import numpy as np

    from flywheel.cli.backends_commands import sample_inputs
    from flywheel.cli.models_commands import open_store, split_reference
    from serving.backends.factory import BACKEND_KINDS, build_backend

    settings: FlywheelSettings = ctx.obj
    name, version_reference = split_reference(reference)
    store = open_store(settings)
    version = store.resolve(name, version_reference)
    inputs = sample_inputs(store, name, version, rows=1, seed=0)

    async def measure(kind: str) -> dict[str, Any]:
        adapter = build_backend(kind, settings, store)
        try:
            await adapter.load(name, version)
            for _ in range(20):  # warm-up: connections, worker threads, lazy imports
                await adapter.infer(name, version, inputs)
            latencies = []
            for _ in range(requests):
                began = time.perf_counter()
                await adapter.infer(name, version, inputs)
                latencies.append(time.perf_counter() - began)
            remaining = concurrent_requests

            async def worker() -> None:
                nonlocal remaining
                while remaining > 0:
                    remaining -= 1
                    await adapter.infer(name, version, inputs)

            began = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(concurrency)))
            elapsed = time.perf_counter() - began
        finally:
            await adapter.aclose()
        milliseconds = np.asarray(latencies) * 1000
        return {
            "p50_ms": round(float(np.percentile(milliseconds, 50)), 3),
            "p99_ms": round(float(np.percentile(milliseconds, 99)), 3),
            "throughput_rps": round(concurrent_requests / elapsed, 1),
        }

    results: dict[str, Any] = {}
    for kind in BACKEND_KINDS:
        with console.status(f"measuring {kind}"):
            results[kind] = asyncio.run(measure(kind))
    data = {"model": name, "version": version, "concurrency": concurrency, "servers": results}

    def render(data: dict[str, Any]) -> None:
        table = Table(title=f"{name}:{version}, one 10x8 window per request")
        for column in ("server", "p50 ms", "p99 ms", f"req/s at concurrency {concurrency}"):
            table.add_column(column, justify="right" if column != "server" else "left")
        for kind, row in data["servers"].items():
            table.add_row(kind, str(row["p50_ms"]), str(row["p99_ms"]), str(row["throughput_rps"]))
        console.print(table)

    emit(data, as_json, render)
