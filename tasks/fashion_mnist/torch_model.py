"""The classifier in PyTorch: a small CNN that takes raw grey levels and returns class probabilities.

Two 3x3 convolutions with max-pooling, one hidden dense layer, softmax. The module carries the
train pixel mean and standard deviation as buffers, so every exported form (TorchScript, the
.mar, the Triton entry) takes ``[N, 28, 28]`` grey levels 0-255 as FP32 and answers ``[N, 10]``.
Training minimises cross-entropy on the logits, with early stopping on validation accuracy.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from tasks.base import Split
from tasks.fashion_mnist.data import CLASS_NAMES, SIDE
from tasks.fashion_mnist.dataset import subsample
from tasks.fashion_mnist.params import CnnParams
from training.torch_loop import fit_early_stopping


class FashionCNN(nn.Module):
    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, mean: float, std: float, params: CnnParams) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32))
        first, second = params.channels
        self.features = nn.Sequential(
            nn.Conv2d(1, first, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(first, second, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(second * (SIDE // 4) ** 2, params.hidden),
            nn.ReLU(),
            nn.Linear(params.hidden, len(CLASS_NAMES)),
        )

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        normalised = ((images - self.mean) / self.std).unsqueeze(1)
        return self.head(self.features(normalised))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.logits(images), dim=-1)


def _accuracy(model: FashionCNN, split: Split) -> float:
    model.eval()
    with torch.no_grad():
        predicted = model.logits(torch.as_tensor(split.features)).argmax(dim=1).numpy()
    return float(np.mean(predicted == split.target))


def train_torch(splits: dict[str, Split], mean: float, std: float, params: CnnParams) -> FashionCNN:
    torch.manual_seed(params.seed)
    torch.use_deterministic_algorithms(True)
    model = FashionCNN(mean, std, params)
    optimiser = torch.optim.Adam(model.parameters(), lr=params.learning_rate)
    loss_function = nn.CrossEntropyLoss()
    train = subsample(splits["train"], params.max_train_images, params.seed)
    features, target = torch.as_tensor(train.features), torch.as_tensor(train.target, dtype=torch.long)
    fit_early_stopping(
        model,
        optimiser,
        lambda batch: loss_function(model.logits(features[batch]), target[batch]),
        len(train),
        lambda: _accuracy(model, splits["validation"]),
        epochs=params.epochs,
        batch_size=params.batch_size,
        patience=params.patience,
        seed=params.seed,
    )
    return model.eval()
