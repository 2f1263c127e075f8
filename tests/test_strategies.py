"""Query strategies and the bagged committee, on plain arrays (learners.ml has no Django)."""
import math

import numpy as np
import pytest
from modAL.disagreement import KL_max_disagreement, vote_entropy
from scipy import sparse
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.metrics.pairwise import pairwise_distances

from learners.ml.committee import BaggedCommittee
from learners.ml.strategies import (
    NEEDS,
    STRATEGIES,
    entropy,
    least_confident,
    margin,
    query,
    strategy_get,
    utility_for,
)


class FixedProba:
    """An estimator stand-in whose predict_proba returns the rows it is given."""

    def predict_proba(self, X):
        return np.asarray(X, dtype=float)


class TableProba:
    """An estimator stand-in that predicts a fixed table of probabilities, one row per pool row."""

    def __init__(self, proba):
        self.proba = np.asarray(proba, dtype=float)

    def predict_proba(self, X):
        assert X.shape[0] == len(self.proba)
        return self.proba


class TableSamples:
    """An MC dropout stand-in: predict_proba_samples returns a fixed (S, N, C) table, looked up by X[:, 0]."""

    def __init__(self, samples):
        self.samples = np.asarray(samples, dtype=float)

    def predict_proba_samples(self, X, n_samples=20, random_state=None):
        return self.samples[:, np.asarray(X)[:, 0].astype(int)]


class NoisyDropout:
    """An MC dropout stand-in over a fitted classifier: its log-probabilities plus seeded Gaussian noise."""

    def __init__(self, model):
        self.model = model

    def predict_proba_samples(self, X, n_samples=20, random_state=None):
        logits = self.model.predict_log_proba(X)
        noisy = logits + np.random.default_rng(random_state).normal(size=(n_samples, *logits.shape))
        noisy = np.exp(noisy - noisy.max(axis=2, keepdims=True))
        return noisy / noisy.sum(axis=2, keepdims=True)


def two_blobs(n=40, seed=0):
    """Classes 'a' around (-2, 0) and 'b' around (2, 0): the true boundary is x0 = 0."""
    rng = np.random.default_rng(seed)
    X = np.r_[rng.normal((-2, 0), 1.0, (n, 2)), rng.normal((2, 0), 1.0, (n, 2))]
    return X, np.array(["a"] * n + ["b"] * n)


def tight_clusters(centres, sizes, spread, seed=0):
    """Points drawn tightly around each centre; returns the points and each point's cluster."""
    rng = np.random.default_rng(seed)
    X = np.concatenate([rng.normal(c, spread, (size, len(c))) for c, size in zip(centres, sizes)])
    return X, np.repeat(np.arange(len(centres)), sizes)


def min_pairwise_distance(X):
    distances = pairwise_distances(X)
    return distances[np.triu_indices(len(X), k=1)].min()


# Probability-level utilities, kept for the training pipeline.

PROBA = np.array([
    [0.98, 0.01, 0.01],  # sure
    [0.50, 0.49, 0.01],  # on the boundary between two classes
    [0.36, 0.33, 0.31],  # unsure among all three
    [0.70, 0.20, 0.10],
])


def test_margin_prefers_the_two_class_boundary():
    scores = margin(PROBA)
    assert np.argmax(scores) == 1
    assert scores[1] == pytest.approx(0.99) and scores[0] == pytest.approx(0.03)


def test_least_confident_and_entropy_prefer_the_flat_row():
    assert np.argmax(least_confident(PROBA)) == 2
    assert np.argmax(entropy(PROBA)) == 2
    assert 0.99 < entropy(PROBA)[2] <= 1.0  # normalised by log(3)
    assert 0.0 <= entropy(PROBA).min()


def test_query_returns_best_first_with_scores():
    indices, scores = query("margin", FixedProba(), PROBA, 2)
    assert list(indices) == [1, 2]
    assert scores[0] >= scores[1]


def test_utility_for_names_the_probability_utilities():
    assert utility_for("entropy") is entropy
    with pytest.raises(ValueError, match=r"unknown query strategy 'nope'; known: \['entropy', 'least_confident', 'margin'\]"):
        utility_for("nope")
    with pytest.raises(ValueError, match=r"'bald' needs more than class probabilities; use strategy_get"):
        utility_for("bald")


# The registry.

