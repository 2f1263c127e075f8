"""The runtime around the algorithms: the meta-training loop, adaptation to a new task, episode evaluation.

`meta_train` is what a Celery task calls: it reports after each step through
`progress` and asks `should_stop` before each, so a caller can show progress
and cancel without this module knowing about either.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from learners.meta.base import MetaAlgorithm, check_n_way
from learners.meta.episodes import EpisodeSampler
from learners.meta.functional import Params
from learners.meta.predictors import Predictor, as_features

Progress = Callable[[int, int, dict[str, float]], None]


class IncompatibleData(ValueError):
    """Episodes or a support set whose shape does not fit the model."""


def _check_features(algorithm: MetaAlgorithm, dim: int) -> None:
    in_dim = getattr(algorithm.model, "in_dim", None)
    if in_dim is not None and in_dim != dim:
        raise IncompatibleData(f"the model takes {in_dim} features per row; the data has {dim}")


def meta_train(
    algorithm: MetaAlgorithm, sampler: EpisodeSampler, *, meta_batch: int, steps: int, meta_lr: float, seed: int,
    progress: Progress | None = None, should_stop: Callable[[], bool] | None = None, vectorize: bool = True,
    validation: EpisodeSampler | None = None, validate_every: int = 25, validation_episodes: int = 100,
    patience: int | None = None,
) -> dict[str, Any]:
    """Meta-train `algorithm`'s meta-parameters with Adam on batches of episodes.

    The model's parameters are updated in place: they are the meta-parameters.

    With `validation`, the meta-parameters are scored every `validate_every` steps,
    before the first step (so "no training at all" is a candidate) and after the
    last, by adapting to the same `validation_episodes` episodes each time (drawn
    with `seed`); the best scoring ones are loaded back into the model at the end.
    Ties keep the earlier step. Validation classes should be disjoint from the
    training classes, so that the choice rewards transfer to unseen classes.

    Parameters
    ----------
    algorithm : MetaAlgorithm
    sampler : EpisodeSampler
        Episodes of the meta-training classes.
    meta_batch : int
        Tasks per outer step.
    steps : int
        Outer steps.
    meta_lr : float
        Adam learning rate.
    seed : int
        Seeds the episode draws (a fresh generator, so the sampler's own state does not
        matter) and torch's global RNG inside a `torch.random.fork_rng`, for any model
        that draws from it; the caller's RNG state is restored afterwards.
    progress : callable, optional
        ``progress(step, steps, metrics)`` after each step (1-based), metrics being the
        batch's query ``loss`` and ``accuracy``.
    should_stop : callable, optional
        Asked before each step; True ends training early with what was learnt so far.
    vectorize : bool
        vmap over the tasks of a batch (see `base.map_tasks`).
    validation : EpisodeSampler, optional
        Episodes of validation classes for model selection and early stopping; it may
        draw another number of ways than `sampler` (adaptation handles that).
    validate_every : int
        Steps between validations.
    validation_episodes : int
        Episodes per validation (the same ones each time).
    patience : int, optional
        Stop once this many validations in a row have not beaten the best one
        (default: never stop early).

    Returns
    -------
    dict
        ``loss`` and ``accuracy`` (lists, one per step done), ``steps_done``, ``stopped``.
        With `validation` also ``validation`` (a list of ``{"step", "accuracy"}``) and
        ``best_step`` (the step whose meta-parameters the model holds at the end; 0 is
        the starting point), and `progress` metrics gain ``validation_accuracy`` at
        the steps that were validated.
    """
    _check_features(algorithm, sampler.dim)
    if algorithm.uses_head:
        check_n_way(algorithm.model, sampler.n_way, f"the sampler draws {sampler.n_way}-way episodes")
    if validation is not None:
        _check_features(algorithm, validation.dim)
        if validate_every < 1 or validation_episodes < 1:
            raise ValueError(f"validate_every and validation_episodes must be at least 1; got {validate_every} "
                             f"and {validation_episodes}")
        if patience is not None and patience < 1:
            raise ValueError(f"patience must be at least 1 (or None for no early stopping); got {patience}")
    params = algorithm.meta_params()
    names = algorithm.trainable_names
    optimizer = torch.optim.Adam([params[name] for name in names], lr=meta_lr)
    rng = np.random.default_rng(seed)
    history: dict[str, Any] = {"loss": [], "accuracy": [], "steps_done": 0, "stopped": False}
    selection = None if validation is None else _BestOnValidation(
        algorithm, validation, episodes=validation_episodes, seed=seed, patience=patience)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if selection is not None:
            selection.validate(0)
        for step in range(1, steps + 1):
            if should_stop is not None and should_stop():
                history["stopped"] = True
                break
            batch = sampler.sample_batch(meta_batch, rng=rng)
            grads, metrics = algorithm.meta_gradients(params, batch, vectorize=vectorize)
            for name in names:
                params[name].grad = grads[name]
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            history["loss"].append(metrics["loss"])
            history["accuracy"].append(metrics["accuracy"])
            history["steps_done"] = step
            if selection is not None and (step % validate_every == 0 or step == steps):
                metrics = {**metrics, "validation_accuracy": selection.validate(step)}
            if progress is not None:
                progress(step, steps, metrics)
            if selection is not None and selection.out_of_patience:
                break
        if selection is not None:
            if selection.history[-1]["step"] != history["steps_done"]:
                selection.validate(history["steps_done"])  # stopped between validations: score the last step too
            selection.restore_best()
            history["validation"] = selection.history
            history["best_step"] = selection.best_step
    return history


class _BestOnValidation:
    """Scores the live meta-parameters on fixed validation episodes and keeps a copy of the best."""

    def __init__(self, algorithm: MetaAlgorithm, sampler: EpisodeSampler, *, episodes: int, seed: int,
                 patience: int | None) -> None:
        self.algorithm, self.sampler, self.episodes, self.seed = algorithm, sampler, episodes, seed
        self.patience = patience
        self.history: list[dict[str, float]] = []
        self.best_accuracy = -np.inf
        self.best_step = 0
        self.best_params: Params = {}
        self.since_best = 0

    def validate(self, step: int) -> float:
        params = self.algorithm.meta_params()
        accuracy = evaluate_episodes(lambda sx, sy, qx: adapt(self.algorithm, params, sx, sy).predict(qx),
                                     self.sampler, episodes=self.episodes, seed=self.seed)["accuracy"]
        self.history.append({"step": step, "accuracy": accuracy})
        if accuracy > self.best_accuracy:
            self.best_accuracy, self.best_step, self.since_best = accuracy, step, 0
            self.best_params = {name: p.detach().clone() for name, p in params.items()}
        else:
            self.since_best += 1
        return accuracy

    @property
    def out_of_patience(self) -> bool:
        return self.patience is not None and self.since_best >= self.patience

    def restore_best(self) -> None:
        """Write the best meta-parameters back into the model's own tensors."""
        with torch.no_grad():
            for name, p in self.algorithm.meta_params().items():
                p.copy_(self.best_params[name])


