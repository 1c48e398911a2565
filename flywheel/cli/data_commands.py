"""``flywheel data ...``: raw data in the S3 landing zone."""

from __future__ import annotations

import io
from datetime import date

import typer
from botocore.exceptions import BotoCoreError, ClientError

from flywheel.cli.output import JSON_OPTION, console, emit, fail
from flywheel.settings import FlywheelSettings


def _landing_error(settings: FlywheelSettings, error: Exception) -> str:
    where = f"s3://{settings.raw_bucket} at {settings.s3_url}"
    return f"cannot write to {where}: {error} (is `flywheel up` running?)"


data_app = typer.Typer(help="Generate and inspect raw data in the S3 landing zone.", no_args_is_help=True)


@data_app.command()
def generate(
    ctx: typer.Context,
    symbols: int = typer.Option(5, "--symbols", min=1, max=500, help="How many symbols (one CSV each)."),
    days: int = typer.Option(750, "--days", min=60, help="Trading days per symbol."),
    start: str = typer.Option("2021-01-04", "--start", help="First trading day, YYYY-MM-DD."),
    seed: int = typer.Option(7, "--seed", help="Random seed: the same seed writes the same bytes."),
    drift: bool = typer.Option(
        False, "--drift", help="Use the drifted regime (sign-flipped signal, more volatility)."
    ),
    batch: str = typer.Option(
        None, "--batch", help="Sub-prefix for this batch; default derives from the options."
    ),
    as_json: bool = JSON_OPTION,
) -> None:
    """Write seeded synthetic Yahoo-style OHLCV CSVs to s3://RAW_BUCKET/RAW_PREFIX/BATCH/SYMBOL.csv.

    Returns follow an AR(1) whose coefficient depends on the regime, so a model can beat the
    zero-return baseline; --drift switches the regime so a model trained before degrades after.
    """
    from model_store.backends.s3 import s3_client
    from model_store.names import validate_name
    from tasks.stock_forecast.synthetic import generate as generate_frames

    settings: FlywheelSettings = ctx.obj
    try:
        first_day = date.fromisoformat(start)
    except ValueError:
        fail(f"--start must be YYYY-MM-DD, got {start!r}", as_json, exit_code=2)
    batch_name = batch or f"{'drift' if drift else 'base'}-{first_day.isoformat()}-d{days}-s{seed}"
    validate_name(batch_name, "batch name")
    client = s3_client(settings)
    written = []
    try:
        for symbol, frame in generate_frames(symbols, first_day, days, drift, seed).items():
            key = f"{settings.raw_prefix}{batch_name}/{symbol}.csv"
            buffer = io.StringIO()
            frame.to_csv(buffer, index=False)
            client.put_object(Bucket=settings.raw_bucket, Key=key, Body=buffer.getvalue().encode())
            written.append({"key": key, "rows": len(frame)})
    except (BotoCoreError, ClientError) as error:
        fail(_landing_error(settings, error), as_json)
    emit(
        {"bucket": settings.raw_bucket, "batch": batch_name, "drift": drift, "objects": written},
        as_json,
        lambda data: console.print(
            f"wrote {len(data['objects'])} CSVs to s3://{data['bucket']}/{settings.raw_prefix}{data['batch']}/"
        ),
    )


@data_app.command()
def msft(
    ctx: typer.Context,
    since: str = typer.Option(None, "--since", help="First day to land, YYYY-MM-DD (default: 1986-03-13)."),
    until: str = typer.Option(None, "--until", help="Last day to land, YYYY-MM-DD (default: 2017-11-10)."),
    batch: str = typer.Option(None, "--batch", help="Sub-prefix for this batch; default: msft-SINCE-UNTIL."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Land real daily OHLCV (Microsoft 1986-2017, shipped with pmdarima) as s3://RAW_BUCKET/RAW_PREFIX/BATCH/MSFT.csv.

    The same Yahoo-style CSV ingest reads, so it trains like the synthetic data. For a real drift
    story: land --until 1999-12-31 and train, then land --since 2000-01-01 --until 2002-12-31.
    """
    from tasks.stock_forecast.real_data import land_msft

    settings: FlywheelSettings = ctx.obj
    try:
        first = date.fromisoformat(since) if since else None
        last = date.fromisoformat(until) if until else None
    except ValueError as error:
        fail(f"--since/--until must be YYYY-MM-DD: {error}", as_json, exit_code=2)
    try:
        data = land_msft(settings, first, last, batch)
    except ValueError as error:
        fail(str(error), as_json, exit_code=2)
    except (BotoCoreError, ClientError) as error:
        fail(_landing_error(settings, error), as_json)
    emit(
        data,
        as_json,
        lambda data: console.print(
            f"wrote {data['rows']} trading days ({data['first_day']} to {data['last_day']}) "
            f"to s3://{data['bucket']}/{data['key']}"
        ),
    )


@data_app.command("fashion")
def fashion(
    ctx: typer.Context,
    batch: str = typer.Option(..., "--batch", help="Name of the batch object (BATCH.parquet)."),
    source: str = typer.Option("train", "--source", help="Which file of the package: train or test."),
    start: int = typer.Option(0, "--start", min=0, help="First image index in the file."),
    count: int = typer.Option(6000, "--count", min=1, max=60_000, help="How many images."),
    transform: str = typer.Option(
        "none", "--transform", help="Drift to inject into the images: none, invert, rotate or noise."
    ),
    classes: str = typer.Option(
        None, "--classes", help="Class-prior shift: only these class indices, e.g. 0,2,4,6 (default all)."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the noise transform."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Land labelled Fashion-MNIST images as s3://RAW_BUCKET/RAW_PREFIX/fashion/BATCH.parquet.

    Images come from the Debian package dataset-fashion-mnist (installed by `make setup`), one row
    per image: image_id, label, pixels (784 bytes). Ingest takes each batch once. For a drift
    story: land --count 12000 and train, then land --start 12000 --transform invert.
    """
    from tasks.fashion_mnist.data import TRANSFORMS, DatasetMissingError, land_batch

    settings: FlywheelSettings = ctx.obj
    if source not in ("train", "test"):
        fail(f"--source must be train or test, got {source!r}", as_json, exit_code=2)
    if transform not in TRANSFORMS:
        fail(f"--transform must be one of {', '.join(TRANSFORMS)}, got {transform!r}", as_json, exit_code=2)
    try:
        chosen = [int(item) for item in classes.split(",")] if classes else None
    except ValueError:
        fail(f"--classes must be class indices separated by commas, got {classes!r}", as_json, exit_code=2)
    try:
        data = land_batch(settings, batch, source, start, count, transform, chosen, seed)  # type: ignore[arg-type]
    except (ValueError, DatasetMissingError) as error:
        fail(str(error), as_json, exit_code=2)
    except (BotoCoreError, ClientError) as error:
        fail(_landing_error(settings, error), as_json)
    emit(
        data,
        as_json,
        lambda data: console.print(f"wrote {data['images']} images ({data['transform']}) to {data['uri']}"),
    )
