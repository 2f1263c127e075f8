"""The federated benchmark's data: scikit-learn's digits, a fixed test set, and non-IID splits across sites.

Digits (1,797 8x8 images, pixel values 0..16 scaled to [0, 1]) ship inside
scikit-learn, so nothing is downloaded. 360 rows (20%, stratified, fixed) are
the test set, evaluated centrally by the coordinator's `evaluate=` callback; the
other 1,437 are the training rows the sites share out. Hyper-parameters are
chosen on a validation split of the training rows only (`validation_split`).

Sites get their rows by a Dirichlet split: for each class, the class's rows are
cut in proportions drawn from Dirichlet(alpha, ..., alpha) over the sites
(Hsu et al. 2019), alpha = 0.5 here, so most sites see a few classes mostly.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Callable

import numpy as np

from learners.federated.local_training import LocalTraining, local_train
from learners.federated.models import FederatedModel, ModelSpec
from learners.federated.site import Site, classes_digest

CLASSES = [str(digit) for digit in range(10)]
DIGEST = classes_digest(CLASSES)
TEST_ROWS = 360
VALIDATION_FRACTION = 0.2
ALPHA = 0.5
SPLIT_SEED = 0  # the test split; per-run seeds vary the site split, initialisation and batch order


class SplitError(ValueError):
    """A Dirichlet split that cannot give every site its minimum number of rows."""


@dataclass(frozen=True)
class Digits:
    X_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray

    @property
    def n_features(self) -> int:
        return int(self.X_train.shape[1])


@lru_cache(maxsize=1)
def digits() -> Digits:
    """Digits scaled to [0, 1], with a fixed stratified test set of 360 rows."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).astype(np.float32)
    X_train, X_test, y_train, y_test = train_test_split(
        X, y.astype(np.int64), test_size=TEST_ROWS, stratify=y, random_state=SPLIT_SEED)
    return Digits(X_train, y_train, X_test, y_test)


@lru_cache(maxsize=1)
def validation_split() -> Digits:
    """The training rows cut again, 80/20 stratified: "test" here is the validation set used for tuning."""
    from sklearn.model_selection import train_test_split

    d = digits()
    X_fit, X_val, y_fit, y_val = train_test_split(
        d.X_train, d.y_train, test_size=VALIDATION_FRACTION, stratify=d.y_train, random_state=SPLIT_SEED + 1)
    return Digits(X_fit, y_fit, X_val, y_val)


def dirichlet_split(y: np.ndarray, n_sites: int, *, alpha: float = ALPHA, seed: int = 0,
                    min_rows: int = 1, attempts: int = 100) -> list[np.ndarray]:
    """Row indices per site: each class cut across the sites in Dirichlet(alpha) proportions.

    A draw that leaves a site with fewer than `min_rows` rows is drawn again (the
    usual practice, e.g. in Hsu et al.'s and FedLab's splitters), up to `attempts` times.

    Raises
    ------
    SplitError
        No draw in `attempts` gave every site `min_rows` rows.
    """
    rng = np.random.default_rng([seed, 11])
    for _ in range(attempts):
        parts: list[list[int]] = [[] for _ in range(n_sites)]
        for label in np.unique(y):
            index = rng.permutation(np.flatnonzero(y == label))
            cuts = (np.cumsum(rng.dirichlet([alpha] * n_sites)) * len(index)).astype(int)[:-1]
            for site, chunk in enumerate(np.split(index, cuts)):
                parts[site].extend(chunk.tolist())
        if min(len(p) for p in parts) >= min_rows:
            return [np.sort(np.asarray(p, dtype=np.int64)) for p in parts]
    raise SplitError(f"{attempts} Dirichlet({alpha}) draws over {n_sites} sites all left a site with fewer than "
                     f"{min_rows} rows of {len(y)}; use fewer sites or a larger alpha")


def sites_for(X: np.ndarray, y: np.ndarray, parts: list[np.ndarray], *, site_class: type[Site] = Site,
              prefix: str = "s", **site_kwargs) -> dict[str, Site]:
    """One `Site` per part, named s0, s1, ...; each reads its own rows only."""
    return {f"{prefix}{i}": site_class(f"{prefix}{i}", rows=(lambda p=part: (X[p], y[p])), classes=CLASSES,
                                       **site_kwargs)
            for i, part in enumerate(parts)}


def split_summary(parts: list[np.ndarray], y: np.ndarray) -> dict[str, float]:
    """Rows per site and classes per site (a class counts when it has at least 5% of the site's rows)."""
    sizes = np.array([len(p) for p in parts])
    classes = [int(np.sum(np.bincount(y[p], minlength=10) >= max(1, 0.05 * len(p)))) for p in parts]
    return {"sites": len(parts), "rows_min": int(sizes.min()), "rows_median": float(np.median(sizes)),
            "rows_max": int(sizes.max()), "classes_per_site_mean": float(np.mean(classes))}


def evaluator(spec: ModelSpec, X: np.ndarray, y: np.ndarray) -> Callable[[dict], dict[str, float]]:
    """What the coordinator calls after every aggregation: accuracy and loss on (X, y)."""
    model = FederatedModel(spec)
    return lambda weights: model.evaluate(weights, X, y)


def centralised_accuracy(spec: ModelSpec, training: LocalTraining, data: Digits, *, rounds: int,
                         seed: int) -> float:
    """The same local recipe on all training rows pooled: `rounds` calls of `local_train` from the same start."""
    model = FederatedModel(spec)
    weights = spec.initial_weights(seed)
    for number in range(rounds):
        change = local_train(model, weights, data.X_train, data.y_train, training, seed=seed * 1000 + number).arrays
        weights = {name: (weights[name] + change[name]).astype(np.float32) for name in weights}
    return model.evaluate(weights, data.X_test, data.y_test)["accuracy"]


@lru_cache(maxsize=1)
def logistic_regression_accuracy() -> float:
    """scikit-learn's LogisticRegression (lbfgs, C = 1) on the pooled training rows: a reference, not tuned."""
    from sklearn.linear_model import LogisticRegression

    d = digits()
    model = LogisticRegression(C=1.0, max_iter=5000).fit(d.X_train, d.y_train)
    return float(model.score(d.X_test, d.y_test))
