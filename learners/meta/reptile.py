"""Reptile (Nichol, Achiam and Schulman, 2018): first-order meta-learning without a query loss.

Each task runs k plain SGD steps from the meta-parameters theta on its support
set, reaching theta_t; the outer step moves theta towards the tasks' mean,
``theta += epsilon * (mean_t theta_t - theta)`` (`functional.reptile_update`).

`meta_gradients` returns ``theta - mean_t theta_t``: plain SGD with learning
rate epsilon on it is exactly that update, and `training.meta_train` hands it to
Adam like every other algorithm's gradient (Nichol et al. also use Adam on
this difference).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from learners.meta.base import MetaAlgorithm, head_for_task, map_tasks
from learners.meta.episodes import EpisodeBatch
from learners.meta.functional import Params, accuracy_of, inner_adapt, logits_of
from learners.meta.predictors import AdaptedModel


class Reptile(MetaAlgorithm):
    """Reptile over the model's own parameters.

    Parameters
    ----------
    model : nn.Module
        Its parameters are the meta-parameters.
    lr : float
        Inner-loop SGD learning rate.
    adapt_steps : int
        Inner SGD steps per task (k), in meta-training and by default at adaptation.
        With k = 1 Reptile is plain joint training on the tasks; it needs k > 1 to meta-learn.
    """

    name = "reptile"

    def __init__(self, model: nn.Module, lr: float, adapt_steps: int = 5) -> None:
        super().__init__(model)
        self.lr = lr
        self.adapt_steps = adapt_steps

    def hyperparameters(self) -> dict[str, Any]:
        return {"lr": self.lr, "adapt_steps": self.adapt_steps}

    def adapted_batch(self, params: Params, batch: EpisodeBatch, *, vectorize: bool = True
                      ) -> tuple[Params, torch.Tensor, torch.Tensor]:
        """Each task's parameters after its inner loop, stacked (T, ...), with per-task query loss and accuracy.

        The inner loop starts from a detached copy: Reptile never differentiates through it.
        """
        start = {k: v.detach() for k, v in params.items()}

        def task(sx: torch.Tensor, sy: torch.Tensor, qx: torch.Tensor, qy: torch.Tensor
                 ) -> tuple[Params, torch.Tensor, torch.Tensor]:
            adapted = inner_adapt(self.model, start, sx, sy, steps=self.adapt_steps, lr=self.lr, first_order=True)
            logits = logits_of(self.model, adapted, qx)
            return adapted, torch.nn.functional.cross_entropy(logits, qy), accuracy_of(logits, qy)

        return map_tasks(task, batch, vectorize=vectorize)

    def meta_gradients(self, params: Params, batch: EpisodeBatch, *, vectorize: bool = True
                       ) -> tuple[Params, dict[str, float]]:
        adapted, losses, accuracies = self.adapted_batch(params, batch, vectorize=vectorize)
        grads = {name: params[name].detach() - adapted[name].mean(dim=0) for name in self.trainable_names}
        return grads, {"loss": float(losses.mean()), "accuracy": float(accuracies.mean())}

    def adapt_task(self, meta_params: Params, support_x: torch.Tensor, support_y: torch.Tensor,
                   classes: np.ndarray, steps: int | None) -> AdaptedModel:
        start = head_for_task(self.model, meta_params, support_x, support_y, len(classes))
        adapted = inner_adapt(self.model, start, support_x, support_y,
                              steps=self.adapt_steps if steps is None else steps, lr=self.lr, first_order=True)
        return AdaptedModel(self.model, adapted, classes)
