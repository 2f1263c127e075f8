"""Asking for a retrain or a featurising pass, importable by web processes without loading scikit-learn."""
from __future__ import annotations

import logging

from django.db import transaction
from kombu.exceptions import OperationalError

from annotate.models import Project
from workbench.celery import enqueue

logger = logging.getLogger(__name__)


def retrain_enqueue_on_commit(*, project_id: int, reason: str, rearm_from: int | None = None) -> None:
    """Ask a worker to retrain once the current transaction commits.

    When the broker cannot be reached the labels are already safe; the error is
    logged and, with `rearm_from`, the project's retrain marker is put back so
    the next label asks again instead of the request being lost.
    """
    def send() -> None:
        try:
            enqueue("workbench.retrain", project_id=project_id)
        except OperationalError as exc:
            logger.error("could not enqueue retrain of project %s (%s): %s", project_id, reason, exc)
            if rearm_from is not None:
                Project.objects.filter(pk=project_id).update(retrain_requested_at=rearm_from)
        else:
            logger.info("retrain of project %s requested: %s", project_id, reason)

    transaction.on_commit(send)


def featurise_enqueue_on_commit(*, project_id: int, reason: str) -> None:
    """Ask a worker to featurise new items (and order a cold start) once the transaction commits.

    Without a broker nothing is lost: the next retrain fills missing features first.
    """
    def send() -> None:
        try:
            enqueue("workbench.featurise", project_id=project_id)
        except OperationalError as exc:
            logger.error("could not enqueue featurising of project %s (%s): %s", project_id, reason, exc)

    transaction.on_commit(send)


def warm_start_just_ready(project: Project, label_id: int) -> bool:
    """True when a label of `label_id` just gave every label of the project the k_shot items its warm start needs.

    Only while the warm start is active and no version has been chosen with it yet
    (its comparison is empty), and only for the label that completes the set (its
    count is exactly k_shot), so one annotation asks once. Counts annotations
    (a close, cheap stand-in for the majority labels retraining uses).
    """
    from django.db.models import Count

    from annotate.models import Annotation, Label
    from learners.models import WarmStart

    warm = (WarmStart.objects.filter(project=project, handed_over_version__isnull=True)
            .values_list("comparison", "meta_model__hyper_parameters").first())
    if warm is None or warm[0]:
        return False
    k_shot = int((warm[1] or {}).get("k_shot", 1))
    counts = dict(Annotation.objects.filter(project=project).values_list("label_id").annotate(n=Count("id")))
    label_ids = list(Label.objects.filter(project=project).values_list("id", flat=True))
    return counts.get(label_id, 0) == k_shot and all(counts.get(i, 0) >= k_shot for i in label_ids)
