"""Importing an uploaded file in the background: store it under a name the server picks, queue the import.

The upload page and the REST API both come through here, so a client never
names a server-side path and the worker only ever sees paths under UPLOAD_DIR.
"""
from __future__ import annotations

import re
import uuid
from pathlib import Path

from django.conf import settings
from kombu.exceptions import OperationalError

from annotate.models import Project
from workbench.celery import enqueue


def upload_import_enqueue(*, project: Project, upload, file_format: str, skip_bad_rows: bool,
                          skip_existing: bool) -> str:
    """Store `upload` (a Django UploadedFile) and send `workbench.import_items` for it; the task id.

    Raises kombu's OperationalError when the broker cannot be reached; the stored file is removed then.
    """
    task_id = str(uuid.uuid4())
    # The client's file name only decorates ours (for the job list), stripped to safe characters.
    shown = re.sub(r"[^A-Za-z0-9._-]", "_", Path(upload.name).name)[-80:]
    settings.UPLOAD_DIR.mkdir(parents=True, exist_ok=True)
    path = settings.UPLOAD_DIR / f"{task_id}-{shown}"
    with path.open("wb") as out:
        for chunk in upload.chunks():
            out.write(chunk)
    try:
        enqueue("workbench.import_items", task_id=task_id, project_id=project.pk, path=str(path),
                format=file_format, skip_bad_rows=skip_bad_rows, skip_existing=skip_existing)
    except OperationalError:
        path.unlink(missing_ok=True)
        raise
    return task_id
