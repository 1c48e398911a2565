"""``flywheel models ...``: the versioned model store."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from flywheel.cli.output import JSON_OPTION, byte_progress, console, emit, fail
from flywheel.settings import FlywheelSettings
from model_store import ModelStore, ModelStoreError, artifacts_from_directory
from model_store.lineage import git_state, package_versions
from model_store.manifest import Lineage

models_app = typer.Typer(
    help="List, inspect, publish and fetch model versions; move aliases.", no_args_is_help=True
)


def open_store(settings: FlywheelSettings) -> ModelStore:
    return ModelStore.open(settings.resolve_store_uri(), settings)


def split_reference(reference: str) -> tuple[str, str]:
    """``name``, ``name:7`` or ``name:champion`` -> (name, version-or-alias, 'latest' by default)."""
    name, _, version = reference.partition(":")
    return name, version or "latest"


def _parse_pairs(pairs: list[str], what: str) -> dict[str, str]:
    parsed: dict[str, str] = {}
    for pair in pairs:
        key, separator, value = pair.partition("=")
        if not separator or not key:
            raise typer.BadParameter(f"{what} must look like key=value, got {pair!r}")
        parsed[key] = value
    return parsed


def _render_models(data: dict[str, Any]) -> None:
    table = Table(title=f"Models in {data['store']}")
    for column in ("model", "versions", "latest", "aliases"):
        table.add_column(column)
    for model in data["models"]:
        aliases = ", ".join(f"{alias}→{version}" for alias, version in sorted(model["aliases"].items()))
        table.add_row(model["name"], str(len(model["versions"])), str(model["latest"]), aliases)
    console.print(table)


def _render_versions(data: dict[str, Any]) -> None:
    table = Table(title=f"{data['name']} in {data['store']}")
    for column in ("version", "created", "framework", "backends", "metrics", "aliases"):
        table.add_column(column)
    for row in data["versions"]:
        # The table shows the gate's metric per framework (the manifest's gate names it); `show`
        # and --json carry all of them.
        gate_metric = (row.get("gate") or {}).get("metric")
        headline = {k: v for k, v in row["metrics"].items() if gate_metric and k.endswith(f"_{gate_metric}")}
        metrics = " ".join(f"{key}={value:.4g}" for key, value in sorted(headline.items()))
        table.add_row(
            str(row["version"]),
            row["created_at"][:19],
            row["framework"],
            ",".join(row["backends"]),
            metrics,
            ",".join(row["aliases"]),
        )
    console.print(table)


@models_app.command("list")
def list_models(
    ctx: typer.Context,
    name: str = typer.Argument(None, help="A model name to list its versions; omit to list models."),
    as_json: bool = JSON_OPTION,
) -> None:
    """List models, or the published versions of one model."""
    settings: FlywheelSettings = ctx.obj
    try:
        store = open_store(settings)
        if name is None:
            models = []
            for model in store.list_models():
                versions = store.list_versions(model)
                models.append(
                    {
                        "name": model,
                        "versions": versions,
                        "latest": versions[-1],
                        "aliases": store.aliases(model),
                    }
                )
            emit({"store": store.uri, "models": models}, as_json, _render_models)
            return
        aliases = store.aliases(name)
        rows = []
        for version in store.list_versions(name):
            manifest = store.get_manifest(name, version)
            rows.append(
                {
                    "version": version,
                    "created_at": manifest.created_at.isoformat(),
                    "framework": manifest.framework,
                    "backends": [str(backend) for backend in manifest.backends],
                    "task": manifest.task,
                    "metrics": manifest.metrics,
                    "gate": None if manifest.gate is None else manifest.gate.model_dump(mode="json"),
                    "aliases": sorted(alias for alias, target in aliases.items() if target == version),
                }
            )
        if not rows:
            fail(f"model {name!r} has no published version in {store.uri}", as_json)
        emit({"store": store.uri, "name": name, "versions": rows}, as_json, _render_versions)
    except ModelStoreError as error:
        fail(str(error), as_json)


@models_app.command()
def show(
    ctx: typer.Context,
    reference: str = typer.Argument(..., help="NAME, NAME:VERSION or NAME:ALIAS (default: latest)."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Show a version's manifest: signature, artifacts with sha256, lineage, metrics and gate result."""
    settings: FlywheelSettings = ctx.obj
    name, version_reference = split_reference(reference)
    try:
        store = open_store(settings)
        manifest = store.get_manifest(name, store.resolve(name, version_reference))
    except ModelStoreError as error:
        fail(str(error), as_json)
    emit(manifest.model_dump(mode="json"), as_json, lambda data: console.print_json(data=data))


