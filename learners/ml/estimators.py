"""Estimator registry: name -> unfitted scikit-learn classifier over feature matrices.

Estimators take what the featurisers produce: a dense float array, or a scipy
sparse CSR matrix for TF-IDF text (tens of thousands of columns). Every one has
`predict_proba` with columns in `classes_` order, which the query strategies need;
those with `mc_dropout` also have `predict_proba_samples` for BALD.

The MLP imports torch, so its module is imported only when one is created.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import numpy as np
import scipy.sparse as sp
from numpy.typing import ArrayLike
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.calibration import CalibratedClassifierCV
from sklearn.ensemble import RandomForestClassifier
from sklearn.frozen import FrozenEstimator
from sklearn.linear_model import LogisticRegression
from sklearn.svm import LinearSVC
from sklearn.utils import Tags
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from learners.catalog import ESTIMATORS as _CATALOG

if TYPE_CHECKING:
    from learners.ml.torch_mlp import TorchMLPClassifier


@dataclass(frozen=True)
class EstimatorSpec:
    """One registry entry.

    Attributes
    ----------
    name : str
        Registry key, stored on the project.
    description : str
        One line for the project settings dropdown.
    accepts_sparse : bool
        Fits and predicts on scipy sparse matrices without densifying them.
    mc_dropout : bool
        Has ``predict_proba_samples(X, n_samples=None, random_state=None)`` returning (S, N, C).
    factory : callable
        ``factory(random_state=None)`` returns an unfitted classifier.
    """

    name: str
    description: str
    accepts_sparse: bool
    mc_dropout: bool
    factory: Callable[..., ClassifierMixin]


class CalibratedLinearSVC(ClassifierMixin, BaseEstimator):
    """Linear SVM with Platt-scaled (sigmoid) probabilities that also trains on a handful of labels.

    Calibration uses k-fold cross-validation with k = min(`max_folds`, examples of
    the rarest class), so 2 examples per class give 2 folds where a fixed cv=3
    would fail. When some class has a single example no fold can hold it out:
    the sigmoid is then fitted on the SVM's own training decisions. Platt's
    smoothed targets (2/3 and 1/3 with one example of each of two classes) keep
    those probabilities away from 0 and 1; cross-validated ones replace them once
    every class has two examples.

    Parameters
    ----------
    C : float
        LinearSVC regularisation strength (inverse).
    max_folds : int
        Calibration folds when every class has at least that many examples.
    random_state : int, RandomState or None
        Passed to LinearSVC.
    """

    def __init__(self, C: float = 1.0, max_folds: int = 3,
                 random_state: int | np.random.RandomState | None = None) -> None:
        self.C = C
        self.max_folds = max_folds
        self.random_state = random_state

    def __sklearn_tags__(self) -> Tags:
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        return tags

    def fit(self, X: ArrayLike | sp.spmatrix | sp.sparray, y: ArrayLike) -> CalibratedLinearSVC:
        X_valid: np.ndarray | sp.csr_matrix
        X_valid, y = validate_data(self, X, y, accept_sparse="csr")
        check_classification_targets(y)
        self.classes_, counts = np.unique(y, return_counts=True)
        svm = LinearSVC(C=self.C, random_state=self.random_state)
        folds = min(self.max_folds, int(counts.min()))
        if folds >= 2:
            calibrated = CalibratedClassifierCV(svm, method="sigmoid", cv=folds)
        else:
            # A frozen SVM ignores a split's training part; one split holding out every row calibrates on them all.
            everything = np.arange(X_valid.shape[0])
            calibrated = CalibratedClassifierCV(
                FrozenEstimator(svm.fit(X_valid, y)), method="sigmoid", cv=[(everything, everything)],
            )
        self.calibrated_ = calibrated.fit(X_valid, y)
        return self

    def predict_proba(self, X: ArrayLike | sp.spmatrix | sp.sparray) -> np.ndarray:
        check_is_fitted(self)
        X_valid = validate_data(self, X, accept_sparse="csr", reset=False)
        return self.calibrated_.predict_proba(X_valid)

    def predict(self, X: ArrayLike | sp.spmatrix | sp.sparray) -> np.ndarray:
        proba = self.predict_proba(X)
        return self.classes_[proba.argmax(axis=1)]


def logistic_regression(random_state: int | None = None) -> LogisticRegression:
    # At C=10 lbfgs took ~100 iterations on a 2,000 x 50,000 TF-IDF matrix, the default limit; 2,000 is headroom.
    return LogisticRegression(C=10.0, max_iter=2_000, random_state=random_state)


def linear_svm(random_state: int | None = None) -> CalibratedLinearSVC:
    return CalibratedLinearSVC(random_state=random_state)


def random_forest(random_state: int | None = None) -> RandomForestClassifier:
    # n_jobs=1: the worker runs several trainings side by side; nested process pools would oversubscribe.
    return RandomForestClassifier(n_estimators=200, n_jobs=1, random_state=random_state)


def mlp(random_state: int | None = None) -> TorchMLPClassifier:
    from learners.ml.torch_mlp import TorchMLPClassifier

    return TorchMLPClassifier(random_state=random_state)


ESTIMATORS: dict[str, EstimatorSpec] = {
    spec.name: spec for spec in [
        EstimatorSpec(
            name="logistic_regression",
            description=_CATALOG["logistic_regression"].description,
            accepts_sparse=True, mc_dropout=False, factory=logistic_regression,
        ),
        EstimatorSpec(
            name="linear_svm",
            description=_CATALOG["linear_svm"].description,
            accepts_sparse=True, mc_dropout=False, factory=linear_svm,
        ),
        EstimatorSpec(
            name="random_forest",
            description=_CATALOG["random_forest"].description,
            accepts_sparse=True, mc_dropout=False, factory=random_forest,
        ),
        EstimatorSpec(
            name="mlp",
            description=_CATALOG["mlp"].description,
            accepts_sparse=True, mc_dropout=True, factory=mlp,
        ),
    ]
}


def estimator_create(name: str, *, random_state: int | None = None) -> ClassifierMixin:
    """A new unfitted classifier from the registry.

    Raises
    ------
    ValueError
        If `name` is not registered; the message lists the known names.
    """
    try:
        spec = ESTIMATORS[name]
    except KeyError:
        raise ValueError(f"unknown estimator {name!r}; known: {sorted(ESTIMATORS)}") from None
    return spec.factory(random_state=random_state)
