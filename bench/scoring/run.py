"""The scoring benchmark: retrain on 500 labels, score every open item and swap the queue order, at 100k and 1M items.

    make bench-scoring                              # 100k and 1M on SQLite and PostgreSQL
    .venv/bin/python bench/scoring/run.py --quick   # 20k items, both backends, results under work/quick

For every backend and size it builds a fresh database with N items, cached
384-d feature rows for each (synthetic, see synthetic.py) and 500 imported
labels, then calls the real `learners.services.training.model_version_train`
in a fresh process and times it phase by phase, checks that every open item
was scored and that the queue serves the highest-margin item first, labels
10 more items and times a second retrain. Writes results.json and RESULTS.md;
see README.md.
"""
from __future__ import annotations

import argparse
import datetime as dt
import fcntl
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import report  # noqa: E402
from harness import (  # noqa: E402
    PG_DSN,
    loadavg,
    log,
    machine_facts,
    postgres_recreate,
    run_child,
    sizes_and_backends,
    unwind_on_signals,
)

PYTHON = sys.executable
WORK = HERE / "work"
PG_DATABASE = "bench_scoring"
PG_URL = f"postgres://postgres@127.0.0.1:5432/{PG_DATABASE}"
SECRET = "bench-scoring-not-a-secret"
assert PG_DATABASE not in ("test", "test_test", "postgres")



