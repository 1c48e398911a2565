"""Shared output for CLI commands: rich for people, ``--json`` for scripts, one error path."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, NoReturn

import orjson
import typer
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeElapsedColumn

console = Console()
error_console = Console(stderr=True)

JSON_OPTION = typer.Option(False, "--json", help="Print machine-readable JSON instead of tables.")


def print_json(data: Any) -> None:
    sys.stdout.write(orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode() + "\n")


def emit(data: Any, as_json: bool, render: Callable[[Any], None]) -> None:
    """Print ``data`` as JSON, or hand it to ``render`` for a human view."""
    if as_json:
        print_json(data)
    else:
        render(data)


def fail(message: str, as_json: bool = False, exit_code: int = 1) -> NoReturn:
    """Report an error the user can act on and exit non-zero. No traceback."""
    if as_json:
        print_json({"error": message})
    else:
        error_console.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(exit_code)


@contextmanager
def byte_progress(description: str, enabled: bool) -> Iterator[Callable[[str, int, int], None]]:
    """A progress bar over bytes; yields a ``(item, done, total)`` callback. Silent when disabled."""
    if not enabled:
        yield lambda item, done, total: None
        return
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TextColumn("{task.fields[item]}"),
        TimeElapsedColumn(),
        console=error_console,
        transient=False,
    ) as progress:
        task = progress.add_task(description, total=None, item="")

        def update(item: str, done: int, total: int) -> None:
            progress.update(task, completed=done, total=total, item=item)

        yield update
