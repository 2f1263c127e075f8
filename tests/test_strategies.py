"""Query strategies on plain arrays (learners.ml has no Django)."""
import numpy as np
import pytest

from learners.ml.strategies import entropy, least_confident, margin, query, utility_for


class FixedProba:
    """An estimator stand-in whose predict_proba returns the rows it is given."""

    def predict_proba(self, X):
        return np.asarray(X, dtype=float)


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
    indices, scores = query("margin", FixedProba(), PROBA, n_instances=2)
    assert list(indices) == [1, 2]
    assert scores[0] >= scores[1]


def test_unknown_strategy_names_the_known_ones():
    with pytest.raises(ValueError, match="unknown query strategy 'bald'; known: \\['entropy', 'least_confident', 'margin'\\]"):
        utility_for("bald")