def leg_env(backend: str, data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DEBUG", "DATABASE_URL", "REDIS_URL", "LOG_LEVEL")}
    env.update(SECRET_KEY=SECRET, DEBUG="0", WORKBENCH_DATA_DIR=str(data_dir),
               DJANGO_SETTINGS_MODULE="workbench.settings", PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
    if backend == "postgres":
        env["DATABASE_URL"] = PG_URL
    return env



def djside(step: str, *args: str, env: dict, log_file: Path) -> tuple[dict, float, int]:
    result, seconds, peak = run_child([PYTHON, str(HERE / "djside.py"), step, *args], env, log_file, step)
    if result is None:
        raise RuntimeError(f"djside {step} printed no RESULT line; see {log_file}")
    return result, seconds, peak


# --- backends -------------------------------------------------------------------

def postgres_available() -> tuple[bool, str]:
    try:
        import psycopg

        with psycopg.connect(PG_DSN + " dbname=postgres", autocommit=True) as conn:
            version = conn.execute("SHOW server_version").fetchone()[0]
            knobs = {name: conn.execute(f"SHOW {name}").fetchone()[0]
                     for name in ("shared_buffers", "max_wal_size", "synchronous_commit", "autovacuum")}
    except Exception as exc:  # any failure to connect means: skip the leg, saying why
        return False, f"PostgreSQL at 127.0.0.1:5432 did not answer: {exc}"
    return True, f"PostgreSQL {version} ({', '.join(f'{k}={v}' for k, v in knobs.items())})"



# --- one leg ------------------------------------------------------------------------

class Leg:
    """One backend and size: its work folder, environment, log and the steps run in it."""

    def __init__(self, backend: str, n_items: int, args) -> None:
        self.backend = backend
        self.n_items = n_items
        self.args = args
        self.name = f"{backend}-{n_items}"
        self.data_dir = WORK / self.name
        self.log_file = self.data_dir / "bench.log"
        self.env = leg_env(backend, self.data_dir)

    def step(self, name: str, *args: str) -> tuple[dict, float, int]:
        return djside(name, *args, env=self.env, log_file=self.log_file)

    def vacuum(self) -> dict | None:
        if self.backend != "postgres":
            return None
        result, _, _ = self.step("vacuum")
        log(f"{self.name}: VACUUM (ANALYZE) {result['vacuum_s']:.1f} s, CHECKPOINT {result['checkpoint_s']:.1f} s")
        return result

    def train(self, number: int, *extra: str) -> dict:
        load = loadavg()
        result, wall, peak = self.step("train", "--project", str(self.project_id), *extra)
        result |= {"process_wall_s": wall, "process_peak_rss_kib": peak, "loadavg_before": load,
                   "loadavg_after": loadavg()}
        phases = result["phases"]
        log(f"{self.name}: retrain {number}: {result['call_s']:.1f} s (train {result['summary']['train_seconds']:.1f}, "
            f"score {result['summary']['score_seconds']:.1f}, swap {result['swap_wall_s']:.1f}; "
            f"fill check {phases['fill_check']['wall_s']:.1f}, stop set {phases['stop_set']['wall_s']:.1f}), "
            f"peak RSS {peak / 1024:.0f} MiB")
        return result

    def verify(self, version: int) -> dict:
        result, _, _ = self.step("verify", "--project", str(self.project_id), "--version", str(version))
        log(f"{self.name}: v{version}: {result['open_items'] - result['open_not_scored_by_version']:,}/"
            f"{result['open_items']:,} open items scored by it; served item {result['served_item']} "
            f"(margin {result['served_margin']:.6f}), highest-margin item {result['highest_margin_item']} "
            f"({result['highest_margin']:.6f}): {'OK' if result['served_is_highest_margin'] else 'WRONG'}")
        return result

    def probed_train(self, number: int) -> dict:
        """A retrain while another process asks the queue for an item every 0.5 s (rolled back)."""
        out, stop = self.data_dir / "probe.jsonl", self.data_dir / "probe.stop"
        out.unlink(missing_ok=True)
        stop.unlink(missing_ok=True)
        with self.log_file.open("a") as err:
            probe = subprocess.Popen([PYTHON, str(HERE / "djside.py"), "probe", "--project", str(self.project_id),
                                      "--out", str(out), "--stop", str(stop)],
                                     cwd=ROOT, env=self.env, stdout=subprocess.DEVNULL, stderr=err)
        try:
            time.sleep(3)  # a few calls before the retrain starts
            started = time.time()
            trained = self.train(number)
            ended = time.time()
            time.sleep(2)
        finally:
            stop.touch()
            try:
                probe.wait(timeout=60)
            except subprocess.TimeoutExpired:
                probe.kill()
                probe.wait()
        calls = [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []
        trained["probe"] = probe_summary(calls, started, ended, trained)
        return trained

    def run(self) -> dict:
        args = self.args
        shutil.rmtree(self.data_dir, ignore_errors=True)
        self.data_dir.mkdir(parents=True)
        leg: dict = {"backend": self.backend, "items": self.n_items, "code": code_version(),
                     "started": dt.datetime.now().isoformat(timespec="seconds"), "loadavg_before": loadavg()}
        leg_started = time.perf_counter()
        try:
            if self.backend == "postgres":
                postgres_recreate(PG_DATABASE)
            setup_started = time.perf_counter()
            _, leg["migrate_s"], _ = run_child([PYTHON, "manage.py", "migrate", "--no-input", "-v", "0"], self.env,
                                               self.log_file, "migrate")
            log(f"{self.name}: writing {self.n_items:,} items, feature rows and {args.labelled} labels")
            setup, wall, peak = self.step("setup", "--items", str(self.n_items), "--labelled", str(args.labelled),
                                          "--seed", str(args.seed))
            setup |= {"process_wall_s": wall, "process_peak_rss_kib": peak}
            self.project_id = setup["project_id"]
            setup["vacuum"] = self.vacuum()
            setup["total_s"] = time.perf_counter() - setup_started
            setup["database_bytes"] = self.step("size")[0]["bytes"]
            leg["setup"] = setup
            t = setup["timings"]
            log(f"{self.name}: setup {setup['total_s']:.0f} s (items {t['items_s']:.0f} s, feature rows "
                f"{t['features_s']:.0f} s), database {setup['database_bytes'] / 2**30:.2f} GiB")
            if setup["feature_rows"] != self.n_items or setup["items"] != self.n_items:
                raise RuntimeError(f"setup wrote {setup['items']} items and {setup['feature_rows']} feature rows")

            retrains = []
            first = self.train(1)
            first["verify"] = self.verify(1)
            retrains.append(first)
            labelled, _, _ = self.step("label", "--project", str(self.project_id), "--items", str(self.n_items),
                                       "--seed", str(args.seed), "--count", str(args.second_labels))
            second_vacuum = self.vacuum()
            second = self.train(2)
            second["before"] = {"labelled": labelled, "vacuum": second_vacuum}
            second["verify"] = self.verify(2)
            retrains.append(second)
            leg["retrains"] = retrains
            number = 2
            if args.profile:
                number += 1
                vacuumed = self.vacuum()
                profile_file = self.data_dir / f"retrain{number}-profile.txt"
                profiled = self.train(number, "--profile", str(profile_file))
                profiled["before"] = {"vacuum": vacuumed}
                leg["profiled"] = profiled
            if args.probe:
                number += 1
                vacuumed = self.vacuum()
                probed = self.probed_train(number)
                probed["before"] = {"vacuum": vacuumed}
                leg["probed"] = probed
                p = probed["probe"]
                log(f"{self.name}: probe during retrain {number}: {p['calls_during_swap']} calls in the swap, "
                    f"max {p['max_ms_during_swap'] or 0:.0f} ms, {p['errors_during_swap']} errors")
            leg["database_bytes_end"] = self.step("size")[0]["bytes"]
            if args.alternatives:
                leg["alternatives"] = {}
                for command in ("swap", "read"):
                    log(f"{self.name}: alternatives.py {command}")
                    result, _, _ = run_child([PYTHON, str(HERE / "alternatives.py"), command, "--leg", self.name],
                                             self.env, self.log_file, f"alternatives {command}")
                    leg["alternatives"][command] = result
                    for variant in result["variants"]:
                        seconds = variant.get("total_s", variant.get("seconds"))
                        log(f"{self.name}: {command} {variant['variant']}: {seconds:.1f} s")
        finally:
            if self.backend == "postgres" and not args.keep:
                try:
                    postgres_recreate(PG_DATABASE, drop_only=True)
                except Exception as exc:  # cleanup must not hide the leg's own error
                    log(f"cleanup of {self.name}: {exc}")
            if self.backend == "sqlite" and not args.keep:
                for path in self.data_dir.glob("workbench.sqlite3*"):
                    path.unlink()
        leg["seconds"] = time.perf_counter() - leg_started
        return leg


def probe_summary(calls: list[dict], started: float, ended: float, trained: dict) -> dict:
    """The probe's calls before, during and after the retrain, and during its swap transaction."""
    swap_from = trained["epoch_marks"]["stop_agreement"]
    during = [c for c in calls if started <= c["at"] <= ended]
    swap = [c for c in calls if c["at"] + c["ms"] / 1000 >= swap_from and c["at"] <= ended]

    def stats(rows: list[dict]) -> dict:
        ms = sorted(c["ms"] for c in rows)
        return {"calls": len(rows), "errors": sum(1 for c in rows if "error" in c),
                "max_ms": ms[-1] if ms else None, "median_ms": ms[len(ms) // 2] if ms else None,
                "served_by_version": sorted({c.get("scored_by_version") for c in rows if "item" in c},
                                            key=lambda v: -1 if v is None else v)}

    before = [c for c in calls if c["at"] < started and "item" in c]
    served_in_swap = [c for c in swap if "item" in c]
    return {
        "interval_s": 0.5, "all": stats(calls), "during_retrain": stats(during), "during_swap": stats(swap),
        # On PostgreSQL the swap's row locks make SKIP LOCKED walk past the rows it already rewrote, so
        # annotators get ever lower items of the old order; on SQLite they wait for the write lock instead.
        "priority_before": before[-1]["priority"] if before else None,
        "lowest_priority_during_swap": min((c["priority"] for c in served_in_swap), default=None),
        "distinct_items_during_swap": len({c["item"] for c in served_in_swap}),
        "calls_during_swap": len(swap), "max_ms_during_swap": stats(swap)["max_ms"],
        "errors_during_swap": stats(swap)["errors"],
        "error_examples": sorted({c["error"][:200] for c in calls if "error" in c})[:3],
    }


# --- main -----------------------------------------------------------------------------

def code_version() -> dict:
    """The application code measured: git HEAD and any uncommitted change to it."""
    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    import hashlib

    paths = ("annotate", "learners", "workbench", "requirements.txt")
    dirty = [line[3:] for line in git("status", "--porcelain", "--untracked-files=all", "--", *paths).splitlines()]
    # Fingerprints of the uncommitted files, so a change made while the benchmark runs shows, by file.
    files = {name: hashlib.sha1((ROOT / name).read_bytes()).hexdigest()[:10] if (ROOT / name).is_file() else None
             for name in sorted(dirty)}
    digest = hashlib.sha1(json.dumps(files, sort_keys=True).encode()).hexdigest()[:12] if dirty else None
    # The committed state of the same paths: a commit that touches only other files (docs) changes nothing here.
    trees = dict(zip(paths, git("rev-parse", *(f"HEAD:{p}" for p in paths)).split()))
    return {"commit": git("rev-parse", "--short", "HEAD"), "subject": git("log", "-1", "--format=%s"),
            "uncommitted": dirty, "uncommitted_sha1": digest, "files": files, "trees": trees}


def machine() -> dict:
    import sqlite3

    return {**machine_facts(), "sqlite": sqlite3.sqlite_version}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100000,1000000", help="comma-separated item counts (default %(default)s)")
    parser.add_argument("--backends", default="sqlite,postgres", help="sqlite, postgres or both (default %(default)s)")
    parser.add_argument("--quick", action="store_true",
                        help="20,000 items, results under bench/scoring/work/quick (a smoke test, minutes)")
    parser.add_argument("--labelled", type=int, default=500, help="imported labels (default %(default)s)")
    parser.add_argument("--second-labels", type=int, default=10,
                        help="labels given through the queue before the second retrain (default %(default)s)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--profile", action="store_true", help="one more retrain under cProfile (not in the table)")
    parser.add_argument("--probe", action="store_true",
                        help="one more retrain while a second process asks the queue for items (not in the table)")
    parser.add_argument("--alternatives", action="store_true",
                        help="after each leg, time the prototypes in alternatives.py on its database (not app code)")
    parser.add_argument("--results-dir", default=None, help="where results.json and RESULTS.md go "
                        "(default bench/scoring, or bench/scoring/work/quick with --quick)")
    parser.add_argument("--keep", action="store_true", help="keep the databases after the run")
    parser.add_argument("--render-only", action="store_true", help="rewrite RESULTS.md from results.json")
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes = "20000"
    sizes_and_backends(parser, args, "sizes")
    if args.results_dir is None:
        args.results_dir = str(WORK / "quick" if args.quick else HERE)
    return args


def main(argv=None) -> int:
    unwind_on_signals()
    args = parse_args(argv)
    results_dir = Path(args.results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    results_path = results_dir / "results.json"
    if args.render_only:
        (results_dir / "RESULTS.md").write_text(report.render(json.loads(results_path.read_text())))
        return 0
    WORK.mkdir(parents=True, exist_ok=True)
    run_lock = (WORK / ".run.lock").open("a+")
    try:
        fcntl.flock(run_lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        run_lock.seek(0)
        print(f"another bench/scoring/run.py is running ({run_lock.read().strip() or 'unknown pid'}); two runs "
              f"would share bench/scoring/work/ and the PostgreSQL database {PG_DATABASE}.", file=sys.stderr)
        return 2
    run_lock.seek(0)
    run_lock.truncate()
    run_lock.write(f"pid {os.getpid()}, started {dt.datetime.now().isoformat(timespec='seconds')}\n")
    run_lock.flush()
    started = time.perf_counter()
    command = " ".join([os.path.relpath(PYTHON, ROOT) if PYTHON.startswith(str(ROOT)) else PYTHON,
                        os.path.relpath(__file__, ROOT), *(argv if argv is not None else sys.argv[1:])])
    results: dict = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "command": command,
        "machine": machine(), "code": code_version(), "target": report.TARGET,
        "settings": {"sizes": args.sizes, "backends": args.backends, "labelled": args.labelled,
                     "second_labels": args.second_labels, "seed": args.seed, "profile": args.profile,
                     "probe": args.probe, "alternatives": args.alternatives},
        "legs": [], "skipped": [],
    }
    code = results["code"]
    log(f"application code: {code['commit']} {code['subject']}"
        + (f" + uncommitted changes to {len(code['uncommitted'])} files" if code["uncommitted"] else ""))
    backends = list(args.backends)
    if "postgres" in backends:
        ok, message = postgres_available()
        if ok:
            results["machine"]["postgres"] = message
        else:
            log(f"skipping the PostgreSQL legs: {message}")
            results["skipped"].append(f"postgres: {message}")
            backends.remove("postgres")
    failures = 0
    for n_items in args.sizes:
        for backend in backends:
            log(f"=== {backend}, {n_items:,} items")
            try:
                leg = Leg(backend, n_items, args).run()
            except Exception as exc:
                failures += 1
                log(f"{backend}-{n_items} failed: {exc}")
                leg = {"backend": backend, "items": n_items, "error": str(exc)[-4000:]}
            results["legs"].append(leg)
            results["run_seconds"] = time.perf_counter() - started
            results_path.write_text(json.dumps(results, indent=1) + "\n")
            (results_dir / "RESULTS.md").write_text(report.render(results))
    results["code_at_end"] = code_version()
    changed = report.code_changes(results["code"], results["code_at_end"])
    if changed:
        log(f"WARNING: application files changed during the run: {', '.join(changed)}")
    results["run_seconds"] = time.perf_counter() - started
    results_path.write_text(json.dumps(results, indent=1) + "\n")
    (results_dir / "RESULTS.md").write_text(report.render(results))
    log(f"done in {results['run_seconds'] / 60:.1f} min: {results_path} and {results_dir / 'RESULTS.md'}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
