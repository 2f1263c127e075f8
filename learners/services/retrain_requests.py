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
