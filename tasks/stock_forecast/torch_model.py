"""The forecaster in PyTorch: an MLP over the flattened window, with train-fitted normalisation built in.

Seeded and deterministic on CPU. The module carries its normalisation as buffers, so every
exported form (TorchScript, the .mar, the Triton entry) takes raw features.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from tasks.base import Split
from tasks.stock_forecast.contract import FEATURE_COLUMNS, WINDOW
from tasks.stock_forecast.params import TorchParams
from training.exports import torch_predict
from training.torch_loop import fit_early_stopping


class ForecastMLP(nn.Module):
    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, mean: np.ndarray, std: np.ndarray, hidden: tuple[int, int] | list[int]) -> None:
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


def train_torch(
    splits: dict[str, Split], mean: np.ndarray, std: np.ndarray, params: TorchParams
) -> ForecastMLP:
    """Train with early stopping on validation RMSE; return the best model."""
    torch.manual_seed(params.seed)
    np.random.seed(params.seed)
    torch.use_deterministic_algorithms(True)
    model = ForecastMLP(mean, std, params.hidden)
    optimiser = torch.optim.AdamW(
        model.parameters(), lr=params.learning_rate, weight_decay=params.weight_decay
    )
    loss_function = nn.MSELoss()
    train, validation = splits["train"], splits["validation"]
    features = torch.as_tensor(train.features)
    # Returns are ~1e-2: scale the target so the loss is well conditioned; undo it in the last layer.
    scale = float(np.std(train.target)) or 1.0
    target = torch.as_tensor(train.target / scale).reshape(-1, 1)

    def negative_validation_rmse() -> float:
        error = torch_predict(model, validation.features).reshape(-1) * scale - validation.target
        return -float(np.sqrt(np.mean(error**2)))

    fit_early_stopping(
        model,
        optimiser,
        lambda batch: loss_function(model(features[batch]), target[batch]),
        len(train),
        negative_validation_rmse,
        epochs=params.epochs,
        batch_size=params.batch_size,
        patience=params.patience,
        seed=params.seed,
    )
    # Fold the target scale into the output layer so the model predicts returns directly.
    with torch.no_grad():
        last = model.layers[-1]
        assert isinstance(last, nn.Linear)
        last.weight.mul_(scale)
        last.bias.mul_(scale)
    model.eval()
    return model
