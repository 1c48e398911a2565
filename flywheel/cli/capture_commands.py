"""``flywheel capture ls | show``: what the gateways captured of the requests they served."""

from __future__ import annotations

from datetime import date
from typing import TYPE_CHECKING, NoReturn

import typer
from botocore.exceptions import BotoCoreError, ClientError
from rich.table import Table
from rich.text import Text

from flywheel.cli.models_commands import open_store
from flywheel.cli.output import JSON_OPTION, console, emit, fail
from flywheel.settings import FlywheelSettings
from model_store import ModelStoreError

if TYPE_CHECKING:
    from model_store.capture import CaptureReader

capture_app = typer.Typer(
    help="Captured inference (a sample of served requests, as Parquet under capture/<model>/<day>/).",
    no_args_is_help=True,
)
SINCE_OPTION = typer.Option(None, "--since", help="First UTC day to include (YYYY-MM-DD).")


def _day(value: str | None) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not a YYYY-MM-DD day", param_hint="--since") from None


def _reader(settings: FlywheelSettings) -> CaptureReader:
    from model_store.capture import CaptureReader  # pyarrow: imported when a command needs it

    return CaptureReader(open_store(settings).storage)


def _fail_reading(settings: FlywheelSettings, error: Exception, as_json: bool) -> NoReturn:
    if isinstance(error, ModelStoreError):
        fail(str(error).strip("'\""), as_json)
    fail(f"S3 at {settings.s3_url} failed: {error} (is `flywheel up` running?)", as_json)


@capture_app.command("ls")
def list_batches(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Model name."),
    since: str = SINCE_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """The capture batches of a model, oldest first, with their request counts."""
    settings: FlywheelSettings = ctx.obj
    try:
        reader = _reader(settings)
        batches = [
            {"key": batch.key, "day": batch.day.isoformat(), "requests": reader.read_batch(batch).num_rows}
            for batch in reader.batches(name, since=_day(since))
        ]
    except (ModelStoreError, BotoCoreError, ClientError) as error:
        _fail_reading(settings, error, as_json)

    def render(data: dict[str, object]) -> None:
        table = Table("day", "batch", "requests")
        for batch in batches:
            table.add_row(batch["day"], str(batch["key"]).rsplit("/", 1)[-1], str(batch["requests"]))
        console.print(table)
        console.print(f"{sum(int(b['requests']) for b in batches)} captured requests of {name}")

    emit({"model": name, "batches": batches}, as_json, render)


@capture_app.command()
def show(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Model name."),
    limit: int = typer.Option(10, "--limit", min=1, help="How many of the newest requests to show."),
    since: str = SINCE_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """The newest captured requests of a model (inputs and outputs only with --json)."""
    settings: FlywheelSettings = ctx.obj
    try:
        table = _reader(settings).read(name, since=_day(since))
    except (ModelStoreError, BotoCoreError, ClientError) as error:
        _fail_reading(settings, error, as_json)
    rows = table.sort_by("served_at").slice(max(0, table.num_rows - limit)).to_pylist()
    for row in rows:
        row["served_at"] = row["served_at"].isoformat()

    def render(data: dict[str, object]) -> None:
        view = Table("served at", "request id", "version", "variant", "entity", "prediction", "confidence")
        for row in rows:
            confidence = "" if row["confidence"] is None else f"{row['confidence']:.3f}"
            prediction = "" if row["prediction"] is None else f"{row['prediction']:.4g}"
            served_at = row["served_at"][:19].replace("T", " ")
            # Ids and entities come from clients: shown as text, never read as rich markup.
            view.add_row(served_at, Text(row["request_id"]), str(row["version"]), row["variant"],
                         Text(row["entity"] or ""), prediction, confidence)  # fmt: skip
        console.print(view)

    emit({"model": name, "total": table.num_rows, "requests": rows}, as_json, render)
