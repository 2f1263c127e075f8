"""The Django side of the scoring benchmark, run by run.py in a child process per step.

Each step boots the real settings from the environment run.py sets
(WORKBENCH_DATA_DIR, DATABASE_URL, SECRET_KEY) and prints one line
`RESULT <json>` on stdout.

    python bench/scoring/djside.py setup --items 100000 --labelled 500 --seed 0
    python bench/scoring/djside.py vacuum
    python bench/scoring/djside.py train --project 1 [--profile out.txt]
    python bench/scoring/djside.py verify --project 1 --version 1
    python bench/scoring/djside.py label --project 1 --items 100000 --seed 0 --count 10
    python bench/scoring/djside.py probe --project 1 --out probe.jsonl --stop stop.flag

`setup` writes the data fast (raw executemany on SQLite, COPY on PostgreSQL)
in the shape the importer and features_fill leave it; every other step goes
through the application's own services.
"""
from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "workbench.settings")

import django  # noqa: E402

django.setup()

import joblib  # noqa: E402
import numpy as np  # noqa: E402
import synthetic  # noqa: E402
from bulk_load import labelled_positions, position_of, postgres_bulk, sqlite_bulk  # noqa: E402
from django.conf import settings  # noqa: E402
from django.contrib.auth import get_user_model  # noqa: E402
from django.db import connection, transaction  # noqa: E402
from phase_clock import PhaseClock, peak_rss_kib  # noqa: E402

from annotate.models import Annotation, AnnotationSource, Item, Project, Role  # noqa: E402
from annotate.services.projects import membership_add, project_create  # noqa: E402
from learners.ml.featurisers import TextMiniLM  # noqa: E402
from learners.models import FeatureSpace, ItemFeatures, ModelVersion  # noqa: E402

LABELS = ["business", "entertainment", "politics", "sport", "tech"]  # mixture component k is LABELS[k]
OWNER, ANNOTATOR, LABELLER = "bench-owner", "bench-annotator", "bench-labeller"
# Far above any label count a run reaches, so labelling before the second retrain enqueues nothing.
RETRAIN_EVERY = 1_000_000_000


def emit(result: dict) -> None:
    sys.stdout.write("RESULT " + json.dumps(result) + "\n")
    sys.stdout.flush()


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


# --- setup --------------------------------------------------------------------

def cmd_setup(args) -> None:
    timings: dict = {}
    started = time.perf_counter()
    User = get_user_model()
    owner = User.objects.create_user(username=OWNER, password=None)
    project = project_create(
        name=f"scoring benchmark ({args.items:,} items)", modality="text", labels=LABELS, owner=owner,
        featuriser="text_minilm", query_strategy="margin", estimator="logistic_regression",
        retrain_every=RETRAIN_EVERY, description="bench/scoring: synthetic MiniLM-shaped vectors",
    )
    for username in (ANNOTATOR, LABELLER):
        membership_add(project=project, user=User.objects.create_user(username=username, password=None),
                       role=Role.ANNOTATOR)
    state = io.BytesIO()
    joblib.dump(TextMiniLM(), state)
    space = FeatureSpace.objects.create(
        project=project, featuriser=TextMiniLM.name, version=TextMiniLM.version, dim=TextMiniLM.dim_,
        is_sparse=False, state=state.getvalue(), fitted_on=0,
    )
    timings["project_s"] = time.perf_counter() - started
    labelled = labelled_positions(args.items, args.labelled, args.seed)
    if connection.vendor == "sqlite":
        item_ids = sqlite_bulk(str(settings.DATABASES["default"]["NAME"]), project.pk, space.pk, args.items,
                                labelled, args.seed, timings)
    else:
        item_ids = postgres_bulk(project.pk, space.pk, args.items, labelled, args.seed, timings)
    started = time.perf_counter()
    components = synthetic.mixture_components(args.items, args.seed)
    label_ids = dict(project.labels.values_list("name", "id"))
    Annotation.objects.bulk_create([
        Annotation(project=project, item_id=int(item_ids[k]), label_id=label_ids[LABELS[components[k]]],
                   source=AnnotationSource.IMPORT)
        for k in labelled.tolist()
    ], batch_size=500)
    timings["labels_s"] = time.perf_counter() - started
    emit({
        "project_id": project.pk, "space_id": space.pk, "vendor": connection.vendor, "timings": timings,
        "items": Item.objects.filter(project=project).count(),
        "open_items": Item.objects.filter(project=project, done=False).count(),
        "feature_rows": ItemFeatures.objects.filter(space=space).count(),
        "labelled": Annotation.objects.filter(project=project).count(),
        "class_counts": {LABELS[c]: int(n) for c, n in zip(*np.unique(components[labelled], return_counts=True))},
        "peak_rss_kib": peak_rss_kib(),
    })


