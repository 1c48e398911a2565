"""The forecaster in TensorFlow/Keras: the PyTorch MLP's architecture on the same feature contract.

The Keras model carries its normalisation (a fixed ``Normalization`` layer fitted on train), so
the exported SavedModel (``training/exports.py``) takes raw features by the contract's name.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from flywheel.native_logs import quiet_import
from tasks.base import Split
from tasks.stock_forecast.contract import FEATURE_COLUMNS, INPUT_NAME, OUTPUT_NAME, WINDOW
from tasks.stock_forecast.params import TensorFlowParams


def _tensorflow() -> Any:
    return quiet_import("tensorflow")


def train_tensorflow(
    splits: dict[str, Split], mean: np.ndarray, std: np.ndarray, params: TensorFlowParams
) -> Any:
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
    return model
