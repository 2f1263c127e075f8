"""Celery tasks of the human side: thin interfaces over annotate.services.

Names are the public task API (docs/celery-api.md): keyword-only JSON
arguments, JSON results. Every workbench.* task (here and in learners/tasks.py)
has `WorkbenchTask` as its base, so arguments that do not fit its signature
fail with TaskInputError naming them.
"""
from __future__ import annotations

import inspect
import logging
import types
import typing
from typing import Any, Callable

from celery import Task, shared_task
from celery.signals import worker_ready

from annotate.errors import WorkbenchError
from annotate.models import ImportJob, Project
from annotate.selectors import queue_status as queue_status_read
from annotate.services.exporting import annotations_export
from annotate.services.import_readers import detect_format, rows_estimate
from annotate.services.importing import ImportFailed, import_file, import_jobs_running_fail, json_kind
from annotate.services.uploads import import_jobs_orphaned_fail, imports_reconcile, upload_discarded_after

logger = logging.getLogger(__name__)


class TaskInputError(Exception):
    """The task's arguments name something that does not exist or is invalid."""


_JSON_TYPES: dict[type, str] = {bool: "true or false", int: "an integer", float: "a number", str: "a string",
                                type(None): "null"}


def _accepted(hint: Any) -> tuple[type, ...] | None:
    """The JSON types a parameter annotation accepts; None when it is not one we check."""
    if hint in _JSON_TYPES:
        return (hint,)
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        members = typing.get_args(hint)
        if all(m in _JSON_TYPES for m in members):
            return members
    return None


def _fits(value: Any, accepted: tuple[type, ...]) -> bool:
    for kind in accepted:
        if kind is type(None) and value is None:
            return True
        if kind is bool and isinstance(value, bool):
            return True
        if kind is int and isinstance(value, int) and not isinstance(value, bool):
            return True
        if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return True
        if kind is str and isinstance(value, str):
            return True
    return False


def task_arguments_check(name: str, run: Callable, args: tuple, kwargs: dict) -> None:
    """Raise TaskInputError unless `kwargs` fit `run`'s keyword-only parameters, names and JSON types."""
    parameters = [p for p in inspect.signature(run).parameters.values() if p.kind is p.KEYWORD_ONLY]
    takes = ", ".join(p.name for p in parameters)
    if args:
        raise TaskInputError(f"{name} takes keyword arguments only ({takes}); it was sent {len(args)} positional")
    unknown = sorted(set(kwargs) - {p.name for p in parameters})
    if unknown:
        raise TaskInputError(f"{name}: unknown argument {unknown[0]!r}; it takes {takes}")
    required = [p.name for p in parameters if p.default is p.empty]
    missing = [n for n in required if n not in kwargs]
    if missing:
        raise TaskInputError(f"{name}: missing argument {missing[0]!r} (required: {', '.join(required)})")
    hints = typing.get_type_hints(run)
    for key, value in kwargs.items():
        accepted = _accepted(hints.get(key))
        if accepted is not None and not _fits(value, accepted):
            wanted = " or ".join(_JSON_TYPES[kind] for kind in accepted)
            raise TaskInputError(f"{name}: argument {key!r} must be {wanted}, not {json_kind(value)}")


class WorkbenchTask(Task):
    """Base of every workbench.* task: arguments that do not fit its signature fail with TaskInputError.

    Clients send tasks by name with JSON keyword arguments; without this check a missing or
    unknown argument would fail the task with Python's TypeError, which names no fix.
    """

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        task_arguments_check(self.name, self.run, args, kwargs)
        return super().__call__(*args, **kwargs)


@worker_ready.connect
def _import_jobs_orphaned_fail(sender, **kwargs) -> None:
    """A restarted worker ends the imports its killed process left "running" (annotate.services.uploads)."""
    import_jobs_orphaned_fail(worker=sender.hostname)
    try:
        imports_reconcile()  # accepted imports whose message a broker restart lost
    except Exception:  # never keep a worker from starting; the periodic sweep tries again
        logger.exception("could not reconcile accepted imports at start")


def _project(project_id: int) -> Project:
    try:
        return Project.objects.get(pk=project_id)
    except Project.DoesNotExist:
        raise TaskInputError(f"project {project_id} does not exist") from None


@shared_task(bind=True, base=WorkbenchTask, name="workbench.import_items")
def import_items(self, *, project_id: int, path: str, format: str | None = None,
                 skip_bad_rows: bool = False, skip_existing: bool = False) -> dict:
    """Import a CSV/JSONL file readable by the worker at `path` into a project.

    A file the upload page or the API stored for this task is deleted when the import ends.
    """
    task_id = self.request.id or ""
    with upload_discarded_after(task_id):
        if task_id:
            done = ImportJob.objects.filter(task_id=task_id, status="succeeded").first()
            if done is not None:  # a redelivered message: the import already happened
                return {"job_id": done.pk, "status": done.status, "rows_imported": done.rows_imported,
                        "rows_read": done.rows_read, "rows_skipped": done.rows_skipped,
                        "labels_imported": done.labels_imported, "errors": done.errors}
            # A redelivered message (its worker was killed): the run it replaces wrote nothing.
            import_jobs_running_fail(ImportJob.objects.filter(task_id=task_id),
                                     "the worker running this import stopped before it finished; nothing was "
                                     "imported by that run, and the task was delivered again and runs anew")

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


@shared_task(base=WorkbenchTask, name="workbench.queue_status")
def queue_status(*, project_id: int) -> dict:
    """Counts, budget left and the current model version of a project."""
    return queue_status_read(_project(project_id))


@shared_task(bind=True, base=WorkbenchTask, name="workbench.export_annotations")
def export_annotations(self, *, project_id: int, format: str = "jsonl", path: str | None = None) -> dict:
    """Write the project's annotations to a file the worker can write (default: the data dir's exports/)."""
    def progress(done: int, total: int) -> None:
        self.update_state(state="PROGRESS", meta={"stage": "exporting", "done": done, "total": total})

    try:
        return annotations_export(project=_project(project_id), file_format=format, path=path, progress=progress)
    except WorkbenchError as exc:
        raise TaskInputError(str(exc)) from None
