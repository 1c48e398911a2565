"""``flywheel models import``: bring a model trained elsewhere into the store, smoke-tested first."""

from __future__ import annotations

import tempfile
from pathlib import Path

import typer

from flywheel.cli.models_commands import models_app, open_store
from flywheel.cli.output import JSON_OPTION, console, emit, fail
from flywheel.settings import FlywheelSettings


@models_app.command("import")
def import_model(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Model name to publish under (a new version of it)."),
    path: Path = typer.Argument(
        ..., help="A TorchScript file, a TensorFlow SavedModel folder or a TorchServe .mar."
    ),
    inputs: list[str] = typer.Option(
        [], "--input", help="NAME:DATATYPE:DIMS of the input, e.g. images:FP32:-1,64,64 (-1: the batch)."
    ),
    outputs: list[str] = typer.Option(
        [], "--output", help="NAME:DATATYPE:DIMS of the output, e.g. scores:FP32:-1,5."
    ),
    classes: str = typer.Option(
        None, "--classes", help="Comma-separated class names: the output is probabilities over them."
    ),
    max_batch_size: int = typer.Option(256, "--max-batch-size", min=1, help="Most rows per request."),
    task_name: str = typer.Option(
        None,
        "--task",
        help="The task it solves (see `flywheel models tasks`): the signature and classes default to the "
        "task's, the model is registered for it, and the task's pipeline can retrain it.",
    ),
    as_json: bool = JSON_OPTION,
) -> None:
    """Import a model trained elsewhere: package it for every server that can run it, smoke-test one
    inference on each, then publish it (lineage: imported, with the source's sha256).

    TorchScript serves on TorchServe and Triton, a SavedModel on TF Serving, a .mar (with its own
    handler, which must take {"instances": [...]} and answer {"predictions": [...]}) on TorchServe.
    The signature comes from a SavedModel itself, otherwise from --input and --output (or --task).
    ONNX is refused: none of the servers here can run it. From then on deploy and every routing
    strategy work as for a trained model; with --task, batch scoring and retraining too (drift
    needs the profile a retrain writes). --json prints the published manifest.
    """
    from model_store import ModelStoreError
    from model_store.manifest import Lineage
    from model_store.names import validate_name
    from tasks.registry import UnknownTaskError, get_task
    from training.importing import ImportRefusedError, parse_tensor, plan_import
    from training.smoke import smoke_test

    settings: FlywheelSettings = ctx.obj
    try:
        validate_name(name)
        store = open_store(settings)
        registered = (store.registration(name) or {}).get("task")
        if registered and task_name and registered != task_name:
            raise ImportRefusedError(f"{name} is registered for task {registered}, not {task_name}")
        # A new version of a registered model answers the same calls as its task's versions.
        task = get_task(task_name or registered) if (task_name or registered) else None
        with (
            tempfile.TemporaryDirectory(prefix="flywheel-import-") as scratch,
            console.status(f"packaging {path}") as status,
        ):
            plan = plan_import(
                name,
                path.resolve(),
                [parse_tensor(text, "input") for text in inputs],
                [parse_tensor(text, "output") for text in outputs],
                [item.strip() for item in classes.split(",")] if classes else None,
                Path(scratch),
                max_batch_size,
                task,
            )
            shapes = smoke_test(plan, settings, progress=lambda message: status.update(message))
            status.update(f"publishing {name}")
            if task is not None:
                store.register(name, task.name, actor="import")
            manifest = store.publish(
                name,
                plan.artifacts,
                framework=plan.framework,
                task=task.name if task is not None else None,
                backends=plan.backends,
                signature=plan.signature,
                output=plan.output,
                lineage=Lineage(
                    origin="imported",
                    source_file=str(plan.source),
                    source_sha256=plan.source_sha256,
                    source_format=plan.format,
                ),
            )
    except (ImportRefusedError, ModelStoreError, UnknownTaskError, ValueError) as error:
        fail(str(error).strip("'\""), as_json)

    def render(data: dict[str, object]) -> None:
        console.print(
            f"imported {path.name} ({plan.format}) as {name} v{manifest.version}; smoke-tested on "
            + ", ".join(f"{kind} (answered {shape})" for kind, shape in shapes.items())
            + f"\ndeploy it with: flywheel deploy {name} --version {manifest.version} "
            f"--backend {plan.backends[0]} --strategy single"
        )

    emit(manifest.model_dump(mode="json"), as_json, render)
