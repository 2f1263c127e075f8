"""Which background tasks a project has, so pages can show their progress.

`workbench.celery.enqueue` records every task sent with a `project_id`
argument in a short per-project list in Redis (the same Redis as the result
backend, kept as long as task results: CELERY_RESULT_EXPIRES), and which project
each task id belongs to (`task_project`), so a task's progress is shown only to
those who may view its project. Task state and progress stay where Celery
keeps them; `project_tasks` reads both in one round trip and shapes them for
the project page's progress panel (polled as JSON). Error texts of failed
tasks can quote the project's rows (an import's bad lines), so they are
included only when the caller says the reader may manage the project.
"""
from __future__ import annotations

import json
import logging
import time

from django.conf import settings

logger = logging.getLogger(__name__)

KEEP = 20
TITLES = {
    "workbench.import_items": "Import",
    "workbench.featurise": "Featurise",
    "workbench.retrain": "Retrain",
    "workbench.score_pool": "Re-score the pool",
    "workbench.adapt": "Adapt the warm-start meta-model",
    "workbench.export_annotations": "Export annotations",
    "workbench.queue_status": "Queue status",
}
RUNNING = {"PENDING", "RECEIVED", "STARTED", "PROGRESS", "RETRY"}
# Cheap reads are not work a person waits for.
NOT_SHOWN = {"workbench.queue_status"}


def _key(project_id: int) -> str:
    return f"workbench:project:{int(project_id)}:tasks"


def _owner_key(task_id: str) -> str:
    return f"workbench:task:{task_id}:project"


def _client():
    from workbench.celery import app

    return app.backend.client


def task_recorded(*, project_id: int, name: str, task_id: str) -> None:
    """Remember that `task_id` (task `name`) works on the project; never fails the caller."""
    entry = json.dumps({"id": task_id, "name": name, "sent": time.time()})
    try:
        pipe = _client().pipeline()
        pipe.set(_owner_key(task_id), json.dumps({"project_id": int(project_id), "name": name}),
                 ex=settings.CELERY_RESULT_EXPIRES)
        if name not in NOT_SHOWN:
            pipe.lpush(_key(project_id), entry)
            pipe.ltrim(_key(project_id), 0, KEEP - 1)
            pipe.expire(_key(project_id), settings.CELERY_RESULT_EXPIRES)
        pipe.execute()
    except Exception as exc:  # progress display is a nicety; the task itself was sent
        logger.warning("could not record task %s of project %s: %s", task_id, project_id, exc)


def task_owner(task_id: str) -> dict | None:
    """{"project_id", "name"} of a task sent for a project, from the database's import jobs or Redis; else None."""
    from annotate.models import ImportJob

    job = ImportJob.objects.filter(task_id=task_id).values_list("project_id", flat=True).first()
    if job is not None:
        return {"project_id": job, "name": "workbench.import_items"}
    raw = _client().get(_owner_key(task_id))
    return json.loads(raw) if raw else None


def task_project(task_id: str) -> int | None:
    """The id of the project task `task_id` works on, or None when it was sent for none (or is unknown)."""
    owner = task_owner(task_id)
    return None if owner is None else owner["project_id"]


def progress_of(state: str, info) -> dict:
    """{"stage", "done", "total", "percent"} from a task's progress meta (any of our tasks' shapes)."""
    info = info if isinstance(info, dict) else {}
    done = info.get("done", info.get("rows_read"))
    total = info.get("total", info.get("rows_total"))
    percent = None
    if isinstance(done, int) and isinstance(total, int) and total > 0:
        percent = round(min(100.0, 100.0 * done / total), 1)
    if state == "SUCCESS":
        percent = 100.0
    return {"stage": info.get("stage"), "done": done, "total": total, "percent": percent}


def project_tasks(project_id: int, limit: int = 8, *, errors: bool = False) -> list[dict]:
    """The project's latest tasks, newest first, each with its state and progress (JSON-able).

    `errors`: include a failed task's error text (for readers who may manage the project).
    """
    from workbench.celery import app

    try:
        raw = _client().lrange(_key(project_id), 0, KEEP - 1)
    except Exception as exc:
        logger.warning("could not read the task list of project %s: %s", project_id, exc)
        return []
    entries, seen = [], set()
    for line in raw:
        entry = json.loads(line)
        if entry["id"] not in seen:
            seen.add(entry["id"])
            entries.append(entry)
    entries = entries[:limit]
    backend = app.backend
    keys = [backend.get_key_for_task(e["id"]) for e in entries]
    metas = backend.client.mget(keys) if keys else []
    out = []
    for entry, meta in zip(entries, metas):
        meta = backend.decode_result(meta) if meta else {"status": "PENDING", "result": None}
        state, result = meta["status"], meta.get("result")
        row = {
            "id": entry["id"], "name": entry["name"], "title": TITLES.get(entry["name"], entry["name"]),
            "sent": entry["sent"], "state": state, "running": state in RUNNING,
            **progress_of(state, result if state == "PROGRESS" else None),
        }
        if state == "SUCCESS":
            row["summary"] = _summary(result)
        elif state == "FAILURE" and errors:
            row["error"] = str(result.get("exc_message", result) if isinstance(result, dict) else result)
        out.append(row)
    return out


def _summary(result) -> str:
    """One line saying what a finished task did."""
    if not isinstance(result, dict):
        return ""
    status = result.get("status", "")
    if "model_version" in result and status == "trained":
        return f"model v{result['model_version']} on {result.get('trained_on')} labels, {result.get('items_scored')} items scored"
    if status == "scored":
        return f"{result.get('items_scored')} items scored by model v{result.get('model_version')}"
    if "rows_imported" in result:
        return f"{result['rows_imported']} of {result.get('rows_read')} rows imported"
    if "annotations" in result and "path" in result:
        return f"{result['items']} items, {result['annotations']} annotations written"
    if status in {"cold_start", "featurised"}:
        return f"{result.get('featurised', 0)} items featurised"
    return str(result.get("reason") or status)
