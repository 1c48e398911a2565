"""``flywheel backends ...``: put store versions on the model servers directly, and query them.

The gateway (and its rollouts) does this for you; these commands are the manual, per-server view.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
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
def kinds(ctx: typer.Context, as_json: bool = JSON_OPTION) -> None:
    """The registered model-server kinds: formats they serve, ports, replicas, health and metrics paths.

    A kind is a folder under serving/backends/<kind>/ plus one line in its registry; see
    docs/architecture.md, "Model servers: plug-ins, replicas and model agents".
    """
    from serving.backends.factory import replica_layouts
    from serving.backends.registry import get_plugin

    settings: FlywheelSettings = ctx.obj
    data = []
    for kind in backend_kinds():
        plugin = get_plugin(kind)
        data.append(
            {
                "kind": kind,
                "title": plugin.title,
                "formats": list(plugin.formats),
                "replicas": [
                    {"name": layout.name, "ports": layout.ports, "folder": str(layout.folder)}
                    for layout in replica_layouts(settings, kind)
                ],
                "health": plugin.health[1],
                "metrics": plugin.metrics[1],
            }
        )

    def render(data: list[dict[str, Any]]) -> None:
        for entry in data:
            replicas = ", ".join(
                f"{r['name']} ({' '.join(f'{k}={v}' for k, v in r['ports'].items())})"
                for r in entry["replicas"]
            )
            console.print(
                f"[bold]{entry['kind']}[/] ({entry['title']}): serves {', '.join(entry['formats'])}; "
                f"health {entry['health']}, metrics {entry['metrics']}; replicas: {replicas}"
            )

    emit(data, as_json, render)


@backends_app.command()
def replicas(ctx: typer.Context, as_json: bool = JSON_OPTION) -> None:
    """Every server replica as the gateways see it, and how their requests spread.

    Ready versions come from the agents' reports (through the gateway's /admin/servers); request
    counts are summed over every gateway replica's own /metrics, per server replica and outcome.
    """
    from prometheus_client.parser import text_string_to_metric_families

    from flywheel.cli.gateway_commands import admin_call
    from serving.gateway.service import gateway_layouts

    settings: FlywheelSettings = ctx.obj
    servers = admin_call(settings, "GET", "/servers", as_json)
    spread: dict[str, dict[str, float]] = {}
    per_gateway: dict[str, float] = {}
    for layout in gateway_layouts(settings):
        try:
            text = httpx.get(f"http://{settings.host}:{layout.http_port}/metrics", timeout=10).text
        except httpx.HTTPError as error:
            fail(f"gateway replica {layout.name} is not reachable: {error}", as_json)
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == "flywheel_gateway_replica_requests_total":
                    counts = spread.setdefault(sample.labels["replica"], {})
                    outcome = sample.labels["outcome"]
                    counts[outcome] = counts.get(outcome, 0.0) + sample.value
                elif sample.name == "flywheel_gateway_requests_total":
                    per_gateway[layout.name] = per_gateway.get(layout.name, 0.0) + sample.value
    data = {
        "servers": {
            kind: [{**replica, "requests": spread.get(replica["replica"], {})} for replica in replicas]
            for kind, replicas in servers.items()
        },
        "gateways": per_gateway,
    }

    def render(data: dict[str, Any]) -> None:
        from rich.table import Table

        table = Table(title="server replicas")
        for column in ("kind", "replica", "up", "ready versions", "requests ok", "failed over"):
            table.add_column(column, overflow="fold")
        for kind, replicas in data["servers"].items():
            for replica in replicas:
                requests = replica["requests"]
                table.add_row(
                    kind,
                    replica["replica"],
                    "yes" if replica["server_up"] else "NO",
                    ", ".join(replica["ready"]) or "-",
                    f"{requests.get('ok', 0):.0f}",
                    f"{requests.get('unavailable', 0) + requests.get('not_loaded', 0):.0f}",
                )
        console.print(table)
        console.print(
            "gateway replicas: "
            + ", ".join(f"{name} {count:.0f} requests" for name, count in data["gateways"].items())
        )

    emit(data, as_json, render)


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
