"""Estimator registry: name -> factory of a scikit-learn classifier over raw payloads.

Each factory returns a Pipeline of the modality's featuriser and a classifier,
so `fit(payloads, labels)` and `predict_proba(payloads)` work on what items store.
"""
from __future__ import annotations

from typing import Callable

from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline

from learners.ml.featurisers import featuriser_for


def logistic_regression(modality: str) -> Pipeline:
    return Pipeline([
        ("features", featuriser_for(modality)),
        ("classifier", LogisticRegression(C=10.0, max_iter=2000)),
    ])


ESTIMATORS: dict[str, Callable[[str], Pipeline]] = {
    "logistic_regression": logistic_regression,
}


def estimator_for(name: str, modality: str) -> Pipeline:
    try:
        factory = ESTIMATORS[name]
    except KeyError:
        raise ValueError(f"unknown estimator {name!r}; known: {sorted(ESTIMATORS)}") from None
    return factory(modality)
