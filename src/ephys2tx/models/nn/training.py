"""The training loop and the steps around it (early stopping, SMOTE, temperature scaling).

In the manner of skorch: :func:`train_epochs` runs shuffled mini-batch epochs and,
after each, a validation; callbacks (:class:`EarlyStopping`) see every epoch's
score and may stop the loop and restore the best weights. The estimator brings
the batch loss (which may itself draw, e.g. a mouse batch) and the validation
score. :func:`smote_step` runs before the loop on the training rows only;
:class:`TemperatureScaling` after it, on the validation rows' logits.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn

__all__ = ["Callback", "EarlyStopping", "TemperatureScaling", "smote_step", "train_epochs"]


class Callback:
    """Hooks of :func:`train_epochs` (all optional)."""

    def on_train_begin(self, module: nn.Module) -> None:
        """Before the first epoch."""

    def on_epoch_end(self, module: nn.Module, epoch: int, score: float) -> bool:
        """After an epoch's validation, with its score; True stops the loop."""
        return False

    def on_train_end(self, module: nn.Module) -> None:
        """After the last epoch."""


class EarlyStopping(Callback):
    """Keep the weights of the best epoch; stop after ``patience`` epochs without progress.

    Parameters
    ----------
    patience : int
        Epochs without an improvement larger than ``min_delta`` before stopping.
    min_delta : float
        Smallest change of the score that counts as an improvement.
    lower_is_better : bool
        The validation score is a loss (its negation is what improves).

    Attributes
    ----------
    best_score : float
        Best score so far (higher is better; a loss is negated).
    best_epoch : int
    restored : bool
        Whether the best weights were loaded back at the end (False if no epoch was scored).
    """

    def __init__(self, patience: int, min_delta: float = 1e-4, *, lower_is_better: bool = False):
        self.patience = int(patience)
        self.min_delta = min_delta
        self.lower_is_better = lower_is_better
        self.best_score, self.best_epoch = -math.inf, 0
        self.restored = False
        self._best_state, self._stale = None, 0

    def on_epoch_end(self, module: nn.Module, epoch: int, score: float) -> bool:
        return self.update(-score if self.lower_is_better else score, module, epoch)

    def update(self, score: float, module: nn.Module, epoch: int) -> bool:
        """Record an epoch's score (higher is better); True when training should stop."""
        if score > self.best_score + self.min_delta:
            self.best_score, self.best_epoch, self._stale = score, epoch, 0
            self._best_state = copy.deepcopy(module.state_dict())
            return False
        self._stale += 1
        return self._stale >= self.patience

    def on_train_end(self, module: nn.Module) -> None:
        self.restored = self.restore(module)

    def restore(self, module: nn.Module) -> bool:
        """Load the best epoch's weights into ``module``; False if no epoch was scored."""
        if self._best_state is None:
            return False
        module.load_state_dict(self._best_state)
        return True


