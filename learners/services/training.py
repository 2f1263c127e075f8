"""Retraining a project's model and re-ordering its queue with the new scores."""
from __future__ import annotations

import io
import logging
import time
from collections import Counter
from typing import Callable

import joblib
import numpy as np
from django.db import IntegrityError, transaction
from django.db.models import Max

from annotate.models import Item, Project
from annotate.selectors import training_labels
from annotate.services.queue import queue_reorder
from learners.ml.estimators import ESTIMATORS, estimator_create
from learners.ml.evaluation import cross_validated_accuracy
from learners.ml.featurisers import FEATURISERS
from learners.ml.strategies import strategy_get
from learners.models import FeatureSpace, ModelVersion
from learners.services.features import feature_space_current, features_fill, features_load
from learners.services.scoring import pool_score
from learners.services.stopping import stop_agreement, stop_set_predict

logger = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]


class TrainingFailed(RuntimeError):
    """The project's settings cannot train a model; the message says which and what to change."""


def estimator_build(project: Project, *, seed: int = 0):
    """The project's estimator, unfitted, wrapped as its query strategy needs (a committee for QBC)."""
    from learners.ml.committee import BaggedCommittee

    strategy = strategy_get(project.query_strategy)
    spec = ESTIMATORS.get(project.estimator)
    if spec is None:
        raise TrainingFailed(f"unknown estimator {project.estimator!r}; known: {sorted(ESTIMATORS)}")
    if "mc_dropout" in strategy.needs and not spec.mc_dropout:
        raise TrainingFailed(
            f"query strategy {strategy.name!r} needs dropout sampling, which estimator {spec.name!r} lacks; use 'mlp'"
        )
    estimator = estimator_create(spec.name, random_state=seed)
    if "committee" in strategy.needs:
        estimator = BaggedCommittee(estimator, n_members=5, random_state=seed)
    return strategy, estimator


def model_version_train(*, project_id: int, request_id: str, progress: Progress | None = None,
                        only_new_labels: bool = False) -> dict:
    """Train the project's estimator on all its labels, score the pool, swap the queue order.

    Features come from the project's feature cache (filled first if items are
    missing rows). Idempotent per `request_id`: a second call with the same id
    returns the version the first one made. Returns a JSON-able summary.

    A project with an active warm start (`learners.models.WarmStart`) compares
    the meta-model adapted to its labels with its own estimator on the same
    held-out folds (`learners.services.meta.warm_start_choose`): while the
    adapted model is not beaten it is the new version and orders the queue;
    the first time the own model wins, the warm start is handed over for good.

    `only_new_labels`: make no version when the latest one was trained on the
    project's current label count with its current settings (`up_to_date`).
    """
    from learners.services.meta import warm_start_choose, warm_start_record

    existing = ModelVersion.objects.filter(project_id=project_id, request_id=request_id).first()
    if existing is not None:
        return _summary(existing, created=False)
    project = Project.objects.get(pk=project_id)
    latest = project.model_versions.only("number", "label_count", "estimator", "query_strategy",
                                         "featuriser").order_by("-number").first()
    if (only_new_labels and latest is not None and latest.label_count == project.label_count
            and (latest.estimator, latest.query_strategy, latest.featuriser)
            == (project.estimator, project.query_strategy, project.featuriser)):
        return {"status": "up_to_date", "project_id": project_id, "model_version": latest.number,
                "reason": f"no label since model v{latest.number} ({project.label_count} labels)"}
    space = feature_space_current(project)
    features_fill(space, progress)
    item_ids, labels = training_labels(project)
    if len(set(labels)) < 2:
        return {
            "status": "skipped",
            "project_id": project_id,
            "reason": f"need labels of at least two classes to train; have {dict(Counter(labels))}",
        }
    if progress:
        progress("training", 0, len(labels))
    seed = project.cold_start_seed
    X = features_load(space, item_ids)
    strategy, estimator = estimator_build(project, seed=seed)
    started = time.perf_counter()
    choice = warm_start_choose(project, X, labels, own_estimator=estimator)
    if choice is not None and not choice.hand_over:
        return _adapted_version_store(project, space, request_id, choice, strategy, X, labels, progress,
                                      started=started)
    metrics = cross_validated_accuracy(estimator, X, labels, seed=seed)
    estimator.fit(X, labels)
    train_seconds = time.perf_counter() - started
    if progress:
        progress("training", len(labels), len(labels))
    if choice is not None:
        metrics["warm_start_handed_over"] = {k: choice.comparison[k] for k in ("own_accuracy", "adapted_accuracy")}
    return _version_store(
        project, space, request_id, estimator=estimator, estimator_name=project.estimator, strategy=strategy,
        X=X, labels=labels, metrics=metrics, train_seconds=train_seconds, progress=progress,
        on_created=(lambda number: warm_start_record(project_id, choice, version=number)) if choice else None,
    )


