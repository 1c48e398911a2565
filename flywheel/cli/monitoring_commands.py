"""Monitoring commands: ``flywheel drift`` (the per-feature table), ``flywheel traffic`` (synthetic
traffic from a profile, optionally shifted) and ``flywheel dashboards`` (Grafana JSON and PNG panels)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import typer
from rich.table import Table

from flywheel.cli.gateway_commands import admin_call
from flywheel.cli.output import JSON_OPTION, console, emit, fail
from flywheel.settings import FlywheelSettings


def drift(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Model name."),
    version: int = typer.Option(None, "--version", min=1, help="Version (default: every deployed one)."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Per-feature drift of live traffic (the gateway's sampled bins) against the training profile."""
    from flywheel.cli.models_commands import open_store
    from monitoring.drift import assess
    from monitoring.exporter import aligned_counts, gateway_metrics_urls, merged_gateway_bins

    settings: FlywheelSettings = ctx.obj
    spec = admin_call(settings, "GET", f"/deployments/{name}", as_json)
    versions = [version] if version else sorted({v["version"] for v in spec["variants"]})
    try:
        counts = merged_gateway_bins(gateway_metrics_urls(settings))()
    except httpx.HTTPError as error:
        fail(f"the gateway at {settings.gateway_url} is not reachable ({error})", as_json)
    store = open_store(settings)
    reports = {}
    for number in versions:
        profile = json.loads(store.read_artifact(name, number, "profile.json"))
        live = aligned_counts(profile, counts.get((name, str(number)), {}))
        reports[str(number)] = assess(profile, live).to_json()
    data = {"model": name, "window": "since the gateway started", "versions": reports}

    def render(data: dict[str, Any]) -> None:
        for number, report in data["versions"].items():
            table = Table(
                title=f"{name} v{number}: drift {'DETECTED' if report['detected'] else 'not detected'}"
            )
            for column in ("feature", "samples", "PSI", "KS", "p-value", "level"):
                table.add_column(column, justify="left" if column in ("feature", "level") else "right")
            rows = report["features"] + ([report["prediction"]] if report["prediction"] else [])
            for row in rows:
                table.add_row(
                    row["feature"], f"{row['samples']:.0f}", f"{row['psi']:.4f}",
                    "" if row["ks"] is None else f"{row['ks']:.4f}", f"{row['p_value']:.3g}", row["level"],
                )  # fmt: skip
            console.print(table)

    emit(data, as_json, render)


def _parse_shift(items: list[str]) -> dict[str, float]:
    shift = {}
    for item in items:
        feature, separator, amount = item.partition("=")
        try:
            if not separator:
                raise ValueError
            shift[feature.strip()] = float(amount)
        except ValueError:
            raise typer.BadParameter(
                f"{item!r}: expected FEATURE=AMOUNT, FEATURE named in profile.json"
            ) from None
    return shift


def traffic(
    ctx: typer.Context,
    name: str = typer.Argument(None, help="Model name (default: the model_name setting)."),
    rows: int = typer.Option(20_000, "--rows", min=1, help="How many rows (model inputs) to send."),
    batch_rows: int = typer.Option(32, "--batch-rows", min=1, max=4096, help="Rows per request."),
    shift: list[str] = typer.Option(
        [], "--shift", help="FEATURE=AMOUNT: move a feature by AMOUNT times its reference range (drift)."
    ),
    version: int = typer.Option(None, "--version", min=1, help="Profile (and pinned version) to use."),
    seed: int = typer.Option(0, "--seed", help="Random seed."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Replay a version's own training inputs through the gateway, optionally shifted (drift).

    Without --shift the traffic matches the reference profile (drift stays near zero); with
    --shift FEATURE=2 (a feature named in the version's profile.json, see `flywheel drift`) that
    feature moves two reference ranges, which the drift exporter flags and FeatureDrift alerts on.
    Routed traffic (no --version) follows the live routing spec.
    """
    import numpy as np
    from rich.progress import Progress

    from flywheel.cli.models_commands import open_store
    from model_store import ModelStoreError
    from monitoring.traffic import replay, send_traffic
    from training.reference_inputs import reference_inputs

    settings: FlywheelSettings = ctx.obj
    model = name or settings.model_name
    store = open_store(settings)
    try:
        number = version or store.aliases(model).get("champion") or max(store.list_versions(model), default=0)
        if not number:
            raise ValueError(f"{model} has no published version yet")
        profile = json.loads(store.read_artifact(model, number, "profile.json"))
        windows = reference_inputs(store, model, number, default_task=settings.default_task)
        signature = store.get_manifest(model, number).signature
        features = replay(windows, profile, rows, np.random.default_rng(seed), _parse_shift(shift))
    except (ModelStoreError, ValueError) as error:
        fail(str(error), as_json)
    with Progress(console=console, transient=True, disable=as_json) as progress:
        task = progress.add_task(f"sending {rows} rows to {model}", total=rows)
        try:
            statuses = send_traffic(
                settings.gateway_url, model, signature, features, batch_rows, version,
                progress=lambda sent: progress.advance(task, sent),
            )  # fmt: skip
        except httpx.HTTPError as error:
            fail(f"the gateway at {settings.gateway_url} is not reachable ({error})", as_json)
    result = {"model": model, "profile_version": number, "rows": rows, "shift": _parse_shift(shift),
              "responses": statuses}  # fmt: skip
    emit(result, as_json, lambda data: console.print(f"sent {rows} rows; responses by status: {statuses}"))
    if set(statuses) - {"200"}:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    for command in (drift, traffic, dashboards):
        app.command()(command)


def dashboards(
    ctx: typer.Context,
    render: bool = typer.Option(
        True, "--render/--no-render", help="Also draw the core panels from Prometheus to PNG and HTML."
    ),
    minutes: float = typer.Option(30, "--minutes", min=1, help="Time range of the rendered panels."),
    out: Path = typer.Option(
        None, "--out", help="Folder for the Grafana files and the PNG/HTML (default: var/dashboards)."
    ),
    as_json: bool = JSON_OPTION,
) -> None:
    """Write this stack's Grafana dashboard and provisioning; render the panels without Grafana.

    Files go to OUT/grafana (import the JSON into Grafana, or mount the provisioning folder); the
    datasource points at this stack's Prometheus. The committed copy under monitoring/grafana/ is
    regenerated with `python -m monitoring.grafana.build`. The render queries Prometheus with the
    same PromQL as the panels and writes OUT/flywheel-panels.png and .html.
    """
    from monitoring.grafana.build import write
    from monitoring.grafana.render import render as render_panels

    settings: FlywheelSettings = ctx.obj
    out = out or settings.var_path / "dashboards"
    written = write(out / "grafana", prometheus_url=settings.prometheus_url)
    result: dict[str, Any] = {"grafana": [str(path) for path in written]}
    if render:
        try:
            with console.status("querying Prometheus and drawing the panels"):
                result |= render_panels(settings.prometheus_url, out, minutes)
        except (httpx.HTTPError, ValueError) as error:
            fail(f"Prometheus at {settings.prometheus_url}: {error} (is the stack up?)", as_json)

    def show(data: dict[str, Any]) -> None:
        for path in data["grafana"]:
            console.print(f"wrote {path}")
        if "png" in data:
            for title, count in data["panels"].items():
                console.print(f"  {title}: {count} series" + ("" if count else " [yellow](no data)[/]"))
            console.print(f"panels: {data['png']}\npage:   {data['html']}")

    emit(result, as_json, show)
