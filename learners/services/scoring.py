"""Scoring a project's whole pool with its query strategy, chunk by chunk.

Per-item utilities are computed over the pool in chunks (memory bounded by the
chunk, however large the pool). Batch strategies (ranked batch, k-center,
k-means++) then re-order the top of the queue: they choose the first `batch`
items among the best candidates so that concurrent annotators get items that
are spread out, not near-duplicates.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from annotate.models import Membership, Project
from learners.models import FeatureSpace
from learners.services.features import features_iter_open, features_load

Progress = Callable[[str, int, int], None]
REFERENCE_SAMPLE = 2_000
CANDIDATES_PER_PICK = 10
MIN_CANDIDATES = 500
COLD_START_CANDIDATES = 20_000


@dataclass
class PoolScores:
    item_ids: np.ndarray      # int64
    priorities: np.ndarray    # float64, higher is served first
    predicted: np.ndarray     # int64 index into classes, -1 without a model
    confidence: np.ndarray    # float64, NaN without a model
    batch_ids: np.ndarray     # the items a batch strategy placed first, in order


def queue_batch_size(project: Project) -> int:
    """How many items a batch strategy spreads out: a few per member, between 10 and 100."""
    members = Membership.objects.filter(project=project).count()
    return int(min(100, max(10, 4 * members)))


def pool_score(
    *, project: Project, space: FeatureSpace, strategy, estimator=None, X_labelled=None,
    seed: int = 0, progress: Progress | None = None, total: int | None = None,
) -> PoolScores:
    """Priorities, predictions and confidences for every open item of `project`.

    `strategy` is a learners.ml.strategies.Strategy; `estimator` is fitted
    (None only for strategies that need no model).
    """
    reference = _reference_sample(project, space, seed) if strategy.name == "density_margin" else None
    ids, priorities, predicted, confidence = [], [], [], []
    done = 0
    for chunk_no, (chunk_ids, X) in enumerate(features_iter_open(space)):
        chunk_seed = seed * 1_000_003 + chunk_no
        proba = None
        if strategy.utility is not None:
            scores, proba = strategy.utility(estimator, X, X_reference=reference, random_state=chunk_seed)
        else:
            scores = np.random.default_rng(chunk_seed).random(len(chunk_ids))
        if proba is None and estimator is not None:
            proba = estimator.predict_proba(X)
        ids.append(chunk_ids)
        priorities.append(np.asarray(scores, dtype=np.float64))
        if proba is None:
            predicted.append(np.full(len(chunk_ids), -1, dtype=np.int64))
            confidence.append(np.full(len(chunk_ids), np.nan))
        else:
            predicted.append(proba.argmax(axis=1).astype(np.int64))
            confidence.append(proba.max(axis=1).astype(np.float64))
        done += len(chunk_ids)
        if progress:
            progress("scoring", done, total or done)
    if not ids:
        empty = np.zeros(0)
        return PoolScores(empty.astype(np.int64), empty, empty.astype(np.int64), empty, empty.astype(np.int64))
    scores = PoolScores(
        np.concatenate(ids), np.concatenate(priorities), np.concatenate(predicted), np.concatenate(confidence),
        np.zeros(0, dtype=np.int64),
    )
    if strategy.batch:
        _batch_first(scores, project=project, space=space, strategy=strategy, estimator=estimator,
                     X_labelled=X_labelled, seed=seed)
    return scores


def _reference_sample(project: Project, space: FeatureSpace, seed: int):
    """Features of a seeded sample of open items: the pool's density, estimated at O(N x sample) cost."""
    from annotate.models import Item

    open_ids = np.fromiter(Item.objects.filter(project=project, done=False).values_list("id", flat=True),
                           dtype=np.int64)
    if len(open_ids) == 0:
        return None
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(open_ids, size=min(REFERENCE_SAMPLE, len(open_ids)), replace=False))
    return features_load(space, sample.tolist())


def _batch_first(scores: PoolScores, *, project, space, strategy, estimator, X_labelled, seed: int) -> None:
    """Let the batch strategy choose the first items of the queue among the best candidates."""
    n = min(queue_batch_size(project), len(scores.item_ids))
    if n == 0:
        return
    if "model" in strategy.needs:
        k = min(len(scores.item_ids), max(MIN_CANDIDATES, CANDIDATES_PER_PICK * n))
        candidates = np.argsort(-scores.priorities, kind="stable")[:k]
    else:  # cold start: candidates are a seeded sample of the whole pool
        rng = np.random.default_rng(seed)
        k = min(len(scores.item_ids), COLD_START_CANDIDATES)
        candidates = np.sort(rng.choice(len(scores.item_ids), size=k, replace=False))
    X_candidates = features_load(space, scores.item_ids[candidates].tolist())
    picks, _ = strategy.query(estimator, X_candidates, n, X_labelled=X_labelled, random_state=seed)
    chosen = candidates[np.asarray(picks, dtype=np.int64)]
    top = float(scores.priorities.max()) if len(scores.priorities) else 0.0
    # Above every utility, in pick order: the first pick is served first.
    scores.priorities[chosen] = top + 1.0 + (len(chosen) - np.arange(len(chosen))) / len(chosen)
    scores.batch_ids = scores.item_ids[chosen]
