"""The meta-training recipe the benchmark (`bench/meta_learning`) found best, as one call on labelled rows.

What the recipe fixes, and why (numbers in bench/meta_learning/RESULTS.md):

* inputs are standardised with the mean and standard deviation of the
  meta-training classes' rows only, stored in the model as buffers
  (`models.InputStandardisation`), so predictors take raw features and the
  statistics survive `serialization`;
* the encoder is a `StandardisedResidualMLP`: it starts as the identity, so a
  prototypical network starts as nearest class mean on standardised features
  and meta-training moves it from there;
* when there are enough classes, some are held out for validation and the
  meta-parameters that adapt best to them are kept (`training.meta_train`'s
  early stopping), including the untrained start;
* ProtoNet by default: adaptation is computing prototypes (under a millisecond),
  and it was the best meta-learner on leaf 1-shot (about +7 to +9 points over
  nearest class mean on held-out species). On MiniLM text embeddings no
  meta-learner beat nearest class mean; the validation-selected start keeps
  ProtoNet level with it. With 5 labels per class, logistic regression on the
  standardised support set beat every meta-learner on leaf.

No Django: the Celery task and the benchmarks call `meta_train_default`.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from learners.meta.algorithms import ALGORITHMS, algorithm_create
from learners.meta.base import MetaAlgorithm
from learners.meta.episodes import EpisodeError, EpisodeSampler
from learners.meta.models import MODELS, InputStandardisation
from learners.meta.training import Progress, meta_train

DEFAULT_ALGORITHM = "protonet"
# Per-algorithm defaults, chosen on the benchmark's validation classes (never its test classes).
ALGORITHM_DEFAULTS: dict[str, dict[str, Any]] = {
    "protonet": {"meta_lr": 1e-3},
    "maml": {"lr": 0.1, "adapt_steps": 5, "meta_lr": 1e-3},
    "fomaml": {"lr": 0.1, "adapt_steps": 5, "meta_lr": 1e-3},
    "anil": {"lr": 0.1, "adapt_steps": 5, "meta_lr": 1e-3},
    "reptile": {"lr": 0.1, "adapt_steps": 5, "meta_lr": 1e-3},
}
# Shared defaults; any of them can be overridden through ``**hyper``.
COMMON_DEFAULTS: dict[str, Any] = {
    "model": "standardised_residual_mlp", "hidden": 256, "meta_batch": 8,
    "validation_fraction": 0.25, "validate_every": 25, "validation_episodes": 100, "patience": 8,
}


class RecipeError(ValueError):
    """Arguments the recipe cannot use; the message says which and why."""


def standardisation_of(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-column mean and standard deviation of `X`, a constant column's scale set to 1 (left unscaled)."""
    X = np.asarray(X, dtype=np.float64)
    mean, scale = X.mean(axis=0), X.std(axis=0)
    return mean, np.where(scale > 1e-8 * max(1.0, float(np.abs(mean).max(initial=0.0))), scale, 1.0)


def split_validation_classes(classes: np.ndarray, *, n_way: int, fraction: float, seed: int
                             ) -> tuple[np.ndarray, np.ndarray]:
    """(meta-training classes, validation classes): about `fraction` of the classes held out for validation.

    Validation needs at least 2 classes and meta-training at least `n_way`; when
    both cannot be had, every class meta-trains and there is no validation.
    """
    n_validation = int(round(fraction * len(classes)))
    n_validation = min(max(n_validation, 2), len(classes) - n_way)
    if fraction <= 0 or n_validation < 2:
        return classes, classes[:0]
    held_out = np.sort(np.random.default_rng(seed).choice(classes, size=n_validation, replace=False))
    return np.setdiff1d(classes, held_out), held_out


