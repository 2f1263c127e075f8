"""The embedded Redis keeps the broker's data across restarts: its append-only file, fsynced every second."""
from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path

import pytest
import redis
from celery import Celery

from workbench.embedded_redis import EmbeddedRedis


@pytest.fixture
def socket_path():
    """A socket in a fresh short folder (AF_UNIX paths stop at ~100 characters; pytest's tmp_path can be longer)."""
    folder = Path(tempfile.mkdtemp(prefix="wb-redis-", dir="/tmp"))
    yield folder / "redis.sock"
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def servers():
    """Started EmbeddedRedis instances, stopped at the end whatever the test did."""
    started: list[EmbeddedRedis] = []

    def start(socket_path: Path) -> EmbeddedRedis:
        server = EmbeddedRedis(socket_path)
        assert server.start(), "a server was already answering on the test's fresh socket"
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def client(server: EmbeddedRedis) -> redis.Redis:
    return redis.Redis(unix_socket_path=str(server.socket_path))


def send_by_name(server: EmbeddedRedis, name: str, **kwargs) -> str:
    """Send a task as any client does (by name, to the broker only): the message a worker would read."""
    sender = Celery("test-sender", broker=f"redis+socket://{server.socket_path}", set_as_current=False)
    try:
        return sender.send_task(name, kwargs=kwargs).id
    finally:
        sender.close()


def queued_tasks(server: EmbeddedRedis, queue: str = "celery") -> list[tuple[str, str]]:
    """(task name, id) of the messages waiting in a Celery queue, oldest first."""
    messages = [json.loads(raw) for raw in client(server).lrange(queue, 0, -1)]
    return [(m["headers"]["task"], m["headers"]["id"]) for m in reversed(messages)]


def kill(server: EmbeddedRedis) -> None:
    assert server.process is not None
    server.process.kill()
    server.process.wait()
    server.process = None


def test_embedded_redis_keeps_a_queued_task_after_sigterm(socket_path, servers):
    server = servers(socket_path)
    client(server).rpush("plain-list", "first", "second")
    task_id = send_by_name(server, "workbench.queue_status", project_id=7)

    server.stop()  # SIGTERM
    restarted = servers(socket_path)

    assert client(restarted).lrange("plain-list", 0, -1) == [b"first", b"second"]
    assert queued_tasks(restarted) == [("workbench.queue_status", task_id)]
    assert restarted.aof_path.parent == socket_path.parent


def test_embedded_redis_keeps_what_was_written_a_second_before_sigkill(socket_path, servers):
    server = servers(socket_path)
    client(server).rpush("plain-list", "early")
    task_id = send_by_name(server, "workbench.queue_status", project_id=7)
    time.sleep(1.6)  # appendfsync everysec: on disk by now
    client(server).rpush("plain-list", "late")

    kill(server)
    restarted = servers(socket_path)

    assert client(restarted).lrange("plain-list", 0, 0) == [b"early"]
    assert queued_tasks(restarted) == [("workbench.queue_status", task_id)]


def test_embedded_redis_starts_on_an_aof_cut_off_mid_command(socket_path, servers):
    server = servers(socket_path)
    client(server).rpush("plain-list", "kept")
    client(server).rpush("plain-list", "cut off")
    server.stop()
    aof = server.aof_path
    aof.write_bytes(aof.read_bytes()[:-5])  # as a kill during the write of the last command leaves it

    restarted = servers(socket_path)

    assert client(restarted).lrange("plain-list", 0, -1) == [b"kept"]
