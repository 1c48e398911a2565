"""``flywheel bench capture``: what the data flywheel costs (``monitoring/capture_bench.py``)."""

from __future__ import annotations

from typing import Any

import typer
from rich.table import Table

from flywheel.cli.bench_commands import bench_app
from flywheel.cli.output import JSON_OPTION, console, emit


@bench_app.command()
def capture(
    calls: int = typer.Option(100_000, "--calls", min=1000, help="Offers timed per case."),
    as_json: bool = JSON_OPTION,
) -> None:
    """What capture costs a served request (ns per offer), how fast a flush writes, and how long a
    label join takes. In-process, on a temporary file store: the code's cost, not the network's."""
    import tempfile
    from pathlib import Path

    from model_store.backends.file import FileStorage
    from monitoring.capture_bench import run

    with (
        tempfile.TemporaryDirectory(prefix="flywheel-bench-capture-") as scratch,
        console.status("capture bench"),
    ):
        data = run(FileStorage(Path(scratch)), calls)

    def render(data: dict[str, Any]) -> None:
        table = Table(title="capture on the request path, ns per request (the gateway's whole share)")
        for column in ("tensors", "not sampled", "captured"):
            table.add_column(column, justify="left" if column == "tensors" else "right")
        for shape, cost in data["offer_ns"].items():
            table.add_row(shape, *[str(value) for value in cost.values()])
        console.print(table)
        for shape, flush in data["flush"].items():
            rate = f"{flush['per_second']} requests/s ({flush['requests']} in {flush['seconds']} s)"
            console.print(f"flush, {shape}: {rate}")
        for case, join in data["join"].items():
            console.print(f"label join, {case}: {join['seconds']} s")

    emit(data, as_json, render)
