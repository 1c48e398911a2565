"""The PyTorch training loop every task shares: seeded mini-batches, early stopping, best weights.

A task builds its module and says what a batch's loss is and how good the model is on
validation (higher is better); this loop does the rest deterministically on CPU.
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

import torch

#: Called with (epoch index, validation score) after every epoch, when set: the hyperparameter
#: search reports each trial's validation curve through it (and prunes by raising). A context
#: variable rather than a parameter, so every task's trainer reports without knowing of a search.
EPOCH_OBSERVER: ContextVar[Callable[[int, float], None] | None] = ContextVar("epoch_observer", default=None)


def fit_early_stopping(
    model: torch.nn.Module,
    optimiser: torch.optim.Optimizer,
    batch_loss: Callable[[torch.Tensor], torch.Tensor],
    examples: int,
    validation_score: Callable[[], float],
    *,
    epochs: int,
    batch_size: int,
    patience: int,
    seed: int,
) -> dict[str, Any]:
    """Train for at most ``epochs``; keep the weights of the best ``validation_score`` (higher is
    better) and stop after ``patience`` epochs without improvement. ``batch_loss`` gets the batch's
    example indices. Returns what happened: epochs run and the best score."""
    generator = torch.Generator().manual_seed(seed)
    best_score, best_state, stale, ran = float("-inf"), None, 0, 0
    observer = EPOCH_OBSERVER.get()
    for epoch in range(epochs):
        ran += 1
        model.train()
        order = torch.randperm(examples, generator=generator)
        for start in range(0, examples, batch_size):
            optimiser.zero_grad()
            batch_loss(order[start : start + batch_size]).backward()
            optimiser.step()
        model.eval()
        with torch.no_grad():
            score = validation_score()
        if observer is not None:
            observer(epoch, score)
        if score > best_score + 1e-9:
            best_score, stale = score, 0
            best_state = {key: value.clone() for key, value in model.state_dict().items()}
        else:
            stale += 1
            if stale >= patience:
                break
    assert best_state is not None, "no epoch ran"
    model.load_state_dict(best_state)
    model.eval()
    return {"epochs": ran, "best_validation_score": best_score}