@models_app.command()
def register(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Model name."),
    task: str = typer.Option(..., "--task", help="The task it solves (see `flywheel models tasks`)."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Register a model for a task before its first pipeline run (written once; a model's task never
    changes). The retraining and batch-scoring DAGs read the task from here: their conf names only
    the model. Unregistered models get FLYWHEEL_DEFAULT_TASK at their first run."""
    from tasks.registry import UnknownTaskError, get_task

    settings: FlywheelSettings = ctx.obj
    try:
        get_task(task)
        registration = open_store(settings).register(name, task)
    except (UnknownTaskError, ModelStoreError) as error:
        fail(str(error).strip("'\""), as_json)
    emit({"name": name, **registration}, as_json, lambda data: console.print(f"{name}: task {data['task']}"))


@models_app.command()
def tasks(as_json: bool = JSON_OPTION) -> None:
    """The registered tasks: what each predicts, its signature and the metric its gate compares."""
    from tasks.registry import get_task, task_names

    rows = []
    for task_name in task_names():
        task = get_task(task_name)
        signature = task.signature()
        rows.append(
            {
                "task": task.name,
                "summary": task.summary,
                "output": task.output.model_dump(mode="json"),
                "inputs": [spec.protocol_view() for spec in signature.inputs],
                "outputs": [spec.protocol_view() for spec in signature.outputs],
                "gate_metric": task.metric.primary,
                "higher_is_better": task.metric.higher_is_better,
            }
        )

    def render(data: list[dict[str, Any]]) -> None:
        table = Table("task", "predicts", "input", "output", "gate")
        for row in data:
            spec, out = row["inputs"][0], row["outputs"][0]
            table.add_row(
                row["task"],
                row["summary"],
                f"{spec['name']} {spec['datatype']} {spec['shape']}",
                f"{out['name']} {out['datatype']} {out['shape']}",
                f"{row['gate_metric']} ({'higher' if row['higher_is_better'] else 'lower'} is better)",
            )
        console.print(table)

    emit(rows, as_json, render)


@models_app.command()
def alias(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Model name."),
    alias_name: str = typer.Argument(..., metavar="ALIAS", help="Alias, for example champion or challenger."),
    version: int = typer.Argument(None, help="Version the alias should point at (omit with --remove)."),
    expect: str = typer.Option(
        None,
        "--expect",
        help="Compare-and-swap: only change the alias if it points at this version now ('none': unset).",
    ),
    remove: bool = typer.Option(False, "--remove", help="Remove the alias instead of setting it."),
    reason: str = typer.Option("", "--reason", help="Why; recorded in the alias history."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Point an alias at a version, atomically (compare-and-swap on aliases.json)."""
    settings: FlywheelSettings = ctx.obj
    if (version is None) != remove:
        fail("give a VERSION, or --remove to delete the alias", as_json, exit_code=2)
    expected: int | object | None = ...
    if expect is not None:
        expected = None if expect.lower() == "none" else int(expect)
    try:
        aliases = open_store(settings).set_alias(
            name, alias_name, None if remove else version, expected=expected, actor="cli", reason=reason
        )
    except ModelStoreError as error:
        fail(str(error), as_json)
    emit({"name": name, "aliases": aliases}, as_json, lambda data: console.print(data["aliases"]))


@models_app.command()
def publish(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Model name."),
    directory: Path = typer.Argument(
        ..., help="Folder of artifacts; '{version}' in paths becomes the version."
    ),
    framework: str = typer.Option(..., "--framework", help="pytorch, tensorflow, ..."),
    backend: list[str] = typer.Option(
        [], "--backend", help="Server kind it is packaged for (`flywheel backends kinds`); repeatable."
    ),
    param: list[str] = typer.Option([], "--param", help="Training parameter key=value; repeatable."),
    metric: list[str] = typer.Option([], "--metric", help="Holdout metric key=value; repeatable."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Publish a folder of artifacts as the next version: artifacts first, manifest last (atomic)."""
    settings: FlywheelSettings = ctx.obj
    try:
        metrics = {key: float(value) for key, value in _parse_pairs(metric, "--metric").items()}
    except ValueError as error:
        fail(f"--metric values must be numbers: {error}", as_json, exit_code=2)
    git_sha, git_dirty = git_state()
    lineage = Lineage(
        git_sha=git_sha,
        git_dirty=git_dirty,
        params=_parse_pairs(param, "--param"),
        packages=package_versions(),
    )
    try:
        artifacts = artifacts_from_directory(directory)
        with byte_progress(f"publishing {name}", enabled=not as_json) as progress:
            manifest = open_store(settings).publish(
                name,
                artifacts,
                framework=framework,
                backends=backend,
                lineage=lineage,
                metrics=metrics,
                progress=progress,
            )
    except (ModelStoreError, FileNotFoundError) as error:
        fail(str(error), as_json)
    emit(
        {"name": manifest.name, "version": manifest.version, "artifacts": len(manifest.artifacts)},
        as_json,
        lambda data: console.print(f"published [bold]{data['name']}:{data['version']}[/]"),
    )


@models_app.command()
def fetch(
    ctx: typer.Context,
    reference: str = typer.Argument(..., help="NAME, NAME:VERSION or NAME:ALIAS."),
    destination: Path = typer.Argument(..., help="Local folder to download into."),
    prefix: str = typer.Option("", "--prefix", help="Only artifacts under this path, e.g. torchserve/."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Download a version's artifacts, verifying each sha256 before it is put in place."""
    settings: FlywheelSettings = ctx.obj
    name, version_reference = split_reference(reference)
    try:
        store = open_store(settings)
        version = store.resolve(name, version_reference)
        with byte_progress(f"fetching {name}:{version}", enabled=not as_json) as progress:
            manifest = store.fetch(name, version, destination, prefix=prefix, progress=progress)
    except ModelStoreError as error:
        fail(str(error), as_json)
    emit(
        {"name": name, "version": manifest.version, "destination": str(destination)},
        as_json,
        lambda data: console.print(f"fetched {data['name']}:{data['version']} into {data['destination']}"),
    )
