"""Query strategies: which unlabelled items are worth labelling next.

`STRATEGIES` maps a name to a `Strategy`, which offers two calls:

- `query(estimator, X_pool, n, *, X_labelled=None, random_state=None) -> (indices, scores)`,
  modAL's shape: at most `n` distinct row indices into `X_pool` (int64, first
  pick first) and a float64 score for each;
- `utility(estimator, X_chunk, *, X_reference=None, random_state=None) -> (scores, proba)`,
  a per-item score (higher: ask sooner) that orders a huge pool chunk by
  chunk. `proba` is the estimator's (N, C) class probabilities when the
  utility computed them, so the caller need not run `predict_proba` again,
  else None. A strategy without a per-item score has `utility=None`.

Batch strategies (`batch=True`) choose a diverse batch, which is not the top
`n` of their utility: the caller orders the pool by the utility (margin), takes
the top candidates and calls `query` on those to order the first batch.

`X` is a dense ndarray or a scipy CSR matrix; strategies that only read the
estimator's probabilities also take whatever the estimator takes (raw
payloads for a pipeline). `random_state` is an int, None or a numpy
Generator; one Generator passed for every chunk gives independent draws.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

# modAL's probability-level utilities; the public classifier_* wrappers would
# call predict_proba a second time. Pinned with modAL-python==0.4.2.1.
from modAL.uncertainty import _proba_entropy, _proba_margin, _proba_uncertainty
from scipy.special import entr, rel_entr
from sklearn.cluster import kmeans_plusplus
from sklearn.metrics.pairwise import pairwise_distances, pairwise_distances_argmin_min
from sklearn.preprocessing import normalize

from learners.catalog import STRATEGIES as _CATALOG

REFERENCE_SIZE = 2_000  # rows of the pool that density is measured against
DENSITY_BETA = 1.0  # Settles & Craven's beta: weight of density against uncertainty
BALD_SAMPLES = 20  # MC dropout forward passes per item

NEEDS = frozenset({"model", "committee", "mc_dropout"})

Seed = int | np.random.Generator | None
Utility = Callable[..., tuple[np.ndarray, np.ndarray | None]]
ProbaUtility = Callable[..., tuple[np.ndarray, np.ndarray]]  # a Utility that always returns the proba
Query = Callable[..., tuple[np.ndarray, np.ndarray]]


# Utilities over predicted class probabilities, kept for callers that already hold them.

def least_confident(proba: np.ndarray) -> np.ndarray:
    return _proba_uncertainty(proba)


def margin(proba: np.ndarray) -> np.ndarray:
    """1 - (top probability - runner-up): 1 on the decision boundary."""
    return 1.0 - _proba_margin(proba)


def entropy(proba: np.ndarray) -> np.ndarray:
    """Entropy normalised by log(n_classes) to [0, 1]."""
    n_classes = proba.shape[1]
    if n_classes < 2:
        return np.zeros(len(proba))
    return _proba_entropy(proba) / np.log(n_classes)


UTILITIES: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "least_confident": least_confident,
    "margin": margin,
    "entropy": entropy,
}


def utility_for(name: str) -> Callable[[np.ndarray], np.ndarray]:
    """The utility over class probabilities of an uncertainty strategy (least_confident, margin, entropy)."""
    try:
        return UTILITIES[name]
    except KeyError:
        if name in STRATEGIES:
            raise ValueError(f"query strategy {name!r} needs more than class probabilities; "
                             f"use strategy_get({name!r}).utility. Those that do not: {sorted(UTILITIES)}") from None
        raise ValueError(f"unknown query strategy {name!r}; known: {sorted(UTILITIES)}") from None


# Helpers.

def _n_rows(X: Any) -> int:
    return X.shape[0] if hasattr(X, "shape") else len(X)


def _top(scores: np.ndarray, n: int) -> np.ndarray:
    """Indices of the n highest scores, highest first; ties by lower index."""
    n = min(n, len(scores))
    if n <= 0:
        return np.zeros(0, dtype=np.int64)
    candidates = np.argpartition(-scores, n - 1)[:n]
    return candidates[np.lexsort((candidates, -scores[candidates]))].astype(np.int64)


def _empty() -> tuple[np.ndarray, np.ndarray]:
    return np.zeros(0, dtype=np.int64), np.zeros(0)


def _sklearn_seed(random_state: Seed) -> int:
    return int(np.random.default_rng(random_state).integers(np.iinfo(np.int32).max))


def _reference_sample(X: Any, random_state: Seed) -> Any:
    n_rows = _n_rows(X)
    if n_rows <= REFERENCE_SIZE:
        return X
    rows = np.sort(np.random.default_rng(random_state).choice(n_rows, REFERENCE_SIZE, replace=False))
    return X[rows]


def _distances_to(X: Any, row: int) -> np.ndarray:
    return pairwise_distances(X, X[[row]]).ravel()


def _require(estimator: Any, attribute: str, strategy: str, what: str) -> None:
    if not hasattr(estimator, attribute):
        raise TypeError(f"query strategy {strategy!r} needs {what} (an estimator with {attribute}); "
                        f"got {type(estimator).__name__}")


def _query_by_utility(utility: Utility) -> Query:
    """modAL's uncertainty sampling shape: the top n of a per-item utility."""
    def query(estimator: Any, X_pool: Any, n: int, *, X_labelled: Any = None,
              random_state: Seed = None) -> tuple[np.ndarray, np.ndarray]:
        scores, _ = utility(estimator, X_pool, random_state=random_state)
        indices = _top(scores, n)
        return indices, scores[indices]
    return query


