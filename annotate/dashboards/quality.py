"""The progress and quality dashboard: reads of one project, as plain dicts for the page and its CSVs.

Counting is done in SQL; what needs each row in order (active time, medians,
kappas) is done by the pure functions in `annotate.metrics.quality` over rows
streamed from one query each. Only human labels count: imported labels are
seed data, given by nobody in particular and at no time.
"""
from __future__ import annotations

from collections import defaultdict

from django.contrib.auth import get_user_model
from django.db.models import Count, Q

from annotate.metrics.quality import BREAK_SECONDS, agreement_summary, skip_rate, throughput
from annotate.models import Annotation, AnnotationSource, Assignment, AssignmentStatus, Project
from learners.baselines import random_baseline

CSV_TABLES = ("learning-curve", "model-versions", "throughput", "agreement-pairs")

_VERSION_FIELDS = ("number", "created_at", "estimator", "query_strategy", "featuriser", "trained_on",
                   "label_count", "items_scored", "train_seconds", "metrics")


def _human_labels(project: Project):
    return Annotation.objects.filter(project=project, source=AnnotationSource.HUMAN, annotator__isnull=False)


def _usernames(ids) -> dict[int, str]:
    User = get_user_model()
    return dict(User.objects.filter(pk__in=set(ids)).values_list("pk", User.USERNAME_FIELD))


def quality_versions(project: Project) -> list[dict]:
    """Every model version, oldest first, with its metrics flattened (blobs never loaded)."""
    rows = []
    for v in project.model_versions.order_by("number").values(*_VERSION_FIELDS):
        metrics = v.pop("metrics") or {}
        v.update(
            accuracy=metrics.get("accuracy"), accuracy_std=metrics.get("accuracy_std"),
            cv_folds=metrics.get("cv_folds"), accuracy_reason=metrics.get("accuracy_reason", ""),
            stop_kappa=metrics.get("stop_kappa"), stop_agreement=metrics.get("stop_agreement"),
            stop_set_size=metrics.get("stop_set_size"),
        )
        rows.append(v)
    return rows


def quality_learning_curve(project: Project, versions: list[dict]) -> dict:
    """The project's accuracy against labels spent, and the benchmark's random-sampling curve if one applies."""
    points = [{"version": v["number"], "labels": v["label_count"], "trained_on": v["trained_on"],
               "accuracy": v["accuracy"], "accuracy_std": v["accuracy_std"]}
              for v in versions if v["accuracy"] is not None]
    baseline = random_baseline(project.benchmark_dataset)
    if baseline is not None:
        reason = ""
    elif not project.benchmark_dataset:
        reason = "This project is not matched to a benchmark data set (an admin can set one), so no baseline."
    else:
        reason = f"The last benchmark has no data set '{project.benchmark_dataset}', so no baseline."
    differs = []
    if baseline is not None:
        if baseline.estimator and baseline.estimator != project.estimator:
            differs.append(f"its estimator was {baseline.estimator}, this project's is {project.estimator}")
        if baseline.featuriser and baseline.featuriser != project.featuriser:
            differs.append(f"its features were {baseline.featuriser}, this project's are {project.featuriser}")
    return {
        "points": points, "unmeasured": [v["number"] for v in versions if v["accuracy"] is None],
        "baseline": baseline, "baseline_reason": reason, "baseline_differs": differs,
        "baseline_rows": [] if baseline is None else list(zip(baseline.labels, baseline.accuracy,
                                                              baseline.accuracy_std)),
    }


def quality_throughput(project: Project) -> dict:
    """Per annotator: labels, labels per active hour, median seconds per item, skips; and the team's totals."""
    series: dict[int, list] = defaultdict(list)
    rows = _human_labels(project).order_by("annotator_id", "created_at", "id").values_list(
        "annotator_id", "created_at", "seconds")
    for annotator_id, created_at, seconds in rows.iterator(chunk_size=10_000):
        series[annotator_id].append((created_at, seconds))
    decided = (
        Assignment.objects.filter(project=project).values("annotator_id").annotate(
            skipped=Count("id", filter=Q(status=AssignmentStatus.SKIPPED)),
            annotated=Count("id", filter=Q(status=AssignmentStatus.ANNOTATED)),
        ).filter(Q(skipped__gt=0) | Q(annotated__gt=0))
    )
    skips = {row["annotator_id"]: (row["skipped"], row["annotated"]) for row in decided}
    names = _usernames(list(series) + list(skips))
    annotators = []
    for annotator_id in sorted(set(series) | set(skips), key=lambda pk: (names.get(pk, ""), pk)):
        t = throughput(series.get(annotator_id, []))
        skipped, annotated = skips.get(annotator_id, (0, 0))
        annotators.append({
            "annotator_id": annotator_id, "annotator": names.get(annotator_id, f"user {annotator_id}"),
            "labels": t.labels, "active_seconds": t.active_seconds, "sessions": t.sessions,
            "labels_per_hour": t.labels_per_hour, "median_seconds": t.median_seconds,
            "skipped": skipped, "annotated": annotated, "skip_rate": skip_rate(skipped, annotated),
        })
    labels = sum(a["labels"] for a in annotators)
    active = sum(a["active_seconds"] for a in annotators)
    everyone = throughput([row for rows in series.values() for row in rows])
    skipped = sum(a["skipped"] for a in annotators)
    annotated = sum(a["annotated"] for a in annotators)
    return {
        "annotators": annotators,
        "team": {
            "labels": labels, "active_seconds": active,
            # Labels per annotator-hour: the sum of everyone's active time, not the wall clock.
            "labels_per_hour": labels / active * 3600.0 if active > 0 else None,
            "median_seconds": everyone.median_seconds,
            "skipped": skipped, "annotated": annotated, "skip_rate": skip_rate(skipped, annotated),
        },
        "break_seconds": BREAK_SECONDS,
    }


