"""Wall, own-CPU and database-backend-CPU seconds of named steps of a call (no Django)."""
from __future__ import annotations

import functools
import os
import resource
import time
from pathlib import Path


def peak_rss_kib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _cpu_of(pid: int | None) -> float:
    """CPU seconds (user + system) of another local process, e.g. the PostgreSQL backend; 0 if unknown."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


class PhaseClock:
    """Wall, own-CPU and database-backend-CPU seconds of named steps, summed per name."""

    def __init__(self, database_pid: int | None) -> None:
        self.database_pid = database_pid
        self.phases: dict[str, dict] = {}
        self.marks: dict[str, float] = {}

    def now(self) -> tuple[float, float, float]:
        return time.perf_counter(), time.process_time(), _cpu_of(self.database_pid)

    def add(self, name: str, since: tuple[float, float, float]) -> None:
        wall, cpu, db_cpu = self.now()
        phase = self.phases.setdefault(name, {"wall_s": 0.0, "cpu_s": 0.0, "db_cpu_s": 0.0, "calls": 0})
        phase["wall_s"] += wall - since[0]
        phase["cpu_s"] += cpu - since[1]
        phase["db_cpu_s"] += db_cpu - since[2]
        phase["calls"] += 1
        phase["peak_rss_kib_after"] = peak_rss_kib()
        self.marks[name] = wall

    def timed(self, name: str, function):
        @functools.wraps(function)
        def wrapper(*args, **kwargs):
            since = self.now()
            try:
                return function(*args, **kwargs)
            finally:
                self.add(name, since)
        return wrapper

    def timed_iter(self, name: str, function):
        """Time only the generator's own work (fetching and decoding a chunk), not its consumer's."""
        @functools.wraps(function)
        def wrapper(*args, **kwargs):
            iterator = function(*args, **kwargs)
            while True:
                since = self.now()
                try:
                    value = next(iterator)
                except StopIteration:
                    self.add(name, since)
                    return
                self.add(name, since)
                yield value
        return wrapper
