"""manage.py runworkbench: embedded Redis (unless REDIS_URL), two Celery workers and the web server, kept running.

One worker takes the default queue (retrains, re-scoring, featurising) and runs Celery
beat; the other takes the long queue (meta-training, federated runs, imports, exports).

A child that exits without being asked to is started again, with a line on stderr
naming how it ended: the embedded Redis first (its append-only file brings the
queued tasks back), then the worker or gunicorn. A child that keeps dying (more
than RESTARTS times within RESTART_WINDOW_S) stops the whole workbench with a
message saying so, rather than restarting for ever.

Ctrl-C, SIGTERM or SIGHUP stops everything: the worker and gunicorn first, Redis
last. The worker gets SIGTERM (Celery's warm shutdown: it finishes its current
task), SIGQUIT after WORKER_FINISH_S (cold shutdown: the unfinished task goes back
to the queue, as tasks are acknowledged late), and SIGKILL after that.
"""
from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
import time
from collections import deque
from typing import Callable

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from workbench.embedded_redis import EmbeddedRedis, EmbeddedRedisError

RESTARTS = 5
RESTART_WINDOW_S = 600.0
POLL_S = 0.5
WORKER_FINISH_S = 20.0  # warm shutdown: time for the current task to finish
WORKER_RETURN_S = 10.0  # cold shutdown: time to hand the unfinished task back to the broker
WEB_STOP_S = 20.0
WEB_GRACEFUL_S = 15  # gunicorn's own wait for requests in flight, inside WEB_STOP_S
# Other code finds the jobs a dead worker left running by this name, so it is the same after a restart.
WORKER_NODE_NAME = "workbench@%h"
LONG_WORKER_NODE_NAME = "workbench-long@%h"


class RestartPolicy:
    """At most `max_restarts` restarts within any `window_s` seconds."""

    def __init__(self, max_restarts: int = RESTARTS, window_s: float = RESTART_WINDOW_S) -> None:
        self.max_restarts = max_restarts
        self.window_s = window_s
        self._restarts: deque[float] = deque()

    def allow(self, now: float) -> bool:
        """Record a restart at `now` (time.monotonic) and return True, or return False when over the limit."""
        while self._restarts and now - self._restarts[0] >= self.window_s:
            self._restarts.popleft()
        if len(self._restarts) >= self.max_restarts:
            return False
        self._restarts.append(now)
        return True

    @property
    def used(self) -> int:
        return len(self._restarts)

    def __str__(self) -> str:
        return f"at most {self.max_restarts} restarts within {self.window_s / 60:g} minutes"


def exit_description(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"was killed by signal {signal.Signals(-returncode).name}"
        except ValueError:
            return f"was killed by signal {-returncode}"
    return f"exited with code {returncode}"


def own_group_ending_with(parent_pid: int) -> None:
    """In a child before exec: a process group of its own, and SIGTERM when this command dies.

    Its own group, so a Ctrl-C in the terminal reaches only this command, which stops the
    children in order (Redis last) and can kill a group's leftovers (a worker's pool process).
    SIGTERM at our death (Linux), so even a SIGKILLed run command leaves no children behind.
    """
    os.setsid()
    if sys.platform == "linux":
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent_pid:  # the parent died before prctl took effect
            os._exit(1)


class Supervised:
    """A child process of the run command: its command line, restart policy, `start`, `poll` and stop.

    `stop_signals` are sent one after the other, each followed by its grace time in
    seconds, until the process has exited; SIGKILL comes after the last.
    """

    def __init__(self, name: str, command: list[str], *, stop_signals: list[tuple[signal.Signals, float]],
                 policy: RestartPolicy | None = None) -> None:
        self.name = name
        self.command = command
        self.stop_signals = stop_signals
        self.policy = policy or RestartPolicy()
        self.process: subprocess.Popen[bytes] | None = None
        self._stop_sent_at = 0.0

    def start(self) -> None:
        self.process = subprocess.Popen(self.command, preexec_fn=functools.partial(own_group_ending_with, os.getpid()))

    def poll(self) -> int | None:
        """The exit status once the process has ended (its leftover processes killed), else None."""
        if self.process is None:
            return None
        returncode = self.process.poll()
        if returncode is not None:
            self._kill_group()
        return returncode

    def send_stop(self) -> None:
        """Send the first stop signal; `wait_stopped` finishes the stop."""
        self._stop_sent_at = time.monotonic()
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(self.stop_signals[0][0])

    def wait_stopped(self) -> None:
        """Wait for the exit, sending the next stop signal whenever one's grace time (counted from send_stop) ends."""
        if self.process is None:
            return
        deadline = self._stop_sent_at
        for index, (_, grace) in enumerate(self.stop_signals):
            deadline += grace
            try:
                self.process.wait(timeout=max(0.0, deadline - time.monotonic()))
                break
            except subprocess.TimeoutExpired:
                later = self.stop_signals[index + 1][0] if index + 1 < len(self.stop_signals) else signal.SIGKILL
                sys.stderr.write(f"{self.name} still running after {grace:g}s; sending {later.name}\n")
                self.process.send_signal(later)
        else:
            self.process.wait()
        self._kill_group()

    def _kill_group(self) -> None:
        assert self.process is not None
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):  # nothing left in the group
            pass


