"""Batch scoring: new raw data -> the training features -> the champion's predictions, in S3.

1. **New data**: the raw CSVs under ``raw_prefix`` that no earlier scoring took, by key and ETag
   (the ledger ``scoring/<model>/ledger.json`` in the model store, updated by compare-and-swap
   after the outputs are written, so a crash re-scores and never skips).
2. **Inputs**: the model's task turns the raw files into model inputs with the same Spark code as
   training (``Task.scoring_inputs``; the forecaster keeps the newest day, which has no next-day
   target yet: it is the day worth predicting), and a key per row (symbol and date; image reference).
3. **Scores**: the pinned champion version on TorchServe (the PyTorch model) and on the
   TF-Serving runtime (the TensorFlow model), through the same backend adapters the gateway uses,
   with the input and output names of the version's signature.
4. **Confidence**, by the manifest's output kind. A classifier's is its max-softmax probability:
   rows below ``label_confidence`` go to labeling (the prediction is the PyTorch model's class). A
   regression with two independently trained models: their disagreement ``|pytorch -
   tensorflow|``; rows whose disagreement is in the top ``label_share`` of the batch go to labeling.
5. **Outputs**: ``s3://<raw_bucket>/scored/<model>/<batch>.parquet`` with the model version in each
   row, and ``s3://<raw_bucket>/labeling/<model>/<batch>.parquet`` with the rows to label and a
   reference to each one's raw object (``source``: a classifier's image batch, with ``image_id``)
   or, when the task names none, the row's inputs.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from flywheel.settings import FlywheelSettings
from model_store import ModelStore
from model_store.errors import ObjectNotFoundError, PreconditionFailedError
from model_store.manifest import Manifest, OutputKind
from training.ingest import list_raw_objects

#: PyTorch's answer first (it is the prediction); the TF Serving one, a second framework, is
#: compared with it. An imported model is scored by what its manifest is packaged for.
SCORING_BACKENDS = ("torchserve", "triton", "tfserving")


def scoring_backends(manifest: Manifest) -> list[str]:
    """The server giving the prediction and, when the version has a second framework, TF Serving."""
    packaged = [kind for kind in SCORING_BACKENDS if kind in manifest.backends]
    if not packaged:
        raise ValueError(f"{manifest.name} v{manifest.version} is packaged for no server batch scoring uses")
    primary = packaged[0]
    return [primary, "tfserving"] if primary != "tfserving" and "tfserving" in packaged else [primary]


_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


class NothingNewError(LookupError):
    """No raw object is new to the scoring ledger."""


@dataclass
class BatchScoreResult:
    model: str
    version: int
    batch: str
    objects: int
    rows: int
    to_label: int
    predictions_uri: str
    labeling_uri: str
    #: Regression: the disagreement from which rows go to labeling; classification: the confidence
    #: below which they do.
    label_threshold: float

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _ledger_key(model: str) -> str:
    return f"scoring/{model}/ledger.json"


def _read_ledger(store: ModelStore, model: str) -> tuple[dict[str, str], str | None]:
    try:
        stored = store.storage.get(_ledger_key(model))
    except ObjectNotFoundError:
        return {}, None
    return dict(json.loads(stored.data)["scored"]), stored.etag


async def _predict(settings: FlywheelSettings, store: ModelStore, manifest: Manifest,
                   inputs: np.ndarray, batch_rows: int = 512) -> dict[str, np.ndarray]:  # fmt: skip
    from serving.backends.factory import build_backend

    model, version = manifest.name, manifest.version
    input_name, output_name = manifest.signature.inputs[0].name, manifest.signature.outputs[0].name

    answers = {}
    for kind in scoring_backends(manifest):
        backend = build_backend(kind, settings, store)
        try:
            # Load only what is not served yet: a load rewrites the server's version list, and doing
            # that beside the gateway's own loads could drop a version it has just deployed.
            if not await backend.ready(model, version):
                await backend.load(model, version)
            parts = [
                (await backend.infer(model, version, {input_name: inputs[start : start + batch_rows]}))[
                    output_name
                ].reshape(min(batch_rows, len(inputs) - start), -1)
                for start in range(0, len(inputs), batch_rows)
            ]
            answers[kind] = np.concatenate(parts).astype(np.float64)
        finally:
            await backend.aclose()
    return answers


def score_new_data(
    settings: FlywheelSettings,
    store: ModelStore,
    model: str,
    version: int | None = None,
    label_share: float = 0.05,
    progress: Callable[[str], None] = lambda message: None,
    label_confidence: float = 0.95,
) -> BatchScoreResult:
    from model_store.backends.s3 import s3_client
    from training.pipeline import task_of
    from training.spark import build_spark_session

    version = version or store.aliases(model).get("champion")
    if version is None:
        raise LookupError(f"{model} has no champion to score with; pass --version")
    manifest = store.get_manifest(model, version)
    task = task_of(store, model, settings.default_task)
    client = s3_client(settings)
    scored, ledger_etag = _read_ledger(store, model)
    listed = list_raw_objects(client, settings.raw_bucket, settings.raw_prefix, task.raw_suffixes)
    new = [item for item in listed if scored.get(item["key"]) != item["etag"]]
    if not new:
        raise NothingNewError(f"nothing new under s3://{settings.raw_bucket}/{settings.raw_prefix}")
    batch = (
        "batch-"
        + hashlib.sha256(
            "\n".join(
                f"{item['key']}\t{item['etag']}" for item in sorted(new, key=lambda i: i["key"])
            ).encode()
        ).hexdigest()[:16]
    )

    sources: dict[str, str] = {}  # local path below raw_dir -> the object's S3 URI
    with tempfile.TemporaryDirectory(prefix="flywheel-score-") as scratch:
        raw_dir = Path(scratch) / "raw"
        for item in new:
            # One folder per object (hashed key: no path from S3 reaches the file system); the file
            # name is kept (the forecaster's is the symbol), as in training.
            name = item["key"].rsplit("/", 1)[-1]
            if not _SAFE_NAME.fullmatch(name):
                raise ValueError(f"s3://{settings.raw_bucket}/{item['key']}: not a plain file name")
            folder = hashlib.sha256(item["key"].encode()).hexdigest()[:16]
            local = raw_dir / folder / name
            sources[f"{folder}/{name}"] = f"s3://{settings.raw_bucket}/{item['key']}"
            local.parent.mkdir(parents=True, exist_ok=True)
            client.download_file(settings.raw_bucket, item["key"], str(local))
        progress(f"Spark features for {len(new)} objects")
        spark = build_spark_session(
            settings.resolved_spark_master,
            f"flywheel-score-{model}",
            settings.spark_driver_memory,
            log_file=settings.log_dir / "spark.log",
        )
        keys, inputs = task.scoring_inputs(spark, raw_dir)
    if len(inputs) == 0:
        raise ValueError(
            f"the {len(new)} new object(s) under s3://{settings.raw_bucket}/{settings.raw_prefix} "
            f"hold no row {task.name} can score (every row was malformed)"
        )
    if "source" in keys:
        keys = keys.assign(source=keys["source"].map(sources))
    progress(f"scoring {len(inputs)} rows with {model} v{version}")
    answers = asyncio.run(_predict(settings, store, manifest, inputs))
    primary, *second = scoring_backends(manifest)
    other = answers[second[0]] if second else None
    scored_at = datetime.now(UTC).isoformat()
    if manifest.output.kind is OutputKind.CLASSIFICATION:
        probabilities = answers[primary]
        predicted = np.argmax(probabilities, axis=1)
        confidence = probabilities.max(axis=1)
        names = manifest.output.class_names or [str(index) for index in range(probabilities.shape[1])]
        threshold = label_confidence
        to_label_mask = confidence < threshold
        columns: dict[str, Any] = {
            "predicted_class": predicted,
            "predicted_label": [names[index] for index in predicted],
            "confidence": confidence,
        }
        if other is not None:
            columns["agrees_tensorflow"] = predicted == np.argmax(other, axis=1)
    elif other is None:
        # One framework: no second opinion to measure confidence by, so nothing goes to labeling.
        threshold, to_label_mask = float("inf"), np.zeros(len(keys), dtype=bool)
        columns = {"prediction": answers[primary][:, 0]}
    else:
        prediction, tensorflow = answers[primary][:, 0], other[:, 0]
        disagreement = np.abs(prediction - tensorflow)
        threshold = float(np.quantile(disagreement, 1.0 - label_share)) if label_share > 0 else float("inf")
        to_label_mask = disagreement >= threshold if label_share > 0 else np.zeros(len(keys), dtype=bool)
        columns = {
            "prediction": prediction,
            "prediction_tensorflow": tensorflow,
            "disagreement": disagreement,
        }
    predictions = keys.assign(**columns, model=model, model_version=version, batch=batch, scored_at=scored_at)
    to_label = predictions[to_label_mask]
    if "source" not in keys:
        # No object to point a labeler at: the row carries its inputs.
        to_label = to_label.assign(features=[json.dumps(row.tolist()) for row in inputs[to_label_mask]])
    predictions_key = f"scored/{model}/{batch}.parquet"
    labeling_key = f"labeling/{model}/{batch}.parquet"
    for key, frame in ((predictions_key, predictions), (labeling_key, to_label)):
        buffer = io.BytesIO()
        frame.to_parquet(buffer, index=False)
        client.put_object(Bucket=settings.raw_bucket, Key=key, Body=buffer.getvalue())

    # The ledger moves last, by compare-and-swap: outputs exist before the data counts as scored.
    ledger = json.dumps({"scored": {**scored, **{i["key"]: i["etag"] for i in new}}}, sort_keys=True).encode()
    try:
        if ledger_etag is None:
            store.storage.put_if_absent(_ledger_key(model), ledger)
        else:
            store.storage.put_if_match(_ledger_key(model), ledger, ledger_etag)
    except PreconditionFailedError as error:
        raise PreconditionFailedError(
            f"another scorer updated the ledger of {model} meanwhile; its outputs stand, run again: {error}"
        ) from error
    return BatchScoreResult(
        model=model,
        version=version,
        batch=batch,
        objects=len(new),
        rows=len(predictions),
        to_label=int(to_label_mask.sum()),
        predictions_uri=f"s3://{settings.raw_bucket}/{predictions_key}",
        labeling_uri=f"s3://{settings.raw_bucket}/{labeling_key}",
        label_threshold=threshold,
    )
