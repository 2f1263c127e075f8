"""N-way K-shot episodes drawn from labelled feature vectors, and a split of classes for meta-testing.

Meta-learning trains on many small classification tasks so that a new task with a
handful of labels can be learnt quickly. An episode is one such task: N classes
picked at random, K labelled examples of each (the support set) and Q more of
each to score the adaptation on (the query set). Labels are renumbered 0..N-1 in
a random class order per episode, so no output unit can memorise a class and the
model must use the support set.

What is measured on meta-test tasks only means something if their classes were
never seen in meta-training, hence `class_split` and the `classes` argument of
`EpisodeSampler`.

All randomness comes from a `numpy.random.Generator`: the sampler's own (seeded in
`__init__`) or one passed in, so a seed reproduces the same episodes.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import torch


class EpisodeError(ValueError):
    """Episodes cannot be drawn as asked; the message says which classes or counts are at fault."""


class Episode(NamedTuple):
    """One N-way K-shot task.

    Attributes
    ----------
    support_x : torch.Tensor
        (N*K, d) float32, class-major: the K examples of episode class 0, then class 1, ...
    support_y : torch.Tensor
        (N*K,) int64 episode labels in 0..N-1.
    query_x : torch.Tensor
        (N*Q, d) float32, class-major like the support set.
    query_y : torch.Tensor
        (N*Q,) int64 episode labels.
    classes : numpy.ndarray
        (N,) original labels: ``classes[i]`` is the class behind episode label i.
    """

    support_x: torch.Tensor
    support_y: torch.Tensor
    query_x: torch.Tensor
    query_y: torch.Tensor
    classes: np.ndarray

    @property
    def n_way(self) -> int:
        return len(self.classes)


class EpisodeBatch(NamedTuple):
    """T episodes of the same shape stacked along a leading task axis, the form `torch.func.vmap` maps over.

    Attributes are those of `Episode` with a leading T: support_x (T, N*K, d),
    support_y (T, N*K), query_x (T, N*Q, d), query_y (T, N*Q), classes (T, N).
    """

    support_x: torch.Tensor
    support_y: torch.Tensor
    query_x: torch.Tensor
    query_y: torch.Tensor
    classes: np.ndarray

    @property
    def n_way(self) -> int:
        return self.classes.shape[1]

    @property
    def n_tasks(self) -> int:
        return self.support_x.shape[0]

    def episode(self, index: int) -> Episode:
        """Task `index` on its own (the Python-loop path where vmap cannot be used)."""
        return Episode(self.support_x[index], self.support_y[index], self.query_x[index], self.query_y[index],
                       self.classes[index])


def _labels(y: Any) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != 1:
        raise EpisodeError(f"labels must be one-dimensional; got shape {y.shape}")
    return y


def class_split(
    y: Any, *, n_test_classes: int | None = None, test_classes: Sequence[Any] | None = None, seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Hold out classes for meta-testing; meta-train on the rest.

    Parameters
    ----------
    y : array-like of shape (n,)
        Labels (integers or strings).
    n_test_classes : int, optional
        How many classes to hold out, drawn at random under `seed`.
    test_classes : sequence, optional
        The classes to hold out, named explicitly. Give exactly one of the two.
    seed : int
        Seed for the random draw.

    Returns
    -------
    (train_classes, test_classes) : tuple of numpy.ndarray
        Disjoint, each sorted, together every class in `y`.
    """
    classes = np.unique(_labels(y))
    if (n_test_classes is None) == (test_classes is None):
        raise EpisodeError("give exactly one of n_test_classes and test_classes")
    if test_classes is not None:
        held_out = np.unique(np.asarray(test_classes))
        unknown = np.setdiff1d(held_out, classes)
        if unknown.size:
            raise EpisodeError(f"test classes {unknown.tolist()} do not occur in the labels {classes.tolist()}")
    else:
        assert n_test_classes is not None  # exactly one of the two was given, checked above
        if not 0 < n_test_classes < len(classes):
            raise EpisodeError(
                f"n_test_classes must be between 1 and {len(classes) - 1} (there are {len(classes)} classes); "
                f"got {n_test_classes}"
            )
        held_out = np.sort(np.random.default_rng(seed).choice(classes, size=n_test_classes, replace=False))
    train = np.setdiff1d(classes, held_out)
    if train.size == 0:
        raise EpisodeError("no class is left for meta-training once the test classes are held out")
    return train, held_out