# Per-item utilities: (estimator, X_chunk, *, X_reference=None, random_state=None) -> (scores, proba or None).

def random_utility(estimator: Any, X: Any, *, X_reference: Any = None,
                   random_state: Seed = None) -> tuple[np.ndarray, None]:
    """Uniform draws: a seeded random order, the baseline every strategy must beat."""
    return np.random.default_rng(random_state).random(_n_rows(X)), None


def _uncertainty_utility(name: str, measure: Callable[[np.ndarray], np.ndarray]) -> ProbaUtility:
    def utility(estimator: Any, X: Any, *, X_reference: Any = None,
                random_state: Seed = None) -> tuple[np.ndarray, np.ndarray]:
        _require(estimator, "predict_proba", name, "a fitted model")
        proba = estimator.predict_proba(X)
        return measure(proba).astype(np.float64), proba
    utility.__name__ = f"{name}_utility"
    utility.__doc__ = f"The {name} uncertainty of the estimator's predicted class probabilities."
    return utility


least_confident_utility = _uncertainty_utility("least_confident", least_confident)
margin_utility = _uncertainty_utility("margin", margin)
entropy_utility = _uncertainty_utility("entropy", entropy)


def _committee_vote_proba(estimator: Any, X: Any, strategy: str) -> np.ndarray:
    _require(estimator, "vote_proba", strategy, "a committee, e.g. learners.ml.committee.BaggedCommittee")
    return np.asarray(estimator.vote_proba(X), dtype=np.float64)


# modAL.disagreement.vote_entropy and KL_max_disagreement accept a BaggedCommittee, but each runs the members
# again and throws their probabilities away (and vote_entropy counts votes in a Python loop per row). These are
# the same formulas over one vote_proba pass, which also gives the consensus proba the caller needs;
# tests/test_strategies.py checks that they agree with modAL.

def qbc_vote_entropy_utility(estimator: Any, X: Any, *, X_reference: Any = None,
                             random_state: Seed = None) -> tuple[np.ndarray, np.ndarray]:
    """Entropy (nats) of the distribution of the members' votes (Dagan & Engelson 1995).

    A member votes for its most probable class.
    """
    members = _committee_vote_proba(estimator, X, "qbc_vote_entropy")
    n_classes = members.shape[2]
    votes = members.argmax(axis=2)
    vote_share = np.stack([(votes == k).mean(axis=1) for k in range(n_classes)], axis=1)
    return entr(vote_share).sum(axis=1), members.mean(axis=1)