class SupervisedRedis(Supervised):
    """The embedded redis-server: started through EmbeddedRedis, which waits until it answers."""

    def __init__(self, server: EmbeddedRedis) -> None:
        super().__init__("embedded redis", [], stop_signals=[(signal.SIGTERM, 10.0)])
        self.server = server
        self.owned = False

    def start(self) -> None:
        self.owned = self.server.start(preexec_fn=functools.partial(own_group_ending_with, os.getpid()))
        self.process = self.server.process

    def wait_stopped(self) -> None:
        super().wait_stopped()
        if self.owned:
            self.server.socket_path.unlink(missing_ok=True)
        self.server.process = None


class Command(BaseCommand):
    help = "Run the workbench: embedded Redis when REDIS_URL is unset, two Celery workers (default and long queue) and gunicorn, restarted if they die."

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
        parser.add_argument("--web-workers", type=int, default=2)

    def handle(self, *args, **options):
        stopping = False

        def stop(signum, frame):
            nonlocal stopping
            stopping = True

        # Installed first: a signal while Redis starts still stops everything that was started.
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, stop)

        bin_dir = os.path.dirname(sys.executable)
        redis_child = SupervisedRedis(EmbeddedRedis(settings.EMBEDDED_REDIS_SOCKET)) if settings.EMBEDDED_REDIS else None
        worker_stop = [(signal.SIGTERM, WORKER_FINISH_S), (signal.SIGQUIT, WORKER_RETURN_S)]
        # Retrains, re-scoring and featurising, with Celery beat inside (-B: the periodic
        # workbench.reconcile); long work on a worker of its own, so it never holds them up.
        worker = Supervised("celery worker", [
            os.path.join(bin_dir, "celery"), "-A", "workbench", "worker", "-B",
            "--loglevel", "INFO", "--concurrency", "1", "--hostname", WORKER_NODE_NAME,
            "--queues", settings.CELERY_TASK_DEFAULT_QUEUE,
        ], stop_signals=worker_stop)
        long_worker = Supervised("celery worker for long work", [
            os.path.join(bin_dir, "celery"), "-A", "workbench", "worker",
            "--loglevel", "INFO", "--concurrency", "1", "--hostname", LONG_WORKER_NODE_NAME,
            "--queues", settings.LONG_QUEUE,
        ], stop_signals=worker_stop)
        web = Supervised("gunicorn", [
            os.path.join(bin_dir, "gunicorn"), "workbench.wsgi",
            "--bind", f"{options['host']}:{options['port']}",
            "--workers", str(options["web_workers"]), "--threads", "4",
            "--worker-class", "gthread", "--access-logfile", "-", "--graceful-timeout", str(WEB_GRACEFUL_S),
        ], stop_signals=[(signal.SIGTERM, WEB_STOP_S)])
        # Redis first: the others need it, at start and after it was restarted.
        children = [child for child in (redis_child, worker, long_worker, web) if child is not None]
        failure = None
        try:
            for child in children:
                if stopping:
                    break
                child.start()
                if child is redis_child:
                    self._say_redis(redis_child)
            if not stopping:
                url = f"http://{options['host']}:{options['port']}/"
                self.stdout.write(self.style.SUCCESS(f"workbench running at {url}  (Ctrl-C stops it)"))
                self.stdout.flush()
            while not stopping and failure is None:
                failure = self._restart_exited(children, lambda: stopping)
                time.sleep(POLL_S)
        except EmbeddedRedisError as exc:
            failure = f"the embedded redis could not be started: {exc}"
        finally:
            self._stop(children)
        if failure:
            raise CommandError(f"{failure}; the workbench stopped")
        self.stdout.write("workbench stopped")

    def _restart_exited(self, children: list[Supervised], stopping: Callable[[], bool]) -> str | None:
        """Start again each child that has exited, in order; the reason to give up, or None."""
        for child in children:
            returncode = child.poll()
            if returncode is None or stopping():
                continue
            how = f"{child.name} (pid {child.process.pid}) {exit_description(returncode)}"
            if not child.policy.allow(time.monotonic()):
                return f"{how}, and it was already restarted {child.policy.used} times ({child.policy})"
            self.stderr.write(f"{how}; restarting it (restart {child.policy.used}; {child.policy})")
            child.start()
            if isinstance(child, SupervisedRedis):
                self._say_redis(child)
        return None

    def _say_redis(self, child: SupervisedRedis) -> None:
        socket_path = child.server.socket_path
        if child.owned:
            self.stdout.write(f"embedded redis on {socket_path} (pid {child.process.pid}), data in {child.server.aof_path}")
        else:  # not ours, so not restarted or stopped by us either
            self.stdout.write(f"using the redis already answering on {socket_path}")

    def _stop(self, children: list[Supervised]) -> None:
        others = [child for child in children if not isinstance(child, SupervisedRedis)]
        for child in others:  # together: their grace times run at once
            child.send_stop()
        for child in others:
            child.wait_stopped()
        # Last, so the worker could still hand its task back; SIGTERM makes it write the AOF out.
        for child in children:
            if isinstance(child, SupervisedRedis) and child.owned:
                child.send_stop()
                child.wait_stopped()
