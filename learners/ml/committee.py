"""A bagged committee of one estimator, for query by committee.

`BaggedCommittee` follows the scikit-learn estimator contract, so `clone`,
pipelines and grid search treat it like any classifier, and it offers what
modAL's disagreement measures read from a committee (`len`, iteration over the
members, `classes_`, `vote`, `vote_proba`): `modAL.disagreement.vote_entropy`
and `KL_max_disagreement` run on it unchanged.
"""
from __future__ import annotations

from typing import Any, Iterator

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.utils import check_random_state, resample
from sklearn.utils.validation import check_is_fitted


class BaggedCommittee(ClassifierMixin, BaseEstimator):
    """Members are clones of `estimator`, each fitted on a stratified bootstrap resample.

    The resample keeps every class's count (drawn with replacement within the
    class), so every member sees every class, and all members share the
    committee's `classes_` even when a class has a single example.

    Parameters
    ----------
    estimator
        An unfitted scikit-learn classifier (or pipeline) with `predict_proba`.
    n_members
        Committee size; at least 2, or there is nothing to disagree about.
    random_state
        Seeds the resamples and, where the estimator has `random_state`
        parameters (nested ones included), each member's own seed.
    """

    def __init__(self, estimator: Any, n_members: int = 5, random_state: int | None = None) -> None:
        self.estimator = estimator
        self.n_members = n_members
        self.random_state = random_state

    def fit(self, X: Any, y: Any) -> "BaggedCommittee":
        if int(self.n_members) < 2:
            raise ValueError(f"a committee needs at least 2 members; n_members={self.n_members!r}")
        y = np.asarray(y)
        classes = np.unique(y)
        if len(classes) < 2:
            raise ValueError(f"a committee needs labels of at least 2 classes; got only {classes.tolist()}")
        rng = check_random_state(self.random_state)
        members = []
        for _ in range(int(self.n_members)):
            X_boot, y_boot = resample(X, y, replace=True, stratify=y, random_state=rng)
            member = clone(self.estimator)
            seeds = {key: rng.randint(np.iinfo(np.int32).max) for key in member.get_params(deep=True)
                     if key == "random_state" or key.endswith("__random_state")}
            members.append(member.set_params(**seeds).fit(X_boot, y_boot))
        self.classes_ = classes
        self.estimators_ = members
        return self

    def vote_proba(self, X: Any) -> np.ndarray:
        """Each member's class probabilities, shape (n_samples, n_members, n_classes), columns in `classes_` order."""
        check_is_fitted(self)
        columns = [np.searchsorted(self.classes_, member.classes_) for member in self.estimators_]
        probas = [member.predict_proba(X) for member in self.estimators_]
        out = np.zeros((probas[0].shape[0], len(self.estimators_), len(self.classes_)))
        for m, (proba, cols) in enumerate(zip(probas, columns)):
            out[:, m, cols] = proba
        return out

    def vote(self, X: Any) -> np.ndarray:
        """Each member's predicted label, shape (n_samples, n_members)."""
        check_is_fitted(self)
        return np.column_stack([member.predict(X) for member in self.estimators_])

    def predict_proba(self, X: Any) -> np.ndarray:
        """The consensus: the members' mean class probabilities."""
        return self.vote_proba(X).mean(axis=1)

    def predict(self, X: Any) -> np.ndarray:
        return self.classes_[self.predict_proba(X).argmax(axis=1)]

    # Sized and iterable over the members, as sklearn's ensembles and modAL's committees are.
    def __len__(self) -> int:
        return len(self.estimators_)

    def __iter__(self) -> Iterator[Any]:
        return iter(self.estimators_)

    def __getitem__(self, index: int) -> Any:
        return self.estimators_[index]
