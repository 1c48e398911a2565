"""The classifier's hyperparameters per framework (kept free of torch and TensorFlow imports)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CnnParams:
    #: Output channels of the two 3x3 convolutions (each followed by 2x2 max-pooling).
    channels: tuple[int, int] | list[int] = (16, 32)
    hidden: int = 64
    epochs: int = 4
    batch_size: int = 128
    learning_rate: float = 2e-3
    patience: int = 2
    #: Train on at most this many images of the train split (a seeded subsample): the speed knob.
    max_train_images: int = 12_000
    seed: int = 7
