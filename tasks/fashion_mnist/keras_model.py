"""The classifier in Keras: the PyTorch CNN's architecture, taking the same raw grey levels.

A fixed ``Normalization`` layer carries the train pixel statistics; the output layer is a softmax
named after the signature's output, so the SavedModel answers ``probabilities`` by name.
"""

from __future__ import annotations

from typing import Any

from flywheel.native_logs import quiet_import
from tasks.base import Split
from tasks.fashion_mnist.data import CLASS_NAMES, SIDE
from tasks.fashion_mnist.dataset import subsample
from tasks.fashion_mnist.params import CnnParams


def train_keras(
    splits: dict[str, Split], mean: float, std: float, params: CnnParams, names: tuple[str, str]
) -> Any:
    """``names``: the signature's (input, output) names."""
    tf = quiet_import("tensorflow")
    keras = tf.keras
    keras.utils.set_random_seed(params.seed)
    tf.config.experimental.enable_op_determinism()
    first, second = params.channels
    inputs = keras.Input(shape=(SIDE, SIDE), name=names[0])
    hidden = keras.layers.Normalization(axis=None, mean=mean, variance=std**2)(inputs)
    hidden = keras.layers.Reshape((SIDE, SIDE, 1))(hidden)
    hidden = keras.layers.Conv2D(first, 3, padding="same", activation="relu")(hidden)
    hidden = keras.layers.MaxPooling2D(2)(hidden)
    hidden = keras.layers.Conv2D(second, 3, padding="same", activation="relu")(hidden)
    hidden = keras.layers.MaxPooling2D(2)(hidden)
    hidden = keras.layers.Flatten()(hidden)
    hidden = keras.layers.Dense(params.hidden, activation="relu")(hidden)
    outputs = keras.layers.Dense(len(CLASS_NAMES), activation="softmax", name=names[1])(hidden)
    model = keras.Model(inputs, outputs)
    model.compile(
        optimizer=keras.optimizers.Adam(params.learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    train = subsample(splits["train"], params.max_train_images, params.seed)
    model.fit(
        train.features,
        train.target,
        validation_data=(splits["validation"].features, splits["validation"].target),
        epochs=params.epochs,
        batch_size=params.batch_size,
        shuffle=True,
        verbose=0,
        callbacks=[
            keras.callbacks.EarlyStopping(
                monitor="val_accuracy", mode="max", patience=params.patience, restore_best_weights=True
            )
        ],
    )
    return model
