"""``flywheel backends ...``: put store versions on the model servers directly, and query them.

The gateway (and its rollouts) does this for you; these commands are the manual, per-server view.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
import typer
from rich.table import Table

from flywheel.cli.models_commands import open_store, split_reference
from flywheel.cli.output import JSON_OPTION, console, emit, fail
from flywheel.settings import FlywheelSettings
from model_store import ModelStore, ModelStoreError
from serving.backends.base import BackendError, ModelBackend
from serving.backends.factory import build_backend
from serving.backends.registry import backend_kinds

backends_app = typer.Typer(
    help=(
        "Query model servers directly, and load or unload by hand (debugging: on a running stack the "
        "model agents own what is loaded, and unload what no routing spec needs after a grace period)."
    ),
    no_args_is_help=True,
)
BACKEND_OPTION = typer.Option(
    "all", "--backend", help="A registered kind (`flywheel backends kinds`), or all."
)


def _kinds(backend: str) -> tuple[str, ...]:
    if backend == "all":
        return tuple(backend_kinds())
    if backend not in backend_kinds():
        raise typer.BadParameter(f"choose from all, {', '.join(backend_kinds())}")
    return (backend,)


def _for_each(
    settings: FlywheelSettings, backend: str, action: Callable[[ModelBackend, ModelStore], Awaitable[Any]]
) -> dict[str, Any]:
    """Run ``action`` on each selected backend concurrently; errors are reported per backend."""
    store = open_store(settings)

    async def run_all() -> dict[str, Any]:
        adapters = {kind: build_backend(kind, settings, store) for kind in _kinds(backend)}

        async def one(kind: str) -> Any:
            try:
                return await action(adapters[kind], store)
            except (BackendError, ModelStoreError) as error:
                return {"error": str(error)}
            finally:
                await adapters[kind].aclose()

        results = await asyncio.gather(*(one(kind) for kind in adapters))
        return dict(zip(adapters, results, strict=True))

    return asyncio.run(run_all())


def _finish(results: dict[str, Any], as_json: bool, render: Callable[[dict[str, Any]], None]) -> None:
    emit(results, as_json, render)
    if any(isinstance(value, dict) and "error" in value for value in results.values()):
        raise typer.Exit(1)


def _render_plain(results: dict[str, Any]) -> None:
    for kind, value in results.items():
        console.print(f"[bold]{kind}[/]: {value}")


@backends_app.command()
def load(
    ctx: typer.Context,
    reference: str = typer.Argument(..., help="NAME, NAME:VERSION or NAME:ALIAS (default: latest)."),
    backend: str = BACKEND_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Fetch a version (sha256-verified) into each server's repository and load it live. No restarts."""
    settings: FlywheelSettings = ctx.obj
    name, version_reference = split_reference(reference)
    try:
        version = open_store(settings).resolve(name, version_reference)
    except ModelStoreError as error:
        fail(str(error), as_json)

    async def action(adapter: ModelBackend, store: ModelStore) -> Any:
        await adapter.load(name, version)
        return {"loaded": await adapter.loaded_versions(name)}

    with console.status(f"loading {name}:{version}"):
        results = _for_each(settings, backend, action)
    _finish(results, as_json, _render_plain)


@backends_app.command()
def unload(
    ctx: typer.Context,
    reference: str = typer.Argument(..., help="NAME:VERSION"),
    backend: str = BACKEND_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Unload one version; the model's other versions keep serving."""
    settings: FlywheelSettings = ctx.obj
    name, version_reference = split_reference(reference)
    if not version_reference.isdigit():
        fail("give NAME:VERSION with a version number", as_json, exit_code=2)

    async def action(adapter: ModelBackend, store: ModelStore) -> Any:
        await adapter.unload(name, int(version_reference))
        return {"loaded": await adapter.loaded_versions(name)}

    _finish(_for_each(settings, backend, action), as_json, _render_plain)


@backends_app.command()
def status(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Model name."),
    backend: str = BACKEND_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Which versions of a model are live on each server."""
    settings: FlywheelSettings = ctx.obj

    async def action(adapter: ModelBackend, store: ModelStore) -> Any:
        versions = await adapter.loaded_versions(name)
        return {"loaded": versions, "ready": {str(v): await adapter.ready(name, v) for v in versions}}

    _finish(_for_each(settings, backend, action), as_json, _render_plain)


def sample_inputs(store: ModelStore, name: str, version: int, rows: int, seed: int) -> dict[str, np.ndarray]:
    """Plausible raw features: the version's training mean and std, with seeded noise."""
    manifest = store.get_manifest(name, version)
    spec = manifest.signature.inputs[0]
    normalisation = json.loads(store.storage.get(f"models/{name}/{version}/normalization.json").data)
    mean = np.array([entry["mean"] for entry in normalisation.values()], dtype=np.float32)
    std = np.array([entry["std"] for entry in normalisation.values()], dtype=np.float32)
    noise = np.random.default_rng(seed).standard_normal((rows, *spec.shape[1:])).astype(np.float32)
    return {spec.name: mean + std * noise}


@backends_app.command()
def infer(
    ctx: typer.Context,
    reference: str = typer.Argument(..., help="NAME:VERSION (or alias)."),
    backend: str = BACKEND_OPTION,
    rows: int = typer.Option(3, "--rows", min=1, max=1024, help="How many sample windows to send."),
    seed: int = typer.Option(0, "--seed", help="Seed of the sample windows."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Send the same sample windows to each server, pinned to one version; print predictions side by side."""
    settings: FlywheelSettings = ctx.obj
    name, version_reference = split_reference(reference)
    try:
        store = open_store(settings)
        version = store.resolve(name, version_reference)
        inputs = sample_inputs(store, name, version, rows, seed)
    except (ModelStoreError, LookupError) as error:
        fail(str(error), as_json)

    async def action(adapter: ModelBackend, store: ModelStore) -> Any:
        outputs = await adapter.infer(name, version, inputs)
        return {key: value.reshape(-1).tolist() for key, value in outputs.items()}

    results = _for_each(settings, backend, action)

    def render(data: dict[str, Any]) -> None:
        table = Table(title=f"{name}:{version}, {rows} sample windows")
        table.add_column("server")
        table.add_column("predictions")
        for kind, value in data.items():
            shown = value.get("error") or "  ".join(f"{p:+.6f}" for p in next(iter(value.values())))
            table.add_row(kind, shown)
        console.print(table)

    _finish(results, as_json, render)
