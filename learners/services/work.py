"""Background work as a state in the database: requested, coalesced, run once, re-sent when lost.

A project has one `learners.models.Work` row per kind (retrain, re-score, featurise):

- `work_request` records that work is due, in the caller's transaction (the label
  that makes a retrain due commits with the request), and sends the task after
  commit. A request made while one is pending changes nothing: 1,000 labels
  while the worker is busy ask for one retrain, not 100.
- `work_run` wraps the task: it claims the pending request (or, for a message a
  client sent by name, makes one), runs it while a heartbeat marks it alive, and
  on finishing sends the next message if requests arrived meanwhile. A message
  that finds its work already running or already done returns `coalesced`. At
  most one run per project and kind at a time, so one busy project holds at most
  one message in the queue and never starves another project's work.
- A message redelivered after its worker was killed (CELERY_TASK_REJECT_ON_WORKER_LOST)
  finds its own claim and runs again with the same request id, which the services
  make idempotent (a retrain that committed its version returns that version).
- `work_reconcile`, at a worker's start and every WORK_SWEEP_SECONDS (the
  `workbench.reconcile` task on Celery beat), re-sends requests whose message never
  reached the broker (Redis was down), or was sent more than WORK_STALE_SECONDS ago and
  not taken (a Redis crash may have lost it; a duplicate returns `coalesced`), and
  turns a run whose heartbeat stopped (its worker died) back into a request.

Importable by web processes: no scikit-learn or torch here.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import timedelta
from typing import Callable

from django.conf import settings
from django.db import close_old_connections, connection, transaction
from django.db.models import Q
from django.utils import timezone
from kombu.exceptions import OperationalError

from annotate.models import Project
from learners.models import Work, WorkKind
from workbench.celery import enqueue

logger = logging.getLogger(__name__)

TASKS = {WorkKind.RETRAIN: "workbench.retrain", WorkKind.SCORE_POOL: "workbench.score_pool",
         WorkKind.FEATURISE: "workbench.featurise"}
# Request ids of the messages work_request sends; a message without one was sent by a client by name.
PREFIX = "work:"


def _locked(project_id: int, kind: str) -> Work:
    """The project's Work row of `kind`, locked for this transaction (created on first use)."""
    Work.objects.get_or_create(project_id=project_id, kind=kind)
    return Work.objects.select_for_update().get(project_id=project_id, kind=kind)


def work_request(*, project_id: int, kind: str, reason: str, force: bool = False) -> None:
    """Record that `kind` work is due for the project; its task is sent when the transaction commits.

    Call inside the transaction that makes the work due. Nothing is lost when the broker
    cannot be reached: the request stays unsent and the reconciler sends it.
    """
    with transaction.atomic():
        row = _locked(project_id, kind)
        if row.pending_since is None:
            row.requested += 1
            row.pending_since, row.pending_reason, row.sent_at = timezone.now(), reason[:200], None
        row.pending_force = row.pending_force or force
        row.save(update_fields=["requested", "pending_since", "pending_reason", "sent_at", "pending_force"])
        due = row.running_since is None and row.sent_at is None
    if due:  # while a run is running, its end sends the next message
        transaction.on_commit(lambda: _send(row.pk, reason))
    else:
        logger.info("%s of project %s requested (%s): merged with the pending request", kind, project_id, reason)


def _send(work_id: int, reason: str = "") -> bool:
    """Send the message of work `work_id`'s pending request; True when the broker took it."""
    row = Work.objects.filter(pk=work_id).values_list("project_id", "kind", "requested").first()
    if row is None:
        return False
    project_id, kind, number = row
    try:
        enqueue(TASKS[kind], project_id=project_id, request_id=f"{PREFIX}{number}")
    except OperationalError as exc:
        logger.error("could not send %s of project %s (%s): %s; it is sent again when the broker answers",
                     kind, project_id, reason, exc)
        return False
    Work.objects.filter(pk=work_id, requested=number, pending_since__isnull=False).update(sent_at=timezone.now())
    logger.info("%s of project %s requested: %s", kind, project_id, reason or "pending")
    return True


@dataclass(frozen=True)
class Claim:
    work_id: int
    request_id: str = ""
    force: bool = False
    skipped: str = ""  # why this message does nothing: the work is running, or done


def _stale(row: Work, now) -> bool:
    seen = row.heartbeat_at or row.running_since
    return seen is None or now - seen > timedelta(seconds=settings.WORK_STALE_SECONDS)


def work_claim(*, project_id: int, kind: str, request_id: str | None, task_id: str) -> Claim:
    """Take the project's pending `kind` request for the task `task_id`, or say why there is nothing to run."""
    ours = bool(request_id and request_id.startswith(PREFIX))
    now = timezone.now()
    with transaction.atomic():
        row = _locked(project_id, kind)
        if row.running_since is not None and task_id and row.running_task_id == task_id:
            logger.warning("%s of project %s: task %s delivered again (its worker stopped); running it again",
                           kind, project_id, task_id)
            return Claim(row.pk, row.running_request_id, row.running_force)
        if row.running_since is not None and not _stale(row, now):
            if not ours and row.pending_since is None:  # a client's request: it runs after the running one
                row.requested += 1
                row.pending_since, row.pending_reason, row.sent_at, row.pending_force = now, "sent by name", None, True
                row.save()
            return Claim(row.pk, skipped=f"{kind} of project {project_id} is running (task {row.running_task_id}); "
                                         "the newest request runs after it")
        if ours and row.pending_since is None:
            return Claim(row.pk, skipped=f"{kind} request {request_id} of project {project_id} was already run")
        if row.running_since is not None:
            logger.warning("%s of project %s: task %s stopped sending heartbeats; task %s takes over",
                           kind, project_id, row.running_task_id, task_id)
        if row.pending_since is None:  # a client's message: a request of its own
            row.requested += 1
        force = row.pending_force or not ours
        claimed = f"{PREFIX}{row.requested}" if ours else (request_id or task_id or f"{PREFIX}{row.requested}")
        row.pending_since, row.pending_reason, row.pending_force, row.sent_at = None, "", False, None
        row.running_since = row.heartbeat_at = now
        row.running_task_id, row.running_request_id, row.running_force = task_id, claimed, force
        row.runs += 1
        row.save()
        return Claim(row.pk, claimed, force)


