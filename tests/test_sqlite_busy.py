"""A writer stuck in its transaction makes other writers fail fast instead of hanging.

(workbench.sqlite_backend's lock timeout, workbench.busy's 503.) Another
process plays the stuck writer as a paused worker would: it holds the
exclusive flock on `<db>.writers` and an open BEGIN IMMEDIATE on the database,
and when released commits, then unlocks, as the backend does.
"""
from __future__ import annotations

import statistics
import subprocess
import sys
import threading
import time
from functools import partial

import pytest
from django.db import connection, transaction
from django.test import Client, override_settings
from django.urls import reverse
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from annotate.models import Annotation, Label
from annotate.services.queue import queue_next_item
from workbench.sqlite_backend.base import DatabaseBusy

pytestmark = pytest.mark.django_db(transaction=True)

TIMEOUT_S = 0.5
# Time to spare past the timeout: the last poll step, the request's own work, a loaded CI machine.
MARGIN_S = 0.5

# It lets go by itself after HOLD_AT_MOST_S, so a writer that waits without a timeout fails the timing asserts
# instead of hanging the suite.
HOLD_AT_MOST_S = 5
HOLDER = r"""
import fcntl, os, select, sqlite3, sys, time
fd = os.open(sys.argv[1] + ".writers", os.O_CREAT | os.O_RDWR, 0o600)
fcntl.flock(fd, fcntl.LOCK_EX)
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("BEGIN IMMEDIATE")
print("held", flush=True)
select.select([sys.stdin], [], [], float(sys.argv[2]))
db.execute("COMMIT")
released_at = time.monotonic()
fcntl.flock(fd, fcntl.LOCK_UN)
print(released_at, flush=True)
"""


class StuckWriter:
    """A process holding the SQLite write lock until `release()`."""

    def __init__(self, database: str) -> None:
        self.process = subprocess.Popen([sys.executable, "-c", HOLDER, database, str(HOLD_AT_MOST_S)],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.process.stdout.readline().strip() == "held", "the holder process did not take the lock"

    def release(self) -> float:
        """Let it commit and unlock; returns its time.monotonic() just before the unlock (one clock for all processes)."""
        self.process.stdin.write("release\n")
        self.process.stdin.flush()
        released_at = float(self.process.stdout.readline())
        self.process.wait(HOLD_AT_MOST_S)
        return released_at

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def hold_writer_lock():
    """Starts a StuckWriter on the test database when called (after the test's own writes); stopped at the end."""
    if connection.vendor != "sqlite":
        pytest.skip("the writer lock and its timeout are part of the SQLite backend only")
    if connection.is_in_memory_db():
        pytest.skip("the writer lock is taken only on a file-backed SQLite database")
    writers: list[StuckWriter] = []

    def hold() -> StuckWriter:
        writers.append(StuckWriter(connection.settings_dict["NAME"]))
        return writers[-1]

    yield hold
    for writer in writers:
        writer.stop()


@pytest.fixture
def served(project, teammate):
    """An item leased to `teammate` (a write, so done before the lock is held)."""
    return queue_next_item(project=project, annotator=teammate).item


def timed(call):
    started = time.monotonic()
    result = call()
    return result, time.monotonic() - started


@override_settings(SQLITE_LOCK_TIMEOUT=TIMEOUT_S)
def test_a_write_raises_database_busy_after_the_timeout_and_leaves_nothing_open(project, hold_writer_lock):
    labels_before = Label.objects.count()
    stuck_writer = hold_writer_lock()
    started = time.monotonic()
    with pytest.raises(DatabaseBusy, match=r"the database is busy \(another writer has held it for more than "
                                           r"0\.5 s\); try again"):
        with transaction.atomic():
            Label.objects.create(project=project, name="blocked", position=5)
    waited = time.monotonic() - started

    assert TIMEOUT_S <= waited < TIMEOUT_S + MARGIN_S
    assert not connection.in_atomic_block and connection.get_autocommit(), "a transaction was left half-open"
    stuck_writer.release()
    with transaction.atomic():
        Label.objects.create(project=project, name="after", position=6)
    assert list(Label.objects.filter(project=project, position__gte=5).values_list("name", flat=True)) == ["after"]
    assert Label.objects.count() == labels_before + 1


@override_settings(SQLITE_LOCK_TIMEOUT=TIMEOUT_S)
def test_labelling_through_the_api_answers_503_with_retry_after_when_busy(served, teammate, hold_writer_lock):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.get_or_create(user=teammate)[0].key}")
    url = f"/api/v1/projects/{served.project_id}/annotations/"
    stuck_writer = hold_writer_lock()

    response, waited = timed(lambda: client.post(url, {"item": served.pk, "label": "cat"}, format="json"))

    assert response.status_code == 503
    assert response["Retry-After"] == "5"
    assert response.json() == {"detail": "the database is busy, try again"}
    assert TIMEOUT_S <= waited < TIMEOUT_S + MARGIN_S
    stuck_writer.release()
    assert not Annotation.objects.filter(item=served).exists()
    assert client.post(url, {"item": served.pk, "label": "cat"}, format="json").status_code == 201


@override_settings(SQLITE_LOCK_TIMEOUT=TIMEOUT_S)
def test_labelling_through_the_annotate_page_answers_503_with_retry_after_when_busy(served, teammate,
                                                                                    hold_writer_lock):
    client = Client()
    client.force_login(teammate)
    url = reverse("annotate-submit", kwargs={"pk": served.project_id})
    hold_writer_lock()

    response, waited = timed(lambda: client.post(url, {"item": served.pk, "label": "cat"}))

    assert response.status_code == 503
    assert response["Retry-After"] == "5"
    assert response["Content-Type"].startswith("text/plain")
    assert response.content.decode() == "The database is busy, try again in a moment.\n"
    assert TIMEOUT_S <= waited < TIMEOUT_S + MARGIN_S
    assert not Annotation.objects.filter(item=served).exists()


def latency_after_release(stuck_writer: StuckWriter, held_for: float, write) -> float:
    """Seconds from the holder's unlock (released `held_for` s from now) to `write` running inside its transaction."""
    released_at: list[float] = []
    releaser = threading.Timer(held_for, lambda: released_at.append(stuck_writer.release()))
    releaser.start()
    with transaction.atomic():
        got_in_at = time.monotonic()
        write()
    releaser.join(HOLD_AT_MOST_S)
    return got_in_at - released_at[0]


def test_a_waiting_writer_gets_in_within_a_few_milliseconds_of_the_commit(project, hold_writer_lock):
    """The point of the lock: the next writer starts right after the holder commits, not at SQLite's 100 ms steps.

    Released after waits of different lengths, so a coarse poll step cannot pass by landing on the release.
    """
    latencies = [
        latency_after_release(hold_writer_lock(), held_for,
                              partial(Label.objects.create, project=project, name=f"next {round_}", position=5 + round_))
        for round_, held_for in enumerate((0.13, 0.17, 0.21, 0.26, 0.3))
    ]

    in_ms = ", ".join(f"{latency * 1000:.1f}" for latency in latencies)
    assert min(latencies) >= 0, f"a waiter got in before the holder let go: {in_ms} ms"
    assert max(latencies) < 0.05 and statistics.median(latencies) < 0.02, f"waiters got in {in_ms} ms after the unlock"