def meta_train_default(
    X: Any, y: Any, *, algorithm: str = DEFAULT_ALGORITHM, n_way: int, k_shot: int, q_query: int, seed: int = 0,
    steps: int = 500, progress: Progress | None = None, should_stop: Callable[[], bool] | None = None,
    validation_classes: Sequence[Any] | None = None, **hyper: Any,
) -> tuple[MetaAlgorithm, dict[str, Any]]:
    """Meta-train `algorithm` on the classes of (X, y) with the benchmark's recipe.

    Parameters
    ----------
    X : array-like of shape (n, d)
        Raw features (standardisation is part of the returned model).
    y : array-like of shape (n,)
        Labels; each class used needs at least ``k_shot + q_query`` rows.
    algorithm : str
        A name in `algorithms.ALGORITHMS`.
    n_way, k_shot, q_query : int
        Shape of the meta-training episodes. The model adapts to tasks of any number of
        classes later; `n_way` only sizes the training tasks (and the head of the
        MAML family).
    seed : int
        Seeds the model, the validation split and the episode draws.
    steps : int
        Most outer steps; early stopping on validation classes may end sooner.
    progress, should_stop : callable, optional
        As in `training.meta_train`.
    validation_classes : sequence, optional
        Classes of `y` to validate on instead of a random ``validation_fraction`` of
        them (an empty list: no validation). They are never meta-trained on.
    **hyper
        Overrides of `COMMON_DEFAULTS` and `ALGORITHM_DEFAULTS`:
        ``model`` (a `models.MODELS` name with input standardisation), ``hidden``,
        ``meta_batch``, ``meta_lr``, ``validation_fraction`` (0 turns validation off),
        ``validate_every``, ``validation_episodes``, ``patience`` (None: no early stop),
        and the algorithm's own hyper-parameters (``lr``, ``adapt_steps``, ...).

    Returns
    -------
    (MetaAlgorithm, dict)
        The trained algorithm (its model holds the best validated meta-parameters and
        the standardisation), and `meta_train`'s history plus ``train_classes``,
        ``validation_classes`` (lists) and ``settings`` (every value used).

    Raises
    ------
    RecipeError
        Unknown algorithm, model or hyper-parameter, or fewer than `n_way` classes.
    EpisodeError
        A class with too few rows for `k_shot` + `q_query`.
    """
    if algorithm not in ALGORITHMS:
        raise RecipeError(f"unknown meta-learning algorithm {algorithm!r}; choose one of {sorted(ALGORITHMS)}")
    settings = {**COMMON_DEFAULTS, **ALGORITHM_DEFAULTS[algorithm], **hyper}
    known = set(COMMON_DEFAULTS) | set(ALGORITHM_DEFAULTS[algorithm])
    unknown = sorted(set(hyper) - known)
    if unknown:
        raise RecipeError(f"unknown hyper-parameters {unknown} for {algorithm}; known: {sorted(known)}")
    model_cls = MODELS.get(settings["model"])
    if model_cls is None or not issubclass(model_cls, InputStandardisation):
        choices = sorted(name for name, cls in MODELS.items() if issubclass(cls, InputStandardisation))
        raise RecipeError(f"model {settings['model']!r} is not one with input standardisation: {choices}")
    X = np.asarray(X, dtype=np.float64)
    labels = np.asarray(y)
    classes = np.unique(labels)
    if len(classes) < n_way:
        raise RecipeError(f"{n_way}-way meta-training needs at least {n_way} classes; the data has {len(classes)}")
    if X.ndim != 2 or X.shape[0] != labels.shape[0]:
        raise RecipeError(f"X must be (n, d) with one row per label; got X {X.shape} and {labels.shape[0]} labels")

    held_out: np.ndarray  # the validation classes, as an array
    if validation_classes is None:
        train_classes, held_out = split_validation_classes(
            classes, n_way=n_way, fraction=settings["validation_fraction"], seed=seed)
    else:
        held_out = np.unique(np.asarray(validation_classes))
        absent = np.setdiff1d(held_out, classes)
        if absent.size:
            raise RecipeError(f"validation classes {absent.tolist()} do not occur in y")
        if 0 < len(held_out) < 2:
            raise RecipeError("validation needs at least 2 classes (or none)")
        train_classes = np.setdiff1d(classes, held_out)
        if len(train_classes) < n_way:
            raise RecipeError(f"{n_way}-way meta-training needs {n_way} classes besides the validation ones; "
                              f"{len(train_classes)} are left")
    train_rows = np.isin(labels, train_classes)
    mean, scale = standardisation_of(X[train_rows])
    model = model_cls(X.shape[1], settings["hidden"], n_way, seed=seed)
    model.set_standardisation(torch.from_numpy(mean), torch.from_numpy(scale))
    algorithm_hyper = {k: v for k, v in settings.items() if k in ALGORITHM_DEFAULTS[algorithm] and k != "meta_lr"}
    meta = algorithm_create(algorithm, model, **algorithm_hyper)

    sampler = EpisodeSampler(X, labels, classes=train_classes, n_way=n_way, k_shot=k_shot, q_query=q_query,
                             seed=seed)
    validation = None
    if len(held_out):
        validation = EpisodeSampler(X, labels, classes=held_out, n_way=min(n_way, len(held_out)),
                                    k_shot=k_shot, q_query=q_query, seed=seed + 1)
    history = meta_train(
        meta, sampler, meta_batch=settings["meta_batch"], steps=steps, meta_lr=settings["meta_lr"], seed=seed,
        progress=progress, should_stop=should_stop, validation=validation,
        validate_every=settings["validate_every"], validation_episodes=settings["validation_episodes"],
        patience=settings["patience"],
    )
    history["train_classes"] = train_classes.tolist()
    history["validation_classes"] = held_out.tolist()
    history["settings"] = {**settings, "algorithm": algorithm, "n_way": n_way, "k_shot": k_shot,
                           "q_query": q_query, "seed": seed, "steps": steps}
    return meta, history


__all__ = ["ALGORITHM_DEFAULTS", "COMMON_DEFAULTS", "DEFAULT_ALGORITHM", "EpisodeError", "RecipeError",
           "meta_train_default", "split_validation_classes", "standardisation_of"]
