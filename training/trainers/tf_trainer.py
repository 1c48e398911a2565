"""TensorFlow/Keras trainer on the same feature contract, exported as a TF Serving SavedModel.

The Keras model carries its normalisation (a fixed ``Normalization`` layer fitted on train), and
the SavedModel has a ``serving_default`` signature with the contract's named input and output,
so TF Serving clients send raw features by name.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from flywheel.native_logs import quiet_import
from training.contract import FEATURE_COLUMNS, INPUT_NAME, OUTPUT_NAME, WINDOW
from training.dataset import WindowedSplit
from training.metrics import holdout_report


@dataclass(frozen=True)
class TensorFlowParams:
    hidden: tuple[int, int] = (64, 32)
    epochs: int = 40
    batch_size: int = 128
    learning_rate: float = 1e-3
    patience: int = 6
    seed: int = 7


def _tensorflow() -> Any:
    return quiet_import("tensorflow")


def train_tensorflow(
    splits: dict[str, WindowedSplit], mean: np.ndarray, std: np.ndarray, params: TensorFlowParams
) -> tuple[Any, dict[str, float]]:
    tf = _tensorflow()
    keras = tf.keras
    keras.utils.set_random_seed(params.seed)
    tf.config.experimental.enable_op_determinism()
    scale = float(np.std(splits["train"].target)) or 1.0
    inputs = keras.Input(shape=(WINDOW, len(FEATURE_COLUMNS)), name=INPUT_NAME)
    normalised = keras.layers.Normalization(axis=-1, mean=mean, variance=np.square(std))(inputs)
    hidden = keras.layers.Flatten()(normalised)
    hidden = keras.layers.Dense(params.hidden[0], activation="relu")(hidden)
    hidden = keras.layers.Dense(params.hidden[1], activation="relu")(hidden)
    scaled = keras.layers.Dense(1)(hidden)
    # The network learns target/scale; this constant layer restores returns.
    outputs = keras.layers.Rescaling(scale, name=OUTPUT_NAME)(scaled)
    model = keras.Model(inputs, outputs)
    model.compile(optimizer=keras.optimizers.Adam(params.learning_rate), loss="mse")
    model.fit(
        splits["train"].features,
        splits["train"].target,
        validation_data=(splits["validation"].features, splits["validation"].target),
        epochs=params.epochs,
        batch_size=params.batch_size,
        shuffle=True,
        verbose=0,
        callbacks=[keras.callbacks.EarlyStopping(patience=params.patience, restore_best_weights=True)],
    )
    prediction = model.predict(splits["test"].features, verbose=0).reshape(-1)
    return model, holdout_report(splits["test"].target, prediction)


def export_savedmodel(model: Any, directory: Path) -> Path:
    """Write a SavedModel whose ``serving_default`` maps ``features`` to ``prediction``."""
    tf = _tensorflow()

    class ServingModule(tf.Module):  # type: ignore[name-defined]
        def __init__(self, keras_model: Any) -> None:
            super().__init__()
            self.model = keras_model

        @tf.function(
            input_signature=[tf.TensorSpec([None, WINDOW, len(FEATURE_COLUMNS)], tf.float32, name=INPUT_NAME)]
        )
        def serve(self, features: Any) -> dict[str, Any]:
            return {OUTPUT_NAME: self.model(features, training=False)}

    module = ServingModule(model)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tf.saved_model.save(module, str(directory), signatures={"serving_default": module.serve})
    return directory


def load_serving_signature(directory: Path) -> Any:
    """The exported ``serving_default`` signature, as TF Serving would call it."""
    tf = _tensorflow()
    return tf.saved_model.load(str(directory)).signatures["serving_default"]


def predict_savedmodel(signature: Any, features: np.ndarray) -> np.ndarray:
    tf = _tensorflow()
    result = signature(**{INPUT_NAME: tf.constant(features, dtype=tf.float32)})
    return np.asarray(result[OUTPUT_NAME]).reshape(-1)