def adapt(algorithm: MetaAlgorithm, meta_params: Params, support_x: Any, support_y: Any, *,
          steps: int | None = None) -> Predictor:
    """A classifier for a new task from its labelled support set; `meta_params` are left as they were.

    Parameters
    ----------
    algorithm : MetaAlgorithm
    meta_params : dict of str to Tensor
        Usually ``algorithm.meta_params()`` after `meta_train`, or those of a loaded artifact.
    support_x : array-like of shape (S, d)
    support_y : array-like of shape (S,)
        Labels of any type; the predictor's ``classes_`` are their sorted unique values.
    steps : int, optional
        Inner SGD steps (default: the algorithm's ``adapt_steps``; ignored by ProtoNet).

    Returns
    -------
    Predictor
        With ``predict_proba(X)`` (columns in ``classes_`` order) and ``predict(X)``.
    """
    x = as_features(support_x)
    y = support_y.numpy() if isinstance(support_y, torch.Tensor) else np.asarray(support_y)
    if x.ndim != 2 or y.ndim != 1 or x.shape[0] != y.shape[0] or x.shape[0] == 0:
        raise IncompatibleData(f"support set must be (S, d) rows with S labels, S > 0; got {tuple(x.shape)} "
                               f"and {y.shape[0] if y.ndim else 0} labels")
    _check_features(algorithm, x.shape[1])
    classes, codes = np.unique(y, return_inverse=True)
    return algorithm.adapt_task(meta_params, x, torch.from_numpy(codes.reshape(-1)).long(), classes, steps)


Method = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], np.ndarray]


def evaluate_episodes(method: Method, sampler: EpisodeSampler, *, episodes: int, seed: int) -> dict[str, float]:
    """Mean query accuracy of ``method(support_x, support_y, query_x) -> predicted labels`` over episodes.

    The same `seed` draws the same episodes, so methods are compared on identical tasks.

    Returns
    -------
    dict
        ``accuracy`` (mean over episodes) and ``ci95`` (1.96 standard errors).
    """
    rng = np.random.default_rng(seed)
    scores = []
    for _ in range(episodes):
        episode = sampler.sample(rng)
        predicted = np.asarray(method(episode.support_x, episode.support_y, episode.query_x))
        scores.append(float(np.mean(predicted == episode.query_y.numpy())))
    spread = float(np.std(scores, ddof=1)) if episodes > 1 else 0.0
    return {"accuracy": float(np.mean(scores)), "ci95": 1.96 * spread / np.sqrt(episodes)}
