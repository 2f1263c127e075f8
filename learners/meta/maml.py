"""MAML (Finn et al., 2017), its first-order approximation FOMAML, and ANIL (Raghu et al., 2020).

MAML learns an initialisation theta from which a few SGD steps on a task's
support set give low loss on its query set; the meta-gradient differentiates
through those steps. FOMAML drops the second-order part of that derivative
(cheaper, often nearly as good). ANIL adapts only the head in the inner loop,
keeping the body fixed there, and meta-learns both in the outer loop.

Two ways in, as in learn2learn:

* object style: ``learner = maml.clone(); learner.adapt(loss); learner(x)``;
  each ``adapt`` is one SGD step on the learner's own parameter dict;
* functional: `meta_loss`/`meta_gradients` over an `EpisodeBatch`, vmapped over
  tasks (used by `training.meta_train`).
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any, cast

import numpy as np
import torch
from torch import nn
from torch.func import functional_call

from learners.meta.base import DifferentiableMetaAlgorithm, head_for_task, map_tasks
from learners.meta.episodes import EpisodeBatch
from learners.meta.functional import Params, inner_adapt, maml_outer_loss
from learners.meta.predictors import AdaptedModel


class Learner:
    """A task-specific copy of the model's parameters, adapted by explicit SGD steps (``learn2learn``'s clone).

    Starts from the meta-parameters themselves (not copies), so a loss computed
    with the adapted parameters back-propagates into the meta-parameters. `adapt`
    replaces entries of `params` with new tensors and never writes into the
    model's parameters or their ``.grad``.

    Parameters
    ----------
    model : nn.Module
        The architecture.
    params : dict of str to Tensor
        Starting parameters.
    lr : float
        Inner learning rate.
    first_order : bool
        Take inner gradients without a graph (FOMAML).
    adapt_names : tuple of str
        The parameters `adapt` changes.
    """

    def __init__(self, model: nn.Module, params: Params, *, lr: float, first_order: bool,
                 adapt_names: tuple[str, ...]) -> None:
        self.model = model
        self.params = dict(params)
        self.lr, self.first_order, self.adapt_names = lr, first_order, adapt_names

    def __call__(self, x: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        return functional_call(self.model, self.params, (x,), kwargs)

    def adapt(self, loss: torch.Tensor) -> None:
        """One SGD step ``p <- p - lr * dloss/dp`` on the adapted names.

        Second-order (the default) keeps the step in the graph (``create_graph=True``)
        so the outer loss differentiates through it; first-order takes the gradient
        as a constant.
        """
        tensors = [self.params[name] for name in self.adapt_names]
        grads = torch.autograd.grad(loss, tensors, create_graph=not self.first_order)
        self.params.update({name: p - self.lr * g for name, p, g in zip(self.adapt_names, tensors, grads)})


class MAML(DifferentiableMetaAlgorithm):
    """Model-agnostic meta-learning over the model's own parameters.

    Parameters
    ----------
    model : nn.Module
        Its parameters are the meta-parameters (initialisation).
    lr : float
        Inner-loop SGD learning rate (alpha).
    first_order : bool
        Drop second-order terms from the meta-gradient.
    adapt_steps : int
        Inner SGD steps in meta-training, and the default at adaptation.

    Notes
    -----
    `meta_loss` vmaps the inner loop over tasks (``vectorize=True``) or loops over
    them in Python (``vectorize=False``, for models vmap cannot run; see
    `base.map_tasks`). Both give the same loss and gradient.
    """

    name = "maml"

    def __init__(self, model: nn.Module, lr: float, first_order: bool = False, adapt_steps: int = 1) -> None:
        super().__init__(model)
        self.lr = lr
        self.first_order = first_order
        self.adapt_steps = adapt_steps

    def hyperparameters(self) -> dict[str, Any]:
        return {"lr": self.lr, "first_order": self.first_order, "adapt_steps": self.adapt_steps}

    @property
    def adapt_names(self) -> tuple[str, ...]:
        """The parameters the inner loop changes: all of them."""
        return tuple(self.meta_params())

    def clone(self) -> Learner:
        """A learner starting at the current meta-parameters, to be adapted with ``learner.adapt(loss)``."""
        return Learner(self.model, self.meta_params(), lr=self.lr, first_order=self.first_order,
                       adapt_names=self.adapt_names)

    def inner_adapt(self, params: Params, support_x: torch.Tensor, support_y: torch.Tensor,
                    steps: int | None = None) -> Params:
        """`functional.inner_adapt` with this algorithm's learning rate, order and adapted names."""
        return inner_adapt(self.model, params, support_x, support_y, steps=self.adapt_steps if steps is None else steps,
                           lr=self.lr, first_order=self.first_order, adapt_names=self.adapt_names)

    def meta_loss(self, params: Params, batch: EpisodeBatch, *, vectorize: bool = True
                  ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean over tasks of the query loss after the inner loop, and mean query accuracy."""
        def task(sx: torch.Tensor, sy: torch.Tensor, qx: torch.Tensor, qy: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor]:
            return maml_outer_loss(self.model, params, sx, sy, qx, qy, steps=self.adapt_steps, lr=self.lr,
                                   first_order=self.first_order, adapt_names=self.adapt_names)

        losses, accuracies = map_tasks(task, batch, vectorize=vectorize)
        return losses.mean(), accuracies.mean()

    def adapt_task(self, meta_params: Params, support_x: torch.Tensor, support_y: torch.Tensor,
                   classes: np.ndarray, steps: int | None) -> AdaptedModel:
        start = head_for_task(self.model, meta_params, support_x, support_y, len(classes))
        # No outer gradient is wanted here, so the cheaper first-order steps give the same parameters.
        adapted = inner_adapt(self.model, start, support_x, support_y,
                              steps=self.adapt_steps if steps is None else steps, lr=self.lr, first_order=True,
                              adapt_names=self.adapt_names)
        return AdaptedModel(self.model, adapted, classes)


class FOMAML(MAML):
    """First-order MAML: `MAML` with ``first_order=True``, registered under its own name."""

    name = "fomaml"

    def __init__(self, model: nn.Module, lr: float, adapt_steps: int = 1) -> None:
        super().__init__(model, lr, first_order=True, adapt_steps=adapt_steps)

    def hyperparameters(self) -> dict[str, Any]:
        return {"lr": self.lr, "adapt_steps": self.adapt_steps}


class ANIL(MAML):
    """Almost No Inner Loop: only the head's parameters (``model.head_names``) adapt per task.

    The body gets meta-gradients through the query loss like every other
    parameter, but the inner loop treats it as a constant, which is cheaper and,
    per Raghu et al., loses little: MAML's benefit is mostly feature reuse.
    """

    name = "anil"

    def __init__(self, model: nn.Module, lr: float, first_order: bool = False, adapt_steps: int = 1,
                 head_names: Iterable[str] | None = None) -> None:
        super().__init__(model, lr, first_order=first_order, adapt_steps=adapt_steps)
        # nn.Module types unknown attributes as Tensor | Module; a model's head_names are parameter names
        self.head_names = tuple(cast("Iterable[str]", model.head_names) if head_names is None else head_names)

    def hyperparameters(self) -> dict[str, Any]:
        return {**super().hyperparameters(), "head_names": list(self.head_names)}

    @property
    def adapt_names(self) -> tuple[str, ...]:
        return self.head_names
