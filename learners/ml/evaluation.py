"""Honest accuracy of a classifier on labelled items only."""
from __future__ import annotations

from collections import Counter
from typing import Any, Sequence

import numpy as np
from scipy import sparse
from sklearn.base import clone
from sklearn.model_selection import StratifiedKFold, cross_val_score


def cross_validated_accuracy(estimator: Any, X: np.ndarray | sparse.csr_matrix | Sequence[Any], y: Sequence[str], *,
                             seed: int = 0) -> dict[str, Any]:
    """Stratified k-fold accuracy (k = min(5, rarest class count)).

    Returns a metrics dict; accuracy is None with a reason when the labels
    cannot support even 2 folds, never a number measured on training data.
    """
    counts = Counter(y)
    folds = min(5, min(counts.values())) if counts else 0
    if len(counts) < 2 or folds < 2:
        return {
            "accuracy": None,
            "accuracy_reason": "too few labels per class for cross-validation (need 2 of each)",
            "n_labelled": len(y),
            "class_counts": dict(counts),
        }
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    if isinstance(X, (list, tuple)):  # raw payloads (strings, dicts) rather than a feature matrix
        X = np.asarray(X, dtype=object)
    scores = cross_val_score(clone(estimator), X, np.asarray(y), cv=splitter)
    return {
        "accuracy": float(scores.mean()),
        "accuracy_std": float(scores.std()),
        "cv_folds": folds,
        "n_labelled": len(y),
        "class_counts": dict(counts),
    }