def cmd_vacuum(args) -> None:
    """PostgreSQL: VACUUM (ANALYZE) the tables the benchmark writes, then CHECKPOINT; both timed.

    What autovacuum would do after a bulk load or a rewrite of every item row
    (the server this was developed on runs with autovacuum off), and the
    checkpoint so the next step does not pay for the previous one's WAL.
    """
    if connection.vendor != "postgresql":
        emit({"skipped": connection.vendor})
        return
    started = time.perf_counter()
    with connection.cursor() as cursor:
        for model in (Item, ItemFeatures, Annotation):
            cursor.execute(f'VACUUM (ANALYZE) "{model._meta.db_table}"')
        vacuum_s = time.perf_counter() - started
        started = time.perf_counter()
        cursor.execute("CHECKPOINT")
        checkpoint_s = time.perf_counter() - started
        cursor.execute("SHOW autovacuum")
        autovacuum = cursor.fetchone()[0]
    emit({"vacuum_s": vacuum_s, "checkpoint_s": checkpoint_s, "autovacuum": autovacuum})


def cmd_size(args) -> None:
    if connection.vendor == "sqlite":
        path = Path(settings.DATABASES["default"]["NAME"])
        size = sum(p.stat().st_size for p in path.parent.glob(path.name + "*") if p.suffix != ".writers")
    else:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_database_size(current_database())")
            size = cursor.fetchone()[0]
    emit({"bytes": size})


# --- the timed retrain --------------------------------------------------------

def _database_pid() -> int | None:
    if connection.vendor != "postgresql":
        return None
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return cursor.fetchone()[0]


def cmd_train(args) -> None:
    from learners.services import scoring, training

    rss_before = rss_kib()
    database_pid = _database_pid()
    clock = PhaseClock(database_pid)
    # Wrap the steps model_version_train calls (by the names it imported), timing them without changing them.
    for name, attribute in [
        ("space", "feature_space_current"), ("fill_check", "features_fill"), ("labels", "training_labels"),
        ("load_labelled", "features_load"), ("cross_validation", "cross_validated_accuracy"),
        ("score_pool", "pool_score"), ("stop_set", "stop_set_predict"), ("stop_agreement", "stop_agreement"),
        ("queue_reorder", "queue_reorder"),
    ]:
        setattr(training, attribute, clock.timed(name, getattr(training, attribute)))
    scoring.features_iter_open = clock.timed_iter("score_read_rows", scoring.features_iter_open)
    progress_log: list[tuple[str, int, float]] = []
    profiler = cProfile.Profile() if args.profile else None
    since = clock.now()

    def progress(phase: str, done: int, total: int) -> None:
        progress_log.append((phase, done, round(time.perf_counter() - since[0], 3)))

    if profiler:
        profiler.enable()
    summary = training.model_version_train(project_id=args.project, request_id=args.request, progress=progress)
    if profiler:
        profiler.disable()
    clock.add("call", since)
    call_end = clock.marks["call"]
    phases = clock.phases
    if summary.get("status") != "trained":
        raise SystemExit(f"model_version_train did not train: {summary}")
    # Everything after the stop-set predictions: pickling the model, the transaction that stores the
    # version and rewrites every open item's priority, and its COMMIT.
    swap_wall = call_end - clock.marks["stop_agreement"]
    to_epoch = time.time() - time.perf_counter()
    result = {
        "summary": summary, "phases": phases, "call_s": phases["call"]["wall_s"], "swap_wall_s": swap_wall,
        "swap_in_transaction_s": summary["metrics"].get("swap_seconds"),
        "progress": _progress_summary(progress_log), "rss_before_kib": rss_before, "peak_rss_kib": peak_rss_kib(),
        "database_pid": database_pid, "vendor": connection.vendor,
        "epoch_marks": {name: mark + to_epoch for name, mark in clock.marks.items()} | {"start": since[0] + to_epoch},
    }
    if profiler:
        result["profile"] = _profile_write(profiler, Path(args.profile))
    emit(result)


