"""Shared fixtures: a real Redis (embedded unless REDIS_URL is set) and a real Celery worker.

The worker is a separate process started with the test settings and pointed at
the test database, so tests that use it must commit their data
(`transactional_db`).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis
from django.conf import settings

# Browser fixtures (`browser`, `new_page`) for every test module.
pytest_plugins = ["tests.browser"]

from tests.factories import add_annotator, add_items, make_project, make_user
from workbench.embedded_redis import EmbeddedRedis

ROOT = Path(__file__).resolve().parent.parent


def pytest_addoption(parser):
    parser.addoption("--run-slow", action="store_true", help="also run tests marked slow")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--run-slow"):
        return
    skip = pytest.mark.skip(reason="slow end-to-end test: run with --run-slow (make test-all, CI)")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


# --- personas: who asks (tests/test_access.py holds the full table of what each may do) ------------

@pytest.fixture
def owner():
    return make_user("owner")


@pytest.fixture
def project(owner):
    """A text project of `owner` with two labels and four items, best first."""
    project = make_project(owner, labels=("cat", "dog"), retrain_every=1000)
    add_items(project, ["purr", "bark", "meow", "woof"], priorities=[0.9, 0.8, 0.7, 0.1])
    return project


@pytest.fixture
def teammate(project):
    """An annotator (not an owner) of `project`."""
    return add_annotator(project, make_user("teammate"))


@pytest.fixture
def outsider():
    """Signed in, member of nothing: must learn nothing, not even that a project exists."""
    return make_user("outsider")


@pytest.fixture
def staff():
    """Staff (not a superuser, member of nothing): views and manages every project, annotates none."""
    user = make_user("staff")
    user.is_staff = True
    user.save(update_fields=["is_staff"])
    return user


@pytest.fixture
def anonymous():
    from django.contrib.auth.models import AnonymousUser

    return AnonymousUser()


def redis_client() -> redis.Redis:
    return redis.Redis.from_url(settings.REDIS_URL)


@pytest.fixture(scope="session", autouse=True)
def redis_server():
    """The suite's Redis: emptied first, so no task from an earlier run is delivered."""
    server = None
    if settings.EMBEDDED_REDIS:
        server = EmbeddedRedis(settings.EMBEDDED_REDIS_SOCKET)
        server.start()
    client = redis_client()
    client.ping()
    client.flushdb()
    yield client
    # A Celery result a test dropped unsubscribes from its channel when it is garbage-collected, and
    # retries for ever when that fails (seen at the session's end, with or without Redis answering),
    # so the session never ended. Nothing reads them any more: they are collected without unsubscribing.
    from celery.result import AsyncResult

    AsyncResult.__del__ = lambda self: None
    if server is not None:
        server.stop()


@pytest.fixture(scope="session", autouse=True)
def remove_run_data_dir():
    """Delete this run's data dir at the end (see workbench.settings_test)."""
    yield
    if settings.DATA_DIR.name == f"run-{os.getpid()}":
        shutil.rmtree(settings.DATA_DIR, ignore_errors=True)


def database_url_for_workers() -> str:
    """A DATABASE_URL naming the database the tests run on (the test database)."""
    from django.db import connection

    params = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{params['NAME']}"
    auth = params["USER"] or ""
    if params.get("PASSWORD"):
        auth += f":{params['PASSWORD']}"
    return f"postgres://{auth}@{params['HOST'] or '127.0.0.1'}:{params['PORT'] or 5432}/{params['NAME']}"


def worker_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE="workbench.settings_test",
        DATABASE_URL=database_url_for_workers(),
        REDIS_URL=settings.REDIS_URL,
        WORKBENCH_DATA_DIR=str(settings.DATA_DIR),
        PYTHONPATH=str(ROOT),
    )
    env.update(extra)
    return env


class WorkerProcess:
    """A `celery worker` process; `env` overrides its environment (a federated site's own DATABASE_URL)."""

    def __init__(self, queues: str = "celery,long", name: str = "test-worker", env: dict[str, str] | None = None,
                 argv: list[str] | None = None) -> None:
        log = settings.DATA_DIR / f"{name}.log"
        self.log_path = log
        self.process = subprocess.Popen(
            argv or [sys.executable, "-m", "celery", "-A", "workbench", "worker", "--pool", "solo",
                     "--loglevel", "INFO", "--queues", queues, "--hostname", f"{name}@%h", "--without-gossip",
                     "--without-mingle", "--without-heartbeat"],
            cwd=ROOT, env=worker_env(**(env or {})), stdout=log.open("w"), stderr=subprocess.STDOUT,
        )
        self._wait_ready()

    def _wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"celery worker exited early:\n{self.log_path.read_text()[-3000:]}")
            if "ready." in self.log_path.read_text():
                return
            time.sleep(0.2)
        raise RuntimeError(f"celery worker not ready in {timeout}s:\n{self.log_path.read_text()[-3000:]}")

    def log(self) -> str:
        return self.log_path.read_text()

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@pytest.fixture(scope="session")
def celery_worker(django_db_setup, django_db_blocker, redis_server):
    """One real `celery worker` process for the session, consuming the default and the long queue."""
    with django_db_blocker.unblock():
        worker = WorkerProcess()
    yield worker
    worker.stop()


def wait_for(predicate, timeout: float = 60.0, interval: float = 0.1, message: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {message}")


@pytest.fixture(scope="module")
def one_torch_thread():
    """torch at one thread for a module of small fits, restored after it (a module opts in with usefixtures)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
