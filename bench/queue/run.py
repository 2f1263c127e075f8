"""The queue benchmark: import, score and serve N items, then measure the annotation loop over HTTP.

    make bench-queue                         # the full matrix (about 30-40 minutes on 2 cores)
    .venv/bin/python bench/queue/run.py --items 5000 --backends sqlite --cycles 50

For every backend (embedded SQLite + embedded Redis; PostgreSQL + Redis) and
every N it builds a fresh database, imports an N-row CSV of BBC news
paragraphs through the real importer, trains the real model on ~200 seed
labels so every open item has a model score, serves the app with gunicorn as
`manage.py runworkbench` does, and runs

  phase 1: one annotator, `--cycles` x (POST next/, POST annotations/)
  phase 2: `--annotators` annotators at once, each its own user, token and process

It writes results.json (raw numbers) and RESULTS.md (tables, targets) next to
this file. See README.md for what is measured and how.
"""
from __future__ import annotations

import argparse
import datetime as dt
import fcntl
import json
import multiprocessing
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import client  # noqa: E402
import corpus  # noqa: E402
import report  # noqa: E402
from harness import (  # noqa: E402
    PG_DSN,
    log,
    machine_facts,
    postgres_recreate,
    run_child,
    sizes_and_backends,
    unwind_on_signals,
)

PYTHON = sys.executable
BIN = Path(sys.executable).parent
WORK = HERE / "work"
PG_DATABASE = "bench_queue"
PG_URL = f"postgres://postgres@127.0.0.1:5432/{PG_DATABASE}"
PG_REDIS_URL = "redis://127.0.0.1:6379/14"
SECRET = "bench-queue-not-a-secret"
assert PG_DATABASE not in ("test", "test_test", "postgres")



# --- processes --------------------------------------------------------------

def leg_env(backend: str, data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DEBUG", "DATABASE_URL", "REDIS_URL", "LOG_LEVEL")}
    env.update(SECRET_KEY=SECRET, DEBUG="0", WORKBENCH_DATA_DIR=str(data_dir),
               DJANGO_SETTINGS_MODULE="workbench.settings", PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
    if backend == "postgres":
        env.update(DATABASE_URL=PG_URL, REDIS_URL=PG_REDIS_URL)
    return env



def djside(step: str, *args: str, env: dict, log_file: Path) -> tuple[dict, float, int]:
    result, seconds, peak = run_child([PYTHON, str(HERE / "djside.py"), step, *args], env, log_file, step)
    if result is None:
        raise RuntimeError(f"djside {step} printed no RESULT line; see {log_file}")
    return result, seconds, peak


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
        return [int(p) for p in text.split()]
    except OSError:
        pass
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
                if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry.name))
            except (OSError, ValueError, IndexError):
                continue
    return found


def _rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _cpu_ticks(pid: int) -> int:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])  # utime + stime
    except (OSError, ValueError, IndexError):
        return 0


def _machine_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
    user, nice, system, idle, iowait, irq, softirq, steal = fields
    busy = user + nice + system + irq + softirq + steal
    return busy, busy + idle + iowait


def _all_process_ticks() -> dict[int, tuple[str, int]]:
    """pid -> (command name, utime + stime jiffies) for every process."""
    out = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        out[int(entry.name)] = (stat[stat.find("(") + 1:stat.rfind(")")], int(fields[11]) + int(fields[12]))
    return out


def postgres_backend_pids() -> set[int]:
    """PostgreSQL server processes serving the benchmark's database (not other users' sessions)."""
    try:
        import psycopg

        with psycopg.connect(PG_DSN + " dbname=postgres", autocommit=True) as conn:
            rows = conn.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s", (PG_DATABASE,)).fetchall()
        return {row[0] for row in rows}
    except Exception:
        return set()


def cpu_snapshot(gunicorn_master: int, gunicorn_workers: list[int], database_pids: set[int],
                 redis_pid: int | None) -> dict:
    ticks = _all_process_ticks()
    busy, total = _machine_ticks()
    return {"ticks": ticks, "machine_busy": busy, "machine_total": total, "master": gunicorn_master,
            "workers": list(gunicorn_workers), "database": set(database_pids),
            "redis": {redis_pid} if redis_pid else set()}


