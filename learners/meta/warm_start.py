"""When a warm start hands the queue over: the project's own model against the adapted meta-model, on held-out labels.

Both are measured on the same stratified folds of the project's labels (the
folds `learners.ml.evaluation.cross_validated_accuracy` uses): for each fold
the own estimator is fitted, and the meta-model adapted, on the other folds
only, and both predict the held-out fold. The adapted model orders the queue
until the own model's accuracy is strictly higher (`own_model_wins`).

No Django here: the benchmark (`bench/active_learning`) and the service
(`learners/services/meta.py`) call the same function, so the simulated rule is
the product's rule.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from sklearn.base import clone
from sklearn.model_selection import StratifiedKFold

from learners.meta.predictors import Predictor

AdaptFn = Callable[[np.ndarray, np.ndarray], Predictor]


def compare_on_folds(X: np.ndarray, y: Sequence[Any], *, own_estimator: Any, adapt_fn: AdaptFn,
                     seed: int = 0) -> dict[str, Any]:
    """Held-out accuracy of the own estimator and of the adapted meta-model on the same folds.

    Parameters
    ----------
    X : ndarray of shape (n, d)
        Features of the labelled items.
    y : sequence of labels
    own_estimator : scikit-learn estimator
        Cloned and fitted per fold (unfitted template).
    adapt_fn : callable
        ``adapt_fn(X_train, y_train)`` returns a fitted predictor (``predict``).
    seed : int
        Shuffles the folds.

    Returns
    -------
    dict
        ``own_accuracy``, ``adapted_accuracy`` (means over folds; None with a
        ``reason`` when some label has fewer than 2 examples, so no fold could
        hold it out), ``folds``, ``n_labelled``.
    """
    labels = np.asarray(y)
    counts = Counter(labels.tolist())
    folds = min(5, min(counts.values())) if counts else 0
    result: dict[str, Any] = {"own_accuracy": None, "adapted_accuracy": None, "folds": folds,
                              "n_labelled": int(len(labels))}
    if len(counts) < 2 or folds < 2:
        result["reason"] = "too few labels per class to hold any out (need 2 of each)"
        return result
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    own, adapted = [], []
    for train, test in splitter.split(X, labels):
        estimator = clone(own_estimator).fit(X[train], labels[train])
        own.append(float(np.mean(estimator.predict(X[test]) == labels[test])))
        predictor = adapt_fn(X[train], labels[train])
        adapted.append(float(np.mean(predictor.predict(X[test]) == labels[test])))
    result["own_accuracy"] = float(np.mean(own))
    result["adapted_accuracy"] = float(np.mean(adapted))
    return result


def own_model_wins(comparison: dict[str, Any]) -> bool:
    """True when the own model's held-out accuracy is strictly above the adapted model's (it takes the queue over)."""
    own, adapted = comparison.get("own_accuracy"), comparison.get("adapted_accuracy")
    return own is not None and adapted is not None and own > adapted
