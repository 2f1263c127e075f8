"""The estimator registry and our own estimators, held to the scikit-learn contract.

TorchMLPClassifier and CalibratedLinearSVC pass every check of scikit-learn 1.7's
`parametrize_with_checks`, so no `expected_failed_checks` are listed.
"""
from __future__ import annotations

import io

import joblib
import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.base import clone
from sklearn.datasets import make_classification
from sklearn.exceptions import NotFittedError
from sklearn.utils.estimator_checks import parametrize_with_checks

from learners.ml.estimators import ESTIMATORS, CalibratedLinearSVC, estimator_create
from learners.ml.torch_mlp import MAX_FEATURES, TorchMLPClassifier

# On a busy 2-core machine two OpenMP threads spin-wait on each other: small fits run ~50x slower.
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def fast_mlp(**params) -> TorchMLPClassifier:
    return TorchMLPClassifier(**{"hidden_sizes": (16,), "max_epochs": 20, "lr": 1e-2, "random_state": 0, **params})


@parametrize_with_checks([fast_mlp(), CalibratedLinearSVC(random_state=0)])
def test_estimator_meets_sklearn_contract(estimator, check):
    check(estimator)


# Two examples of each of three classes, far apart; labels listed out of sorted order so that
# "columns in classes_ order" is not the same as "columns in order of first appearance".
TINY_X = np.array([
    [0.0, 4.0, 0.0], [0.3, 3.6, 0.0],
    [4.0, 0.0, 0.0], [3.7, 0.2, 0.1],
    [0.0, 0.0, 4.0], [0.2, 0.0, 3.8],
])
TINY_Y = np.array(["dog", "dog", "cat", "cat", "eel", "eel"])
REGISTRY_CASES = [
    pytest.param(name, layout, id=f"{name}-{layout}")
    for name, spec in ESTIMATORS.items()
    for layout in ("dense", "sparse")
    if layout == "dense" or spec.accepts_sparse
]


@pytest.mark.parametrize("name, layout", REGISTRY_CASES)
def test_registry_estimator_fits_two_examples_per_class(name, layout):
    X = TINY_X if layout == "dense" else sp.csr_matrix(TINY_X)
    estimator = estimator_create(name, random_state=0)

    fitted = clone(estimator).fit(X, TINY_Y)
    proba = fitted.predict_proba(X)

    assert isinstance(fitted, type(estimator))
    assert fitted.fit(X, TINY_Y) is fitted
    assert list(fitted.classes_) == ["cat", "dog", "eel"]
    assert proba.shape == (6, 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    # Well-separated training points: the largest column must be the one named by classes_.
    assert list(fitted.classes_[proba.argmax(axis=1)]) == list(TINY_Y)
    assert list(fitted.predict(X)) == list(TINY_Y)


@pytest.mark.parametrize("name", sorted(ESTIMATORS))
def test_estimator_create_passes_random_state(name):
    estimator = estimator_create(name, random_state=7)

    assert estimator.get_params()["random_state"] == 7
    assert clone(estimator).get_params() == estimator.get_params()


def test_estimator_create_unknown_name_lists_known_ones():
    with pytest.raises(ValueError, match="unknown estimator 'svm'.*linear_svm.*logistic_regression"):
        estimator_create("svm")


def test_estimator_spec_mc_dropout_matches_predict_proba_samples():
    for spec in ESTIMATORS.values():
        assert hasattr(spec.factory(), "predict_proba_samples") == spec.mc_dropout, spec.name


def test_linear_svm_trains_on_one_example_per_class():
    # Cross-validating 2 labels per class leaves 1 per class in each training fold.
    X, y = TINY_X[::2], TINY_Y[::2]

    proba = estimator_create("linear_svm", random_state=0).fit(X, y).predict_proba(X)

    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert list(np.array(["cat", "dog", "eel"])[proba.argmax(axis=1)]) == list(y)


def separable_problem(layout: str):
    X, y = make_classification(
        n_samples=300, n_features=10, n_informative=4, n_classes=3, class_sep=2.5, random_state=0,
    )
    labels = np.array(["alpha", "beta", "gamma"])[y]
    if layout == "sparse":
        X = sp.csr_matrix(np.where(np.abs(X) > 0.5, X, 0.0))
    return X[:200], labels[:200], X[200:], labels[200:]


@pytest.mark.parametrize("layout", ["dense", "sparse"])
def test_mlp_learns_separable_problem(layout):
    X_train, y_train, X_test, y_test = separable_problem(layout)

    model = TorchMLPClassifier(random_state=0).fit(X_train, y_train)

    assert model.score(X_test, y_test) > 0.9


@pytest.mark.parametrize("layout", ["dense", "sparse"])
def test_mlp_same_random_state_same_model(layout):
    X, y, X_test, _ = separable_problem(layout)

    first = fast_mlp(random_state=3).fit(X, y).predict_proba(X_test)
    second = fast_mlp(random_state=3).fit(X, y).predict_proba(X_test)
    other = fast_mlp(random_state=4).fit(X, y).predict_proba(X_test)

    np.testing.assert_array_equal(first, second)
    assert not np.allclose(first, other)


def test_mlp_mc_dropout_samples_vary_around_predict_proba():
    X, y, _, _ = separable_problem("dense")
    model = TorchMLPClassifier(dropout=0.2, mc_samples=7, random_state=0).fit(X, y)

    samples = model.predict_proba_samples(X, n_samples=50, random_state=0)
    proba = model.predict_proba(X)

    assert samples.shape == (50, 200, 3)
    assert model.predict_proba_samples(X[:5]).shape == (7, 5, 3)
    np.testing.assert_allclose(samples.sum(axis=2), 1.0)
    assert np.ptp(samples, axis=0).max() > 0.01
    easy = proba.max(axis=1) > 0.95
    assert easy.sum() > 100
    np.testing.assert_allclose(samples[:, easy].mean(axis=0), proba[easy], atol=0.05)
    np.testing.assert_array_equal(samples, model.predict_proba_samples(X, n_samples=50, random_state=0))
    np.testing.assert_array_equal(proba, model.predict_proba(X))


@pytest.mark.parametrize("layout", ["dense", "sparse"])
def test_mlp_round_trips_through_joblib(layout):
    X, y, X_test, _ = separable_problem(layout)
    model = fast_mlp().fit(X, y)
    buffer = io.BytesIO()
    joblib.dump(model, buffer)

    loaded = joblib.load(io.BytesIO(buffer.getvalue()))

    np.testing.assert_array_equal(loaded.predict_proba(X_test), model.predict_proba(X_test))
    np.testing.assert_array_equal(loaded.predict(X_test), model.predict(X_test))
    np.testing.assert_array_equal(
        loaded.predict_proba_samples(X_test, random_state=1), model.predict_proba_samples(X_test, random_state=1),
    )


def test_mlp_one_class_is_an_error():
    with pytest.raises(ValueError, match="at least 2 classes.*only one class: cat$"):
        fast_mlp().fit(TINY_X, ["cat"] * 6)


def test_mlp_refuses_too_many_features():
    X = sp.csr_matrix((2, MAX_FEATURES + 1))

    with pytest.raises(ValueError, match=f"at most {MAX_FEATURES} features; got {MAX_FEATURES + 1}"):
        fast_mlp().fit(X, ["cat", "dog"])


def test_mlp_samples_before_fit_raise_not_fitted():
    with pytest.raises(NotFittedError):
        fast_mlp().predict_proba_samples(TINY_X)
