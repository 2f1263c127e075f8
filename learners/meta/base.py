"""The interface every meta-learning algorithm implements, and the task-batching they share.

The runtime (`training.meta_train`, `training.adapt`, serialisation) only talks
to this interface; each algorithm module holds its own maths. Adding an
algorithm is a subclass in a new module and a line in `algorithms.ALGORITHMS`.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn
from torch.func import vmap

from learners.meta.episodes import EpisodeBatch
from learners.meta.functional import Params, prototype_head
from learners.meta.predictors import Predictor

TaskFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], Any]


def map_tasks(fn: TaskFn, batch: EpisodeBatch, *, vectorize: bool) -> Any:
    """Apply ``fn(support_x, support_y, query_x, query_y)`` to every task of `batch`, outputs stacked (T, ...).

    With `vectorize`, one `torch.func.vmap` call runs all tasks as batched tensor
    operations. vmap cannot run a function that reads tensor values into Python
    (``.item()``, data-dependent ``if``), mutates tensors in place, or draws random
    numbers; for such models pass ``vectorize=False`` and the tasks run one by one
    in a Python loop. Both give the same numbers (tests/test_meta_learning.py).
    `fn` must return a tensor, or tuples and dicts of tensors.
    """
    tensors = (batch.support_x, batch.support_y, batch.query_x, batch.query_y)
    if vectorize:
        return vmap(fn)(*tensors)
    return _stack([fn(*(t[i] for t in tensors)) for i in range(batch.n_tasks)])


def _stack(outputs: list[Any]) -> Any:
    """Stack per-task outputs (tensors, or tuples and dicts of them, nested) along a new task axis, as vmap does."""
    first = outputs[0]
    if isinstance(first, dict):
        return {k: _stack([o[k] for o in outputs]) for k in first}
    if isinstance(first, tuple):
        return tuple(_stack(list(column)) for column in zip(*outputs))
    return torch.stack(outputs)


class NWayMismatch(ValueError):
    """A support set whose number of classes differs from the head's outputs."""


def check_n_way(model: nn.Module, n_classes: int, context: str) -> None:
    """Raise NWayMismatch unless the model's head (``model.n_way``, where it has one) has `n_classes` outputs.

    `context` ends the message: what has `n_classes` classes.
    """
    n_way = getattr(model, "n_way", None)
    if n_way is not None and n_classes != n_way:
        raise NWayMismatch(f"the model's head has {n_way} outputs, one per class of a {n_way}-way task; {context}")


def head_for_task(model: nn.Module, meta_params: Params, support_x: torch.Tensor, support_y: torch.Tensor,
                  n_classes: int) -> Params:
    """Detached copies of the meta-parameters to start adapting a task of `n_classes` classes from.

    A task with as many classes as the head has outputs keeps the meta-learnt head.
    Any other count (a project with 3 labels adapting a 5-way meta-model) starts
    from a head built from the support set's class prototypes
    (`functional.prototype_head`); a model without a ``head.weight``/``head.bias``
    layer cannot, and raises NWayMismatch.
    """
    start = {k: v.detach().clone() for k, v in meta_params.items()}
    if getattr(model, "n_way", n_classes) == n_classes:
        return start
    if "head.weight" not in start or "head.bias" not in start:
        check_n_way(model, n_classes, f"the support set has {n_classes} classes and the model has no linear "
                                      "'head' layer to rebuild from prototypes")
    with torch.no_grad():
        return prototype_head(model, start, support_x, support_y, n_classes)


class MetaAlgorithm(ABC):
    """A meta-learning algorithm over a model whose own parameters are the meta-parameters.

    Subclasses store their hyper-parameters in ``__init__`` and nothing else, and
    implement `meta_gradients` (what the outer optimiser steps on), `adapt_task`
    (a predictor for a new task) and `hyperparameters` (for serialisation).

    Parameters
    ----------
    model : nn.Module
        See `learners.meta.models` for what it must provide.
    """

    name: ClassVar[str]
    uses_head: ClassVar[bool] = True  # tasks must have model.n_way classes

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    def meta_params(self) -> Params:
        """Every parameter of the model by name: the live tensors the outer optimiser updates."""
        return dict(self.model.named_parameters())

    @property
    def trainable_names(self) -> tuple[str, ...]:
        """The meta-parameters the outer loop trains (ProtoNet leaves out the unused head)."""
        return tuple(self.meta_params())

    def parameters(self) -> list[torch.Tensor]:
        """The trained meta-parameters, for a ``torch.optim`` optimiser (as ``learn2learn``'s ``maml.parameters()``)."""
        params = self.meta_params()
        return [params[name] for name in self.trainable_names]

    @abstractmethod
    def meta_gradients(self, params: Params, batch: EpisodeBatch, *, vectorize: bool = True
                       ) -> tuple[Params, dict[str, float]]:
        """Gradients for the trainable names (what ``optimizer.step`` follows) and metrics of the batch.

        Metrics are ``loss`` and ``accuracy`` on the query sets, averaged over tasks.
        Must not modify `params`.
        """

    @abstractmethod
    def adapt_task(self, meta_params: Params, support_x: torch.Tensor, support_y: torch.Tensor,
                   classes: np.ndarray, steps: int | None) -> Predictor:
        """A predictor for one task; `support_y` is already coded 0..len(classes)-1. Must not modify `meta_params`."""

    @abstractmethod
    def hyperparameters(self) -> dict[str, Any]:
        """Keyword arguments that rebuild the algorithm around a model: ``type(self)(model, **hyperparameters())``."""


class DifferentiableMetaAlgorithm(MetaAlgorithm):
    """An algorithm whose meta-gradient is the gradient of a meta-loss (MAML family, ProtoNet; not Reptile)."""

    @abstractmethod
    def meta_loss(self, params: Params, batch: EpisodeBatch, *, vectorize: bool = True
                  ) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean query loss, mean query accuracy) over the batch's tasks, differentiable in `params`."""

    def meta_gradients(self, params: Params, batch: EpisodeBatch, *, vectorize: bool = True
                       ) -> tuple[Params, dict[str, float]]:
        loss, accuracy = self.meta_loss(params, batch, vectorize=vectorize)
        names = self.trainable_names
        grads = torch.autograd.grad(loss, [params[name] for name in names])
        return dict(zip(names, grads)), {"loss": float(loss.detach()), "accuracy": float(accuracy)}
