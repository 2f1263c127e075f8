"""A site's half of a round: train from the global weights on local rows, return the change.

The same function runs in the in-process simulation and inside a site's Celery
worker, so what a site computes does not depend on the backend.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import torch

from learners.federated.models import FederatedModel
from learners.federated.updates import Update


class LocalTrainingError(ValueError):
    """Local training settings or data that cannot be used; the message says which."""


@dataclass(frozen=True)
class LocalTraining:
    """How a site trains each round (sent by the coordinator with the weights).

    Attributes
    ----------
    epochs : int
        Passes over the site's labelled rows.
    batch_size : int
    lr : float
        Plain SGD step size (no optimiser state survives a round, so no Adam moments leak between rounds).
    proximal_mu : float
        FedProx's weight on ||w - w_global||^2 / 2; 0 is plain FedAvg training.
    max_steps : int or None
        Cap on SGD steps per round (bounds a large site's work, and its drift).
    """

    epochs: int = 1
    batch_size: int = 32
    lr: float = 0.1
    proximal_mu: float = 0.0
    max_steps: int | None = None

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1:
            raise LocalTrainingError(f"epochs and batch_size must be >= 1; got {self.epochs}, {self.batch_size}")
        if not self.lr > 0:
            raise LocalTrainingError(f"lr must be > 0; got {self.lr}")
        if self.proximal_mu < 0:
            raise LocalTrainingError(f"proximal_mu must be >= 0; got {self.proximal_mu}")
        if self.max_steps is not None and self.max_steps < 1:
            raise LocalTrainingError(f"max_steps must be >= 1 or None; got {self.max_steps}")

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> "LocalTraining":
        known = {"epochs", "batch_size", "lr", "proximal_mu", "max_steps"}
        return cls(**{key: value for key, value in config.items() if key in known})


def local_train(
    model: FederatedModel, weights: Mapping[str, np.ndarray], X: np.ndarray, y: np.ndarray,
    training: LocalTraining, *, seed: int = 0,
) -> Update:
    """Train from `weights` on (X, y) and return the change with the row count and training metrics.

    Parameters
    ----------
    model : FederatedModel
    weights : dict of str to ndarray
        The global weights this round starts from.
    X : ndarray of shape (n, n_features)
    y : ndarray of shape (n,)
        Class indices in the federation's class order.
    training : LocalTraining
    seed : int
        Orders the mini-batches.

    Returns
    -------
    Update
        ``arrays`` is local minus global; metrics are the mean training loss of the last epoch
        and the accuracy of the *incoming* weights on the local rows (federated evaluation).
    """
    n = len(y)
    if n == 0:
        raise LocalTrainingError("this site has no labelled rows to train on")
    if X.shape[0] != n:
        raise LocalTrainingError(f"{X.shape[0]} feature rows for {n} labels")
    if int(np.max(y)) >= model.spec.n_classes or int(np.min(y)) < 0:
        raise LocalTrainingError(f"class indices must be in [0, {model.spec.n_classes}); got {int(np.min(y))}..{int(np.max(y))}")
    before = model.evaluate(weights, X, y)
    global_params = model.tensors(weights)
    params = {name: value.clone().requires_grad_(True) for name, value in global_params.items()}
    X_t = torch.tensor(np.asarray(X, dtype=np.float32))
    y_t = torch.as_tensor(np.asarray(y, dtype=np.int64))
    generator = torch.Generator().manual_seed(seed)
    steps, epoch_loss = 0, 0.0
    for _ in range(training.epochs):
        order = torch.randperm(n, generator=generator)
        total, batches = 0.0, 0
        for start in range(0, n, training.batch_size):
            index = order[start:start + training.batch_size]
            loss = torch.nn.functional.cross_entropy(model.logits(params, X_t[index]), y_t[index])
            objective = loss
            if training.proximal_mu > 0:
                drift = sum(torch.sum((params[k] - global_params[k]) ** 2) for k in params)
                objective = loss + 0.5 * training.proximal_mu * drift
            grads = torch.autograd.grad(objective, list(params.values()))
            with torch.no_grad():
                for value, grad in zip(params.values(), grads):
                    value -= training.lr * grad
            total += float(loss.detach())
            batches += 1
            steps += 1
            if training.max_steps is not None and steps >= training.max_steps:
                break
        epoch_loss = total / max(batches, 1)
        if training.max_steps is not None and steps >= training.max_steps:
            break
    change = {name: (params[name].detach() - global_params[name]).numpy().astype(np.float32) for name in params}
    metrics = {"train_loss": epoch_loss, "accuracy_before": before["accuracy"], "loss_before": before["loss"],
               "steps": float(steps)}
    return Update(arrays=change, num_examples=n, metrics=metrics)
