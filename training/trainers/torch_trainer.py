"""PyTorch trainer: an MLP over the flattened window, with train-fitted normalisation built in.

Seeded and deterministic on CPU. The module carries its normalisation as buffers, so every
exported form (TorchScript, the .mar, the Triton weights) takes raw features.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from training.contract import FEATURE_COLUMNS, WINDOW
from training.dataset import WindowedSplit
from training.metrics import holdout_report


@dataclass(frozen=True)
class TorchParams:
    hidden: tuple[int, int] = (64, 32)
    epochs: int = 40
    batch_size: int = 128
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    patience: int = 6
    seed: int = 7
    extra: dict[str, Any] = field(default_factory=dict)


class ForecastMLP(nn.Module):
    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, mean: np.ndarray, std: np.ndarray, hidden: tuple[int, int]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32))
        inputs = WINDOW * len(FEATURE_COLUMNS)
        self.layers = nn.Sequential(
            nn.Linear(inputs, hidden[0]),
            nn.ReLU(),
            nn.Linear(hidden[0], hidden[1]),
            nn.ReLU(),
            nn.Linear(hidden[1], 1),
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        normalised = (features - self.mean) / self.std
        return self.layers(normalised.flatten(1))


def predict(model: nn.Module, features: np.ndarray) -> np.ndarray:
    model.eval()
    with torch.no_grad():
        return model(torch.as_tensor(features, dtype=torch.float32)).numpy().reshape(-1)


def train_torch(
    splits: dict[str, WindowedSplit], mean: np.ndarray, std: np.ndarray, params: TorchParams
) -> tuple[ForecastMLP, dict[str, float]]:
    """Train with early stopping on validation RMSE; return the best model and its test report."""
    torch.manual_seed(params.seed)
    np.random.seed(params.seed)
    torch.use_deterministic_algorithms(True)
    model = ForecastMLP(mean, std, params.hidden)
    optimiser = torch.optim.AdamW(
        model.parameters(), lr=params.learning_rate, weight_decay=params.weight_decay
    )
    loss_function = nn.MSELoss()
    train = splits["train"]
    features = torch.as_tensor(train.features)
    # Returns are ~1e-2: scale the target so the loss is well conditioned; undo it in the last layer.
    scale = float(np.std(train.target)) or 1.0
    target = torch.as_tensor(train.target / scale).reshape(-1, 1)
    generator = torch.Generator().manual_seed(params.seed)
    best_rmse, best_state, stale = float("inf"), None, 0
    for _ in range(params.epochs):
        model.train()
        order = torch.randperm(len(train), generator=generator)
        for start in range(0, len(train), params.batch_size):
            batch = order[start : start + params.batch_size]
            optimiser.zero_grad()
            loss = loss_function(model(features[batch]), target[batch])
            loss.backward()
            optimiser.step()
        validation_rmse = float(
            np.sqrt(
                np.mean(
                    (predict(model, splits["validation"].features) * scale - splits["validation"].target) ** 2
                )
            )
        )
        if validation_rmse < best_rmse - 1e-9:
            best_rmse, stale = validation_rmse, 0
            best_state = {key: value.clone() for key, value in model.state_dict().items()}
        else:
            stale += 1
            if stale >= params.patience:
                break
    assert best_state is not None
    model.load_state_dict(best_state)
    # Fold the target scale into the output layer so the model predicts returns directly.
    with torch.no_grad():
        last = model.layers[-1]
        assert isinstance(last, nn.Linear)
        last.weight.mul_(scale)
        last.bias.mul_(scale)
    model.eval()
    return model, holdout_report(splits["test"].target, predict(model, splits["test"].features))


def export_torchscript(model: ForecastMLP, path: Path) -> Path:
    """Trace to TorchScript: what TorchServe's handler and the evaluation gate load."""
    path.parent.mkdir(parents=True, exist_ok=True)
    example = torch.zeros(2, WINDOW, len(FEATURE_COLUMNS))
    traced = torch.jit.trace(model, example)
    traced.save(str(path))
    return path


def export_numpy_weights(model: ForecastMLP, path: Path) -> Path:
    """The same network as plain arrays, for Triton's Python backend (numpy only, any Triton image)."""
    linears = [layer for layer in model.layers.children() if isinstance(layer, nn.Linear)]
    arrays = {"mean": model.mean.numpy(), "std": model.std.numpy()}
    for index, layer in enumerate(linears):
        arrays[f"w{index}"] = layer.weight.detach().numpy()
        arrays[f"b{index}"] = layer.bias.detach().numpy()
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    return path


def numpy_forward(weights: dict[str, np.ndarray], features: np.ndarray) -> np.ndarray:
    """Reference forward pass over exported weights (the Triton model runs the same arithmetic)."""
    hidden = ((features - weights["mean"]) / weights["std"]).reshape(len(features), -1)
    layer = 0
    while f"w{layer + 1}" in weights:
        hidden = np.maximum(hidden @ weights[f"w{layer}"].T + weights[f"b{layer}"], 0.0)
        layer += 1
    return hidden @ weights[f"w{layer}"].T + weights[f"b{layer}"]