def quality_agreement(project: Project) -> dict:
    """Fleiss' kappa and pairwise Cohen's kappa over the items two or more annotators labelled."""
    labels = _human_labels(project)
    overlapped = labels.values("item_id").annotate(raters=Count("annotator_id", distinct=True)).filter(
        raters__gte=2).values("item_id")
    ratings: dict[int, dict[int, str]] = defaultdict(dict)
    # Oldest first, so an annotator's newer label of the same item (should one exist) wins.
    rows = labels.filter(item_id__in=overlapped).order_by("id").values_list("item_id", "annotator_id", "label__name")
    for item_id, annotator_id, label in rows.iterator(chunk_size=10_000):
        ratings[item_id][annotator_id] = label
    summary = agreement_summary(ratings, list(project.labels.values_list("name", flat=True)))
    names = _usernames({pk for p in summary.pairs for pk in (p.annotator_a, p.annotator_b)})
    pairs = [{
        "annotator_a": names.get(p.annotator_a, f"user {p.annotator_a}"),
        "annotator_b": names.get(p.annotator_b, f"user {p.annotator_b}"),
        "annotator_a_id": p.annotator_a, "annotator_b_id": p.annotator_b,
        "items": p.kappa.items, "kappa": p.kappa.value, "observed": p.kappa.observed,
        "expected": p.kappa.expected, "reason": p.kappa.reason,
    } for p in summary.pairs]
    return {
        "fleiss": summary.fleiss, "raters_per_item": summary.raters_per_item,
        "overlapped_items": summary.overlapped_items, "items_left_out": summary.items_left_out,
        "pairs": pairs, "overlap": project.overlap,
    }


def quality_dashboard(project: Project) -> dict:
    """Everything the quality dashboard shows."""
    from learners.selectors import stopping_signal

    versions = quality_versions(project)
    return {
        "project": project,
        "versions": versions,
        "learning_curve": quality_learning_curve(project, versions),
        "throughput": quality_throughput(project),
        "agreement": quality_agreement(project),
        "stopping": stopping_signal(project),
    }


def quality_csv(project: Project, table: str) -> tuple[list[str], list[list]]:
    """(header, rows) of one of the dashboard's tables, named as in CSV_TABLES; KeyError for others."""
    if table == "learning-curve":
        curve = quality_learning_curve(project, quality_versions(project))
        rows = [["project", p["labels"], p["accuracy"], p["accuracy_std"], p["version"], p["trained_on"]]
                for p in curve["points"]]
        if curve["baseline"] is not None:
            b = curve["baseline"]
            rows += [[f"random baseline ({b.dataset})", n, acc, std, None, n]
                     for n, acc, std in zip(b.labels, b.accuracy, b.accuracy_std)]
        return ["series", "labels", "accuracy", "accuracy_std", "version", "labelled_items"], rows
    if table == "model-versions":
        header = ["version", "created_at", "estimator", "query_strategy", "featuriser", "trained_on",
                  "label_count", "accuracy", "accuracy_std", "cv_folds", "stop_kappa", "stop_agreement",
                  "items_scored", "train_seconds"]
        key = {"version": "number"}
        return header, [[v[key.get(h, h)] for h in header] for v in quality_versions(project)]
    if table == "throughput":
        header = ["annotator", "labels", "active_seconds", "sessions", "labels_per_hour", "median_seconds",
                  "skipped", "annotated", "skip_rate"]
        return header, [[a[h] for h in header] for a in quality_throughput(project)["annotators"]]
    if table == "agreement-pairs":
        header = ["annotator_a", "annotator_b", "items", "kappa", "observed", "expected", "reason"]
        return header, [[p[h] for h in header] for p in quality_agreement(project)["pairs"]]
    raise KeyError(table)