def _progress_summary(log: list[tuple[str, int, float]]) -> dict:
    """Seconds into the call at which each progress phase first and last reported."""
    out: dict = {}
    for phase, done, at in log:
        entry = out.setdefault(phase, {"first_s": at, "last_s": at, "reports": 0, "done": done})
        entry["last_s"], entry["done"] = at, done
        entry["reports"] += 1
    return out


def _profile_write(profiler: cProfile.Profile, path: Path) -> dict:
    text = io.StringIO()
    stats = pstats.Stats(profiler, stream=text)
    stats.sort_stats("cumulative").print_stats(40)
    stats.sort_stats("tottime").print_stats(30)
    path.write_text(text.getvalue())
    stats.dump_stats(str(path.with_suffix(".prof")))
    top = []
    for (filename, line, function), (_, calls, tottime, cumtime, _) in sorted(
        stats.stats.items(), key=lambda kv: -kv[1][2]
    )[:15]:
        top.append({"function": f"{Path(filename).name}:{line}:{function}", "calls": calls,
                    "tottime_s": round(tottime, 3), "cumtime_s": round(cumtime, 3)})
    return {"text": str(path), "top_tottime": top}


# --- checks -------------------------------------------------------------------

def cmd_verify(args) -> None:
    """Every open item scored by this version; the queue serves the highest-margin item first.

    Margins are recomputed here from the stored model and the cached feature
    rows, independently of the values the retrain wrote.
    """
    from annotate.services.queue import queue_next_item

    project = Project.objects.get(pk=args.project)
    version = ModelVersion.objects.get(project=project, number=args.version)
    estimator = joblib.load(io.BytesIO(bytes(version.artifact)))
    label_ids = dict(project.labels.values_list("name", "id"))
    class_label_ids = np.array([label_ids[str(c)] for c in estimator.classes_], dtype=np.int64)
    space = FeatureSpace.objects.get(project=project, featuriser=project.featuriser)
    open_items = Item.objects.filter(project=project, done=False)
    counts = {"open_items": open_items.count(),
              "open_not_scored_by_version": open_items.exclude(scored_by_version=args.version).count()}
    sql = (
        f'SELECT f.item_id, f.vector, i.priority, i.predicted_label_id, i.confidence '
        f'FROM "{ItemFeatures._meta.db_table}" f JOIN "{Item._meta.db_table}" i ON i.id = f.item_id '
        f"WHERE f.space_id = %s AND i.done = %s AND f.item_id > %s ORDER BY f.item_id LIMIT %s"
    )
    last_id, checked = 0, 0
    best_margin, best_id = -np.inf, None
    worst_priority_error = worst_confidence_error = 0.0
    wrong_predictions = 0
    while True:
        with connection.cursor() as cursor:
            cursor.execute(sql, [space.pk, False, last_id, 20_000])
            rows = cursor.fetchall()
        if not rows:
            break
        ids = np.array([r[0] for r in rows], dtype=np.int64)
        X = np.frombuffer(b"".join(bytes(r[1]) for r in rows), dtype="<f4").reshape(len(rows), space.dim)
        proba = estimator.predict_proba(X)
        top2 = np.sort(proba, axis=1)[:, -2:]
        margin = 1.0 - (top2[:, 1] - top2[:, 0])
        stored = np.array([r[2] for r in rows], dtype=np.float64)
        worst_priority_error = max(worst_priority_error, float(np.abs(stored - margin).max()))
        confidence = np.array([np.nan if r[4] is None else r[4] for r in rows], dtype=np.float64)
        worst_confidence_error = max(worst_confidence_error, float(np.nanmax(np.abs(confidence - top2[:, 1]))))
        predicted = np.array([-1 if r[3] is None else r[3] for r in rows], dtype=np.int64)
        wrong_predictions += int((predicted != class_label_ids[proba.argmax(axis=1)]).sum())
        at = int(np.argmax(margin))  # first of equal maxima: the lowest id, as the queue breaks ties
        if margin[at] > best_margin:
            best_margin, best_id = float(margin[at]), int(ids[at])
        checked += len(rows)
        last_id = int(ids[-1])
    annotator = get_user_model().objects.get(username=ANNOTATOR)
    with transaction.atomic():
        started = time.perf_counter()
        assignment = queue_next_item(project=project, annotator=annotator)
        next_ms = (time.perf_counter() - started) * 1000
        served = assignment.item
        transaction.set_rollback(True)  # leave no lease behind
    served_margin = _margin_of(estimator, space, served.pk)
    emit(counts | {
        "version": args.version, "rows_checked": checked,
        "max_priority_error": worst_priority_error, "max_confidence_error": worst_confidence_error,
        "wrong_predicted_labels": wrong_predictions,
        "highest_margin_item": best_id, "highest_margin": best_margin,
        "served_item": served.pk, "served_margin": served_margin, "served_priority": served.priority,
        "served_is_highest_margin": served.pk == best_id or abs(served_margin - best_margin) <= 1e-9,
        "next_item_ms": next_ms,
        "all_scored": counts["open_not_scored_by_version"] == 0 and checked == counts["open_items"],
    })


