"""Where the time goes: cProfile of the annotation loop and of the importer, in-process.

Run after `run.py --keep`, against a leg's database:

    .venv/bin/python bench/queue/profiling.py loop --leg sqlite-100000 --cycles 100
    .venv/bin/python bench/queue/profiling.py loop --leg postgres-100000 --postgres --cycles 100
    .venv/bin/python bench/queue/profiling.py import --rows 20000

`loop` adds a fresh annotator to the leg's project and runs POST next/ + POST
annotations/ through Django's test client (no HTTP, no gunicorn): it prints
the SQL statements of one cycle, the milliseconds and query count per request
without the profiler, then the profile. `import` imports the first N rows of
the benchmark CSV into a new project of a scratch database under
bench/queue/work/profile-import/ (SQLite) or a scratch PostgreSQL database
`bench_queue_profile` (with --postgres), under cProfile.
"""
from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
WORK = HERE / "work"
PG_BASE = "postgres://postgres@127.0.0.1:5432/"
PROFILE_DB = "bench_queue_profile"


def boot(data_dir: Path, database_url: str | None, redis_url: str | None) -> None:
    sys.path.insert(0, str(ROOT))
    os.environ.update(SECRET_KEY="bench-queue-profile", DEBUG="0", WORKBENCH_DATA_DIR=str(data_dir),
                      DJANGO_SETTINGS_MODULE="workbench.settings", ALLOWED_HOSTS="testserver,127.0.0.1")
    for name, value in (("DATABASE_URL", database_url), ("REDIS_URL", redis_url)):
        if value:
            os.environ[name] = value
        else:
            os.environ.pop(name, None)
    import django

    django.setup()


def print_profile(profile: cProfile.Profile, limit: int) -> None:
    stream = io.StringIO()
    stats = pstats.Stats(profile, stream=stream)
    in_driver = sum(
        tt for (file, _, name), (_, _, tt, _, _) in stats.stats.items()
        if file == "~" and any(word in name for word in ("execute", "commit", "fetch", "copy"))
    )
    print(f"profiled {stats.total_tt:.2f} s, of which {in_driver:.2f} s inside the database driver "
          f"(execute/fetch/commit); the rest is Python")
    stats.sort_stats("tottime").print_stats(limit)
    stats.sort_stats("cumulative").print_stats(limit)
    print(stream.getvalue())