def qbc_kl_utility(estimator: Any, X: Any, *, X_reference: Any = None,
                   random_state: Seed = None) -> tuple[np.ndarray, np.ndarray]:
    """The largest KL divergence (nats) of a member's class probabilities from the consensus (McCallum & Nigam 1998)."""
    members = _committee_vote_proba(estimator, X, "qbc_kl")
    consensus = members.mean(axis=1)
    divergence = rel_entr(members, consensus[:, None, :]).sum(axis=2)
    return divergence.max(axis=1), consensus


def density_margin_utility(estimator: Any, X: Any, *, X_reference: Any = None,
                           random_state: Seed = None) -> tuple[np.ndarray, np.ndarray]:
    """Information density weighted margin (Settles & Craven 2008).

    margin × (mean cosine similarity to the rows of `X_reference`) ** DENSITY_BETA.
    The mean of cosine similarities is the dot product with the mean of the
    reference rows' unit vectors, so the cost is O(N·d), not O(N × reference).
    Without `X_reference` the reference is a seeded sample of `X` of at most
    REFERENCE_SIZE rows. A negative mean similarity (features with signs) is
    clipped to 0: the item is less typical than any other.

    modAL.density.information_density does not fit: it compares X with
    itself (N × N) and uses 1 / (1 + distance), not cosine similarity.
    """
    scores, proba = margin_utility(estimator, X)
    reference = _reference_sample(X, random_state) if X_reference is None else X_reference
    centroid = np.asarray(normalize(reference).mean(axis=0)).ravel()
    density = np.clip(np.asarray(normalize(X) @ centroid).ravel(), 0.0, None)
    return scores * density ** DENSITY_BETA, proba


def bald_utility(estimator: Any, X: Any, *, X_reference: Any = None,
                 random_state: Seed = None) -> tuple[np.ndarray, np.ndarray]:
    """BALD by MC dropout (Houlsby et al. 2011; Gal et al. 2017): H[mean p] - mean H[p], in nats.

    High where the dropout samples are each confident but disagree; 0 where
    they agree, however uncertain they agree to be. Returns the mean of the
    samples as proba.
    """
    _require(estimator, "predict_proba_samples", "bald", "MC dropout sampling")
    samples = np.asarray(estimator.predict_proba_samples(X, n_samples=BALD_SAMPLES, random_state=random_state),
                         dtype=np.float64)  # (S, N, C)
    mean = samples.mean(axis=0)
    mutual_information = entr(mean).sum(axis=1) - entr(samples).sum(axis=2).mean(axis=0)
    return np.clip(mutual_information, 0.0, None), mean


# Batch queries: (estimator, X_pool, n, *, X_labelled=None, random_state=None) -> (indices, scores).

def _has_rows(X: Any) -> bool:
    return X is not None and _n_rows(X) > 0


