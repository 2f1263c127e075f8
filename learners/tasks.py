"""Celery tasks of the machine side (public names under workbench.*).

Each has annotate.tasks.WorkbenchTask as its base: arguments that do not fit
fail with TaskInputError naming them (docs/celery-api.md).
"""
from __future__ import annotations

import logging

from celery import shared_task
from celery.signals import worker_ready

from annotate.models import Project
from annotate.tasks import WorkbenchTask
from learners.models import WorkKind
from learners.services.features import feature_skips
from learners.services.training import featurise_and_order, model_version_train, pool_rescore
from learners.services.work import work_reconcile, work_run

logger = logging.getLogger(__name__)


@worker_ready.connect
def _work_reconcile_at_start(sender, **kwargs) -> None:
    """A starting worker re-sends the work that is due: the broker may have lost its messages."""
    try:
        logger.info("work reconciled at start: %s", work_reconcile(startup=True))
    except Exception:  # never keep a worker from starting; the periodic sweep tries again
        logger.exception("could not reconcile background work at start")


def stage_progress(task):
    """A service's `progress(stage, done, total)` reported as the task's PROGRESS state."""
    def progress(stage: str, done: int, total: int) -> None:
        task.update_state(state="PROGRESS", meta={"stage": stage, "done": done, "total": total})

    return progress


@shared_task(bind=True, base=WorkbenchTask, name="workbench.retrain")
def retrain(self, *, project_id: int, request_id: str | None = None) -> dict:
    """Train the project's model on all its labels, score the pool and re-order the queue.

    One retrain runs per project at a time (learners.services.work): a message that
    finds one running returns `coalesced` and the newest labels are trained on right
    after it. Idempotent per `request_id` (default: this task's id, so a redelivered
    message makes no second version). A retrain the workbench asked for itself (every
    N labels) makes no version when no label arrived since the last one (`up_to_date`).
    """
    return work_run(
        project_id=project_id, kind=WorkKind.RETRAIN, request_id=request_id, task_id=self.request.id or "",
        run=lambda rid, force: model_version_train(project_id=project_id, request_id=rid,
                                                   progress=stage_progress(self), only_new_labels=not force),
    )


@shared_task(bind=True, base=WorkbenchTask, name="workbench.featurise")
def featurise(self, *, project_id: int, request_id: str | None = None) -> dict:
    """Featurise the project's items that have no cached features yet, in batches with progress.

    Then places them in the queue: before the project's first model, a
    k-means++ spread of items goes to the head of the queue (the cold start);
    with a model, the new items are scored by it. An item the featuriser cannot
    read is skipped, not fatal: the result counts them (`skipped`) and gives the
    first reasons (`skipped_items`, "item 'x': ..."). One run per project at a time.
    """
    def run(rid: str, force: bool) -> dict:
        result = featurise_and_order(project_id=project_id, progress=stage_progress(self))
        skipped, reasons = feature_skips(Project.objects.get(pk=project_id))
        return result | {"skipped": skipped, "skipped_items": reasons}

    return work_run(project_id=project_id, kind=WorkKind.FEATURISE, request_id=request_id,
                    task_id=self.request.id or "", run=run)


@shared_task(bind=True, base=WorkbenchTask, name="workbench.score_pool")
def score_pool(self, *, project_id: int, request_id: str | None = None) -> dict:
    """Re-score every open item with the latest model version (no retraining) and re-order the queue."""
    return work_run(project_id=project_id, kind=WorkKind.SCORE_POOL, request_id=request_id,
                    task_id=self.request.id or "",
                    run=lambda rid, force: pool_rescore(project_id=project_id, progress=stage_progress(self)))


@shared_task(base=WorkbenchTask, name="workbench.reconcile")
def reconcile(*, startup: bool = False) -> dict:
    """Re-send background work the database says is due and the broker does not hold (Celery beat sends it):
    retrains, re-scoring and featurising (learners.services.work), accepted imports (annotate.services.uploads)."""
    from annotate.services.uploads import imports_reconcile

    return work_reconcile(startup=startup) | imports_reconcile()


@shared_task(bind=True, base=WorkbenchTask, name="workbench.meta_train")
def meta_train(self, *, meta_model_id: int) -> dict:
    """Meta-train a queued meta-model on its source projects' labels (learners.services.meta.meta_model_train).

    Progress: stage "meta-training", done/total outer steps. Cancel with
    `meta_model_cancel` (the meta-model's Cancel button, or
    ``manage.py meta_train --cancel ID``): the task then returns status
    "cancelled" within a few steps.
    """
    from learners.models import MetaModel
    from learners.services.meta import meta_model_train

    if not MetaModel.objects.filter(pk=meta_model_id).exists():
        logger.warning("meta_train: meta-model %s is gone; nothing to do", meta_model_id)
        return {"status": "missing", "meta_model_id": meta_model_id}
    MetaModel.objects.filter(pk=meta_model_id, task_id="").update(task_id=self.request.id or "")
    return meta_model_train(meta_model_id=meta_model_id, progress=stage_progress(self))


@shared_task(bind=True, base=WorkbenchTask, name="workbench.adapt")
def adapt(self, *, project_id: int, meta_model_id: int | None = None, request_id: str | None = None) -> dict:
    """Adapt a meta-model (default: the project's warm start) to the project's labels, store it as a model
    version and re-order the queue with it. Idempotent per `request_id` (default: this task's id)."""
    from learners.services.training import model_version_adapt

    if not Project.objects.filter(pk=project_id).exists():
        logger.warning("adapt: project %s is gone; nothing to do", project_id)
        return {"status": "missing", "project_id": project_id}
    return model_version_adapt(project_id=project_id, meta_model_id=meta_model_id,
                               request_id=request_id or self.request.id or "direct", progress=stage_progress(self))


@shared_task(bind=True, base=WorkbenchTask, name="workbench.federated_run")
def federated_run(self, *, run_id: int) -> dict:
    """Coordinate a queued federated run (learners.services.federated.federated_run_execute).

    Progress: stage "federated rounds", done/total rounds. Each round is stored as it finishes, with
    participants, dropouts, bytes and ε. The run's sites answer on their own queues (``site.<slug>``)
    with the celery backend, so this task never waits on its own queue.
    """
    from learners.models import FederatedRun
    from learners.services.federated import federated_run_execute

    if not FederatedRun.objects.filter(pk=run_id).exists():
        logger.warning("federated_run: run %s is gone; nothing to do", run_id)
        return {"status": "missing", "run_id": run_id}
    FederatedRun.objects.filter(pk=run_id, task_id="").update(task_id=self.request.id or "")
    return federated_run_execute(run_id=run_id, progress=stage_progress(self), task_id=self.request.id or "")


