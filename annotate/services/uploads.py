"""Importing an uploaded file in the background: store it under a name the server picks, queue the import,
delete it when the import is over, and end jobs whose worker died.

The upload page and the REST API both come through here, so a client never
names a server-side path and the worker only ever sees paths under UPLOAD_DIR.

An accepted upload is an ImportJob `queued` from the moment it is answered 202 (with
the task's arguments), and becomes that task's running job when a worker starts it.
`imports_reconcile` (Celery beat's sweep and each worker's start) sends an accepted
import again when the broker lost its message (a Redis crash), and deletes uploads that
no import will read.

An upload is kept until its import ends, succeeded or failed (`upload_discarded_after`);
a worker killed mid-import leaves it, since the task's message is then delivered again
(CELERY_TASK_ACKS_LATE) and the new run needs the file. Such a run leaves its ImportJob
"running" with no process behind it; two checks end it `failed`:

- `import_job_settle`, when the status page reads a running job whose task failed
  (a prefork child killed: WorkerLostError), was revoked, or is unknown to the result store;
- `import_jobs_orphaned_fail`, when a worker starts: the jobs a worker of the same name
  was running (a `--pool solo` worker killed and restarted).
"""
from __future__ import annotations

import logging
import re
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from django.conf import settings
from kombu.exceptions import OperationalError

from annotate.models import ImportJob, ImportStatus, Project
from annotate.services.importing import import_jobs_running_fail
from workbench.celery import enqueue

logger = logging.getLogger(__name__)

# Upload names start with the task id, a UUID; nothing else is ever deleted.
_TASK_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_UNFINISHED = {"PENDING", "RECEIVED", "STARTED", "PROGRESS", "RETRY"}
_LOST = "nothing was imported; upload the file again"


def upload_import_enqueue(*, project: Project, upload, file_format: str, skip_bad_rows: bool,
                          skip_existing: bool, user=None) -> str:
    """Store `upload` (a Django UploadedFile), record it as a queued ImportJob and send `workbench.import_items`
    for it; the task id.

    Raises kombu's OperationalError when the broker cannot be reached; the stored file and the job are
    removed then (nothing was accepted).
    """
    task_id = str(uuid.uuid4())
    # The client's file name only decorates ours (for the job list), stripped to safe characters.
    shown = re.sub(r"[^A-Za-z0-9._-]", "_", Path(upload.name).name)[-80:]
    settings.UPLOAD_DIR.mkdir(parents=True, exist_ok=True)
    path = settings.UPLOAD_DIR / f"{task_id}-{shown}"
    with path.open("wb") as out:
        for chunk in upload.chunks():
            out.write(chunk)
    job = ImportJob.objects.create(
        project=project, source_name=path.name, file_format=file_format, task_id=task_id, status=ImportStatus.QUEUED,
        options={"skip_bad_rows": skip_bad_rows, "skip_existing": skip_existing, "path": str(path)},
        created_by=user if getattr(user, "is_authenticated", False) else None,
    )
    try:
        _import_send(job)
    except OperationalError:
        job.delete()
        path.unlink(missing_ok=True)
        raise
    return task_id


def _import_send(job: ImportJob) -> None:
    enqueue("workbench.import_items", task_id=job.task_id, project_id=job.project_id, path=job.options["path"],
            format=job.file_format, skip_bad_rows=bool(job.options.get("skip_bad_rows")),
            skip_existing=bool(job.options.get("skip_existing")))


def imports_reconcile() -> dict:
    """Send again the accepted imports whose message the broker lost; delete uploads no import will read.

    Only what has waited WORK_STALE_SECONDS: a queued job whose task the broker does not hold
    (not queued, not delivered) and the result store does not know is sent again with the same
    task id; one whose upload is gone ends failed. An upload file of a task with no queued or
    running job, that the broker does not hold and no worker runs, is deleted.
    """
    from datetime import timedelta

    from django.utils import timezone

    from workbench.celery import broker_holds, task_state

    old = timezone.now() - timedelta(seconds=settings.WORK_STALE_SECONDS)
    queued = list(ImportJob.objects.filter(status=ImportStatus.QUEUED, created_at__lt=old).exclude(task_id=""))
    stored = _old_uploads(old.timestamp())
    held = broker_holds({job.task_id for job in queued} | set(stored))
    sent, failed, removed = [], [], []
    for job in queued:
        if job.task_id in held or task_state(job.task_id)[0] != "PENDING":
            continue
        if not Path(job.options.get("path", "")).is_file():
            if ImportJob.objects.filter(pk=job.pk, status=ImportStatus.QUEUED).update(
                    status=ImportStatus.FAILED, finished_at=timezone.now(),
                    errors=[f"the uploaded file of this import is gone; {_LOST}"]):
                failed.append(job.pk)
            continue
        try:
            _import_send(job)
        except OperationalError as exc:
            logger.error("could not send import job %s again: %s", job.pk, exc)
            break
        logger.warning("import job %s (task %s): the broker had lost its message; sent again", job.pk, job.task_id)
        sent.append(job.pk)
    live = set(ImportJob.objects.filter(task_id__in=list(stored), status__in=[ImportStatus.QUEUED, ImportStatus.RUNNING])
               .values_list("task_id", flat=True))
    for task_id, paths in stored.items():
        if task_id in live or task_id in held or task_state(task_id)[0] in _UNFINISHED - {"PENDING"}:
            continue
        for path in paths:
            path.unlink(missing_ok=True)
            removed.append(path.name)
            logger.warning("deleted upload %s: no import will read it", path.name)
    return {"imports_sent": sent, "imports_failed": failed, "uploads_removed": removed}


