"""``flywheel up | down | status``: the local stack."""

from __future__ import annotations

import typer
from rich.table import Table

from flywheel.cli.output import JSON_OPTION, console, emit, error_console, fail
from flywheel.settings import FlywheelSettings
from flywheel.stack.services import build_services
from flywheel.stack.supervisor import ServiceStartError, ServiceStatus, StackSupervisor

_STATE_STYLE = {
    "running": "green",
    "unhealthy": "yellow",
    "orphaned": "red",
    "stopped": "dim",
    "dead": "red",
}


def supervisor_for(settings: FlywheelSettings) -> StackSupervisor:
    return StackSupervisor(
        build_services(settings),
        run_dir=settings.run_dir,
        log_dir=settings.log_dir,
        start_timeout_s=settings.start_timeout_s,
        stop_timeout_s=settings.stop_timeout_s,
        unhealthy_grace_s=settings.unhealthy_grace_s,
    )


def _render_status(rows: list[dict[str, object]]) -> None:
    table = Table(title="Flywheel local stack")
    for column in ("service", "state", "pid"):
        table.add_column(column, no_wrap=True)
    table.add_column("detail", overflow="fold")
    for row in rows:
        state = str(row["state"])
        table.add_row(
            str(row["name"]),
            f"[{_STATE_STYLE.get(state, 'white')}]{state}[/]",
            str(row["pid"] or ""),
            str(row["detail"] or ""),
        )
    console.print(table)
    # URLs below the table, one per line and never cut: a table cell would truncate them to the
    # terminal's width, and a cut URL cannot be copied.
    width = max((len(str(row["name"])) for row in rows), default=0)
    for row in rows:
        urls = row["urls"] if isinstance(row["urls"], dict) else {}
        for key, value in urls.items():
            console.print(f"{row['name']:<{width}}  {key:<10} {value}", soft_wrap=True, highlight=False)


def _rows(statuses: list[ServiceStatus]) -> list[dict[str, object]]:
    return [status.as_dict() for status in statuses]


def register(app: typer.Typer) -> None:
    @app.command()
    def up(ctx: typer.Context, as_json: bool = JSON_OPTION) -> None:
        """Start the local stack's real services and wait until each one is healthy.

        Services already running are left as they are. Logs go to var/log/, PID records to var/run/.
        A service that fails is reported with the end of its log, and everything this call started
        is stopped again.
        """
        settings: FlywheelSettings = ctx.obj
        supervisor = supervisor_for(settings)

        def show(name: str, event: str) -> None:
            if not as_json:
                error_console.print(f"[bold]{name}[/]: {event}")

        try:
            statuses = supervisor.up(on_event=show)
        except ServiceStartError as error:
            fail(str(error), as_json)
        emit({"services": _rows(statuses)}, as_json, lambda data: _render_status(data["services"]))

    @app.command()
    def down(ctx: typer.Context, as_json: bool = JSON_OPTION) -> None:
        """Stop every service `flywheel up` started, by PID (SIGTERM, then SIGKILL after a grace period)."""
        settings: FlywheelSettings = ctx.obj

        def show(name: str, event: str) -> None:
            if not as_json:
                error_console.print(f"[bold]{name}[/]: {event}")

        stopped = supervisor_for(settings).down(on_event=show)
        emit(
            {"stopped": stopped},
            as_json,
            lambda data: console.print(f"stopped: {', '.join(data['stopped']) or 'nothing was running'}"),
        )

    @app.command()
    def status(ctx: typer.Context, as_json: bool = JSON_OPTION) -> None:
        """List each service of the local stack with its URL and health. Exits 1 if any is unhealthy."""
        settings: FlywheelSettings = ctx.obj
        statuses = supervisor_for(settings).status()
        emit({"services": _rows(statuses)}, as_json, lambda data: _render_status(data["services"]))
        if any(item.state in {"unhealthy", "orphaned", "dead"} for item in statuses):
            raise typer.Exit(1)