def ranked_batch_query(estimator: Any, X_pool: Any, n: int, *, X_labelled: Any = None,
                       random_state: Seed = None) -> tuple[np.ndarray, np.ndarray]:
    """Ranked batch-mode sampling (Cardoso et al. 2017, "Ranked batch-mode active learning").

    Each pick maximises alpha × (1 - 1 / (1 + d)) + (1 - alpha) × margin, where
    d is the distance to the nearest labelled or already picked row and
    alpha = |unpicked pool| / (|unpicked pool| + |labelled| + |picked|), as in
    modAL.batch.select_instance. That function needs a modAL learner holding
    X_training and recomputes distances to every labelled row for each pick;
    here a running minimum distance (O(N)) is updated with each pick. With
    nothing labelled the first pick is the most uncertain row (modAL's cold
    start compares the whole pool with itself). Scores are the ranked scores, in [0, 1].
    """
    n_rows = _n_rows(X_pool)
    n = min(n, n_rows)
    if n <= 0:
        return _empty()
    uncertainty, _ = margin_utility(estimator, X_pool)
    available = np.ones(n_rows, dtype=bool)
    picks: list[int] = []
    scores: list[float] = []
    n_labelled = _n_rows(X_labelled) if _has_rows(X_labelled) else 0
    if n_labelled:
        _, nearest = pairwise_distances_argmin_min(X_pool, X_labelled)
    else:
        # With nothing labelled every d is infinite and alpha is 1: all rows score 1, uncertainty breaks the tie.
        first = int(np.argmax(uncertainty))
        picks.append(first)
        scores.append(1.0)
        available[first] = False
        nearest = _distances_to(X_pool, first)
    while len(picks) < n:
        n_unpicked = n_rows - len(picks)
        alpha = n_unpicked / (n_unpicked + n_labelled + len(picks))
        ranked = alpha * (1.0 - 1.0 / (1.0 + nearest)) + (1.0 - alpha) * uncertainty
        ranked[~available] = -np.inf
        pick = int(np.argmax(ranked))
        picks.append(pick)
        scores.append(float(ranked[pick]))
        available[pick] = False
        nearest = np.minimum(nearest, _distances_to(X_pool, pick))
    return np.array(picks, dtype=np.int64), np.array(scores)


def kcenter_query(estimator: Any, X_pool: Any, n: int, *, X_labelled: Any = None,
                  random_state: Seed = None) -> tuple[np.ndarray, np.ndarray]:
    """k-center greedy, the core-set heuristic (Sener & Savarese 2018).

    Each pick is the pool row farthest (Euclidean) from every labelled row and
    every earlier pick; its score is that distance, so scores never increase.
    A running minimum-distance vector keeps memory O(N), never N × N. With
    nothing labelled the first pick is the most uncertain row (margin), scored
    with the distance to the farthest pool row (the radius it leaves).
    """
    n_rows = _n_rows(X_pool)
    n = min(n, n_rows)
    if n <= 0:
        return _empty()
    picks: list[int] = []
    scores: list[float] = []
    if _has_rows(X_labelled):
        _, nearest = pairwise_distances_argmin_min(X_pool, X_labelled)
    else:
        uncertainty, _ = margin_utility(estimator, X_pool)
        first = int(np.argmax(uncertainty))
        nearest = _distances_to(X_pool, first)
        picks.append(first)
        scores.append(float(nearest.max()))
        nearest[first] = -np.inf
    while len(picks) < n:
        pick = int(np.argmax(nearest))
        picks.append(pick)
        scores.append(float(nearest[pick]))
        nearest = np.minimum(nearest, _distances_to(X_pool, pick))
        nearest[pick] = -np.inf
    return np.array(picks, dtype=np.int64), np.array(scores)


def kmeans_pp_query(estimator: Any, X_pool: Any, n: int, *, X_labelled: Any = None,
                    random_state: Seed = None) -> tuple[np.ndarray, np.ndarray]:
    """k-means++ seeding (Arthur & Vassilvitskii 2007) of the pool: n rows that cover its clusters.

    Needs no model, for a cold start. Each seed is drawn with probability
    proportional to its squared distance from the earlier seeds (greedily, over
    several trials), so duplicates of a seed are never drawn while other rows
    remain. Labelled rows are not taken into account. Scores are each seed's
    distance to the nearest earlier seed (the first: to the farthest pool row).
    It has no per-item utility: order a huge pool by querying a sample of it.
    """
    n_rows = _n_rows(X_pool)
    n = min(n, n_rows)
    if n <= 0:
        return _empty()
    _, seeds = kmeans_plusplus(X_pool, n_clusters=n, random_state=_sklearn_seed(random_state))
    # A pool with fewer distinct rows than n makes kmeans_plusplus repeat a seed: keep the first of each
    # and fill up with the other rows in a seeded order (they duplicate seeds anyway).
    _, first = np.unique(seeds, return_index=True)
    picks = seeds[np.sort(first)]
    if len(picks) < n:
        rest = np.setdiff1d(np.arange(n_rows), picks)
        picks = np.concatenate([picks, np.random.default_rng(random_state).permutation(rest)[: n - len(picks)]])
    picks = picks.astype(np.int64)
    first_distances = _distances_to(X_pool, int(picks[0]))
    between = pairwise_distances(X_pool[picks])
    scores = [float(first_distances.max())] + [float(between[i, :i].min()) for i in range(1, n)]
    return picks, np.array(scores)


