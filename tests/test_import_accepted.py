"""An accepted import is a queued ImportJob: sent again when the broker lost it, its upload deleted when nothing
will read it (annotate.services.uploads.imports_reconcile), with a real worker and a real Redis."""
from __future__ import annotations

import json
import os
import time
import uuid
from datetime import timedelta

import pytest
from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone

from annotate.models import ImportJob, Item
from annotate.services.uploads import imports_reconcile, upload_import_enqueue
from tests.conftest import wait_for
from tests.factories import make_project

pytestmark = pytest.mark.django_db(transaction=True)

ROWS = "".join(json.dumps({"id": f"r{k}", "text": f"row {k}"}) + "\n" for k in range(30))


def stored(task_id: str, body: str = ROWS, age_s: float = 0.0):
    settings.UPLOAD_DIR.mkdir(parents=True, exist_ok=True)
    path = settings.UPLOAD_DIR / f"{task_id}-rows.jsonl"
    path.write_text(body)
    if age_s:
        then = time.time() - age_s
        os.utime(path, (then, then))
    return path


def queued_job(project, task_id: str, path, age_s: float) -> ImportJob:
    """The row an accepted upload leaves (upload_import_enqueue), `age_s` old, its message nowhere."""
    job = ImportJob.objects.create(project=project, source_name="rows.jsonl", file_format="jsonl", task_id=task_id,
                                   status="queued", options={"skip_bad_rows": False, "skip_existing": False,
                                                             "path": str(path)})
    ImportJob.objects.filter(pk=job.pk).update(created_at=timezone.now() - timedelta(seconds=age_s))
    return job


def test_an_accepted_upload_is_one_job_from_queued_to_succeeded(celery_worker, owner):
    project = make_project(owner)
    upload = SimpleUploadedFile("rows.jsonl", ROWS.encode())

    task_id = upload_import_enqueue(project=project, upload=upload, file_format="jsonl", skip_bad_rows=False,
                                    skip_existing=False, user=owner)

    job = ImportJob.objects.get(task_id=task_id)  # recorded before the 202, whatever the worker does next
    assert job.created_by == owner and job.options["path"].startswith(str(settings.UPLOAD_DIR))
    wait_for(lambda: ImportJob.objects.get(pk=job.pk).status == "succeeded", timeout=120,
             message="the worker to import the upload")
    assert ImportJob.objects.filter(task_id=task_id).count() == 1, "the queued job became the running job"
    assert Item.objects.filter(project=project).count() == 30


def test_an_accepted_import_whose_message_the_broker_lost_is_sent_again_and_runs(celery_worker, owner, client):
    project = make_project(owner)
    task_id = str(uuid.uuid4())
    path = stored(task_id, age_s=200)
    job = queued_job(project, task_id, path, age_s=200)  # as after a Redis crash: no message anywhere
    client.force_login(owner)
    page = client.get(f"/projects/{project.pk}/import/{task_id}/").content.decode()
    assert "Status: <strong>queued</strong>" in page and 'http-equiv="refresh"' in page

    report = imports_reconcile()

    assert report["imports_sent"] == [job.pk]
    wait_for(lambda: ImportJob.objects.get(pk=job.pk).status == "succeeded", timeout=120,
             message="the import sent again to run")
    assert Item.objects.filter(project=project).count() == 30
    assert not path.exists(), "its upload is deleted once the import ended"
    assert imports_reconcile() == {"imports_sent": [], "imports_failed": [], "uploads_removed": []}


def test_a_recent_queued_import_is_left_to_its_own_message(owner):
    project = make_project(owner)
    task_id = str(uuid.uuid4())
    job = queued_job(project, task_id, stored(task_id), age_s=1)

    assert imports_reconcile()["imports_sent"] == []
    assert ImportJob.objects.get(pk=job.pk).status == "queued"


def test_a_queued_import_whose_upload_is_gone_ends_failed_saying_so(owner):
    project = make_project(owner)
    task_id = str(uuid.uuid4())
    job = queued_job(project, task_id, settings.UPLOAD_DIR / f"{task_id}-gone.jsonl", age_s=200)

    report = imports_reconcile()

    job.refresh_from_db()
    assert report["imports_failed"] == [job.pk] and job.status == "failed" and job.finished_at is not None
    assert job.errors == ["the uploaded file of this import is gone; nothing was imported; upload the file again"]


def test_uploads_that_no_import_will_read_are_deleted_and_the_others_kept(owner):
    project = make_project(owner)
    orphan = stored(str(uuid.uuid4()), age_s=200)  # its import's message and job are gone
    fresh = stored(str(uuid.uuid4()))  # just written: its job may not be committed yet
    running_id = str(uuid.uuid4())
    running = stored(running_id, age_s=200)
    ImportJob.objects.create(project=project, source_name="r", file_format="jsonl", task_id=running_id)
    foreign = settings.UPLOAD_DIR / "notes.txt"  # not named by a task id: never ours to delete
    foreign.write_text("x")
    os.utime(foreign, (time.time() - 200, time.time() - 200))

    report = imports_reconcile()

    assert report["uploads_removed"] == [orphan.name]
    assert not orphan.exists() and fresh.exists() and running.exists() and foreign.exists()
    for path in (fresh, running, foreign):
        path.unlink()
