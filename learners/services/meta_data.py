"""Labelled features pooled from a meta-model's source projects, and a target project's first labels.

Meta-learning needs one feature space across projects, so only featurisers
that fit nothing per project qualify (catalog: provides "shared_space").
Classes stay per project ("<project id>:<label>"): two projects may both say
"sport" and mean different things, and a sampler that mixed them would teach
the wrong lesson.
"""
from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

from annotate.models import Project
from annotate.selectors import training_labels
from learners.catalog import FEATURISERS

if TYPE_CHECKING:
    import numpy as np


class MetaDataInvalid(ValueError):
    """Source or target projects that cannot be pooled; the message says which and why."""


def sources_check(projects: list[Project], *, featuriser: str | None = None) -> tuple[str, str]:
    """(modality, featuriser) shared by every project, or MetaDataInvalid."""
    if not projects:
        raise MetaDataInvalid("choose at least one source project")
    modalities = {p.modality for p in projects}
    featurisers = {p.featuriser for p in projects} | ({featuriser} if featuriser else set())
    if len(modalities) > 1 or len(featurisers) > 1:
        detail = ", ".join(f"project {p.pk} ({p.modality}, {p.featuriser})" for p in projects)
        raise MetaDataInvalid(f"source projects must share modality and featuriser; got {detail}")
    name = featurisers.pop()
    choice = FEATURISERS.get(name)
    if choice is None or "shared_space" not in choice.provides:
        shared = sorted(n for n, c in FEATURISERS.items() if "shared_space" in c.provides)
        raise MetaDataInvalid(
            f"featuriser {name!r} is fitted per project, so its vectors differ between projects; "
            f"meta-learning needs one of {shared}"
        )
    return modalities.pop(), name


def labelled_features(project: Project, progress=None) -> tuple[np.ndarray, list[str]]:
    """The project's labelled items' features (its current featuriser) and majority labels."""
    # Featurisers load scipy and scikit-learn: imported here, in the worker, so that
    # `sources_check` stays usable from web processes (tests/test_web_imports.py).
    import numpy as np

    from learners.services.features import feature_space_current, features_fill, features_load

    space = feature_space_current(project)
    features_fill(space, progress)
    item_ids, labels = training_labels(project)
    if not item_ids:
        return np.zeros((0, space.dim), dtype=np.float32), []
    X = features_load(space, item_ids)
    return np.asarray(X.toarray() if hasattr(X, "toarray") else X, dtype=np.float32), labels


def pooled_sources(projects: list[Project], *, min_per_class: int, progress=None) -> tuple[np.ndarray, np.ndarray, dict]:
    """Features and per-project class keys of every class with at least `min_per_class` labels.

    Returns (X, y, report) where report counts classes and items per project
    and lists the classes left out for having too few examples.
    """
    import numpy as np

    sources_check(projects)
    blocks, keys, report = [], [], {"projects": {}, "left_out": []}
    dims = set()
    for project in projects:
        X, labels = labelled_features(project, progress)
        dims.add(X.shape[1])
        counts = Counter(labels)
        kept = {label for label, n in counts.items() if n >= min_per_class}
        report["left_out"] += [f"{project.pk}:{label} ({counts[label]})" for label in sorted(set(counts) - kept)]
        mask = np.array([label in kept for label in labels], dtype=bool)
        blocks.append(X[mask])
        keys += [f"{project.pk}:{label}" for label, keep in zip(labels, mask) if keep]
        report["projects"][project.pk] = {"classes": len(kept), "items": int(mask.sum())}
    if len(dims) > 1:
        raise MetaDataInvalid(f"source projects' features have different sizes {sorted(dims)} (images of other sizes?)")
    X = np.concatenate(blocks) if blocks else np.zeros((0, 0), dtype=np.float32)
    return X, np.array(keys), report