def train_epochs(module: nn.Module, optimizer: torch.optim.Optimizer,
                 batch_loss: Callable[[torch.Tensor], torch.Tensor], *, n_rows: int, batch_size: int,
                 max_epochs: int, generator: torch.Generator,
                 validation: Callable[[], float] | None = None,
                 callbacks: Sequence[Callback] = (), device: torch.device | None = None,
                 verbose: bool = False) -> dict:
    """Train ``module`` by shuffled mini-batches; validate and call back after each epoch.

    Parameters
    ----------
    module : nn.Module
        Put in train mode for the batches, eval mode for the validation.
    optimizer : torch optimizer over ``module``'s parameters.
    batch_loss : callable
        ``batch_loss(row_indices) -> scalar loss`` for a batch of training rows.
    n_rows : int
        Number of training rows; each epoch visits them in the order of
        ``torch.randperm(n_rows, generator=generator)``.
    batch_size, max_epochs : int
    generator : torch.Generator
        Shuffling generator (seeded by the estimator).
    validation : callable, optional
        ``validation() -> score``, run under ``torch.no_grad`` after each epoch;
        None skips validation and callbacks' epoch hooks.
    callbacks : sequence of Callback
    device : torch.device, optional
        Where the batch indices go.
    verbose : bool
        Print each epoch's training loss and validation score.

    Returns
    -------
    dict
        ``train_loss`` (mean batch loss per epoch) and ``validation`` (score per epoch).
    """
    history: dict[str, list[float]] = {"train_loss": [], "validation": []}
    for cb in callbacks:
        cb.on_train_begin(module)
    for epoch in range(int(max_epochs)):
        module.train()
        order = torch.randperm(n_rows, generator=generator)
        if device is not None:
            order = order.to(device)
        total = 0.0
        for start in range(0, n_rows, batch_size):
            batch = order[start:start + batch_size]
            if len(batch) < 2 and n_rows >= 2:
                continue  # a batch of one adds noise (and breaks batch statistics)
            optimizer.zero_grad(set_to_none=True)
            loss = batch_loss(batch)
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(batch)
        history["train_loss"].append(total / n_rows)
        if validation is None:
            continue
        module.eval()
        with torch.no_grad():
            score = float(validation())
        history["validation"].append(score)
        if verbose:
            print(f"epoch {epoch:3d} train {history['train_loss'][-1]:.4f} validation {score:.4f}")
        if any([cb.on_epoch_end(module, epoch, score) for cb in callbacks]):
            break
    for cb in callbacks:
        cb.on_train_end(module)
    return history


def smote_step(X: np.ndarray, y: np.ndarray, *, k_neighbors: int, random_state: int,
               n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """SMOTE oversampling of training rows (float32 out); skipped when it cannot or need not run.

    Skipped (rows returned as they are) when the classes present are balanced, or when the
    smallest has fewer than 2 rows to interpolate between; ``k_neighbors`` is lowered to
    that class's size - 1 when needed. Give it the training rows only, never validation
    or test rows.
    """
    counts = np.bincount(y, minlength=n_classes)
    present = counts[counts > 0]
    k = min(int(k_neighbors), int(present.min()) - 1)
    if k < 1 or len(present) < 2 or present.min() == present.max():
        return X, y
    from imblearn.over_sampling import SMOTE

    X_res, y_res = SMOTE(k_neighbors=k, random_state=random_state).fit_resample(X, y)
    return np.asarray(X_res, dtype=np.float32), np.asarray(y_res)


class TemperatureScaling:
    """Temperature ``T`` minimising the negative log-likelihood of ``softmax(logits / T)``.

    Parameters
    ----------
    bounds : tuple of float
        Search interval of ``T`` (bounded Brent search on ``log T``).

    Attributes
    ----------
    temperature_ : float
    """

    def __init__(self, bounds: tuple[float, float] = (0.05, 20.0)):
        self.bounds = bounds

    def fit(self, logits: np.ndarray, y: np.ndarray) -> TemperatureScaling:
        """Fit ``T`` on validation logits (float64) and integer labels."""
        from scipy.optimize import minimize_scalar

        rows = np.arange(len(y))

        def nll(log_t: float) -> float:
            z = logits / math.exp(log_t)
            z = z - z.max(axis=1, keepdims=True)
            logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
            return float(-logp[rows, y].mean())

        low, high = self.bounds
        res = minimize_scalar(nll, bounds=(math.log(low), math.log(high)), method="bounded",
                              options={"xatol": 1e-4})
        self.temperature_ = float(math.exp(res.x))
        return self

    @staticmethod
    def probabilities(logits: np.ndarray, temperature: float) -> np.ndarray:
        """``softmax(logits / temperature)`` per row."""
        z = logits / temperature
        z = z - z.max(axis=1, keepdims=True)
        p = np.exp(z)
        return p / p.sum(axis=1, keepdims=True)