def cmd_loop(args) -> None:
    data_dir = WORK / args.leg
    boot(data_dir, PG_BASE + "bench_queue" if args.postgres else None,
         "redis://127.0.0.1:6379/14" if args.postgres else None)
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext
    from rest_framework.authtoken.models import Token

    from annotate.models import Project, Role
    from annotate.services.projects import membership_add

    project = Project.objects.get(name="queue benchmark")
    user = get_user_model().objects.create_user(username=f"profile-{time.time_ns()}", password=None)
    membership_add(project=project, user=user, role=Role.ANNOTATOR)
    client = Client(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
    next_path = f"/api/v1/projects/{project.pk}/next/"
    annotate_path = f"/api/v1/projects/{project.pk}/annotations/"

    marks: list[tuple[str, float]] = []

    def mark(execute, sql, params, many, context):
        marks.append(("begin" if sql.startswith("BEGIN") else "sql", time.perf_counter()))
        try:
            return execute(sql, params, many, context)
        finally:
            marks.append(("end", time.perf_counter()))

    held = {"next": [], "annotate": []}

    def transaction_ms() -> float:
        """From the transaction's first statement (BEGIN on SQLite) to the end of its last one."""
        begins = [t for kind, t in marks if kind == "begin"]
        first = begins[0] if begins else marks[3][1]
        return (marks[-1][1] - first) * 1000

    def cycle(capture: bool = False):
        with CaptureQueriesContext(connection) as first, connection.execute_wrapper(mark):
            marks.clear()
            started = time.perf_counter()
            response = client.post(next_path, content_type="application/json")
            next_ms = (time.perf_counter() - started) * 1000
            held["next"].append(transaction_ms())
        item = response.json()["item"]
        with CaptureQueriesContext(connection) as second, connection.execute_wrapper(mark):
            marks.clear()
            started = time.perf_counter()
            response = client.post(annotate_path, {"item": item["id"], "label": "tech"},
                                   content_type="application/json")
            annotate_ms = (time.perf_counter() - started) * 1000
            held["annotate"].append(transaction_ms())
        assert response.status_code == 201, response.content
        if capture:
            for name, queries in (("next", first), ("annotate", second)):
                print(f"-- POST {name}: {len(queries.captured_queries)} statements")
                for query in queries.captured_queries:
                    print(f"   {query['sql'][:160]}")
        return next_ms, annotate_ms, len(first.captured_queries), len(second.captured_queries)

    cycle(capture=True)
    timings = [cycle() for _ in range(args.cycles)]
    n = len(timings)
    print(f"\nin-process, no profiler, {n} cycles: next {sum(t[0] for t in timings) / n:.1f} ms "
          f"({timings[0][2]} statements), annotate {sum(t[1] for t in timings) / n:.1f} ms "
          f"({timings[0][3]} statements) on average")
    for name, values in held.items():
        print(f"  {name}: transaction open (first statement to end of last) {sum(values) / len(values):.1f} ms "
              "on average; on SQLite every such transaction holds the database write lock")
    print()
    profile = cProfile.Profile()
    profile.enable()
    for _ in range(args.cycles):
        cycle()
    profile.disable()
    print_profile(profile, args.limit)


def cmd_import(args) -> None:
    csv_path = sorted((WORK / "csv").glob("bbc-paragraphs-*.csv"), key=lambda p: p.stat().st_size)
    if not csv_path:
        sys.exit("no benchmark CSV under bench/queue/work/csv; run bench/queue/run.py first")
    source = csv_path[-1]
    sample = WORK / "profile-import" / f"first-{args.rows}.csv"
    data_dir = WORK / "profile-import"
    data_dir.mkdir(parents=True, exist_ok=True)
    with source.open(encoding="utf-8") as src, sample.open("w", encoding="utf-8") as dst:
        for number, line in enumerate(src):
            if number > args.rows:
                break
            dst.write(line)
    database_url = None
    if args.postgres:
        import psycopg

        with psycopg.connect("host=127.0.0.1 user=postgres dbname=postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{PROFILE_DB}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{PROFILE_DB}"')
        database_url = PG_BASE + PROFILE_DB
    else:
        for old in data_dir.glob("workbench.sqlite3*"):
            old.unlink()
    try:
        boot(data_dir, database_url, "redis://127.0.0.1:6379/14" if args.postgres else None)
        from django.contrib.auth import get_user_model
        from django.core.management import call_command

        from annotate.demo_data import TOPICS
        from annotate.services.importing import import_file
        from annotate.services.projects import project_create

        call_command("migrate", verbosity=0)
        owner = get_user_model().objects.create_user(username="profile-owner", password=None)
        project = project_create(name="profile import", modality="text", labels=sorted(set(TOPICS.values())),
                                 owner=owner, retrain_every=10**9)
        profile = cProfile.Profile()
        started = time.perf_counter()
        profile.enable()
        report = import_file(project=project, path=sample)
        profile.disable()
        seconds = time.perf_counter() - started
        print(f"{report.rows_imported:,} rows in {seconds:.1f} s under the profiler "
              f"({report.rows_imported / seconds:,.0f} rows/s)")
        print_profile(profile, args.limit)
    finally:
        if args.postgres:
            from django.db import connections

            connections.close_all()
            import psycopg

            with psycopg.connect("host=127.0.0.1 user=postgres dbname=postgres", autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{PROFILE_DB}" WITH (FORCE)')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("loop")
    p.add_argument("--leg", required=True, help="a folder under bench/queue/work, e.g. sqlite-100000")
    p.add_argument("--postgres", action="store_true", help="the leg's database is the kept bench_queue")
    p.add_argument("--cycles", type=int, default=100)
    p.add_argument("--limit", type=int, default=25)
    p = sub.add_parser("import")
    p.add_argument("--rows", type=int, default=20_000)
    p.add_argument("--postgres", action="store_true")
    p.add_argument("--limit", type=int, default=25)
    args = parser.parse_args()
    {"loop": cmd_loop, "import": cmd_import}[args.command](args)


if __name__ == "__main__":
    main()
