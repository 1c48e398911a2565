"""``flywheel batch score``: score new raw data with the champion; low-confidence rows to labeling."""

from __future__ import annotations

import typer
from botocore.exceptions import BotoCoreError, ClientError

from flywheel.cli.models_commands import open_store
from flywheel.cli.output import JSON_OPTION, console, emit, error_console, fail
from flywheel.settings import FlywheelSettings
from model_store import ModelStoreError
from serving.backends.base import BackendError

batch_app = typer.Typer(help="Batch jobs on new data: scoring with the champion.", no_args_is_help=True)


@batch_app.command()
def score(
    ctx: typer.Context,
    name: str = typer.Argument(None, help="Model name (default: the model_name setting)."),
    version: int = typer.Option(None, "--version", min=1, help="Version to score with (default: champion)."),
    label_share: float = typer.Option(
        0.05,
        "--label-share",
        min=0.0,
        max=1.0,
        help="Regression models: share of rows, by PyTorch/TensorFlow disagreement, sent to labeling.",
    ),
    label_confidence: float = typer.Option(
        None,
        "--label-confidence",
        min=0.0,
        max=1.0,
        help="Classifiers: rows whose max-softmax confidence is below this go to labeling "
        "(default: FLYWHEEL_LABEL_CONFIDENCE, 0.95).",
    ),
    as_json: bool = JSON_OPTION,
) -> None:
    """Score raw objects no earlier scoring took; write predictions and a labeling set as Parquet.

    Predictions (with the model version in every row) go to s3://RAW_BUCKET/scored/NAME/, and the
    rows worth a person's label to s3://RAW_BUCKET/labeling/NAME/: a classifier's low-confidence
    predictions, or the rows a regression's PyTorch and TensorFlow models disagree on most.
    Exit code 3: nothing new to score.
    """
    from training.batch_score import NothingNewError, score_new_data

    settings: FlywheelSettings = ctx.obj
    model = name or settings.model_name
    try:
        with console.status("scoring new data") as status:
            result = score_new_data(
                settings, open_store(settings), model, version, label_share,
                progress=lambda message: status.update(f"scoring new data: {message}"),
                label_confidence=settings.label_confidence if label_confidence is None else label_confidence,
            )  # fmt: skip
    except NothingNewError as error:
        if as_json:
            emit({"model": model, "skipped": True, "reason": str(error)}, True, lambda _: None)
        else:
            error_console.print(f"{error}: nothing to score")
        raise typer.Exit(3) from None
    except BackendError as error:
        fail(f"a model server could not score: {error}", as_json)
    except (ModelStoreError, LookupError, ValueError) as error:
        fail(str(error).strip("'\""), as_json)
    except (BotoCoreError, ClientError) as error:
        fail(f"S3 at {settings.s3_url} failed: {error} (is `flywheel up` running?)", as_json)
    emit(
        result.as_dict(),
        as_json,
        lambda data: console.print(
            f"scored {data['rows']} rows of {data['objects']} objects with {model} v{data['version']}: "
            f"{data['predictions_uri']}\n{data['to_label']} rows to label: {data['labeling_uri']}"
        ),
    )
