"""The forecaster's hyperparameters per framework (kept free of torch and TensorFlow imports)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TorchParams:
    hidden: tuple[int, int] | list[int] = (64, 32)
    epochs: int = 40
    batch_size: int = 128
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    patience: int = 6
    seed: int = 7


@dataclass(frozen=True)
class TensorFlowParams:
    hidden: tuple[int, int] | list[int] = (64, 32)
    epochs: int = 40
    batch_size: int = 128
    learning_rate: float = 1e-3
    patience: int = 6
    seed: int = 7
