"""The meta-learning maths as pure functions of an explicit parameter dict.

Nothing here writes into a module or a tensor: an inner step returns a new
dict ``{name: p - lr * g}``, so the meta-parameters it started from are left as
they were and, unless the gradient is detached, stay in the autograd graph of
whatever is computed from the adapted dict. That is what makes the MAML
meta-gradient second-order, and what lets `torch.func.vmap` run a batch of
tasks at once (as in PyTorch's functorch MAML-Omniglot example).

The inner gradient is taken with `torch.func.grad` rather than
`torch.autograd.grad` because only the former works under `vmap`; its result is
still differentiable by the outer `backward`/`torch.autograd.grad`.

Every function takes the model (the architecture, called through
`torch.func.functional_call`) and tensors of one task; batching is the
caller's `vmap` or loop (see `maml.py`).
"""
from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad

Params = dict[str, torch.Tensor]


def logits_of(model: nn.Module, params: Params, x: torch.Tensor) -> torch.Tensor:
    return functional_call(model, params, (x,))


def embeddings_of(model: nn.Module, params: Params, x: torch.Tensor) -> torch.Tensor:
    """The encoder's output (the model's ``forward(x, embed_only=True)``)."""
    return functional_call(model, params, (x,), {"embed_only": True})


def classification_loss(model: nn.Module, params: Params, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of the model's logits against episode labels 0..N-1."""
    return F.cross_entropy(logits_of(model, params, x), y)


def accuracy_of(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Fraction of rows whose largest logit is the label; detached (a metric, never a loss)."""
    return (logits.detach().argmax(dim=-1) == y).to(logits.dtype).mean()


def inner_adapt(
    model: nn.Module, params: Params, support_x: torch.Tensor, support_y: torch.Tensor, *, steps: int, lr: float,
    first_order: bool = False, adapt_names: Iterable[str] | None = None,
) -> Params:
    """`steps` full-batch SGD steps on the support loss, returning new parameters.

    Parameters
    ----------
    model : nn.Module
        The architecture.
    params : dict of str to Tensor
        Starting point (the meta-parameters). Never modified.
    support_x, support_y : Tensor
        One task's support set, (S, d) and (S,) labels 0..N-1.
    steps : int
        Inner SGD steps; 0 returns `params` unchanged.
    lr : float
        Inner learning rate (alpha).
    first_order : bool
        Detach each inner gradient, so the adapted parameters depend on `params` only
        through the identity: the outer gradient loses the -alpha * Hessian terms (FOMAML).
    adapt_names : iterable of str, optional
        Adapt only these parameters (ANIL: the head); the rest are used as given and
        receive outer gradients only through the forward pass. Default: all.

    Returns
    -------
    dict of str to Tensor
        The adapted parameters, same keys and order as `params`.
    """
    names = tuple(params) if adapt_names is None else tuple(adapt_names)
    frozen = {k: v for k, v in params.items() if k not in names}
    fast = {k: params[k] for k in names}

    def support_loss(fast_params: Params) -> torch.Tensor:
        return classification_loss(model, {**frozen, **fast_params}, support_x, support_y)

    for _ in range(steps):
        grads = grad(support_loss)(fast)
        if first_order:
            grads = {k: g.detach() for k, g in grads.items()}
        fast = {k: fast[k] - lr * grads[k] for k in names}
    return {k: fast.get(k, v) for k, v in params.items()}


def maml_outer_loss(
    model: nn.Module, params: Params, support_x: torch.Tensor, support_y: torch.Tensor, query_x: torch.Tensor,
    query_y: torch.Tensor, *, steps: int, lr: float, first_order: bool = False,
    adapt_names: Iterable[str] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One task's MAML objective: the query loss after adapting on the support set.

    Differentiating the returned loss with respect to `params` gives the task's
    meta-gradient (second-order unless `first_order`). The query accuracy comes
    along detached, for progress reports. Arguments as for `inner_adapt`.

    Returns
    -------
    (loss, accuracy) : tuple of 0-d Tensor
    """
    adapted = inner_adapt(model, params, support_x, support_y, steps=steps, lr=lr, first_order=first_order,
                          adapt_names=adapt_names)
    logits = logits_of(model, adapted, query_x)
    return F.cross_entropy(logits, query_y), accuracy_of(logits, query_y)


def class_prototypes(embedded_support: torch.Tensor, support_y: torch.Tensor, n_way: int) -> torch.Tensor:
    """(N, e) mean embedding of each class's support examples.

    Written as a one-hot matrix product, not a loop over classes or `index_add`,
    so it runs under `vmap`.
    """
    one_hot = (support_y[:, None] == torch.arange(n_way, device=support_y.device)).to(embedded_support.dtype)
    return (one_hot.T @ embedded_support) / one_hot.sum(dim=0)[:, None]


def prototype_head(model: nn.Module, params: Params, support_x: torch.Tensor, support_y: torch.Tensor,
                   n_classes: int) -> Params:
    """`params` with the linear head replaced by one whose logits are nearest-prototype scores (Proto-MAML).

    Row k of the weight is ``2 c_k`` and its bias ``-|c_k|^2``, c_k the mean embedding of
    class k's support rows, so ``logit_k(x) = -|e(x) - c_k|^2 + |e(x)|^2``: the softmax
    equals a prototypical network's, for any number of classes (Triantafillou et al.,
    2020). This lets a head meta-learnt for N-way tasks start a task of any other
    number of classes; inner SGD steps then refine it. Needs the model's head to be
    one linear layer ``head.weight``/``head.bias`` on the embedding.
    """
    embedded = embeddings_of(model, params, support_x)
    prototypes = class_prototypes(embedded, support_y, n_classes)
    return {**params, "head.weight": 2 * prototypes, "head.bias": -(prototypes ** 2).sum(dim=-1)}


def squared_distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(n, m) squared Euclidean distances between rows of a (n, e) and b (m, e).

    Computed from the differences rather than |a|^2 - 2ab + |b|^2, which loses
    precision to cancellation when points are close.
    """
    return ((a[:, None, :] - b[None, :, :]) ** 2).sum(dim=-1)


def protonet_loss(
    model: nn.Module, params: Params, support_x: torch.Tensor, support_y: torch.Tensor, query_x: torch.Tensor,
    query_y: torch.Tensor, *, n_way: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One episode's prototypical-network loss: cross-entropy of -squared distance to each class prototype.

    Returns
    -------
    (loss, accuracy) : tuple of 0-d Tensor
    """
    prototypes = class_prototypes(embeddings_of(model, params, support_x), support_y, n_way)
    logits = -squared_distances(embeddings_of(model, params, query_x), prototypes)
    return F.cross_entropy(logits, query_y), accuracy_of(logits, query_y)


def reptile_update(params: Params, adapted: Params, epsilon: float) -> Params:
    """Reptile's outer step: move `epsilon` of the way towards the mean of the tasks' adapted parameters.

    Parameters
    ----------
    params : dict of str to Tensor
        The meta-parameters theta.
    adapted : dict of str to Tensor
        Each task's parameters after its inner loop, stacked on a leading task axis (T, ...),
        as `vmap(inner_adapt)` returns them.
    epsilon : float
        Outer step size.

    Returns
    -------
    dict of str to Tensor
        theta + epsilon * (mean_t(theta_t) - theta), new tensors.
    """
    return {k: p + epsilon * (adapted[k].mean(dim=0) - p) for k, p in params.items()}
