"""What the benchmark orchestrators (bench/queue, bench/scoring) share: logging, child steps, scratch databases.

Each benchmark's `run.py` runs its Django-side steps as child processes, one
per step, so every step starts cold like a worker would and its peak memory
can be read from wait4.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import platform
import signal
import subprocess
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PG_DSN = "host=127.0.0.1 port=5432 user=postgres connect_timeout=3"


def loadavg() -> list[str]:
    return Path("/proc/loadavg").read_text().split()[:3]


def machine_facts(packages: list[str] | tuple[str, ...] = ()) -> dict:
    """What a results file says about the machine: CPU, cores, memory, kernel, Python, package versions, load."""
    from importlib import metadata

    meminfo = Path("/proc/meminfo").read_text().splitlines()
    total_kib = int(next(line for line in meminfo if line.startswith("MemTotal:")).split()[1])
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "")
    facts = {"cpu": cpu, "nproc": os.cpu_count(), "nproc_available": len(os.sched_getaffinity(0)),
             "memory_gib": round(total_kib / 2**20, 1), "kernel": platform.release(),
             "python": platform.python_version(), "loadavg_at_start": loadavg()}
    if packages:
        versions = {}
        for name in packages:
            try:
                versions[name] = metadata.version(name)
            except metadata.PackageNotFoundError:
                versions[name] = "not installed"
        facts["packages"] = versions
    return facts


def results_finish(results: dict, results_dir: Path, started: float, render, headline) -> None:
    """Close a run's results: load at the end, total time, results.json and RESULTS.md, the headline logged."""
    results["machine"]["loadavg_at_end"] = loadavg()
    results["run_seconds"] = time.perf_counter() - started
    (results_dir / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    (results_dir / "RESULTS.md").write_text(render(results))
    log(f"done in {results['run_seconds'] / 60:.1f} min: {results_dir / 'RESULTS.md'}")
    for line in headline(results):
        log(line.replace("**", ""))


def log(message: str) -> None:
    print(f"[{dt.datetime.now():%H:%M:%S}] {message}", flush=True)


def run_child(args: list[str], env: dict, log_file: Path, what: str) -> tuple[dict | None, float, int]:
    """Run a child to completion: (its RESULT json, wall seconds, peak RSS in KiB from wait4)."""
    with log_file.open("a") as err:
        err.write(f"\n=== {what}: {' '.join(args)}\n")
        err.flush()
        started = time.perf_counter()
        child = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=err, text=True)
        out_chunks: list[str] = []
        reader = threading.Thread(target=lambda: out_chunks.append(child.stdout.read()), daemon=True)
        reader.start()
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
        reader.join()
        seconds = time.perf_counter() - started
    if child.returncode != 0:
        tail = log_file.read_text()[-3000:]
        raise RuntimeError(f"{what} failed with exit code {child.returncode}; log {log_file}:\n{tail}")
    result = None
    for line in "".join(out_chunks).splitlines():
        if line.startswith("RESULT "):
            result = json.loads(line[len("RESULT "):])
    return result, seconds, usage.ru_maxrss


def postgres_recreate(database: str, drop_only: bool = False) -> None:
    """Drop the benchmark's scratch database (and create it empty again unless `drop_only`)."""
    import psycopg

    if database in ("test", "test_test", "postgres"):
        raise ValueError(f"refusing to drop {database!r}: benchmarks use their own database")
    with psycopg.connect(PG_DSN + " dbname=postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        if not drop_only:
            conn.execute(f'CREATE DATABASE "{database}"')


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def unwind_on_signals() -> None:
    """SIGINT and SIGTERM raise KeyboardInterrupt, so the orchestrator's cleanup (servers, scratch
    databases) runs; a process started in the background may inherit SIGINT ignored."""
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)


def sizes_and_backends(parser, args, sizes_attr: str) -> None:
    """Parse the comma-separated sizes (`1_000_000` allowed) and backends options in place."""
    setattr(args, sizes_attr, [int(x.replace("_", "")) for x in getattr(args, sizes_attr).split(",") if x])
    args.backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    unknown = set(args.backends) - {"sqlite", "postgres"}
    if unknown:
        parser.error(f"unknown backend(s) {sorted(unknown)}; use sqlite and/or postgres")


def names_option(parser, value: str, known, what: str) -> list[str]:
    """A comma-separated option as a list of names, each one of `known` (else a parser error naming `what`)."""
    names = [name.strip() for name in value.split(",") if name.strip()]
    unknown = [name for name in names if name not in known]
    if unknown:
        parser.error(f"unknown {what} {unknown}; known: {', '.join(known)}")
    return names
