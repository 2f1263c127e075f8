"""The stopping signal: do successive models still change their minds?

Stabilising predictions (Bloodgood and Vijay-Shanker, 2009): each model
version predicts a fixed sample of items (the stop set, drawn once when the
first version is trained); Cohen's kappa between successive versions'
predictions measures how much the model still changes. When the mean kappa
over the last few versions reaches the threshold, further labels add little.
"""
from __future__ import annotations

import numpy as np

from annotate.models import Item, Project
from learners.models import FeatureSpace, ModelVersion
from learners.services.features import features_load

STOP_SET_SIZE = 1_000


def stop_set_predict(project: Project, space: FeatureSpace, estimator, previous: ModelVersion | None) -> dict:
    """The estimator's predictions on the project's stop set: {"ids": [...], "predicted": [...]}."""
    ids = list((previous.stop_set or {}).get("ids", [])) if previous is not None else []
    if ids:
        # Items may have been deleted since; keep the ones that remain, in order.
        present = set(Item.objects.filter(project=project, pk__in=ids).values_list("id", flat=True))
        ids = [i for i in ids if i in present]
    else:
        open_ids = np.fromiter(
            Item.objects.filter(project=project, done=False).values_list("id", flat=True), dtype=np.int64
        )
        rng = np.random.default_rng(project.cold_start_seed + 7919)
        ids = np.sort(rng.choice(open_ids, size=min(STOP_SET_SIZE, len(open_ids)), replace=False)).tolist()
    if not ids:
        return {"ids": [], "predicted": []}
    predicted = estimator.predict(features_load(space, ids))
    return {"ids": [int(i) for i in ids], "predicted": [str(p) for p in predicted]}


def stop_agreement(previous: dict | None, current: dict) -> dict:
    """Agreement and Cohen's kappa between two versions' stop-set predictions (empty without a previous)."""
    from sklearn.metrics import cohen_kappa_score

    if not previous or not previous.get("ids"):
        return {}
    before = dict(zip(previous["ids"], previous["predicted"]))
    common = [(before[i], p) for i, p in zip(current["ids"], current["predicted"]) if i in before]
    if not common:
        return {}
    a, b = zip(*common)
    agreement = float(np.mean([x == y for x, y in common]))
    # kappa is undefined (NaN) when both versions predict a single class everywhere; agreement is then 1.
    kappa = float(cohen_kappa_score(a, b)) if len(set(a) | set(b)) > 1 else agreement
    return {"stop_agreement": round(agreement, 4), "stop_kappa": round(kappa, 4), "stop_set_size": len(common)}
