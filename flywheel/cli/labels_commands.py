"""``flywheel labels import | derive | join | quality``: ground truth back to served predictions."""

from __future__ import annotations

from pathlib import Path
from typing import Any, NoReturn

import typer
from botocore.exceptions import BotoCoreError, ClientError
from rich.table import Table

from flywheel.cli.models_commands import open_store
from flywheel.cli.output import JSON_OPTION, console, emit, fail
from flywheel.settings import FlywheelSettings
from model_store import ModelStoreError

labels_app = typer.Typer(
    help=(
        "Ground truth that arrives after the prediction: store labels (labels/<model>/), join them to "
        "captured requests (joined/<model>/) and measure each version's live quality."
    ),
    no_args_is_help=True,
)


def _fail(settings: FlywheelSettings, error: Exception, as_json: bool) -> NoReturn:
    if isinstance(error, BotoCoreError | ClientError):
        fail(f"S3 at {settings.s3_url} failed: {error} (is `flywheel up` running?)", as_json)
    fail(str(error).strip("'\""), as_json)


def _read_table(path: Path) -> Any:
    import pyarrow.csv as pa_csv
    import pyarrow.json as pa_json
    import pyarrow.parquet as pq

    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return pq.read_table(path)
    if suffix == ".csv":
        # Ids and entities stay text even when they look like numbers.
        types = {"request_id": "string", "entity": "string"}
        options = pa_csv.ConvertOptions(column_types=types, strings_can_be_null=True)
        return pa_csv.read_csv(path, convert_options=options)
    if suffix in (".jsonl", ".json"):
        return pa_json.read_json(path)
    raise ValueError(f"{path.name}: labels come as .csv, .parquet or .jsonl (one object per line)")


def _class_count(store: Any, name: str) -> int | None:
    """A classifier's class count from its newest version (labels must be class indices); None for
    a regression or a model with no version yet."""
    from model_store.manifest import OutputKind

    versions = store.list_versions(name)
    if not versions:
        return None
    output = store.get_manifest(name, versions[-1]).output
    return (
        len(output.class_names) if output.kind is OutputKind.CLASSIFICATION and output.class_names else None
    )


