"""Retraining a project's model and re-ordering its queue with the new scores."""
from __future__ import annotations

import io
import logging
import time
from collections import Counter, defaultdict
from typing import Callable

import joblib
import numpy as np
from django.db import IntegrityError, transaction
from django.db.models import Max

from annotate.models import Annotation, Item, Project
from annotate.services.queue import queue_reorder
from learners.ml.estimators import estimator_for
from learners.ml.evaluation import cross_validated_accuracy
from learners.ml.strategies import utility_for
from learners.models import ModelVersion

logger = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]
SCORE_CHUNK = 5_000


def training_labels(project: Project) -> tuple[list[int], list[str]]:
    """One label per labelled item: the majority of its annotations, ties to the newest."""
    votes: dict[int, Counter] = defaultdict(Counter)
    newest: dict[tuple[int, str], int] = {}
    rows = Annotation.objects.filter(project=project).values_list("item_id", "label__name", "id")
    for item_id, label, annotation_id in rows.iterator(chunk_size=10_000):
        votes[item_id][label] += 1
        newest[(item_id, label)] = max(newest.get((item_id, label), 0), annotation_id)
    item_ids, labels = [], []
    for item_id in sorted(votes):
        counter = votes[item_id]
        top = max(counter.values())
        winner = max((l for l, c in counter.items() if c == top), key=lambda l: newest[(item_id, l)])
        item_ids.append(item_id)
        labels.append(winner)
    return item_ids, labels


def _payloads(project: Project, item_ids: list[int]) -> list:
    by_id: dict[int, object] = {}
    for start in range(0, len(item_ids), SCORE_CHUNK):
        chunk = item_ids[start:start + SCORE_CHUNK]
        by_id.update(Item.objects.filter(project=project, pk__in=chunk).values_list("id", "data"))
    return [_model_input(project, by_id[i]) for i in item_ids]


def _model_input(project: Project, data):
    if project.modality == "text":
        return data.get("text", "")
    return data


def score_pool(project: Project, estimator, progress: Progress | None = None):
    """Score every open item, in chunks of SCORE_CHUNK so memory stays bounded.

    Returns arrays of item ids, priorities (the strategy's utility), predicted
    class indices and confidences.
    """
    utility = utility_for(project.query_strategy)
    total = Item.objects.filter(project=project, done=False).count()
    ids, priorities, predicted, confidence = [], [], [], []
    last_id, done = 0, 0
    while True:
        chunk = list(
            Item.objects.filter(project=project, done=False, pk__gt=last_id)
            .order_by("pk")
            .values_list("id", "data")[:SCORE_CHUNK]
        )
        if not chunk:
            break
        last_id = chunk[-1][0]
        proba = estimator.predict_proba([_model_input(project, data) for _, data in chunk])
        ids.append(np.fromiter((i for i, _ in chunk), dtype=np.int64, count=len(chunk)))
        priorities.append(utility(proba).astype(np.float64))
        predicted.append(proba.argmax(axis=1))
        confidence.append(proba.max(axis=1))
        done += len(chunk)
        if progress:
            progress("scoring", done, total)
    if not ids:
        empty = np.zeros(0)
        return empty.astype(np.int64), empty, empty.astype(np.int64), empty
    return np.concatenate(ids), np.concatenate(priorities), np.concatenate(predicted), np.concatenate(confidence)


def model_version_train(*, project_id: int, request_id: str, progress: Progress | None = None) -> dict:
    """Train the project's estimator on all its labels, score the pool, swap the queue order.

    Idempotent per `request_id`: a second call with the same id returns the
    version the first one made. Returns a JSON-able summary.
    """
    existing = ModelVersion.objects.filter(project_id=project_id, request_id=request_id).first()
    if existing is not None:
        return _summary(existing, created=False)
    project = Project.objects.get(pk=project_id)
    item_ids, labels = training_labels(project)
    if len(set(labels)) < 2:
        return {
            "status": "skipped",
            "project_id": project_id,
            "reason": f"need labels of at least two classes to train; have {dict(Counter(labels))}",
        }
    if progress:
        progress("training", 0, len(labels))
    X = _payloads(project, item_ids)
    started = time.perf_counter()
    metrics = cross_validated_accuracy(estimator_for(project.estimator, project.modality), X, labels)
    estimator = estimator_for(project.estimator, project.modality).fit(X, labels)
    train_seconds = time.perf_counter() - started
    if progress:
        progress("training", len(labels), len(labels))

    started = time.perf_counter()
    ids, priorities, predicted, confidence = score_pool(project, estimator, progress)
    score_seconds = time.perf_counter() - started
    label_ids = dict(project.labels.values_list("name", "id"))
    classes = list(estimator.classes_)
    predicted_label_ids = [label_ids[classes[k]] for k in predicted]

    buffer = io.BytesIO()
    joblib.dump(estimator, buffer)
    try:
        with transaction.atomic():
            project = Project.objects.select_for_update(no_key=True).get(pk=project_id)
            number = (project.model_versions.aggregate(n=Max("number"))["n"] or 0) + 1
            version = ModelVersion.objects.create(
                project=project, number=number, request_id=request_id,
                estimator=project.estimator, query_strategy=project.query_strategy,
                trained_on=len(labels), label_count=project.label_count, metrics=metrics,
                artifact=buffer.getvalue(), items_scored=len(ids),
                train_seconds=train_seconds, score_seconds=score_seconds,
            )
            queue_reorder(
                project=project, item_ids=ids, priorities=priorities,
                predicted_label_ids=predicted_label_ids, confidences=confidence, version_number=number,
            )
    except IntegrityError:
        # A concurrent delivery of the same request won the race.
        existing = ModelVersion.objects.filter(project_id=project_id, request_id=request_id).first()
        if existing is None:
            raise
        return _summary(existing, created=False)
    logger.info("project %s: model v%s on %s labels, accuracy %s", project_id, number, len(labels), metrics.get("accuracy"))
    return _summary(version, created=True)


def _summary(version: ModelVersion, *, created: bool) -> dict:
    return {
        "status": "trained" if created else "already_trained",
        "project_id": version.project_id,
        "model_version": version.number,
        "trained_on": version.trained_on,
        "items_scored": version.items_scored,
        "metrics": version.metrics,
        "train_seconds": round(version.train_seconds, 3),
        "score_seconds": round(version.score_seconds, 3),
    }