class EpisodeSampler:
    """Draws N-way K-shot episodes from the given classes of (X, y).

    Parameters
    ----------
    X : array-like of shape (n, d)
        Feature vectors (MiniLM embeddings, standardised tabular columns, pixels); stored as float32.
    y : array-like of shape (n,)
        Labels, integers or strings.
    classes : sequence, optional
        The only classes episodes may use (e.g. the meta-training half of `class_split`).
        Default: every class in `y`.
    n_way, k_shot, q_query : int
        Classes per episode, support and query examples per class.
    seed : int
        Seeds the sampler's own generator, used when `sample` is given none.

    Raises
    ------
    EpisodeError
        When X and y disagree, a listed class is absent from y, a class has fewer than
        k_shot + q_query examples, or fewer than n_way classes are allowed.
    """

    def __init__(self, X: Any, y: Any, *, classes: Sequence[Any] | np.ndarray | None = None, n_way: int, k_shot: int,
                 q_query: int, seed: int = 0) -> None:
        X = np.asarray(X, dtype=np.float32)
        y = _labels(y)
        if X.ndim != 2 or X.shape[0] != y.shape[0]:
            raise EpisodeError(f"X must be (n, d) with one row per label; got X {X.shape} and {y.shape[0]} labels")
        if min(n_way, k_shot, q_query) < 1:
            raise EpisodeError(f"n_way, k_shot and q_query must be at least 1; got {n_way}, {k_shot}, {q_query}")
        present = np.unique(y)
        allowed = present if classes is None else np.unique(np.asarray(classes))
        absent = np.setdiff1d(allowed, present)
        if absent.size:
            raise EpisodeError(f"classes {absent.tolist()} have no examples in y")
        need = k_shot + q_query
        rows = {c: np.flatnonzero(y == c) for c in allowed.tolist()}
        short = {c: len(r) for c, r in rows.items() if len(r) < need}
        if short:
            counts = ", ".join(f"{c!r} ({n})" for c, n in sorted(short.items()))
            raise EpisodeError(
                f"{k_shot}-shot episodes with {q_query} queries need {need} examples per class; "
                f"too few in {counts}: label more, lower k_shot/q_query, or leave these classes out"
            )
        if len(allowed) < n_way:
            raise EpisodeError(f"{n_way}-way episodes need {n_way} classes; only {len(allowed)} allowed: "
                               f"{allowed.tolist()}")
        self.X = X
        self.classes = allowed
        self.n_way, self.k_shot, self.q_query = n_way, k_shot, q_query
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self._rows = [rows[c] for c in allowed.tolist()]

    @property
    def dim(self) -> int:
        return self.X.shape[1]

    def _draw(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Row indices of support and query (class-major) and the chosen class positions, in episode order."""
        picked = rng.choice(len(self.classes), size=self.n_way, replace=False)  # random order: the relabelling
        support, query = [], []
        for position in picked:
            rows = rng.choice(self._rows[position], size=self.k_shot + self.q_query, replace=False)
            support.append(rows[: self.k_shot])
            query.append(rows[self.k_shot:])
        return np.concatenate(support), np.concatenate(query), picked

    def sample(self, rng: np.random.Generator | None = None) -> Episode:
        """One episode, drawn with `rng` (default: the sampler's own generator, which it advances)."""
        support, query, picked = self._draw(self.rng if rng is None else rng)
        return Episode(
            support_x=torch.from_numpy(self.X[support]),
            support_y=torch.arange(self.n_way).repeat_interleave(self.k_shot),
            query_x=torch.from_numpy(self.X[query]),
            query_y=torch.arange(self.n_way).repeat_interleave(self.q_query),
            classes=self.classes[picked],
        )

    def sample_batch(self, n_tasks: int, rng: np.random.Generator | None = None) -> EpisodeBatch:
        """`n_tasks` episodes stacked into (T, ...) tensors for vmap."""
        if n_tasks < 1:
            raise EpisodeError(f"a batch needs at least one task; got {n_tasks}")
        episodes = [self.sample(rng) for _ in range(n_tasks)]
        return EpisodeBatch(
            support_x=torch.stack([e.support_x for e in episodes]),
            support_y=torch.stack([e.support_y for e in episodes]),
            query_x=torch.stack([e.query_x for e in episodes]),
            query_y=torch.stack([e.query_y for e in episodes]),
            classes=np.stack([e.classes for e in episodes]),
        )