def _old_uploads(before: float) -> dict[str, list[Path]]:
    """Upload files last written before `before` (a timestamp), by task id."""
    found: dict[str, list[Path]] = {}
    if not settings.UPLOAD_DIR.is_dir():
        return found
    for path in settings.UPLOAD_DIR.iterdir():
        match = _TASK_ID.match(path.name)
        if match and path.name[match.end():match.end() + 1] == "-" and path.is_file() and path.stat().st_mtime < before:
            found.setdefault(match.group(0), []).append(path)
    return found


def upload_discard(*, task_id: str) -> list[Path]:
    """Delete the file stored for import task `task_id` (nothing for a task that names its own path)."""
    if not _TASK_ID.fullmatch(task_id or "") or not settings.UPLOAD_DIR.is_dir():
        return []
    removed = [path for path in settings.UPLOAD_DIR.glob(f"{task_id}-*") if path.is_file()]
    for path in removed:
        path.unlink(missing_ok=True)
    return removed


@contextmanager
def upload_discarded_after(task_id: str) -> Iterator[None]:
    """Delete the task's upload when the block ends, returning or raising an Exception.

    A failed task is acknowledged and never retried, so its file has no further use. A
    BaseException that is not an Exception (the worker shutting down) keeps it: the message
    is then delivered again and the retry reads the file.
    """
    try:
        yield
    except Exception:
        upload_discard(task_id=task_id)
        raise
    upload_discard(task_id=task_id)


def import_job_settle(*, job: ImportJob, state: str, result: object) -> ImportJob:
    """`job` as it stands; a running job whose task can no longer finish it is marked failed first.

    `state` and `result` are the task's, as workbench.celery.task_state reads them. A job row
    exists only once its task has started (CELERY_TASK_TRACK_STARTED stores STARTED first), so
    PENDING means the result store has lost the task.
    """
    if job.status != ImportStatus.RUNNING or not job.task_id:
        return job
    if state == "FAILURE":
        message = f"the worker running this import stopped before it finished ({result}); {_LOST}"
    elif state == "REVOKED":
        message = f"the import was cancelled before it finished; {_LOST}"
    elif state == "PENDING":
        message = f"the task queue no longer knows this import's task (its worker stopped); {_LOST}"
    else:
        return job
    if import_jobs_running_fail(ImportJob.objects.filter(pk=job.pk), message):
        logger.warning("import job %s (task %s) marked failed: %s", job.pk, job.task_id, message)
        upload_discard(task_id=job.task_id)  # its message was acknowledged: no retry will read the file
    job.refresh_from_db()
    return job


def import_jobs_orphaned_fail(*, worker: str) -> int:
    """At a worker's start: mark failed the running imports that a worker of this name was running.

    A node name belongs to one worker at a time, so a task it had not finished died with its last
    process. The upload is kept: that task's message is delivered again and the retry imports it.
    Returns how many jobs were marked.
    """
    from workbench.celery import app

    marked = 0
    for job in ImportJob.objects.filter(status=ImportStatus.RUNNING).exclude(task_id=""):
        meta = app.backend.get_task_meta(job.task_id)
        if meta.get("worker") == worker and meta.get("status") in _UNFINISHED:
            message = (f"the worker running this import ({worker}) stopped before it finished; nothing was "
                       "imported by this run. Its task is delivered again within the broker's visibility "
                       "timeout (an hour by default) and retried, or upload the file again")
            if import_jobs_running_fail(ImportJob.objects.filter(pk=job.pk), message):
                logger.warning("import job %s (task %s) marked failed: %s", job.pk, job.task_id, message)
                marked += 1
        else:
            import_job_settle(job=job, state=meta.get("status", "PENDING"), result=meta.get("result"))
    return marked
