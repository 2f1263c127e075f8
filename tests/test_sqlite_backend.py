"""The embedded SQLite backend queues writers on a file lock (workbench.sqlite_backend).

These pin the semantics (one writer at a time, a rollback releases the lock);
the point of the lock, waiters woken at once instead of polling, is a latency
matter measured by bench/queue, not here.
"""
import threading

import pytest
from django.db import connection, connections, transaction

from annotate.models import Label
from tests.factories import make_project

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def sqlite_only():
    if connection.vendor != "sqlite":
        pytest.skip("the writer lock is part of the SQLite backend only")


def test_a_second_writer_waits_for_the_first_to_commit():
    project = make_project()
    first_inside, release_first, second_inside = threading.Event(), threading.Event(), threading.Event()
    order: list[str] = []

    def first():
        with transaction.atomic():
            Label.objects.create(project=project, name="first", position=5)
            first_inside.set()
            release_first.wait(10)
            order.append("first commits")
        connections.close_all()

    def second():
        first_inside.wait(10)
        with transaction.atomic():
            second_inside.set()
            order.append("second starts")
            Label.objects.create(project=project, name="second", position=6)
        connections.close_all()

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    assert first_inside.wait(10)
    assert not second_inside.wait(0.5), "the second writer got in while the first held the lock"
    release_first.set()
    for thread in threads:
        thread.join(10)

    assert order == ["first commits", "second starts"]
    assert set(Label.objects.filter(project=project).values_list("name", flat=True)) >= {"first", "second"}


def test_the_lock_is_released_after_a_rollback():
    project = make_project()
    with pytest.raises(RuntimeError):
        with transaction.atomic():
            Label.objects.create(project=project, name="gone", position=5)
            raise RuntimeError("roll back")
    done = threading.Event()

    def writer():
        with transaction.atomic():
            Label.objects.create(project=project, name="after", position=6)
        connections.close_all()
        done.set()

    threading.Thread(target=writer).start()
    assert done.wait(10), "a writer after a rollback never got the lock"
    assert not Label.objects.filter(name="gone").exists()
