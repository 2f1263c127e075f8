"""Imports never stay "running", and uploads are not kept for ever: real workers, killed for real.

Each worker here consumes a queue of its own, so the suite's shared worker
(`celery_worker`, on the default queue) never takes these tasks.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from celery import Celery
from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from annotate.models import ImportJob, Item
from tests.conftest import ROOT, WorkerProcess, wait_for, worker_env
from tests.factories import make_project, make_user
from workbench.celery import task_state

pytestmark = pytest.mark.django_db(transaction=True)
BIG_ROWS = 400_000  # long enough to kill mid-import: seconds of work for a worker


@pytest.fixture
def owner():
    return make_user("owner")


@pytest.fixture
def sender():
    client = Celery(broker=settings.CELERY_BROKER_URL, backend=settings.CELERY_BROKER_URL)
    yield client
    client.close()


def stored_upload(task_id: str, rows: int) -> Path:
    """A JSONL file where the upload page stores one (UPLOAD_DIR/<task id>-<name>)."""
    settings.UPLOAD_DIR.mkdir(parents=True, exist_ok=True)
    path = settings.UPLOAD_DIR / f"{task_id}-big.jsonl"
    with path.open("w") as out:
        for i in range(rows):
            out.write(json.dumps({"id": f"r{i}", "text": f"item number {i}"}) + "\n")
    return path


def status_page(client, project, task_id: str) -> str:
    response = client.get(reverse("import-status", args=[project.pk, task_id]))
    assert response.status_code == 200
    return response.content.decode()


def send_import(sender, task_id: str, project, path: Path, queue: str) -> None:
    sender.send_task("workbench.import_items", task_id=task_id, queue=queue,
                     kwargs={"project_id": project.pk, "path": str(path)})


def kill_when_importing(process: subprocess.Popen, task_id: str) -> None:
    """SIGKILL `process` once the import reports progress (rows read, nothing committed)."""
    wait_for(lambda: task_state(task_id)[0] == "PROGRESS", timeout=120, interval=0.02,
             message="the worker to start importing")
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=30)


def test_an_upload_is_deleted_when_its_import_ends_succeeded_or_failed(client, celery_worker, owner, tmp_path):
    project = make_project(owner)
    client.force_login(owner)

    def upload(body: bytes) -> str:
        response = client.post(reverse("import-upload", args=[project.pk]),
                               {"file": SimpleUploadedFile("items.csv", body)})
        assert response.status_code == 302
        return response["Location"].rstrip("/").rsplit("/", 1)[-1]

    def stored(task_id: str) -> list[Path]:
        return list(settings.UPLOAD_DIR.glob(f"{task_id}-*"))

    good = upload(b"id,text\na,meow\n")
    wait_for(lambda: ImportJob.objects.filter(task_id=good, status="succeeded").exists(), timeout=60,
             message="the upload to be imported")
    wait_for(lambda: not stored(good), timeout=10, message="the imported upload to be deleted")

    bad = upload(b"id,text,label\nb,woof,cta\n")
    wait_for(lambda: task_state(bad)[0] == "FAILURE", timeout=60, message="the bad upload to fail")
    assert not stored(bad), "a rejected upload is not retried, so it is deleted too"
    assert ImportJob.objects.get(task_id=bad).status == "failed"

    own = tmp_path / "mine.csv"  # a client's own path, outside UPLOAD_DIR: never ours to delete
    own.write_text("id,text\nc,tweet\n")
    sender = Celery(broker=settings.CELERY_BROKER_URL, backend=settings.CELERY_BROKER_URL)
    try:
        sender.send_task("workbench.import_items", kwargs={"project_id": project.pk, "path": str(own)}).get(timeout=60)
    finally:
        sender.close()
    assert own.exists()
    assert Item.objects.filter(project=project).count() == 2


def test_a_solo_worker_killed_mid_import_leaves_its_job_failed_once_it_restarts(client, owner, sender):
    project = make_project(owner)
    client.force_login(owner)
    task_id = str(uuid.uuid4())
    path = stored_upload(task_id, BIG_ROWS)
    worker = WorkerProcess(queues="robust-solo", name="robust-solo", env={"IMPORT_BATCH_ROWS": "1000"})
    try:
        send_import(sender, task_id, project, path, "robust-solo")
        kill_when_importing(worker.process, task_id)
        assert ImportJob.objects.get(task_id=task_id).status == "running", "the import was killed before it ended"

        worker = WorkerProcess(queues="robust-solo", name="robust-solo")  # the same worker, restarted

        job = ImportJob.objects.get(task_id=task_id)
        assert job.status == "failed" and job.finished_at is not None
        assert "the worker running this import (robust-solo@" in job.errors[0]
        assert "stopped before it finished; nothing was imported by this run" in job.errors[0]
        page = status_page(client, project, task_id)
        assert "Status: <strong>failed</strong>" in page and "stopped before it finished" in page
        assert 'http-equiv="refresh"' not in page, "a finished job's page stops reloading"
        assert not Item.objects.filter(project=project).exists()
        assert path.exists(), "kept: the task's message is delivered again, and the retry reads the file"
    finally:
        worker.stop()
        path.unlink(missing_ok=True)


def test_a_prefork_child_killed_mid_import_is_delivered_again_and_imports_once(client, owner, sender):
    project = make_project(owner)
    client.force_login(owner)
    task_id = str(uuid.uuid4())
    rows = 50_000  # imported in full once: enough to kill it mid-way, few enough to clean up quickly
    path = stored_upload(task_id, rows)
    log = settings.DATA_DIR / "robust-prefork.log"
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "workbench", "worker", "--pool", "prefork", "--concurrency", "1",
         "--loglevel", "INFO", "--queues", "robust-prefork", "--hostname", "robust-prefork@%h",
         "--without-gossip", "--without-mingle", "--without-heartbeat"],
        cwd=ROOT, env=worker_env(IMPORT_BATCH_ROWS="1000"), stdout=log.open("w"), stderr=subprocess.STDOUT,
    )
    try:
        wait_for(lambda: "ready." in log.read_text() or worker.poll() is not None, timeout=60,
                 message="the prefork worker to start")
        assert worker.poll() is None, log.read_text()[-3000:]
        send_import(sender, task_id, project, path, "robust-prefork")
        wait_for(lambda: task_state(task_id)[0] == "PROGRESS", timeout=120, interval=0.02,
                 message="the pool process to start importing")
        children = Path(f"/proc/{worker.pid}/task/{worker.pid}/children").read_text().split()
        assert len(children) == 1, children
        os.kill(int(children[0]), signal.SIGKILL)  # the pool process, not the worker: it sees it die
        # CELERY_TASK_REJECT_ON_WORKER_LOST: the message goes back to the queue and runs again.
        wait_for(lambda: task_state(task_id)[0] in ("SUCCESS", "FAILURE"), timeout=180,
                 message="the import to be delivered again and finish")
        assert task_state(task_id)[0] == "SUCCESS", (task_state(task_id), log.read_text()[-3000:])

        page = status_page(client, project, task_id)

        jobs = list(ImportJob.objects.filter(task_id=task_id).order_by("pk"))
        assert [job.status for job in jobs] == ["failed", "succeeded"]
        assert jobs[0].errors[0].startswith("the worker running this import stopped before it finished")
        assert jobs[1].rows_imported == rows
        assert project.items.count() == rows, "the killed run wrote nothing, the second wrote every row once"
        assert "Status: <strong>succeeded</strong>" in page
        assert not path.exists(), "the upload is deleted once the import ended"
    finally:
        worker.terminate()
        try:
            worker.wait(timeout=20)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
        path.unlink(missing_ok=True)


def test_a_running_job_whose_task_the_result_store_does_not_know_is_shown_failed(client, owner):
    project = make_project(owner)
    client.force_login(owner)
    task_id = str(uuid.uuid4())
    ImportJob.objects.create(project=project, source_name="lost.csv", file_format="csv", task_id=task_id)

    page = status_page(client, project, task_id)

    job = ImportJob.objects.get(task_id=task_id)
    assert job.status == "failed"
    assert job.errors == ["the task queue no longer knows this import's task (its worker stopped); "
                          "nothing was imported; upload the file again"]
    assert "Status: <strong>failed</strong>" in page and "no longer knows" in page
    started = time.monotonic()
    assert "failed" in status_page(client, project, task_id) and time.monotonic() - started < 5
