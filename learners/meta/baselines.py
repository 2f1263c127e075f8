"""What a meta-learnt model must beat on a new task: nearest class mean on raw features, and logistic regression.

Both see only the new task's support set. If meta-training does not beat
them, the source tasks taught nothing that transfers.
"""
from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
from sklearn.linear_model import LogisticRegression


class ClassMeanDistances(NamedTuple):
    """Squared Euclidean distances from query rows to class means.

    Attributes
    ----------
    classes : numpy.ndarray
        (C,) the support labels, sorted; column order of `sq_distances`.
    sq_distances : numpy.ndarray
        (n_query, C) float64.
    """

    classes: np.ndarray
    sq_distances: np.ndarray

    @property
    def predictions(self) -> np.ndarray:
        return self.classes[self.sq_distances.argmin(axis=1)]


def nearest_class_mean(support_x: Any, support_y: Any, query_x: Any) -> ClassMeanDistances:
    """Classify each query row as the class whose support mean is nearest (in float64, with numpy).

    Parameters
    ----------
    support_x : array-like of shape (S, d)
    support_y : array-like of shape (S,)
    query_x : array-like of shape (n, d)
    """
    support_x = np.asarray(support_x, dtype=np.float64)
    query_x = np.asarray(query_x, dtype=np.float64)
    classes, codes = np.unique(np.asarray(support_y), return_inverse=True)
    means = np.stack([support_x[codes == c].mean(axis=0) for c in range(len(classes))])
    return ClassMeanDistances(classes, ((query_x[:, None, :] - means[None, :, :]) ** 2).sum(axis=-1))


def fit_from_scratch(support_x: Any, support_y: Any, *, C: float = 1.0) -> LogisticRegression:
    """Logistic regression trained on the support set alone (the "no meta-learning" baseline).

    Works from one example per class; ``predict_proba`` columns are in ``classes_`` order.
    """
    return LogisticRegression(C=C, max_iter=1000).fit(np.asarray(support_x, dtype=np.float64), np.asarray(support_y))