def model_version_adapt(*, project_id: int, request_id: str, meta_model_id: int | None = None,
                        progress: Progress | None = None) -> dict:
    """Adapt a meta-model to the project's labels, store it as a model version and re-order the queue with it.

    `meta_model_id` defaults to the project's warm start. Every label of the
    project needs at least the meta-model's ``k_shot`` labelled items
    (AdaptationFailed names those short). The version's accuracy is the adapted
    model's on held-out folds, next to the own estimator's on the same folds.
    Idempotent per `request_id`.
    """
    from learners.models import MetaModel, WarmStart
    from learners.services.meta import AdaptationFailed, warm_start_choose

    existing = ModelVersion.objects.filter(project_id=project_id, request_id=request_id).first()
    if existing is not None:
        return _summary(existing, created=False)
    project = Project.objects.get(pk=project_id)
    if meta_model_id is None:
        warm = WarmStart.objects.filter(project=project).first()
        if warm is None:
            raise AdaptationFailed(f"project {project_id} names no warm start; pass meta_model_id")
        meta_model_id = warm.meta_model_id
    meta_model = MetaModel.objects.filter(pk=meta_model_id).first()
    if meta_model is None:
        raise AdaptationFailed(f"meta-model {meta_model_id} does not exist")
    space = feature_space_current(project)
    features_fill(space, progress)
    item_ids, labels = training_labels(project)
    if progress:
        progress("adapting", 0, len(labels))
    X = features_load(space, item_ids) if item_ids else np.zeros((0, space.dim), dtype=np.float32)
    strategy, estimator = estimator_build(project, seed=project.cold_start_seed)
    started = time.perf_counter()
    choice = warm_start_choose(project, X, labels, own_estimator=estimator, meta_model=meta_model)
    return _adapted_version_store(project, space, request_id, choice, strategy, X, labels, progress, started=started)


def strategy_for_adapted(strategy):
    """The query strategy an adapted meta-model can serve: a committee or dropout strategy falls back to margin."""
    if strategy.needs & {"committee", "mc_dropout"}:
        return strategy_get("margin")
    return strategy


def _adapted_version_store(project, space, request_id, choice, strategy, X, labels, progress, *, started) -> dict:
    from learners.services.meta import warm_start_record

    if progress:
        progress("adapting", len(labels), len(labels))
    metrics = choice.metrics()
    effective = strategy_for_adapted(strategy)
    if effective is not strategy:
        metrics["query_strategy_note"] = (f"{strategy.name} needs a committee or dropout, which an adapted "
                                          f"meta-model lacks; this version orders the queue by {effective.name}")
    return _version_store(
        project, space, request_id, estimator=choice.predictor, estimator_name=f"meta:{choice.meta_model.algorithm}",
        strategy=effective, X=X, labels=labels, metrics=metrics, train_seconds=time.perf_counter() - started,
        progress=progress, meta_model_id=choice.meta_model.pk,
        on_created=lambda number: warm_start_record(project.pk, choice, version=number),
    )


def _version_store(project, space, request_id, *, estimator, estimator_name, strategy, X, labels, metrics,
                   train_seconds, progress, meta_model_id=None, on_created=None) -> dict:
    """Score the pool with a fitted estimator, store it as the project's next version and swap the queue order."""
    project_id, seed = project.pk, project.cold_start_seed
    # The label count when the labels were read, not when the version is stored: labels that
    # arrived during training are not in this version, so the next retrain must not find it up to date.
    label_count = project.label_count
    started = time.perf_counter()
    total = Item.objects.filter(project=project, done=False).count()
    scores = pool_score(project=project, space=space, strategy=strategy, estimator=estimator, X_labelled=X,
                        seed=seed, progress=progress, total=total)
    score_seconds = time.perf_counter() - started
    label_ids = dict(project.labels.values_list("name", "id"))
    classes = [str(c) for c in estimator.classes_]
    class_label_ids = np.array([label_ids[c] for c in classes], dtype=np.int64)
    predicted_label_ids = class_label_ids[scores.predicted]

    previous = project.model_versions.order_by("-number").first()
    stop_set = stop_set_predict(project, space, estimator, previous)
    metrics.update(stop_agreement(previous.stop_set if previous else None, stop_set))

    buffer = io.BytesIO()
    joblib.dump(estimator, buffer)
    started = time.perf_counter()
    try:
        with transaction.atomic():
            project = Project.objects.select_for_update(no_key=True).get(pk=project_id)
            number = (project.model_versions.aggregate(n=Max("number"))["n"] or 0) + 1
            version = ModelVersion.objects.create(
                project=project, number=number, request_id=request_id,
                estimator=estimator_name, query_strategy=strategy.name, featuriser=space.featuriser,
                trained_on=len(labels), label_count=label_count, metrics=metrics,
                artifact=buffer.getvalue(), items_scored=len(scores.item_ids),
                train_seconds=train_seconds, score_seconds=score_seconds, stop_set=stop_set,
                meta_model_id=meta_model_id,
            )
            queue_reorder(
                project=project, item_ids=scores.item_ids, priorities=scores.priorities,
                predicted_label_ids=predicted_label_ids, confidences=scores.confidence, version_number=number,
            )
            if on_created is not None:
                on_created(number)
            version.metrics["swap_seconds"] = round(time.perf_counter() - started, 3)
            ModelVersion.objects.filter(pk=version.pk).update(metrics=version.metrics)
    except IntegrityError:
        # A concurrent delivery of the same request won the race.
        existing = ModelVersion.objects.filter(project_id=project_id, request_id=request_id).first()
        if existing is None:
            raise
        return _summary(existing, created=False)
    logger.info("project %s: model v%s (%s) on %s labels, accuracy %s", project_id, number, estimator_name,
                len(labels), metrics.get("accuracy"))
    return _summary(version, created=True)


