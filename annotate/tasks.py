"""Celery tasks of the human side: thin interfaces over annotate.services.

Names are the public task API (docs/celery-api.md): keyword-only JSON
arguments, JSON results.
"""
from __future__ import annotations

import logging

from celery import shared_task

from annotate.errors import WorkbenchError
from annotate.models import ImportJob, Project
from annotate.selectors import queue_status as queue_status_read
from annotate.services.exporting import annotations_export
from annotate.services.import_readers import detect_format, rows_estimate
from annotate.services.importing import ImportFailed, import_file

logger = logging.getLogger(__name__)


class TaskInputError(Exception):
    """The task's arguments name something that does not exist or is invalid."""


def _project(project_id: int) -> Project:
    try:
        return Project.objects.get(pk=project_id)
    except Project.DoesNotExist:
        raise TaskInputError(f"project {project_id} does not exist") from None


@shared_task(bind=True, name="workbench.import_items")
def import_items(self, *, project_id: int, path: str, format: str | None = None,
                 skip_bad_rows: bool = False, skip_existing: bool = False) -> dict:
    """Import a CSV/JSONL file readable by the worker at `path` into a project."""
    task_id = self.request.id or ""
    if task_id:
        done = ImportJob.objects.filter(task_id=task_id, status="succeeded").first()
        if done is not None:  # a redelivered message: the import already happened
            return {"job_id": done.pk, "status": done.status, "rows_imported": done.rows_imported,
                    "rows_read": done.rows_read, "rows_skipped": done.rows_skipped,
                    "labels_imported": done.labels_imported, "errors": done.errors}

    try:  # for the progress bar; import_file below reports a bad path or format properly
        total = rows_estimate(path, format or detect_format(path))
    except (OSError, WorkbenchError):
        total = None

    def progress(rows: int) -> None:
        self.update_state(state="PROGRESS", meta={"stage": "importing", "rows_read": rows, "rows_total": total})

    try:
        report = import_file(
            project=_project(project_id), path=path, file_format=format,
            skip_bad_rows=skip_bad_rows, skip_existing=skip_existing, task_id=task_id, progress=progress,
        )
    except ImportFailed as exc:
        raise TaskInputError(f"import rejected, nothing written: {'; '.join(exc.errors[:20])}") from None
    except WorkbenchError as exc:
        raise TaskInputError(str(exc)) from None
    return report.as_dict()


@shared_task(name="workbench.queue_status")
def queue_status(*, project_id: int) -> dict:
    """Counts, budget left and the current model version of a project."""
    return queue_status_read(_project(project_id))


@shared_task(bind=True, name="workbench.export_annotations")
def export_annotations(self, *, project_id: int, format: str = "jsonl", path: str | None = None) -> dict:
    """Write the project's annotations to a file the worker can write (default: the data dir's exports/)."""
    def progress(done: int, total: int) -> None:
        self.update_state(state="PROGRESS", meta={"stage": "exporting", "done": done, "total": total})

    try:
        return annotations_export(project=_project(project_id), file_format=format, path=path, progress=progress)
    except WorkbenchError as exc:
        raise TaskInputError(str(exc)) from None