@labels_app.command("import")
def import_labels(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Model name."),
    file: Path = typer.Argument(..., exists=True, dir_okay=False, help="CSV, Parquet or JSON-lines file."),
    source: str = typer.Option("cli", "--source", help="Who says so (a labelling tool's name, say)."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Store a file of labels: a `label` column (class index or value) and a `request_id` (the
    x-request-id of the served request) or `entity` (the x-flywheel-entity it was sent with) per
    row; `labelled_at` is optional. The next join matches them to captured requests."""
    from model_store.labels import LabelError, LabelStore, normalise_labels

    settings: FlywheelSettings = ctx.obj
    try:
        store = open_store(settings)
        table = normalise_labels(_read_table(file), source, classes=_class_count(store, name))
        key = LabelStore(store.storage).write(name, table, source)
    except (LabelError, ValueError, ModelStoreError, BotoCoreError, ClientError) as error:
        _fail(settings, error, as_json)
    emit({"model": name, "labels": table.num_rows, "key": key}, as_json,
         lambda data: console.print(f"stored {data['labels']} labels of {name}: {data['key']}"))  # fmt: skip


@labels_app.command()
def queue(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Model name."),
    below: float = typer.Option(
        None,
        "--below",
        min=0.0,
        max=1.0,
        help="Confidence under which a request needs a person (default: FLYWHEEL_LABEL_CONFIDENCE).",
    ),
    limit: int = typer.Option(500, "--limit", min=1, help="At most this many, newest first."),
    output: Path = typer.Option(None, "--output", dir_okay=False, help="Also write them as CSV here."),
    as_json: bool = JSON_OPTION,
) -> None:
    """The labelling queue: captured requests a classifier answered with low confidence and nobody
    labelled yet. Label them (a `label` column beside `request_id`) and `flywheel labels import`."""
    import pyarrow.compute as pc
    import pyarrow.csv as pa_csv

    from model_store.capture import CaptureReader
    from model_store.labels import LabelStore

    settings: FlywheelSettings = ctx.obj
    threshold = settings.label_confidence if below is None else below
    try:
        storage = open_store(settings).storage
        columns = ["request_id", "served_at", "version", "prediction", "confidence", "entity"]
        captured = CaptureReader(storage).read(name, columns=columns)
        labelled = LabelStore(storage).read(name).column("request_id").drop_null()
    except (ModelStoreError, BotoCoreError, ClientError) as error:
        _fail(settings, error, as_json)
    unsure = pc.and_(
        pc.less(captured["confidence"], threshold), pc.invert(pc.is_in(captured["request_id"], labelled))
    )
    waiting = (
        captured.filter(pc.fill_null(unsure, False)).sort_by([("served_at", "descending")]).slice(0, limit)
    )
    if output is not None:
        pa_csv.write_csv(waiting, output)
    rows = waiting.to_pylist()
    for row in rows:
        row["served_at"] = row["served_at"].isoformat()

    def render(data: dict[str, Any]) -> None:
        where = f"; written to {output}" if output is not None else ""
        console.print(
            f"{len(rows)} captured requests of {name} below {threshold:.2f} confidence await a label{where}"
        )

    emit({"model": name, "below": threshold, "requests": rows, "output": str(output) if output else None},
         as_json, render)  # fmt: skip


@labels_app.command()
def derive(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Model name."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Labels later raw data reveals (the forecaster: each captured SYMBOL@DAY's next-day return from
    the CSVs under FLYWHEEL_RAW_PREFIX), for captured entities still without one."""
    from model_store.backends.s3 import s3_client
    from training.labels import derive_labels

    settings: FlywheelSettings = ctx.obj
    try:
        with console.status("reading raw data for labels"):
            result = derive_labels(settings, open_store(settings), name, s3_client(settings))
    except (ValueError, LookupError, ModelStoreError, BotoCoreError, ClientError) as error:
        _fail(settings, error, as_json)
    emit(result.as_dict(), as_json, lambda data: console.print(
        f"{data['written']} new labels of {name} ({data['known']} known in {data['raw_objects']} raw "
        f"objects, {data['captured_entities']} captured entities)"
    ))  # fmt: skip


@labels_app.command()
def join(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Model name."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Join the labels to the captured requests now (the drift exporter also does, every
    FLYWHEEL_QUALITY_INTERVAL_S). Idempotent; a label whose request is not captured yet waits."""
    from monitoring.join import JoinConflictError, LabelJoiner

    settings: FlywheelSettings = ctx.obj
    try:
        report = LabelJoiner(open_store(settings).storage, settings.label_join_window_days).run(name)
    except JoinConflictError as error:
        fail(str(error), as_json, exit_code=3)
    except (ModelStoreError, BotoCoreError, ClientError) as error:
        _fail(settings, error, as_json)
    emit(report.as_dict(), as_json, lambda data: console.print(
        f"{name}: {data['joined']} captured requests have labels; {data['pending']} labels wait for their "
        f"request ({data['captured']} captured, {data['labels']} labels, {data['seconds']} s)"
    ))  # fmt: skip


@labels_app.command()
def quality(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Model name."),
    window: int = typer.Option(None, "--window", min=1, help="Newest labels per version (default: setting)."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Each version's live quality over its newest joined labels, beside its holdout value."""
    from model_store.manifest import OutputKind
    from monitoring.join import LabelJoiner
    from monitoring.join import quality as live_quality
    from monitoring.quality import holdout_value

    settings: FlywheelSettings = ctx.obj
    try:
        store = open_store(settings)
        joined = LabelJoiner(store.storage).read(name)
        versions: list[dict[str, Any]] = []
        for version in sorted(int(v) for v in joined["version"].unique()):
            manifest = store.get_manifest(name, version)
            rows = joined[joined["version"] == version]
            classification = manifest.output.kind is OutputKind.CLASSIFICATION
            live = live_quality(rows, classification, window or settings.quality_window_labels)[version]
            labels = int(live.pop("labels"))
            holdout = {
                metric: value
                for metric in live
                if (value := holdout_value(manifest.metrics, metric)) is not None
            }
            versions.append({"version": version, "labels": labels, "live": live, "holdout": holdout})
    except (ModelStoreError, BotoCoreError, ClientError) as error:
        _fail(settings, error, as_json)

    def render(data: dict[str, Any]) -> None:
        table = Table("version", "labels", "metric", "live", "holdout")
        for entry in versions:
            for metric, value in entry["live"].items():
                held = entry["holdout"].get(metric)
                table.add_row(str(entry["version"]), str(entry["labels"]), metric, f"{value:.4f}",
                              "" if held is None else f"{held:.4f}")  # fmt: skip
        console.print(
            table if versions else f"no joined labels for {name} yet (`flywheel labels join {name}`)"
        )

    emit({"model": name, "versions": versions}, as_json, render)
