"""The Django side of the queue benchmark, run by run.py in a child process per step.

Each step boots the real settings from the environment run.py sets
(WORKBENCH_DATA_DIR, DATABASE_URL, REDIS_URL, SECRET_KEY), calls the real
services, and prints one line `RESULT <json>` on stdout. Nothing here changes
how the application works; it only creates the benchmark's data through the
same services the UI and the API use.

    python bench/queue/djside.py setup --annotators 9
    python bench/queue/djside.py import --project 1 --csv items.csv
    python bench/queue/djside.py train --project 1
    python bench/queue/djside.py vacuum
    python bench/queue/djside.py verify --project 1 --users a,b
    python bench/queue/djside.py explain --project 1 --user a
    python bench/queue/djside.py inprocess --project 1 --cycles 30
    python bench/queue/djside.py web-setup          (server_memory.py: a login and a small project)
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "workbench.settings")

import django  # noqa: E402

django.setup()

from django.contrib.auth import get_user_model  # noqa: E402
from django.db import connection, transaction  # noqa: E402
from django.db.models import Count  # noqa: E402
from django.utils import timezone  # noqa: E402
from rest_framework.authtoken.models import Token  # noqa: E402

from annotate.models import (  # noqa: E402
    Annotation,
    AnnotationSource,
    Assignment,
    AssignmentStatus,
    Item,
    Project,
    Role,
)
from annotate.services.projects import membership_add, project_create  # noqa: E402

# Far above any label count a run reaches: no retrain is requested while the HTTP
# phases run (the API's annotate path would otherwise enqueue one every 10 labels).
RETRAIN_EVERY = 1_000_000_000


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def peak_rss_kib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def emit(result: dict) -> None:
    sys.stdout.write("RESULT " + json.dumps(result) + "\n")
    sys.stdout.flush()


def cmd_setup(args) -> None:
    from annotate.demo_data import TOPICS

    User = get_user_model()
    owner = User.objects.create_user(username="bench-owner", password=None)
    project = project_create(
        name="queue benchmark", modality="text", labels=sorted(set(TOPICS.values())), owner=owner,
        description="bench/queue: BBC news paragraphs", retrain_every=RETRAIN_EVERY, overlap=1,
    )
    users = []
    for number in range(args.annotators):
        user = User.objects.create_user(username=f"bench-annotator-{number}", password=None)
        membership_add(project=project, user=user, role=Role.ANNOTATOR)
        token = Token.objects.create(user=user)
        users.append({"username": user.username, "token": token.key})
    emit({"project_id": project.pk, "users": users, "labels": list(project.labels.values_list("name", flat=True)),
          "retrain_every": project.retrain_every, "overlap": project.overlap,
          "vendor": connection.vendor})


def cmd_import(args) -> None:
    from annotate.services.importing import import_file

    project = Project.objects.get(pk=args.project)
    baseline = rss_kib()
    trace: list[tuple[int, int]] = []

    def progress(rows: int) -> None:
        trace.append((rows, rss_kib()))

    started = time.perf_counter()
    report = import_file(project=project, path=args.csv)
    seconds = time.perf_counter() - started
    # Thin the RSS trace to ~20 points for the results file.
    step = max(1, len(trace) // 20)
    emit({
        "status": report.status, "rows_read": report.rows_read, "rows_imported": report.rows_imported,
        "labels_imported": report.labels_imported, "errors": report.errors[:5],
        "seconds": seconds, "rows_per_s": report.rows_imported / seconds if seconds else None,
        "rss_before_kib": baseline, "peak_rss_kib": peak_rss_kib(),
        "rss_trace_kib": trace[::step] + ([trace[-1]] if trace and (len(trace) - 1) % step else []),
    })


def cmd_train(args) -> None:
    from learners.services.training import model_version_train

    project = Project.objects.get(pk=args.project)
    started = time.perf_counter()
    summary = model_version_train(project_id=project.pk, request_id=f"bench-{time.time_ns()}")
    seconds = time.perf_counter() - started
    open_items = Item.objects.filter(project=project, done=False)
    emit({
        "summary": summary, "seconds": seconds,
        "open_items": open_items.count(),
        "open_items_unscored": open_items.filter(scored_by_version__isnull=True).count(),
        "peak_rss_kib": peak_rss_kib(),
    })


def cmd_vacuum(args) -> None:
    """PostgreSQL: finish what a retrain that rewrote every item row leaves behind.

    VACUUM (ANALYZE) is what autovacuum would do shortly after (and this server
    may run with autovacuum off); CHECKPOINT flushes the WAL the rewrite
    produced, which otherwise keeps the checkpointer writing for a minute or
    more at 1M items, into the HTTP phases. Both are timed.
    """
    if connection.vendor != "postgresql":
        emit({"skipped": connection.vendor})
        return
    started = time.perf_counter()
    with connection.cursor() as cursor:
        for table in ("annotate_item", "annotate_assignment", "annotate_annotation"):
            cursor.execute(f"VACUUM (ANALYZE) {table}")
        cursor.execute("SHOW autovacuum")
        autovacuum = cursor.fetchone()[0]
        vacuum_seconds = time.perf_counter() - started
        started = time.perf_counter()
        cursor.execute("CHECKPOINT")
        checkpoint_seconds = time.perf_counter() - started
    emit({"seconds": vacuum_seconds, "checkpoint_seconds": checkpoint_seconds, "autovacuum": autovacuum})


def cmd_verify(args) -> None:
    project = Project.objects.get(pk=args.project)
    usernames = [u for u in args.users.split(",") if u]
    User = get_user_model()
    ids = dict(User.objects.filter(username__in=usernames).values_list("username", "id"))
    human = Annotation.objects.filter(project=project, source=AnnotationSource.HUMAN)
    per_user = dict(
        human.values("annotator__username").annotate(n=Count("id")).values_list("annotator__username", "n")
    )
    served_twice = (
        Assignment.objects.filter(project=project).values("item_id")
        .annotate(n=Count("annotator_id", distinct=True)).filter(n__gt=1).count()
    )
    annotated_twice = (
        human.values("item_id").annotate(n=Count("id")).filter(n__gt=1).count()
    )
    now = timezone.now()
    emit({
        "annotations_human": human.count(),
        "annotations_by_user": {u: per_user.get(u, 0) for u in usernames},
        "users_found": len(ids),
        "items_served_to_2plus_annotators_db": served_twice,
        "items_annotated_twice_db": annotated_twice,
        "assignments": Assignment.objects.filter(project=project).count(),
        "active_leases": Assignment.objects.filter(project=project, status=AssignmentStatus.ACTIVE,
                                                   expires_at__gt=now).count(),
        "items_done": Item.objects.filter(project=project, done=True).count(),
        "items": Item.objects.filter(project=project).count(),
    })


def cmd_explain(args) -> None:
    """The plan and the in-process cost of the queue's candidate scan (the query next/ runs)."""
    from annotate.services import queue as queue_service

    project = Project.objects.get(pk=args.project)
    user = get_user_model().objects.get(username=args.user)
    now = timezone.now()
    result: dict = {"vendor": connection.vendor}
    with transaction.atomic():
        queryset = queue_service._candidates(project, user, now, [])[:1]
        sql, params = queryset.query.sql_with_params()
        result["sql"] = sql
        with connection.cursor() as cursor:
            if connection.vendor == "sqlite":
                cursor.execute("EXPLAIN QUERY PLAN " + sql, params)
                result["plan"] = [" ".join(str(c) for c in row) for row in cursor.fetchall()]
            else:
                cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql, params)
                result["plan"] = [row[0] for row in cursor.fetchall()]
            timings = []
            for _ in range(20):
                started = time.perf_counter()
                cursor.execute(sql, params)
                cursor.fetchall()
                timings.append((time.perf_counter() - started) * 1000)
            timings.sort()
            result["scan_ms_median"] = timings[len(timings) // 2]
            result["scan_ms_max"] = timings[-1]
        transaction.set_rollback(True)
    emit(result)


def cmd_inprocess(args) -> None:
    """The server-side cost of a cycle without HTTP, gunicorn or other annotators.

    A fresh annotator does `--cycles` cycles through Django's test client. Per
    request: wall milliseconds, SQL statements, milliseconds inside the
    database driver's execute(), and how long its transaction stays open (first
    to last statement inside the atomic block; on SQLite the database write
    lock is held that long).
    """
    from django.test import Client

    from annotate.services.projects import membership_add

    project = Project.objects.get(pk=args.project)
    user = get_user_model().objects.create_user(username="bench-inprocess", password=None)
    membership_add(project=project, user=user, role=Role.ANNOTATOR)
    client = Client(HTTP_HOST="127.0.0.1", HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
    current: dict = {}

    def wrapper(execute, sql, params, many, context):
        started = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            ended = time.perf_counter()
            current["statements"] += 1
            current["db_s"] += ended - started
            if connection.in_atomic_block:
                current.setdefault("txn_first", started)
                current["txn_last"] = ended

    def request(path: str, body: dict | None) -> tuple[dict, dict]:
        current.clear()
        current.update(statements=0, db_s=0.0)
        started = time.perf_counter()
        with connection.execute_wrapper(wrapper):
            response = client.post(path, body or {}, content_type="application/json")
        wall = time.perf_counter() - started
        sample = {"ms": wall * 1000, "statements": current["statements"], "db_ms": current["db_s"] * 1000,
                  "txn_ms": (current["txn_last"] - current["txn_first"]) * 1000 if "txn_first" in current else 0.0}
        return response.json(), sample

    samples: dict[str, list[dict]] = {"next": [], "annotate": []}
    for number in range(args.warm + args.cycles):
        body, next_sample = request(f"/api/v1/projects/{project.pk}/next/", None)
        item = body["item"]
        _, annotate_sample = request(f"/api/v1/projects/{project.pk}/annotations/",
                                     {"item": item["id"], "label": "tech"})
        if number >= args.warm:
            samples["next"].append(next_sample)
            samples["annotate"].append(annotate_sample)

    def summary(rows: list[dict]) -> dict:
        ms = sorted(r["ms"] for r in rows)
        return {
            "n": len(rows), "ms_median": ms[len(ms) // 2], "ms_mean": sum(ms) / len(ms),
            "statements": max(r["statements"] for r in rows),
            "db_ms_mean": sum(r["db_ms"] for r in rows) / len(rows),
            "txn_ms_mean": sum(r["txn_ms"] for r in rows) / len(rows),
        }

    # What one full (generation 2) garbage collection of a request-serving process's heap costs:
    # gunicorn workers pay it every few hundred requests, inside whichever request triggers it.
    import gc

    started = time.perf_counter()
    gc.collect()
    gc_ms = (time.perf_counter() - started) * 1000
    emit({name: summary(rows) for name, rows in samples.items()}
         | {"vendor": connection.vendor, "gc_full_ms": gc_ms, "gc_tracked_objects": len(gc.get_objects())})


def cmd_web_setup(args) -> None:
    """A staff login with a password and a 40-item project, for server_memory.py to browse the pages."""
    import io
    import secrets

    from annotate.demo_data import TOPICS, bbc_news
    from annotate.services.importing import import_items

    password = secrets.token_urlsafe(12)
    user = get_user_model().objects.create_user(username="bench-web", password=password, is_staff=True,
                                                is_superuser=True)
    project = project_create(name="server memory", modality="text", labels=sorted(set(TOPICS.values())),
                             owner=user, retrain_every=RETRAIN_EVERY)
    rows = [row for _, row in zip(range(40), bbc_news())]
    lines = "".join(json.dumps({"id": i, "text": t}) + "\n" for i, t, _ in rows)
    import_items(project=project, stream=io.BytesIO(lines.encode()), file_format="jsonl",
                 source_name="server-memory.jsonl", featurise=False)
    emit({"project_id": project.pk, "username": user.username, "password": password})


def cmd_retrain_every(args) -> None:
    """Set the project's retrain cadence (the retrain phase turns the default of 10 back on)."""
    from annotate.models import Project

    Project.objects.filter(pk=args.project).update(retrain_every=args.every)
    emit({"project_id": args.project, "retrain_every": args.every})


def cmd_versions(args) -> None:
    """The project's model versions: how many, and each one's labels, train/score/swap seconds."""
    from learners.models import ModelVersion

    rows = list(ModelVersion.objects.filter(project_id=args.project).order_by("number")
                .values("number", "trained_on", "train_seconds", "score_seconds", "metrics", "created_at"))
    emit({"count": len(rows), "versions": [
        {"number": r["number"], "trained_on": r["trained_on"], "train_s": r["train_seconds"],
         "score_s": r["score_seconds"], "swap_s": (r["metrics"] or {}).get("swap_seconds"),
         "created_at": r["created_at"].isoformat()} for r in rows]})


def main() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("setup")
    p.add_argument("--annotators", type=int, required=True)
    p = sub.add_parser("import")
    p.add_argument("--project", type=int, required=True)
    p.add_argument("--csv", required=True)
    p = sub.add_parser("train")
    p.add_argument("--project", type=int, required=True)
    sub.add_parser("vacuum")
    p = sub.add_parser("verify")
    p.add_argument("--project", type=int, required=True)
    p.add_argument("--users", required=True)
    p = sub.add_parser("explain")
    p.add_argument("--project", type=int, required=True)
    p.add_argument("--user", required=True)
    p = sub.add_parser("inprocess")
    p.add_argument("--project", type=int, required=True)
    p.add_argument("--cycles", type=int, default=30)
    p.add_argument("--warm", type=int, default=3)
    sub.add_parser("web-setup")
    p = sub.add_parser("retrain-every")
    p.add_argument("--project", type=int, required=True)
    p.add_argument("--every", type=int, required=True)
    p = sub.add_parser("versions")
    p.add_argument("--project", type=int, required=True)
    args = parser.parse_args()
    {"setup": cmd_setup, "web-setup": cmd_web_setup, "import": cmd_import, "train": cmd_train, "vacuum": cmd_vacuum,
     "verify": cmd_verify, "explain": cmd_explain, "inprocess": cmd_inprocess,
     "retrain-every": cmd_retrain_every, "versions": cmd_versions}[args.command](args)


if __name__ == "__main__":
    main()
