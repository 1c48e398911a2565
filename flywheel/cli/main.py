"""Entry point of the ``flywheel`` command."""

from __future__ import annotations

import os
from urllib.parse import urlsplit

import typer
from pydantic import ValidationError

from flywheel.cli import (
    backends_commands,
    batch_commands,
    bench_commands,
    capture_bench_commands,  # noqa: F401  (registers `flywheel bench capture`)
    capture_commands,
    data_commands,
    fault_bench_commands,  # noqa: F401  (registers `flywheel bench faults`)
    gateway_commands,
    import_commands,  # noqa: F401  (registers `flywheel models import`)
    labels_commands,
    models_commands,
    monitoring_commands,
    pipeline_commands,
    real_data_bench_commands,  # noqa: F401  (registers `flywheel bench real-data`)
    retrain_commands,
    stack_commands,
    tune_bench_commands,  # noqa: F401  (registers `flywheel bench tune`)
)
from flywheel.cli.output import error_console, fail
from flywheel.settings import FlywheelSettings

app = typer.Typer(
    name="flywheel",
    help=(
        "Flywheel: serve versioned models on Triton, TorchServe and TF Serving behind one gateway, "
        "watch them for drift, retrain, and roll new versions out safely.\n\n"
        "Settings come from FLYWHEEL_* environment variables or flywheel.toml; see docs/operations.md."
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
stack_commands.register(app)
gateway_commands.register(app)
monitoring_commands.register(app)
app.add_typer(models_commands.models_app, name="models")
app.add_typer(data_commands.data_app, name="data")
app.add_typer(pipeline_commands.pipeline_app, name="pipeline")
app.add_typer(backends_commands.backends_app, name="backends")
app.add_typer(bench_commands.bench_app, name="bench")
app.add_typer(batch_commands.batch_app, name="batch")
app.add_typer(capture_commands.capture_app, name="capture")
app.add_typer(labels_commands.labels_app, name="labels")
app.command()(bench_commands.loadtest)
app.command()(retrain_commands.retrain)


@app.callback()
def load_settings(ctx: typer.Context) -> None:
    """Build the settings once per invocation and hand them to the command."""
    try:
        ctx.obj = FlywheelSettings()
        ctx.obj.resolve_store_uri()  # a store that cannot be named is a settings error, said up front
    except ValidationError as error:
        fail(f"invalid settings: {error}")
    except ValueError as error:
        fail(f"invalid settings: {error}")


def main() -> None:
    # TensorFlow's C++ start-up notices (oneDNN, CPU features) are not the user's business on a
    # command line; errors still show. Set before any command imports TensorFlow.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from botocore.exceptions import EndpointConnectionError

    try:
        app()
    except EndpointConnectionError as error:
        # The default model store is s3:// on the local SeaweedFS: most often the stack is down.
        where = urlsplit(str(error.kwargs.get("endpoint_url", "")))
        error_console.print(
            f"[bold red]error:[/] cannot reach S3 at {where.scheme}://{where.netloc}: start the local "
            "stack (`flywheel up`), point FLYWHEEL_S3_ENDPOINT_URL at your endpoint, or use a folder "
            "store (FLYWHEEL_STORE_URI=file://var/store)",
            highlight=False,
        )
        raise SystemExit(1) from None
