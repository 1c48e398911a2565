"""Fashion-MNIST image classification: 28x28 grey images -> probabilities over 10 named classes.

Raw data is labelled images in Parquet batches (``data.py``, from the Debian package); Spark checks,
splits and profiles them (``preprocess.py``); a small CNN in PyTorch and the same CNN in Keras
learn the classes; accuracy against the champion (or the majority class) gates. Batch scoring
sends images predicted with low confidence to labeling; drift is watched on the predictions
(class histogram, chi-squared; max-softmax confidence, KS) and two cheap image statistics.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from model_store.manifest import OutputKind, OutputSpec, Signature, TensorSpec
from tasks.base import MetricSpec, SearchBudget, SearchDimension, Split, Task
from tasks.fashion_mnist.data import CLASS_NAMES, SIDE
from tasks.fashion_mnist.params import CnnParams

if TYPE_CHECKING:
    import pandas as pd

INPUT_NAME = "images"
OUTPUT_NAME = "probabilities"
MAX_BATCH_SIZE = 256
CONFIDENCE_BINS = 10


def classification_metrics(target: np.ndarray, probabilities: np.ndarray) -> dict[str, float]:
    """Accuracy and log loss, and the majority-class baseline's as ``*_naive``."""
    target = np.asarray(target, dtype=np.int64).reshape(-1)
    probabilities = np.asarray(probabilities, dtype=np.float64).reshape(len(target), -1)
    predicted = probabilities.argmax(axis=1)
    chosen = np.clip(probabilities[np.arange(len(target)), target], 1e-12, 1.0)
    priors = np.bincount(target, minlength=probabilities.shape[1]) / len(target)
    return {
        "accuracy": float(np.mean(predicted == target)),
        "log_loss": float(-np.mean(np.log(chosen))),
        "mean_confidence": float(np.mean(probabilities.max(axis=1))),
        "accuracy_naive": float(priors.max()),
        "log_loss_naive": float(-np.sum(priors[priors > 0] * np.log(priors[priors > 0]))),
    }


class FashionMnistTask(Task):
    name = "fashion_mnist"
    summary = "Fashion-MNIST: 28x28 grey images -> probabilities over 10 clothing classes"
    output = OutputSpec(kind=OutputKind.CLASSIFICATION, class_names=list(CLASS_NAMES))
    metric = MetricSpec("accuracy", higher_is_better=True, guards={"log_loss": False})
    learns_from_captures = True
    raw_suffixes = (".parquet",)
    search_budget = SearchBudget(trials=8, seconds=120.0)
    default_params = {"pytorch": asdict(CnnParams()), "tensorflow": asdict(CnnParams())}
    vocabulary = frozenset({*CLASS_NAMES, "input_mean", "input_std"})

    def signature(self) -> Signature:
        return Signature(
            inputs=[TensorSpec(name=INPUT_NAME, datatype="FP32", shape=[-1, SIDE, SIDE])],
            outputs=[TensorSpec(name=OUTPUT_NAME, datatype="FP32", shape=[-1, len(CLASS_NAMES)])],
            max_batch_size=MAX_BATCH_SIZE,
        )

    def check_raw(self, path: Path, source: str) -> None:
        from tasks.fashion_mnist.preprocess import check_parquet_batch

        check_parquet_batch(path, source)

    def preprocess(self, spark: Any, raw_dir: Path, output_dir: Path) -> dict[str, Any]:
        from tasks.fashion_mnist.preprocess import run_preprocess

        return run_preprocess(spark, raw_dir, output_dir)

    def scoring_inputs(self, spark: Any, raw_dir: Path) -> tuple[pd.DataFrame, np.ndarray]:
        from tasks.fashion_mnist.dataset import images_of
        from tasks.fashion_mnist.preprocess import parse_and_clean

        clean, _ = parse_and_clean(spark, raw_dir, labelled=False)
        frame = clean.select("image_id", "source_file", "pixels").orderBy("image_id").toPandas()
        keys = frame[["image_id", "source_file"]].rename(columns={"source_file": "source"})
        return keys, images_of(frame["pixels"])

    def load_splits(self, preprocess_dir: Path) -> dict[str, Split]:
        from tasks.fashion_mnist.dataset import load_splits

        return load_splits(preprocess_dir)

    @staticmethod
    def _normalisation(preprocess_dir: Path) -> tuple[float, float]:
        pixels = json.loads((preprocess_dir / "normalization.json").read_text())["pixels"]
        return float(pixels["mean"]), float(pixels["std"])

    def train_torch(self, splits: dict[str, Split], preprocess_dir: Path, params: dict[str, Any]) -> Any:
        from tasks.fashion_mnist.torch_model import train_torch

        return train_torch(splits, *self._normalisation(preprocess_dir), CnnParams(**params))

    def train_keras(self, splits: dict[str, Split], preprocess_dir: Path, params: dict[str, Any]) -> Any:
        from tasks.fashion_mnist.keras_model import train_keras

        names = (INPUT_NAME, OUTPUT_NAME)
        return train_keras(splits, *self._normalisation(preprocess_dir), CnnParams(**params), names)

    def evaluate(self, target: np.ndarray, prediction: np.ndarray) -> dict[str, float]:
        return classification_metrics(target, prediction)

    def prediction_profile(self, prediction: np.ndarray, target: np.ndarray | None = None) -> dict[str, Any]:
        from training.profiles import class_profile

        return class_profile(prediction, list(CLASS_NAMES), CONFIDENCE_BINS, target)

    def raw_from_captures(
        self, request_ids: list[str], inputs: list[dict[str, np.ndarray]], labels: np.ndarray
    ) -> tuple[str, bytes] | None:
        import io

        from tasks.fashion_mnist.data import batch_frame

        # The served images, as the labelled batches land: uint8 pixels (the gateway got floats).
        images = np.stack([np.asarray(entry[INPUT_NAME]).reshape(-1, SIDE, SIDE)[0] for entry in inputs])
        pixels = np.clip(np.rint(images), 0, 255).astype(np.uint8)
        frame = batch_frame([f"captured-{request_id}" for request_id in request_ids], pixels, labels)
        sink = io.BytesIO()
        frame.to_parquet(sink, index=False)
        return ".parquet", sink.getvalue()

    def search_space(self) -> dict[str, SearchDimension]:
        return {
            "learning_rate": SearchDimension("log_float", 3e-4, 5e-3),
            "hidden": SearchDimension("choice", choices=(32, 64, 128)),
            "channels": SearchDimension("choice", choices=((8, 16), (16, 32), (32, 64))),
        }


TASK = FashionMnistTask()