def work_finish(claim: Claim, *, task_id: str, outcome: str) -> None:
    """End the run of `claim`; when requests arrived meanwhile, send the next message (from the newest data)."""
    with transaction.atomic():
        row = Work.objects.select_for_update().filter(pk=claim.work_id).first()
        if row is None or row.running_task_id != task_id:
            return  # taken over by another run after this one was thought dead
        row.running_since = row.heartbeat_at = None
        row.running_task_id = row.running_request_id = ""
        row.finished_at, row.outcome = timezone.now(), outcome[:200]
        row.save()
        again = row.pending_since is not None and row.sent_at is None
    if again:
        _send(row.pk, "requests arrived while it ran")


class _Heartbeat:
    """Marks a run alive every WORK_HEARTBEAT_SECONDS from a thread of its own (its own connection)."""

    def __init__(self, work_id: int, task_id: str) -> None:
        self.work_id, self.task_id = work_id, task_id
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._beat, name=f"heartbeat-{work_id}", daemon=True)

    def _beat(self) -> None:
        try:
            while not self.stopped.wait(settings.WORK_HEARTBEAT_SECONDS):
                try:
                    Work.objects.filter(pk=self.work_id, running_task_id=self.task_id).update(
                        heartbeat_at=timezone.now())
                except Exception as exc:  # a busy database: the next beat tries again
                    logger.warning("heartbeat of work %s failed: %s", self.work_id, exc)
        finally:
            connection.close()

    def __enter__(self) -> "_Heartbeat":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stopped.set()
        self.thread.join(timeout=5)


def work_run(*, project_id: int, kind: str, request_id: str | None, task_id: str,
             run: Callable[[str, bool], dict]) -> dict:
    """Run the project's `kind` work once for a task: claim, `run(request_id, force)`, finish.

    A run that raises an Exception ends as failed (not retried: the next request tries
    again). One stopped by the worker's shutdown stays claimed: its message is delivered
    again and finds the claim, or the reconciler hands it on when its heartbeat stops.
    """
    if not Project.objects.filter(pk=project_id).exists():
        logger.warning("%s: project %s is gone; nothing to do", kind, project_id)
        return {"status": "missing", "project_id": project_id}
    claim = work_claim(project_id=project_id, kind=kind, request_id=request_id, task_id=task_id)
    if claim.skipped:
        logger.info("%s", claim.skipped)
        return {"status": "coalesced", "project_id": project_id, "reason": claim.skipped}
    try:
        with _Heartbeat(claim.work_id, task_id):
            result = run(claim.request_id, claim.force)
    except Exception as exc:
        work_finish(claim, task_id=task_id, outcome=f"failed: {type(exc).__name__}: {exc}")
        raise
    work_finish(claim, task_id=task_id, outcome=str(result.get("status", "done")))
    return result


def work_reconcile(*, startup: bool = False) -> dict:
    """Hand on runs whose worker died and send requests the broker does not hold; returns what it did.

    `startup`: a worker is starting, so a broker restart may have lost messages that
    were sent; every pending request is sent again (a duplicate finds the work
    claimed or done and returns `coalesced`).
    """
    now = timezone.now()
    handed_on, sent = [], []
    close_old_connections()
    for row in Work.objects.filter(running_since__isnull=False):
        if not _stale(row, now):
            continue
        with transaction.atomic():
            row = _locked(row.project_id, row.kind)
            if row.running_since is None or not _stale(row, now):
                continue
            logger.warning("%s of project %s: task %s stopped (no heartbeat since %s); requested again",
                           row.kind, row.project_id, row.running_task_id, row.heartbeat_at)
            if row.pending_since is None:
                row.requested += 1
                row.pending_since = now
                row.pending_reason = f"the run of task {row.running_task_id} stopped"
            row.pending_force = row.pending_force or row.running_force
            row.running_since = row.heartbeat_at = None
            row.running_task_id = row.running_request_id = ""
            row.finished_at, row.outcome, row.sent_at = now, "stopped: its worker died", None
            row.save()
            handed_on.append(row.pk)
    unsent = Work.objects.filter(pending_since__isnull=False, running_since__isnull=True)
    if not startup:  # never sent, or sent so long ago that the broker may have lost it (a Redis crash)
        lost = now - timedelta(seconds=settings.WORK_STALE_SECONDS)
        unsent = unsent.filter(Q(sent_at__isnull=True) | Q(sent_at__lt=lost))
    for work_id in unsent.values_list("pk", flat=True):
        if _send(work_id, "sent again by the reconciler"):
            sent.append(work_id)
    return {"handed_on": handed_on, "sent": sent}


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