def featurise_and_order(*, project_id: int, progress: Progress | None = None) -> dict:
    """Featurise the project's new items, then give them a place in the queue.

    Before the first model: a k-means++ spread of the pool goes first (the
    cold start). With a model: the new items are scored by it (`pool_rescore`),
    so they join the model's order instead of keeping the importer's seeded
    random priorities.
    """
    project = Project.objects.get(pk=project_id)
    space = feature_space_current(project)
    featurised = features_fill(space, progress)
    if project.model_versions.exists():
        if not featurised:
            return {"status": "featurised", "project_id": project_id, "featurised": 0}
        return pool_rescore(project_id=project_id, progress=progress) | {"featurised": featurised}
    strategy = strategy_get("kmeans_pp")
    scores = pool_score(project=project, space=space, strategy=strategy, seed=project.cold_start_seed)
    with transaction.atomic():
        project = Project.objects.select_for_update(no_key=True).get(pk=project_id)
        if project.model_versions.exists():  # a retrain committed meanwhile; its order wins
            return {"status": "featurised", "project_id": project_id, "featurised": featurised}
        chosen = np.isin(scores.item_ids, scores.batch_ids)
        queue_reorder(project=project, item_ids=scores.item_ids[chosen], priorities=scores.priorities[chosen])
    return {"status": "cold_start", "project_id": project_id, "featurised": featurised,
            "spread_first": len(scores.batch_ids)}


def pool_rescore(*, project_id: int, progress: Progress | None = None) -> dict:
    """Score every open item with the project's latest model version, without retraining.

    Uses the version's own featuriser and strategy (settings changed since
    take effect at the next retrain). A newer version committing meanwhile
    wins: this one's scores are then dropped.
    """
    project = Project.objects.get(pk=project_id)
    version = project.model_versions.defer("stop_set").order_by("-number").first()
    if version is None:
        return {"status": "no_model", "project_id": project_id,
                "reason": "the project has no model version yet; its queue keeps the cold-start order"}
    cls = FEATURISERS.get(version.featuriser)
    space = FeatureSpace.objects.filter(
        project=project, featuriser=version.featuriser, version=getattr(cls, "version", 0)
    ).first()
    if space is None:
        raise TrainingFailed(f"model v{version.number} of project {project_id} was trained on "
                             f"{version.featuriser!r} features, which are no longer cached; retrain instead")
    features_fill(space, progress)
    estimator = joblib.load(io.BytesIO(bytes(version.artifact)))
    strategy = strategy_get(version.query_strategy)
    item_ids, _ = training_labels(project)
    X_labelled = features_load(space, item_ids) if strategy.batch and item_ids else None
    started = time.perf_counter()
    scores = pool_score(project=project, space=space, strategy=strategy, estimator=estimator,
                        X_labelled=X_labelled, seed=project.cold_start_seed, progress=progress,
                        total=Item.objects.filter(project=project, done=False).count())
    label_ids = dict(project.labels.values_list("name", "id"))
    class_label_ids = np.array([label_ids[str(c)] for c in estimator.classes_], dtype=np.int64)
    with transaction.atomic():
        project = Project.objects.select_for_update(no_key=True).get(pk=project_id)
        latest = project.model_versions.aggregate(n=Max("number"))["n"]
        if latest != version.number:
            return {"status": "superseded", "project_id": project_id, "model_version": latest}
        queue_reorder(project=project, item_ids=scores.item_ids, priorities=scores.priorities,
                      predicted_label_ids=class_label_ids[scores.predicted], confidences=scores.confidence,
                      version_number=version.number)
    return {"status": "scored", "project_id": project_id, "model_version": version.number,
            "items_scored": len(scores.item_ids), "score_seconds": round(time.perf_counter() - started, 3)}


def _summary(version: ModelVersion, *, created: bool) -> dict:
    return {
        "status": "trained" if created else "already_trained",
        "project_id": version.project_id,
        "model_version": version.number,
        "estimator": version.estimator,
        "meta_model": version.meta_model_id,
        "trained_on": version.trained_on,
        "items_scored": version.items_scored,
        "metrics": version.metrics,
        "train_seconds": round(version.train_seconds, 3),
        "score_seconds": round(version.score_seconds, 3),
    }
