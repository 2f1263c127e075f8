"""Query strategies: which unlabelled items are worth labelling next.

Each strategy is a utility over predicted class probabilities (higher means
more worth asking), taken from modAL. `query` gives the modAL-shaped call
`(estimator, X_pool, n_instances) -> (indices, scores)`; the pool scorer uses
the utilities directly on probabilities it has already computed, so
`predict_proba` runs once per item for both the prediction and the score.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

# modAL's probability-level utilities; the public classifier_* wrappers would
# call predict_proba a second time. Pinned with modAL-python==0.4.2.1.
from modAL.uncertainty import _proba_entropy, _proba_margin, _proba_uncertainty
from modAL.utils.selection import multi_argmax


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
    try:
        return UTILITIES[name]
    except KeyError:
        raise ValueError(f"unknown query strategy {name!r}; known: {sorted(UTILITIES)}") from None


def query(name: str, estimator: Any, X_pool: Any, n_instances: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Pick the `n_instances` pool rows with the highest utility.

    Returns
    -------
    indices, scores
        Row indices into `X_pool`, best first, and their utilities.
    """
    scores = utility_for(name)(estimator.predict_proba(X_pool))
    # modAL's multi_argmax returns (indices, values) despite its annotation.
    indices, _ = multi_argmax(scores, n_instances=n_instances)
    indices = indices[np.argsort(-scores[indices], kind="stable")]
    return indices, scores[indices]