def cpu_share(before: dict, after: dict, client_seconds: float) -> dict:
    """Where the machine's CPU went during a phase, in cores (1.0 = one core busy all the time).

    A process's share is its CPU time at the end minus at the start (0 for one that
    started during the phase); processes that ended during the phase count as `other`.
    """
    total = after["machine_total"] - before["machine_total"]
    if total <= 0:
        return {}
    cores = os.cpu_count() or 1
    hz = os.sysconf("SC_CLK_TCK")
    wall = total / cores / hz

    def used(pids) -> float:
        jiffies = 0
        for pid in pids:
            if pid in after["ticks"]:
                name, end = after["ticks"][pid]
                start = before["ticks"].get(pid, (name, 0))
                jiffies += max(0, end - (start[1] if start[0] == name else 0))
        return jiffies / total * cores

    workers = sorted(set(before["workers"]) | set(after["workers"]))
    share = {
        "gunicorn": used([after["master"], *workers]),
        "gunicorn_workers": [round(used([pid]), 3) for pid in workers],
        "database": used(before["database"] | after["database"]),
        "redis": used(after["redis"]),
        "clients": client_seconds / wall if wall > 0 else 0.0,
        "machine_busy": (after["machine_busy"] - before["machine_busy"]) / total * cores,
        "cores": cores,
    }
    share["other"] = max(0.0, share["machine_busy"] - sum(share[k] for k in ("gunicorn", "database", "redis", "clients")))
    return share


