"""Featurisers: turn item payloads into feature matrices (scikit-learn transformers).

Inputs are what items store: a list of strings for text, a list of
column -> value dicts for tabular rows (values may be numbers, numeric
strings from CSV, other strings, or missing).
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.feature_extraction.text import TfidfVectorizer


def text_tfidf() -> TfidfVectorizer:
    return TfidfVectorizer(sublinear_tf=True, ngram_range=(1, 2), min_df=1, max_features=200_000)


def _as_float(value: Any) -> float | None:
    """The number in `value`, None when missing, NaN when not numeric."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        return float(value)
    try:
        return float(str(value).strip())
    except ValueError:
        return math.nan


class TabularFeaturiser(BaseEstimator, TransformerMixin):
    """Numeric columns: mean-imputed and standardised. Other columns: one-hot.

    A column is numeric when every present value in the training rows parses
    as a number. Values never seen in training one-hot to all zeros.
    """

    def fit(self, X: Sequence[Mapping[str, Any]], y: Any = None) -> "TabularFeaturiser":
        columns = sorted({key for row in X for key in row})
        numeric, categories = [], {}
        for column in columns:
            parsed = [_as_float(row.get(column)) for row in X]
            present = [v for v in parsed if v is not None]
            if present and not any(math.isnan(v) for v in present):
                numeric.append(column)
            else:
                categories[column] = sorted({str(row.get(column)) for row in X if row.get(column) not in (None, "")})
        self.numeric_columns_ = numeric
        self.categories_ = categories
        matrix = self._numeric_matrix(X)
        self.mean_ = np.nanmean(matrix, axis=0) if len(numeric) else np.zeros(0)
        self.mean_ = np.where(np.isnan(self.mean_), 0.0, self.mean_)
        filled = np.where(np.isnan(matrix), self.mean_, matrix)
        scale = filled.std(axis=0) if len(numeric) else np.zeros(0)
        self.scale_ = np.where(scale > 0, scale, 1.0)
        return self

    def _numeric_matrix(self, X: Sequence[Mapping[str, Any]]) -> np.ndarray:
        matrix = np.empty((len(X), len(self.numeric_columns_)), dtype=np.float64)
        for i, row in enumerate(X):
            for j, column in enumerate(self.numeric_columns_):
                value = _as_float(row.get(column))
                matrix[i, j] = math.nan if value is None else value
        return matrix

    def transform(self, X: Sequence[Mapping[str, Any]]) -> np.ndarray:
        numeric = self._numeric_matrix(X)
        numeric = np.where(np.isnan(numeric), self.mean_, numeric)
        numeric = (numeric - self.mean_) / self.scale_
        blocks = [numeric]
        for column, values in self.categories_.items():
            index = {value: k for k, value in enumerate(values)}
            onehot = np.zeros((len(X), len(values)))
            for i, row in enumerate(X):
                k = index.get(str(row.get(column)))
                if k is not None:
                    onehot[i, k] = 1.0
            blocks.append(onehot)
        return np.hstack(blocks)


FEATURISERS = {
    "text": text_tfidf,
    "tabular": TabularFeaturiser,
}


def featuriser_for(modality: str):
    try:
        return FEATURISERS[modality]()
    except KeyError:
        raise ValueError(f"no featuriser for modality {modality!r}; known: {sorted(FEATURISERS)}") from None