def test_strategy_get_unknown_names_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown query strategy 'qbc'; known: \['bald', 'density_margin', "):
        strategy_get("qbc")


def test_registry_describes_each_strategy():
    assert set(STRATEGIES) == {"random", "least_confident", "margin", "entropy", "qbc_vote_entropy", "qbc_kl",
                               "density_margin", "bald", "ranked_batch", "kcenter", "kmeans_pp"}
    for name, strategy in STRATEGIES.items():
        assert strategy.name == name
        assert strategy.description and "\n" not in strategy.description
        assert strategy.needs <= NEEDS
    assert {n for n, s in STRATEGIES.items() if s.batch} == {"ranked_batch", "kcenter", "kmeans_pp"}
    assert {n for n, s in STRATEGIES.items() if not s.needs} == {"random", "kmeans_pp"}


@pytest.fixture(scope="module")
def fitted():
    """A three-class pool and the estimator each kind of need asks for."""
    rng = np.random.default_rng(1)
    X = np.concatenate([rng.normal(centre, 1.0, (12, 4)) for centre in (-3, 0, 3)])
    y = np.repeat(["cat", "dog", "fox"], 12)
    model = LogisticRegression().fit(X, y)
    return {
        "X": X,
        "model": model,
        "committee": BaggedCommittee(LogisticRegression(), n_members=3, random_state=0).fit(X, y),
        "mc_dropout": NoisyDropout(model),
    }


def estimator_for_needs(needs, fitted):
    for need in ("committee", "mc_dropout", "model"):
        if need in needs:
            return fitted[need]
    return None


@pytest.mark.parametrize("as_sparse", [False, True], ids=["dense", "sparse"])
@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_every_strategy_returns_distinct_indices_within_the_pool(fitted, name, as_sparse):
    strategy = STRATEGIES[name]
    estimator = estimator_for_needs(strategy.needs, fitted)
    X = sparse.csr_matrix(fitted["X"]) if as_sparse else fitted["X"]
    X_pool, X_labelled = X[:30], X[30:]
    for n, labelled in ((1, None), (7, X_labelled), (7, None), (100, X_labelled), (0, None)):
        indices, scores = query(name, estimator, X_pool, n, X_labelled=labelled, random_state=3)
        assert indices.dtype == np.int64 and scores.dtype == np.float64
        assert len(indices) == len(scores) == min(n, 30)
        assert len(set(indices.tolist())) == len(indices)
        assert ((0 <= indices) & (indices < 30)).all()
        assert np.isfinite(scores).all()
    if strategy.utility is not None:
        scores, proba = strategy.utility(estimator, X_pool, X_reference=X_labelled, random_state=3)
        assert scores.shape == (30,) and scores.dtype == np.float64
        assert proba is None or (proba.shape == (30, 3) and np.allclose(proba.sum(axis=1), 1.0))


# Uncertainty sampling.

def test_margin_picks_the_points_nearest_the_decision_boundary():
    X, y = two_blobs(n=100)
    model = LogisticRegression().fit(X, y)
    pool = np.random.default_rng(5).uniform(-6, 6, (500, 2))

    indices, _ = query("margin", model, pool, 10)

    distance_to_fitted_boundary = np.abs(pool @ model.coef_[0] + model.intercept_[0]) / np.linalg.norm(model.coef_)
    assert set(indices) == set(np.argsort(distance_to_fitted_boundary)[:10])
    assert np.abs(pool[indices, 0]).max() < 1.0  # and near the true boundary x0 = 0, where points reach |x0| = 6


def test_random_is_reproducible_per_seed_and_differs_across_seeds():
    pool = np.zeros((1000, 2))
    first, _ = query("random", None, pool, 20, random_state=7)
    again, _ = query("random", None, pool, 20, random_state=7)
    other, _ = query("random", None, pool, 20, random_state=8)
    assert list(first) == list(again)
    assert list(first) != list(other)


# Query by committee.

@pytest.fixture(scope="module")
def committee_and_line():
    X, y = two_blobs()
    committee = BaggedCommittee(LogisticRegression(C=10.0), n_members=7, random_state=0).fit(X, y)
    line = np.c_[np.linspace(-8, 8, 161), np.zeros(161)]  # across the true boundary x0 = 0
    return committee, line


def test_committee_members_disagree_on_the_boundary_and_agree_far_from_it(committee_and_line):
    committee, line = committee_and_line
    votes = committee.vote(line)
    unanimous = (votes == votes[:, :1]).all(axis=1)
    assert not unanimous[np.abs(line[:, 0]) < 1].all()
    assert unanimous[np.abs(line[:, 0]) > 3].all()
    assert len({tuple(member.coef_.ravel()) for member in committee}) == 7  # each saw its own bootstrap


@pytest.mark.parametrize("name", ["qbc_vote_entropy", "qbc_kl"])
def test_qbc_picks_the_boundary_and_scores_far_points_zero(committee_and_line, name):
    committee, line = committee_and_line
    indices, _ = query(name, committee, line, 5)
    scores, proba = STRATEGIES[name].utility(committee, line)
    assert np.abs(line[indices, 0]).max() < 1.0
    assert scores[np.abs(line[:, 0]) > 6].max() < 1e-6
    assert np.allclose(proba, committee.predict_proba(line))


def test_qbc_scores_equal_modals_disagreement_measures(committee_and_line):
    committee, line = committee_and_line
    assert np.allclose(STRATEGIES["qbc_vote_entropy"].utility(committee, line)[0], vote_entropy(committee, line))
    assert np.allclose(STRATEGIES["qbc_kl"].utility(committee, line)[0], KL_max_disagreement(committee, line))


def test_qbc_needs_a_committee():
    X, y = two_blobs()
    with pytest.raises(TypeError, match="'qbc_kl' needs a committee.*got LogisticRegression"):
        query("qbc_kl", LogisticRegression().fit(X, y), X, 3)


# Information density.

def test_density_margin_prefers_an_uncertain_point_in_a_dense_region_over_an_uncertain_outlier():
    rng = np.random.default_rng(0)
    dense = np.c_[np.ones(50), rng.uniform(0, 0.2, 50)]  # 50 rows pointing along x
    pool = np.r_[dense, [[0.0, 1.0]]]  # one outlier pointing along y
    proba = np.tile([0.95, 0.05], (51, 1))
    proba[[0, 50]] = [0.5, 0.5]  # equally uncertain: row 0 in the dense region, row 50 the outlier
    model = TableProba(proba)

    indices, _ = query("density_margin", model, pool, 2)
    scores, _ = STRATEGIES["density_margin"].utility(model, pool)
    against_the_outlier, _ = STRATEGIES["density_margin"].utility(model, pool, X_reference=pool[[50]])

    assert margin(proba)[0] == margin(proba)[50]
    assert indices[0] == 0 and scores[0] > 2 * scores[50]
    assert against_the_outlier[50] > against_the_outlier[0]  # density is measured against X_reference


# BALD.

def test_bald_ranks_disagreeing_samples_above_agreeing_uncertain_ones():
    samples = np.array([  # 4 dropout samples of 3 rows, 2 classes
        [[1.0, 0.0], [0.5, 0.5], [0.9, 0.1]],
        [[0.0, 1.0], [0.5, 0.5], [0.6, 0.4]],
        [[1.0, 0.0], [0.5, 0.5], [0.9, 0.1]],
        [[0.0, 1.0], [0.5, 0.5], [0.6, 0.4]],
    ])
    pool = np.arange(3.0)[:, None]

    scores, proba = STRATEGIES["bald"].utility(TableSamples(samples), pool)
    indices, _ = query("bald", TableSamples(samples), pool, 3)

    assert np.allclose(proba, [[0.5, 0.5], [0.5, 0.5], [0.75, 0.25]])
    assert entropy(proba)[0] == entropy(proba)[1]  # entropy cannot tell row 0 from row 1
    assert list(indices) == [0, 2, 1]

    def h(*p):
        return -sum(q * math.log(q) for q in p if q > 0)

    assert scores[0] == pytest.approx(math.log(2))  # H[mean] = log 2, each sample certain: mean H = 0
    assert scores[1] == pytest.approx(0.0)  # H[mean] = log 2 = mean H
    assert scores[2] == pytest.approx(h(0.75, 0.25) - (h(0.9, 0.1) + h(0.6, 0.4)) / 2)  # 0.5623 - 0.4990
    assert scores[2] == pytest.approx(0.06329, abs=1e-5)


def test_bald_needs_dropout_sampling():
    with pytest.raises(TypeError, match="'bald' needs MC dropout sampling"):
        query("bald", FixedProba(), PROBA, 1)


# Batch strategies spread their picks.

@pytest.fixture(scope="module")
def five_clusters():
    """A pool of 5 tight clusters of 200 near-duplicates, and a model trained on 40 labelled rows away from them.

    The labelled rows lie around (-8, -6) and (8, -6), so the model's boundary
    is near x0 = 0 and the middle cluster (2), at the origin, is the uncertain one.
    """
    centres = [(-10, 0), (-5, 8), (0, 0), (5, 8), (10, 0)]
    X, cluster = tight_clusters(centres, [200] * 5, spread=0.01)
    X_labelled, side = tight_clusters([(-8, -6), (8, -6)], [20, 20], spread=1.0, seed=1)
    model = LogisticRegression().fit(X_labelled, np.where(side == 0, "left", "right"))
    return X, cluster, model, X_labelled


def test_kcenter_picks_one_point_per_cluster_where_margin_picks_near_duplicates(five_clusters):
    X, cluster, model, _ = five_clusters

    by_margin, _ = query("margin", model, X, 5)
    by_kcenter, distances = query("kcenter", model, X, 5)

    assert set(cluster[by_margin]) == {2}
    assert sorted(cluster[by_kcenter]) == [0, 1, 2, 3, 4]
    assert cluster[by_kcenter[0]] == 2  # nothing labelled: start from the most uncertain
    assert (np.diff(distances) <= 0).all()


def test_kcenter_goes_first_where_nothing_is_labelled(five_clusters):
    X, cluster, model, _ = five_clusters
    labelled_clusters = np.isin(cluster, [0, 1, 3, 4]) & (np.arange(len(X)) % 20 == 0)
    indices, _ = query("kcenter", model, X, 1, X_labelled=X[labelled_clusters])
    assert cluster[indices[0]] == 2


@pytest.mark.parametrize("labelled", [False, True], ids=["cold", "with_labels"])
def test_ranked_batch_is_not_five_near_duplicates(five_clusters, labelled):
    X, cluster, model, X_labelled = five_clusters
    indices, scores = query("ranked_batch", model, X, 5, X_labelled=X_labelled if labelled else None)
    assert min_pairwise_distance(X[indices]) > 1.0
    assert cluster[indices[0]] == 2
    assert ((0 <= scores) & (scores <= 1)).all()


@pytest.mark.parametrize("seed", range(5))
def test_kmeans_pp_cold_start_hits_every_cluster_of_unequal_size(seed):
    centres = [(0, 0), (20, 0), (0, 20), (20, 20)]
    X, cluster = tight_clusters(centres, [500, 150, 40, 10], spread=0.5, seed=seed)
    indices, _ = query("kmeans_pp", None, X, 4, random_state=seed)
    assert sorted(cluster[indices]) == [0, 1, 2, 3]


def test_kmeans_pp_fills_up_when_the_pool_has_fewer_distinct_rows_than_n():
    pool = np.r_[np.zeros((5, 2)), np.ones((5, 2))]
    indices, _ = query("kmeans_pp", None, pool, 8, random_state=0)
    assert len(set(indices.tolist())) == 8
    assert {tuple(row) for row in pool[indices[:2]]} == {(0.0, 0.0), (1.0, 1.0)}


# The committee follows the scikit-learn estimator contract.

def test_bagged_committee_follows_the_sklearn_contract():
    committee = BaggedCommittee(LogisticRegression(C=2.0), n_members=4, random_state=3)
    params = committee.get_params(deep=False)
    assert params == {"estimator": params["estimator"], "n_members": 4, "random_state": 3}
    assert BaggedCommittee(**params).get_params(deep=False) == params
    assert committee.get_params()["estimator__C"] == 2.0
    unfitted = clone(committee)
    assert unfitted.get_params()["n_members"] == 4 and not hasattr(unfitted, "estimators_")

    X, y = two_blobs()
    assert committee.fit(X, y) is committee
    assert len(committee) == 4
    assert committee.vote(X).shape == (80, 4)
    assert committee.vote_proba(X).shape == (80, 4, 2)
    assert list(committee.predict(X[:1])) == ["a"]
    refit = clone(committee).fit(X, y)
    assert np.allclose(refit.predict_proba(X), committee.predict_proba(X))  # random_state makes it reproducible


def test_bagged_committee_members_see_every_class_even_a_single_example():
    X, y = two_blobs()
    X, y = np.r_[X, [[0.0, 9.0]]], np.r_[y, ["rare"]]
    committee = BaggedCommittee(LogisticRegression(), n_members=6, random_state=0).fit(X, y)
    assert list(committee.classes_) == ["a", "b", "rare"]
    assert all(list(member.classes_) == ["a", "b", "rare"] for member in committee)
    assert np.allclose(committee.vote_proba(X).sum(axis=2), 1.0)


def test_bagged_committee_rejects_a_single_class_or_member():
    X, y = two_blobs()
    with pytest.raises(ValueError, match="at least 2 classes"):
        BaggedCommittee(LogisticRegression()).fit(X, np.full(len(y), "a"))
    with pytest.raises(ValueError, match="at least 2 members"):
        BaggedCommittee(LogisticRegression(), n_members=1).fit(X, y)