class LockWatcher(threading.Thread):
    """Samples, every 200 ms, how many requests are waiting for a database lock.

    SQLite: waiters on the workbench's writers file lock (`<db>.writers`), from
    /proc/locks (a blocked flock shows as `->`). PostgreSQL: backends of the
    benchmark database in state active, and those waiting on a lock
    (wait_event_type = 'Lock'), with the statement they wait in.
    """

    def __init__(self, backend: str, data_dir: Path, interval: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.backend = backend
        self.lock_file = data_dir / "workbench.sqlite3.writers"
        self.interval = interval
        self.stop_event = threading.Event()
        self.lock = threading.Lock()
        self.conn = None
        self.reset()

    def reset(self) -> None:
        with self.lock:
            self.samples = 0
            self.waiting = 0
            self.busy = 0
            self.max_waiting = 0
            self.statements: dict[str, int] = {}

    def _sqlite(self) -> tuple[int, int, list[str]]:
        try:
            inode = self.lock_file.stat().st_ino
        except OSError:
            return 0, 0, []
        waiting = holding = 0
        for line in Path("/proc/locks").read_text().splitlines():
            fields = line.split()
            if "FLOCK" not in fields:
                continue
            if not fields[-3].endswith(f":{inode}"):  # maj:min:inode
                continue
            if "->" in fields:
                waiting += 1
            else:
                holding += 1
        return waiting, waiting + holding, []

    def _postgres(self) -> tuple[int, int, list[str]]:
        import psycopg

        if self.conn is None:
            self.conn = psycopg.connect(PG_DSN + " dbname=postgres", autocommit=True)
        rows = self.conn.execute(
            "SELECT wait_event_type, query FROM pg_stat_activity "
            "WHERE datname = %s AND state = 'active' AND pid <> pg_backend_pid()", (PG_DATABASE,),
        ).fetchall()
        waiting = [query for kind, query in rows if kind == "Lock"]
        return len(waiting), len(rows), [_statement_kind(q) for q in waiting]

    def run(self) -> None:
        while not self.stop_event.is_set():
            try:
                waiting, busy, kinds = self._sqlite() if self.backend == "sqlite" else self._postgres()
            except Exception:
                waiting, busy, kinds = 0, 0, []
            with self.lock:
                self.samples += 1
                self.waiting += waiting
                self.busy += busy
                self.max_waiting = max(self.max_waiting, waiting)
                for kind in kinds:
                    self.statements[kind] = self.statements.get(kind, 0) + 1
            self.stop_event.wait(self.interval)
        if self.conn is not None:
            self.conn.close()

    def summary(self) -> dict:
        with self.lock:
            n = max(1, self.samples)
            return {"samples": self.samples, "mean_waiting": self.waiting / n, "max_waiting": self.max_waiting,
                    "mean_in_database": self.busy / n,
                    "waiting_in": dict(sorted(self.statements.items(), key=lambda kv: -kv[1])[:5])}


def _statement_kind(query: str) -> str:
    """`SELECT annotate_project FOR NO KEY UPDATE`-style summary of a statement."""
    import re

    verb = query.strip().split(None, 1)[0].upper() if query.strip() else "?"
    table = re.search(r'(?:FROM|UPDATE|INTO)\s+"?(\w+)"?', query, re.IGNORECASE)
    lock = re.search(r"FOR (NO KEY )?UPDATE( SKIP LOCKED)?", query)
    return f"{verb} {table.group(1) if table else '?'}" + (f" {lock.group(0)}" if lock else "")


class ServerMonitor(threading.Thread):
    """Samples the summed VmRSS of the gunicorn master and its workers every 100 ms."""

    def __init__(self, master: int, interval: float = 0.1) -> None:
        super().__init__(daemon=True)
        self.master = master
        self.interval = interval
        self.stop_event = threading.Event()
        self.lock = threading.Lock()
        self.peak_kib = 0
        self.phase_peak_kib = 0
        self.samples = 0

    def pids(self) -> list[int]:
        return [self.master, *_children(self.master)]

    def snapshot(self, backend: str, redis_pid: int | None) -> dict:
        database = postgres_backend_pids() if backend == "postgres" else set()
        return cpu_snapshot(self.master, _children(self.master), database, redis_pid)

    def sample(self) -> int:
        return sum(_rss_kib(pid) for pid in self.pids())

    def cpu_seconds(self) -> float:
        return sum(_cpu_ticks(pid) for pid in self.pids()) / os.sysconf("SC_CLK_TCK")

    def run(self) -> None:
        while not self.stop_event.is_set():
            value = self.sample()
            with self.lock:
                self.samples += 1
                self.peak_kib = max(self.peak_kib, value)
                self.phase_peak_kib = max(self.phase_peak_kib, value)
            self.stop_event.wait(self.interval)

    def phase_start(self) -> None:
        with self.lock:
            self.phase_peak_kib = self.sample()

    def phase_peak(self) -> int:
        with self.lock:
            return max(self.phase_peak_kib, self.sample())


class Gunicorn:
    """`gunicorn workbench.wsgi` with the flags `manage.py runworkbench` passes."""

    def __init__(self, env: dict, log_file: Path, workers: int = 2, threads: int = 4) -> None:
        self.port = free_port()
        self.args = [str(BIN / "gunicorn"), "workbench.wsgi", "--bind", f"127.0.0.1:{self.port}",
                     "--workers", str(workers), "--threads", str(threads),
                     "--worker-class", "gthread", "--access-logfile", "-"]
        self.log_handle = log_file.open("a")
        self.process = subprocess.Popen(self.args, cwd=ROOT, env=env, stdout=self.log_handle,
                                        stderr=subprocess.STDOUT, start_new_session=True)
        self.workers = workers

    def wait_ready(self, timeout: float = 60) -> None:
        import http.client

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {self.process.returncode}; see {self.log_handle.name}")
            if len(_children(self.process.pid)) >= self.workers:
                try:
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                    conn.request("GET", "/api/v1/projects/0/status/")
                    conn.getresponse().read()
                    conn.close()
                    return
                except OSError:
                    pass
            time.sleep(0.2)
        raise RuntimeError(f"gunicorn did not answer on port {self.port} in {timeout}s")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log_handle.close()


def worker_holding(server_port: int, client_port: int, workers: list[int], timeout: float = 2.0) -> int | None:
    """The gunicorn worker that accepted the connection from 127.0.0.1:`client_port`, or None.

    Finds the server side of the connection in /proc/net/tcp (its socket inode)
    and the worker whose file descriptors include that socket.
    """
    local = f"0100007F:{server_port:04X}"
    remote = f"0100007F:{client_port:04X}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        inode = None
        for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[1] == local and fields[2] == remote and fields[9] != "0":
                inode = fields[9]
                break
        if inode is not None:
            target = f"socket:[{inode}]"
            for pid in workers:
                try:
                    for fd in Path(f"/proc/{pid}/fd").iterdir():
                        try:
                            if os.readlink(fd) == target:
                                return pid
                        except OSError:
                            continue
                except OSError:
                    continue
        time.sleep(0.01)
    return None


def place_connections(server: Gunicorn, pipes: list, max_tries: int = 30) -> dict:
    """Connect every annotator, spreading the persistent connections evenly over the workers.

    Left to itself the kernel may hand every connection to the same worker (the
    one that wakes first on the shared listening socket), and with persistent
    connections that lasts the whole phase: one worker would serve all
    annotators while the other idles. A load balancer, or browsers that
    reconnect between labels, spread them. So each annotator connects, the
    worker that accepted is looked up in /proc, and it reconnects (up to
    `max_tries`) while that worker already holds its share.
    """
    workers = _children(server.process.pid)
    quota = -(-len(pipes) // max(1, len(workers)))
    held = {pid: 0 for pid in workers}
    first_choice = {pid: 0 for pid in workers}
    tries_total = 0
    for pipe in pipes:
        for attempt in range(max_tries):
            pipe.send("connect")
            port = pipe.recv()
            worker = worker_holding(server.port, port, workers)
            tries_total += 1
            if attempt == 0 and worker is not None:
                first_choice[worker] += 1
            if len(pipes) == 1 or worker is None or held.get(worker, 0) < quota:
                break
        if worker is not None:
            held[worker] = held.get(worker, 0) + 1
        pipe.send("go")
    return {"connections_per_worker": list(held.values()), "first_try_per_worker": list(first_choice.values()),
            "connects": tries_total}


# --- statistics -------------------------------------------------------------

def percentile(values: list[float], q: float) -> float | None:
    """Linear interpolation between closest ranks (numpy's default)."""
    if not values:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def latency_summary(values: list[float]) -> dict:
    return {"n": len(values), "p50": percentile(values, 50), "p95": percentile(values, 95),
            "p99": percentile(values, 99), "max": max(values) if values else None,
            "mean": sum(values) / len(values) if values else None}


# --- phases -----------------------------------------------------------------

def run_phase(name: str, server: Gunicorn, monitor: ServerMonitor, project_id: int, users: list[dict],
              cycles: int, backend: str, redis_pid: int | None, locks: LockWatcher) -> dict:
    ctx = multiprocessing.get_context("fork")
    start = ctx.Event()
    results = ctx.Queue()
    pipes = [ctx.Pipe() for _ in users]
    processes = [
        ctx.Process(target=client.annotator,
                    args=(i, server.port, project_id, u["token"], cycles, start, results, pipes[i][1]),
                    name=f"annotator-{i}", daemon=True)
        for i, u in enumerate(users)
    ]
    for process in processes:
        process.start()
    placement = place_connections(server, [parent for parent, _ in pipes])
    monitor.phase_start()
    cpu_before = monitor.cpu_seconds()
    snapshot_before = monitor.snapshot(backend, redis_pid)
    load_before = Path("/proc/loadavg").read_text().split()[:3]
    locks.reset()
    start.set()
    outcomes = []
    deadline = time.monotonic() + max(600, cycles * 10)
    while len(outcomes) < len(processes):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise RuntimeError(f"{name}: annotators did not finish in time")
        try:
            outcomes.append(results.get(timeout=min(remaining, 5)))
        except Exception:
            if all(not p.is_alive() for p in processes) and results.empty():
                raise RuntimeError(f"{name}: an annotator process died without reporting") from None
    for process in processes:
        process.join(timeout=10)
    cpu_seconds = monitor.cpu_seconds() - cpu_before
    snapshot_after = monitor.snapshot(backend, redis_pid)
    lock_waits = locks.summary()
    peak = monitor.phase_peak()
    outcomes.sort(key=lambda o: o["index"])
    began = min(o["began"] for o in outcomes)
    ended = max(o["ended"] for o in outcomes)
    wall = ended - began
    total_cycles = sum(o["cycles"] for o in outcomes)
    next_ms = [ms for o in outcomes for ms in o["next_ms"]]
    annotate_ms = [ms for o in outcomes for ms in o["annotate_ms"]]
    statuses: dict[str, int] = {}
    for o in outcomes:
        for key, value in o["statuses"].items():
            statuses[key] = statuses.get(key, 0) + value
    served_by: dict[int, set[str]] = {}
    for o, user in zip(outcomes, users):
        for item_id in o["served"]:
            served_by.setdefault(item_id, set()).add(user["username"])
    duplicates = sum(1 for who in served_by.values() if len(who) > 1)
    return {
        "name": name, "annotators": len(users), "cycles_requested": cycles, "cycles_done": total_cycles,
        "wall_s": wall, "cycles_per_s": total_cycles / wall if wall > 0 else None,
        "next_ms": latency_summary(next_ms), "annotate_ms": latency_summary(annotate_ms),
        "cycle_ms_mean": (sum(next_ms) + sum(annotate_ms)) / total_cycles if total_cycles else None,
        "statuses": statuses, "created_201": sum(o["created"] for o in outcomes),
        "created_by_user": {u["username"]: o["created"] for o, u in zip(outcomes, users)},
        "served_items": len(served_by), "served_total": sum(len(o["served"]) for o in outcomes),
        "duplicates": duplicates,
        "errors": [e for o in outcomes for e in o["errors"]][:20],
        "error_count": sum(o["error_count"] for o in outcomes),
        "reconnects": sum(o["reconnects"] for o in outcomes),
        "queue_empty": any(o["queue_empty"] for o in outcomes),
        "server_peak_rss_kib": peak, "server_cpu_s": cpu_seconds,
        "cpu_cores_used": cpu_share(snapshot_before, snapshot_after, sum(o["cpu_s"] for o in outcomes)),
        "placement": placement, "lock_waits": lock_waits, "loadavg_before": load_before, "loadavg_after": Path("/proc/loadavg").read_text().split()[:3],
        "server_cpu_ms_per_cycle": cpu_seconds * 1000 / total_cycles if total_cycles else None,
        "next_ms_raw": [round(ms, 2) for o in outcomes for ms in o["next_ms"]],
        "annotate_ms_raw": [round(ms, 2) for o in outcomes for ms in o["annotate_ms"]],
        "_served": {u["username"]: o["served"] for o, u in zip(outcomes, users)},
    }


def retrain_phase(leg_name: str, server: "Gunicorn", monitor: "ServerMonitor", project_id: int, users: list[dict],
                  args, backend: str, redis_pid: int | None, locks: "LockWatcher", env: dict, data_dir: Path,
                  log_file: Path) -> dict:
    """Phase 2 again with retrains running: retrain_every back at its default and a Celery worker, as
    `make run` has one. The same annotators' count, fresh users."""
    djside("retrain-every", "--project", str(project_id), "--every", str(args.retrain_every), env=env,
           log_file=log_file)
    before, _, _ = djside("versions", "--project", str(project_id), env=env, log_file=log_file)
    worker_log = data_dir / "worker.log"
    worker = subprocess.Popen(
        [str(BIN / "celery"), "-A", "workbench", "worker", "--loglevel", "INFO", "--concurrency", "1",
         "--queues", "celery", "--hostname", "bench@%h", "--without-gossip", "--without-mingle"],
        cwd=ROOT, env=env, stdout=worker_log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while "ready." not in worker_log.read_text():
            if worker.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the benchmark's worker did not start; see {worker_log}")
            time.sleep(0.2)
        log(f"{leg_name}: retrain phase ({len(users)} annotators x {args.cycles} cycles, "
            f"retrain every {args.retrain_every} labels, one worker)")
        began = dt.datetime.now(dt.timezone.utc)
        phase = run_phase(f"{len(users)} annotators, retrains running", server, monitor, project_id, users,
                          args.cycles, backend, redis_pid, locks)
        ended = dt.datetime.now(dt.timezone.utc)
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=120)  # a retrain in progress finishes first
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
    after, _, _ = djside("versions", "--project", str(project_id), env=env, log_file=log_file)
    made = after["versions"][before["count"]:]
    during = [v for v in made if began <= dt.datetime.fromisoformat(v["created_at"]) <= ended]
    phase["retrain_every"] = args.retrain_every
    phase["versions_made"] = len(made)
    phase["versions_during_phase"] = len(during)
    phase["versions"] = made
    phase["retrains_requested"] = phase["created_201"] // args.retrain_every
    log(f"{leg_name}: retrain phase next p50/p99 {phase['next_ms']['p50']:.1f}/{phase['next_ms']['p99']:.1f} ms, "
        f"{phase['cycles_per_s']:.1f} cycles/s; {len(during)} versions made during it "
        f"({phase['retrains_requested']} retrains fell due), swaps {[v['swap_s'] for v in made]} s")
    return phase


# --- backends ---------------------------------------------------------------

def postgres_available() -> tuple[bool, str]:
    try:
        import psycopg

        with psycopg.connect(PG_DSN + " dbname=postgres", autocommit=True) as conn:
            version = conn.execute("SHOW server_version").fetchone()[0]
    except Exception as exc:
        return False, f"PostgreSQL at 127.0.0.1:5432 did not answer: {exc}"
    try:
        import redis

        info = redis.Redis.from_url(PG_REDIS_URL, socket_timeout=3, socket_connect_timeout=3).info("server")
    except Exception as exc:
        return False, f"Redis at {PG_REDIS_URL} did not answer: {exc}"
    return True, f"PostgreSQL {version}, Redis {info.get('redis_version')}"



def redis_flush_pg() -> None:
    import redis

    redis.Redis.from_url(PG_REDIS_URL, socket_timeout=3).flushdb()


def sqlite_version() -> str:
    import sqlite3

    return sqlite3.sqlite_version


# --- one leg: one backend, one N --------------------------------------------

def run_leg(backend: str, n_items: int, csv_info: dict, args) -> dict:
    leg_name = f"{backend}-{n_items}"
    data_dir = WORK / leg_name
    shutil.rmtree(data_dir, ignore_errors=True)
    data_dir.mkdir(parents=True)
    log_file = data_dir / "bench.log"
    env = leg_env(backend, data_dir)
    leg: dict = {"backend": backend, "items": n_items, "started": dt.datetime.now().isoformat(timespec="seconds"),
                 "code": code_version(),
                 "loadavg_before": Path("/proc/loadavg").read_text().split()[:3]}
    leg_started = time.perf_counter()
    redis_server = None
    server = None
    monitor = None
    locks = None
    try:
        if backend == "sqlite":
            sys.path.insert(0, str(ROOT))
            from workbench.embedded_redis import EmbeddedRedis

            redis_server = EmbeddedRedis(data_dir / "redis.sock")
            redis_server.start()
        else:
            postgres_recreate(PG_DATABASE)
            redis_flush_pg()

        _, seconds, _ = run_child([PYTHON, "manage.py", "migrate", "--no-input", "-v", "0"], env, log_file, "migrate")
        leg["migrate_s"] = seconds
        users_wanted = 1 + 2 * args.annotators  # phase 1, phase 2, the retrain phase
        setup, _, _ = djside("setup", "--annotators", str(users_wanted), env=env, log_file=log_file)
        project_id = setup["project_id"]
        leg["project"] = {k: setup[k] for k in ("project_id", "retrain_every", "overlap", "labels", "vendor")}

        log(f"{leg_name}: importing {n_items:,} rows")
        imported, wall, peak = djside("import", "--project", str(project_id), "--csv", csv_info["path"],
                                      env=env, log_file=log_file)
        imported["process_wall_s"] = wall
        imported["process_peak_rss_kib"] = peak
        leg["import"] = imported
        if imported["status"] != "succeeded" or imported["rows_imported"] != n_items:
            raise RuntimeError(f"import did not succeed: {imported}")
        log(f"{leg_name}: imported {imported['rows_imported']:,} rows in {imported['seconds']:.1f} s "
            f"({imported['rows_per_s']:,.0f} rows/s), peak RSS {peak / 1024:.0f} MiB")

        log(f"{leg_name}: training on the seed labels and scoring every open item")
        trained, wall, peak = djside("train", "--project", str(project_id), env=env, log_file=log_file)
        trained["process_wall_s"] = wall
        trained["process_peak_rss_kib"] = peak
        leg["train"] = trained
        if trained["summary"].get("status") != "trained" or trained["open_items_unscored"]:
            raise RuntimeError(f"training did not score every open item: {trained}")
        log(f"{leg_name}: scored {trained['summary']['items_scored']:,} items: predict "
            f"{trained['summary']['score_seconds']:.1f} s, whole retrain {trained['seconds']:.1f} s")
        if backend == "postgres":
            vacuumed, _, _ = djside("vacuum", env=env, log_file=log_file)
            leg["vacuum"] = vacuumed
            log(f"{leg_name}: VACUUM (ANALYZE) {vacuumed['seconds']:.1f} s, CHECKPOINT "
                f"{vacuumed['checkpoint_seconds']:.1f} s (autovacuum {vacuumed['autovacuum']})")

        server = Gunicorn(env, data_dir / "gunicorn.log")
        server.wait_ready()
        monitor = ServerMonitor(server.process.pid)
        monitor.start()
        users = setup["users"]
        hz = os.sysconf("SC_CLK_TCK")
        leg["warm_up"] = client.warm_up(
            server.port, project_id, users[0]["token"],
            lambda: {pid: _cpu_ticks(pid) / hz for pid in _children(server.process.pid)},
        )
        log(f"{leg_name}: warm-up: {leg['warm_up']['requests']} requests in {leg['warm_up']['rounds']} rounds, "
            f"worker CPU {leg['warm_up']['worker_cpu_s']}")
        leg["server_idle_rss_kib"] = monitor.sample()
        leg["server_cmd"] = " ".join(Path(a).name if i == 0 else a for i, a in enumerate(server.args))

        log(f"{leg_name}: phase 1 (1 annotator x {args.cycles} cycles)")
        redis_pid = redis_server.process.pid if redis_server is not None and redis_server.process else None
        locks = LockWatcher(backend, data_dir)
        locks.start()
        phase1 = run_phase("1 annotator", server, monitor, project_id, users[:1], args.cycles, backend, redis_pid,
                           locks)
        log(f"{leg_name}: phase 1 next p50/p99 {phase1['next_ms']['p50']:.1f}/{phase1['next_ms']['p99']:.1f} ms, "
            f"{phase1['cycles_per_s']:.1f} cycles/s")
        log(f"{leg_name}: phase 2 ({args.annotators} annotators x {args.cycles} cycles)")
        phase2 = run_phase(f"{args.annotators} annotators", server, monitor, project_id,
                           users[1:1 + args.annotators], args.cycles, backend, redis_pid, locks)
        log(f"{leg_name}: phase 2 next p50/p99 {phase2['next_ms']['p50']:.1f}/{phase2['next_ms']['p99']:.1f} ms, "
            f"{phase2['cycles_per_s']:.1f} cycles/s, duplicates {phase2['duplicates']}")
        phase3 = None
        if args.retrain_every:
            phase3 = retrain_phase(leg_name, server, monitor, project_id, users[1 + args.annotators:], args,
                                   backend, redis_pid, locks, env, data_dir, log_file)
        locks.stop_event.set()
        leg["server_peak_rss_kib"] = monitor.peak_kib
        leg["server_rss_samples"] = monitor.samples
        monitor.stop_event.set()
        server.stop()
        server = None

        usernames = [u["username"] for u in users]
        verified, _, _ = djside("verify", "--project", str(project_id), "--users", ",".join(usernames),
                                env=env, log_file=log_file)
        leg["verify"] = verified
        served_by: dict[int, set[str]] = {}
        for phase in (phase1, phase2, *([phase3] if phase3 else [])):
            for username, items in phase.pop("_served").items():
                for item_id in items:
                    served_by.setdefault(item_id, set()).add(username)
            phase["db_annotations"] = sum(verified["annotations_by_user"].get(u, 0) for u in phase["created_by_user"])
            phase["lost"] = phase["created_201"] - phase["db_annotations"]
        leg["phases"] = [phase1, phase2]
        if phase3:
            leg["retrain_phase"] = phase3
        leg["duplicates_all_phases"] = sum(1 for who in served_by.values() if len(who) > 1)
        explained, _, _ = djside("explain", "--project", str(project_id), "--user", users[1]["username"],
                                 env=env, log_file=log_file)
        leg["queue_scan"] = explained
        inprocess, _, _ = djside("inprocess", "--project", str(project_id), env=env, log_file=log_file)
        leg["inprocess"] = inprocess
        log(f"{leg_name}: in-process next {inprocess['next']['ms_median']:.1f} ms "
            f"({inprocess['next']['statements']} statements), annotate {inprocess['annotate']['ms_median']:.1f} ms "
            f"({inprocess['annotate']['statements']} statements)")
    finally:
        if monitor is not None:
            monitor.stop_event.set()
        if locks is not None:
            locks.stop_event.set()
        if server is not None:
            server.stop()
        if redis_server is not None:
            redis_server.stop()
        if backend == "postgres":
            try:
                if not args.keep:
                    postgres_recreate(PG_DATABASE, drop_only=True)
                redis_flush_pg()
            except Exception as exc:  # cleanup must not hide the real error
                log(f"cleanup of {leg_name}: {exc}")
        if backend == "sqlite" and not args.keep:
            for path in data_dir.glob("workbench.sqlite3*"):
                path.unlink()
    leg["seconds"] = time.perf_counter() - leg_started
    return leg


# --- main -------------------------------------------------------------------

def code_version() -> dict:
    """The application code measured: git HEAD and any uncommitted change to it."""
    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    dirty = git("status", "--porcelain", "--", "annotate", "learners", "workbench", "templates", "requirements.txt")
    return {"commit": git("rev-parse", "--short", "HEAD"), "subject": git("log", "-1", "--format=%s"),
            "uncommitted": [line[3:] for line in dirty.splitlines()]}


def machine() -> dict:
    return {**machine_facts(), "sqlite": sqlite_version()}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", default="100000,1000000", help="comma-separated item counts (default %(default)s)")
    parser.add_argument("--backends", default="sqlite,postgres", help="sqlite, postgres or both (default %(default)s)")
    parser.add_argument("--cycles", type=int, default=200, help="cycles per annotator (default %(default)s)")
    parser.add_argument("--annotators", type=int, default=8, help="annotators in phase 2 (default %(default)s)")
    parser.add_argument("--seeds", type=int, default=200, help="seed labels in the CSV (default %(default)s)")
    parser.add_argument("--retrain-every", type=int, default=10,
                        help="retrain phase: labels per retrain, with a worker running (0: no retrain phase; "
                             "default %(default)s, the project default)")
    parser.add_argument("--results-dir", default=str(HERE),
                        help="where results.json and RESULTS.md go (default: bench/queue)")
    parser.add_argument("--keep", action="store_true", help="keep the databases after the run")
    parser.add_argument("--render-only", action="store_true", help="rewrite RESULTS.md from results.json")
    args = parser.parse_args(argv)
    sizes_and_backends(parser, args, "items")
    return args


def main(argv=None) -> int:
    unwind_on_signals()
    args = parse_args(argv)
    results_dir = Path(args.results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    results_path = results_dir / "results.json"
    if args.render_only:
        results = json.loads(results_path.read_text())
        report.write(results_dir, results)
        return 0
    WORK.mkdir(parents=True, exist_ok=True)
    run_lock = (WORK / ".run.lock").open("a+")
    try:
        fcntl.flock(run_lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        run_lock.seek(0)
        print(f"another bench/queue/run.py is running ({run_lock.read().strip() or 'unknown pid'}); two runs "
              "would share bench/queue/work/ and the PostgreSQL database bench_queue. Wait for it to finish.",
              file=sys.stderr)
        return 2
    run_lock.seek(0)
    run_lock.truncate()
    run_lock.write(f"pid {os.getpid()}, started {dt.datetime.now().isoformat(timespec='seconds')}\n")
    run_lock.flush()
    started = time.perf_counter()
    command = " ".join([os.path.relpath(PYTHON, ROOT) if PYTHON.startswith(str(ROOT)) else PYTHON,
                        os.path.relpath(__file__, ROOT), *(argv if argv is not None else sys.argv[1:])])
    results: dict = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": command, "machine": machine(),
        "settings": {"items": args.items, "backends": args.backends, "cycles": args.cycles,
                     "annotators": args.annotators, "seeds": args.seeds, "retrain_every": args.retrain_every},
        "targets": report.TARGETS, "reference": report.REFERENCE,
        "legs": [], "skipped": [], "code": code_version(),
    }
    log(f"application code: {results['code']['commit']} {results['code']['subject']}"
        + (f" + uncommitted changes to {', '.join(results['code']['uncommitted'])}" if results["code"]["uncommitted"] else ""))
    WORK.mkdir(parents=True, exist_ok=True)
    backends = list(args.backends)
    if "postgres" in backends:
        ok, message = postgres_available()
        if ok:
            results["machine"]["postgres"] = message
        else:
            log(f"skipping the PostgreSQL leg: {message}")
            results["skipped"].append(f"postgres: {message}")
            backends.remove("postgres")
    csvs = {}
    for n_items in args.items:
        path = WORK / "csv" / f"bbc-paragraphs-{n_items}-seeds{args.seeds}.csv"
        log(f"CSV of {n_items:,} rows: {'reusing' if path.exists() else 'writing'} {path.relative_to(ROOT)}")
        t0 = time.perf_counter()
        csvs[n_items] = corpus.write_csv(path, n_items, args.seeds)
        csvs[n_items]["write_s"] = time.perf_counter() - t0
    results["csv"] = {str(k): v for k, v in csvs.items()}
    failures = 0
    for backend in backends:
        for n_items in args.items:
            log(f"=== {backend}, {n_items:,} items")
            try:
                leg = run_leg(backend, n_items, csvs[n_items], args)
            except Exception as exc:
                failures += 1
                log(f"{backend}-{n_items} failed: {exc}")
                leg = {"backend": backend, "items": n_items, "error": str(exc)[-4000:]}
            results["legs"].append(leg)
            results["run_seconds"] = time.perf_counter() - started
            results_path.write_text(json.dumps(results, indent=1) + "\n")
            report.write(results_dir, results)
    results["run_seconds"] = time.perf_counter() - started
    results["code_at_end"] = code_version()
    if results["code_at_end"] != results["code"]:
        log(f"WARNING: the application code changed during the run ({results['code']} -> "
            f"{results['code_at_end']}); the legs did not all measure the same code. Rerun on a quiet checkout.")
    results_path.write_text(json.dumps(results, indent=1) + "\n")
    report.write(results_dir, results)
    log(f"done in {results['run_seconds'] / 60:.1f} min: {results_path} and {results_dir / 'RESULTS.md'}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
