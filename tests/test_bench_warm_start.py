"""The active-learning benchmark's warm-start rule (bench/active_learning/warm_start.py), on tiny arrays.

The adapted meta-model is a stand-in whose answers the test controls, so
who wins each comparison is known in advance.
"""
import numpy as np
from sklearn.linear_model import LogisticRegression

from bench.active_learning import simulation
from bench.active_learning.warm_start import Handover


def two_blobs(n_per_class: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two well separated classes: logistic regression gets every held-out row right."""
    rng = np.random.default_rng(seed)
    X = np.concatenate([rng.normal(-3, 0.3, (n_per_class, 2)), rng.normal(3, 0.3, (n_per_class, 2))])
    return X, np.repeat([0, 1], n_per_class)


class ConstantPredictor:
    """Predicts one class for every row (probabilities to match)."""

    def __init__(self, label: int) -> None:
        self.label = label
        self.classes_ = np.array([0, 1])

    def predict_proba(self, X):
        proba = np.zeros((len(X), 2))
        proba[:, self.label] = 1.0
        return proba

    def predict(self, X):
        return np.full(len(X), self.label)


class OraclePredictor:
    """Knows the true class of every row of `two_blobs` (the sign of its first feature)."""

    classes_ = np.array([0, 1])

    def predict(self, X):
        return (np.asarray(X)[:, 0] > 0).astype(int)

    def predict_proba(self, X):
        return np.eye(2)[self.predict(X)]


class ScriptedAdapter:
    """``adapt_fn`` whose predictor is `predictors[call]` (the last one once the script runs out); counts calls."""

    def __init__(self, *predictors) -> None:
        self.predictors = predictors
        self.calls = 0

    def __call__(self, X, y):
        self.calls += 1
        return self.predictors[min(self.calls - 1, len(self.predictors) - 1)]


def handover_for(adapt_fn, min_per_label: int = 1) -> Handover:
    return Handover(adapt_fn=adapt_fn, own_estimator=lambda random_state: LogisticRegression(),
                    classes=[0, 1], min_per_label=min_per_label)


def test_handover_keeps_the_adapted_model_while_the_own_model_does_not_win():
    X, y = two_blobs(4)
    own = LogisticRegression().fit(X, y)
    oracle = OraclePredictor()
    handover = handover_for(ScriptedAdapter(oracle))

    chosen = handover.model_for_round(X, y, own, random_state=0)

    assert chosen is oracle  # a tie (both perfect on the folds) is not a win for the own model
    assert handover.used == ["meta"]
    assert handover.handed_over_at is None
    assert handover.comparisons == [{"labels": 8, "own": 1.0, "adapted": 1.0}]


def test_handover_is_for_good_once_the_own_model_wins():
    X, y = two_blobs(4)
    own = LogisticRegression().fit(X, y)
    # The adapted model is wrong on half the folds' rows in round 1, then perfect: too late.
    adapt_fn = ScriptedAdapter(*[ConstantPredictor(0)] * 5, OraclePredictor())
    handover = handover_for(adapt_fn)

    first = handover.model_for_round(X, y, own, random_state=0)
    calls_after_first = adapt_fn.calls
    second = handover.model_for_round(X, y, own, random_state=1)

    assert first is own and second is own
    assert handover.handed_over_at == 8
    assert handover.used == ["own", "own"]
    assert adapt_fn.calls == calls_after_first  # no comparison, no adaptation after the handover
    assert len(handover.comparisons) == 1


def test_handover_uses_the_own_model_before_each_label_has_k_examples():
    X, y = two_blobs(4)
    X, y = X[[0, 4, 5]], y[[0, 4, 5]]  # one example of class 0, two of class 1
    own = LogisticRegression().fit(X, y)
    adapt_fn = ScriptedAdapter(OraclePredictor())
    handover = handover_for(adapt_fn, min_per_label=2)

    chosen = handover.model_for_round(X, y, own, random_state=0)

    assert chosen is own
    assert adapt_fn.calls == 0 and handover.comparisons == []
    assert handover.handed_over_at is None  # not handed over: the warm start has not begun


def test_handover_keeps_the_adapted_model_when_no_fold_can_hold_a_label_out():
    X, y = two_blobs(4)
    X, y = X[[0, 4]], y[[0, 4]]  # the seed set: one example per label
    own = LogisticRegression().fit(X, y)
    constant = ConstantPredictor(1)
    handover = handover_for(ScriptedAdapter(constant))

    assert handover.model_for_round(X, y, own, random_state=0) is constant
    assert handover.comparisons == [{"labels": 2, "own": None, "adapted": None}]


def test_run_curve_scores_the_adapted_model_until_the_handover_then_the_own_model():
    X, y = two_blobs(20, seed=1)
    pool, test, seed_set = simulation.split_and_seed_set(y, seed=0)
    # Always predicts class 0: ties with the own model on the 1-per-label seed set (no folds), then loses.
    handover = handover_for(ScriptedAdapter(ConstantPredictor(0)))
    schedule = simulation.label_schedule(len(seed_set), 1, 6)

    curve = simulation.run_curve(simulation.Arm("random", "logistic_regression"), X[pool], y[pool], X[test],
                                 y[test], seed_set, schedule, seed=0, round_model=handover)

    share_of_zeros = float(np.mean(y[test] == 0))
    meta_rounds = handover.used.count("meta")
    assert meta_rounds >= 1 and handover.handed_over_at is not None
    assert handover.used == ["meta"] * meta_rounds + ["own"] * (len(schedule) - meta_rounds)
    assert curve["accuracy"][:meta_rounds] == [share_of_zeros] * meta_rounds  # the adapted model was scored
    assert curve["accuracy"][meta_rounds:] == [1.0] * (len(schedule) - meta_rounds)  # then the own model
    assert curve["own_accuracy"] == [1.0] * len(schedule)  # the own model, recorded even when not in use