def describe(name: str) -> str:
    """The one-line description owners see, kept in learners.catalog (shown without importing this module)."""
    return _CATALOG[name].description


@dataclass(frozen=True)
class Strategy:
    name: str
    description: str  # one line, for the project settings dropdown
    needs: frozenset[str]  # subset of NEEDS; empty: works before any label (cold start)
    batch: bool  # True: `query` picks a diverse batch, not the top n of `utility`
    query: Query
    utility: Utility | None


STRATEGIES: dict[str, Strategy] = {s.name: s for s in [
    Strategy("random", describe("random"),
             frozenset(), False, _query_by_utility(random_utility), random_utility),
    Strategy("least_confident", describe("least_confident"),
             frozenset({"model"}), False, _query_by_utility(least_confident_utility), least_confident_utility),
    Strategy("margin", describe("margin"),
             frozenset({"model"}), False, _query_by_utility(margin_utility), margin_utility),
    Strategy("entropy", describe("entropy"),
             frozenset({"model"}), False, _query_by_utility(entropy_utility), entropy_utility),
    Strategy("qbc_vote_entropy", describe("qbc_vote_entropy"),
             frozenset({"committee"}), False, _query_by_utility(qbc_vote_entropy_utility), qbc_vote_entropy_utility),
    Strategy("qbc_kl", describe("qbc_kl"),
             frozenset({"committee"}), False, _query_by_utility(qbc_kl_utility), qbc_kl_utility),
    Strategy("density_margin",
             describe("density_margin"),
             frozenset({"model"}), False, _query_by_utility(density_margin_utility), density_margin_utility),
    Strategy("bald", describe("bald"),
             frozenset({"mc_dropout"}), False, _query_by_utility(bald_utility), bald_utility),
    Strategy("ranked_batch",
             describe("ranked_batch"),
             frozenset({"model"}), True, ranked_batch_query, margin_utility),
    Strategy("kcenter",
             describe("kcenter"),
             frozenset({"model"}), True, kcenter_query, margin_utility),
    Strategy("kmeans_pp",
             describe("kmeans_pp"),
             frozenset(), True, kmeans_pp_query, None),
]}


def strategy_get(name: str) -> Strategy:
    try:
        return STRATEGIES[name]
    except KeyError:
        raise ValueError(f"unknown query strategy {name!r}; known: {sorted(STRATEGIES)}") from None


def query(name: str, estimator: Any, X_pool: Any, n: int, *, X_labelled: Any = None,
          random_state: Seed = None) -> tuple[np.ndarray, np.ndarray]:
    """Pick up to `n` rows of `X_pool` to label next with the strategy `name`.

    Parameters
    ----------
    estimator
        What the strategy `needs`: a fitted classifier with predict_proba, a
        fitted committee, an MC dropout model, or None for cold-start strategies.
    X_pool
        Unlabelled rows: a dense ndarray or a scipy CSR matrix.
    n
        How many to pick; fewer come back when the pool is smaller.
    X_labelled
        Rows already labelled (same features), for strategies that spread
        picks away from them; None or empty at a cold start.
    random_state
        int, None or numpy Generator, for strategies that draw at random.

    Returns
    -------
    indices, scores
        Distinct int64 row indices into `X_pool`, first pick first, and a float64 score for each.
    """
    if n < 0:
        raise ValueError(f"n must be 0 or more; got {n}")
    indices, scores = strategy_get(name).query(estimator, X_pool, n, X_labelled=X_labelled, random_state=random_state)
    return np.asarray(indices, dtype=np.int64), np.asarray(scores, dtype=np.float64)