def _margin_of(estimator, space: FeatureSpace, item_id: int) -> float:
    blob = ItemFeatures.objects.get(space=space, item_id=item_id).vector
    proba = estimator.predict_proba(np.frombuffer(bytes(blob), dtype="<f4").reshape(1, space.dim))[0]
    top2 = np.sort(proba)[-2:]
    return float(1.0 - (top2[1] - top2[0]))


def cmd_label(args) -> None:
    """The labeller takes the next `--count` items from the queue and labels each with its mixture component."""
    from annotate.services.annotations import annotation_create
    from annotate.services.queue import queue_next_item

    project = Project.objects.get(pk=args.project)
    labeller = get_user_model().objects.get(username=LABELLER)
    components = synthetic.mixture_components(args.items, args.seed)
    started = time.perf_counter()
    labelled = []
    for _ in range(args.count):
        assignment = queue_next_item(project=project, annotator=labeller)
        label = LABELS[components[position_of(assignment.item.external_id)]]
        annotation_create(project=project, annotator=labeller, item_id=assignment.item_id, label=label)
        labelled.append(assignment.item_id)
    emit({"labelled": labelled, "seconds": time.perf_counter() - started,
          "annotations": Annotation.objects.filter(project=project).count()})


def cmd_probe(args) -> None:
    """What an annotator sees while a retrain runs: queue_next_item every `--interval` s, rolled back.

    Appends one JSON line per call to `--out` (start offset, milliseconds, the
    item served or the error) until the file `--stop` exists.
    """
    from annotate.errors import QueueClosed
    from annotate.services.queue import queue_next_item

    project = Project.objects.get(pk=args.project)
    annotator = get_user_model().objects.get(username=ANNOTATOR)
    stop = Path(args.stop)
    calls = 0
    with open(args.out, "a") as out:
        while not stop.exists():
            started = time.time()
            record: dict = {"at": started}
            try:
                with transaction.atomic():
                    assignment = queue_next_item(project=project, annotator=annotator)
                    record.update(item=assignment.item_id, priority=assignment.item.priority,
                                  scored_by_version=assignment.item.scored_by_version)
                    transaction.set_rollback(True)
            except QueueClosed as exc:
                record["error"] = f"QueueClosed: {exc}"
            except Exception as exc:  # recorded, not hidden: the point is what an annotator would get
                record["error"] = f"{type(exc).__name__}: {exc}"
                connection.close()
            record["ms"] = (time.time() - started) * 1000
            out.write(json.dumps(record) + "\n")
            out.flush()
            calls += 1
            time.sleep(args.interval)
    emit({"calls": calls})


def main() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("setup")
    p.add_argument("--items", type=int, required=True)
    p.add_argument("--labelled", type=int, default=500)
    p.add_argument("--seed", type=int, default=0)
    sub.add_parser("vacuum")
    sub.add_parser("size")
    p = sub.add_parser("train")
    p.add_argument("--project", type=int, required=True)
    p.add_argument("--request", default=None)
    p.add_argument("--profile", default=None, help="write cProfile tables to this file")
    p = sub.add_parser("verify")
    p.add_argument("--project", type=int, required=True)
    p.add_argument("--version", type=int, required=True)
    p = sub.add_parser("label")
    p.add_argument("--project", type=int, required=True)
    p.add_argument("--items", type=int, required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--count", type=int, default=10)
    p = sub.add_parser("probe")
    p.add_argument("--project", type=int, required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--stop", required=True)
    p.add_argument("--interval", type=float, default=0.5)
    args = parser.parse_args()
    if args.command == "train" and args.request is None:
        args.request = f"bench-scoring-{time.time_ns()}"
    {"setup": cmd_setup, "vacuum": cmd_vacuum, "size": cmd_size, "train": cmd_train, "verify": cmd_verify,
     "label": cmd_label, "probe": cmd_probe}[args.command](args)


if __name__ == "__main__":
    main()
