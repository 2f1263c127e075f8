"""The progress and quality dashboard: who may see it, its CSVs against the database, empty projects.

`seed_quality_project` and the `expected_*` oracles are shared with
tests/test_browser_quality.py. The oracles recompute every number from the
database with their own queries (and sklearn for Cohen's kappa), never through
annotate.dashboards.quality.
"""
from __future__ import annotations

import csv
import io
import statistics
from collections import defaultdict
from datetime import datetime, timedelta, timezone
from itertools import combinations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from sklearn.metrics import cohen_kappa_score

from annotate.models import Annotation, AnnotationSource, Assignment, AssignmentStatus
from learners.models import ModelVersion
from tests.factories import add_annotator, add_items, make_project, make_user

T0 = datetime(2026, 3, 2, 9, 0, 0, tzinfo=timezone.utc)
BREAK = 300.0  # the dashboard's break threshold, restated: a test of the definition, not of the constant

# (annotator, item index, label, seconds, minutes after T0)
LABELS = [
    ("ann", 0, "cat", 20.0, 0.0), ("ann", 1, "dog", 25.0, 0.5), ("ann", 2, "cat", 30.0, 1.25),
    ("ann", 3, "bird", 12.0, 2.0),
    ("ann", 6, "bird", 40.0, 20.0), ("ann", 7, "cat", 15.0, 20.5),  # after a break of 18 minutes
    ("bob", 0, "cat", 10.0, 1.0), ("bob", 1, "dog", 14.0, 1.5), ("bob", 2, "dog", 9.0, 2.0),
    ("bob", 3, "bird", 11.0, 2.25), ("bob", 4, "cat", 60.0, 3.5), ("bob", 5, "dog", 8.0, 3.75),
    ("cyd", 4, "cat", 33.0, 5.0), ("cyd", 5, "cat", 21.0, 6.0), ("cyd", 6, "bird", 18.0, 6.5),
    ("cyd", 7, "dog", 27.0, 7.0), ("cyd", 8, "cat", 30.0, 7.5),
]
SKIPS = [("ann", 9), ("bob", 9), ("bob", 10)]
VERSIONS = [
    {"number": 1, "trained_on": 3, "label_count": 6,
     "metrics": {"accuracy": 0.5, "accuracy_std": 0.1, "cv_folds": 2}},
    {"number": 2, "trained_on": 6, "label_count": 12,
     "metrics": {"accuracy": 0.6875, "accuracy_std": 0.0625, "cv_folds": 2, "stop_kappa": 0.8125,
                 "stop_agreement": 0.875}},
    {"number": 3, "trained_on": 9, "label_count": 17,
     "metrics": {"accuracy": 0.8125, "accuracy_std": 0.05, "cv_folds": 3, "stop_kappa": 0.9375,
                 "stop_agreement": 0.96875}},
]


def seed_quality_project(owner=None, *, benchmark_dataset: str = ""):
    """A project with overlap 2, three annotators (ann, bob, cyd), skips, an open lease,
    an imported label, and three model versions; returns (project, {name: user})."""
    project = make_project(owner, labels=("cat", "dog", "bird"), overlap=2, retrain_every=1000)
    if benchmark_dataset:
        project.benchmark_dataset = benchmark_dataset
        project.save(update_fields=["benchmark_dataset"])
    users = {name: add_annotator(project, make_user(name)) for name in ("ann", "bob", "cyd")}
    items = add_items(project, [f"item {i}" for i in range(12)])
    labels = {label.name: label for label in project.labels.all()}
    for name, index, label, seconds, minutes in LABELS:
        at = T0 + timedelta(minutes=minutes)
        annotation = Annotation.objects.create(project=project, item=items[index], annotator=users[name],
                                               label=labels[label], seconds=seconds)
        Annotation.objects.filter(pk=annotation.pk).update(created_at=at)  # auto_now_add otherwise
        Assignment.objects.create(project=project, item=items[index], annotator=users[name],
                                  status=AssignmentStatus.ANNOTATED, leased_at=at - timedelta(seconds=seconds),
                                  expires_at=at + timedelta(minutes=10), finished_at=at)
    for name, index in SKIPS:
        Assignment.objects.create(project=project, item=items[index], annotator=users[name],
                                  status=AssignmentStatus.SKIPPED, leased_at=T0, expires_at=T0, finished_at=T0)
    # Neither labelled nor skipped: counts in no skip rate.
    Assignment.objects.create(project=project, item=items[11], annotator=users["cyd"],
                              status=AssignmentStatus.ACTIVE, leased_at=T0, expires_at=T0 + timedelta(days=1))
    # A seed label from an import: no annotator, no time; in no throughput or agreement.
    Annotation.objects.create(project=project, item=items[0], annotator=None, label=labels["bird"],
                              source=AnnotationSource.IMPORT)
    for v in VERSIONS:
        ModelVersion.objects.create(project=project, request_id=f"r{v['number']}", estimator="logistic_regression",
                                    query_strategy="margin", featuriser="text_tfidf", artifact=b"", **v)
    return project, users


# --- oracles: the numbers, straight from the database ---------------------------

def _human(project):
    return Annotation.objects.filter(project=project, source=AnnotationSource.HUMAN, annotator__isnull=False)


def expected_throughput(project) -> dict[str, dict]:
    """Per username: labels, labels per hour (sessions split at gaps > 5 min), median seconds, skip rate."""
    rows = defaultdict(list)
    for name, at, seconds in _human(project).values_list("annotator__username", "created_at", "seconds"):
        rows[name].append((at, seconds))
    out = {}
    for name, labels in rows.items():
        labels.sort()
        active = min(labels[0][1], BREAK)
        for (before, _), (at, seconds) in zip(labels, labels[1:]):
            gap = (at - before).total_seconds()
            active += gap if gap <= BREAK else min(seconds, BREAK)
        skipped = Assignment.objects.filter(project=project, annotator__username=name,
                                            status=AssignmentStatus.SKIPPED).count()
        annotated = Assignment.objects.filter(project=project, annotator__username=name,
                                              status=AssignmentStatus.ANNOTATED).count()
        out[name] = {
            "labels": len(labels), "labels_per_hour": len(labels) / active * 3600,
            "median_seconds": statistics.median(s for _, s in labels), "skipped": skipped,
            "skip_rate": skipped / (skipped + annotated),
        }
    return out


def expected_skip_rate(project) -> float:
    skipped = Assignment.objects.filter(project=project, status=AssignmentStatus.SKIPPED).count()
    annotated = Assignment.objects.filter(project=project, status=AssignmentStatus.ANNOTATED).count()
    return skipped / (skipped + annotated)


def _ratings(project) -> dict[int, dict[str, str]]:
    ratings = defaultdict(dict)
    for item, name, label in _human(project).values_list("item_id", "annotator__username", "label__name"):
        ratings[item][name] = label
    return ratings


def expected_pairs(project) -> dict[tuple[str, str], tuple[int, float]]:
    """(a, b) -> (shared items, sklearn's Cohen's kappa on them)."""
    shared = defaultdict(lambda: ([], []))
    for by_name in _ratings(project).values():
        for a, b in combinations(sorted(by_name), 2):
            shared[(a, b)][0].append(by_name[a])
            shared[(a, b)][1].append(by_name[b])
    return {pair: (len(x), float(cohen_kappa_score(x, y))) for pair, (x, y) in shared.items()}


def expected_fleiss(project) -> tuple[int, float]:
    """(items, Fleiss' kappa) over the items with exactly `overlap` annotators, by the textbook formula."""
    categories = list(project.labels.values_list("name", flat=True))
    rows = [[list(r.values()).count(c) for c in categories]
            for r in _ratings(project).values() if len(r) == project.overlap]
    n, items = project.overlap, len(rows)
    p_bar = sum((sum(c * c for c in row) - n) / (n * (n - 1)) for row in rows) / items
    p_e = sum((sum(row[j] for row in rows) / (items * n)) ** 2 for j in range(len(categories)))
    return items, (p_bar - p_e) / (1 - p_e)


# --- tests ----------------------------------------------------------------------

def _csv(client, project, table) -> list[dict]:
    response = client.get(reverse("dashboard-quality-csv", args=[project.pk, table]))
    assert response.status_code == 200 and response["Content-Type"].startswith("text/csv")
    return list(csv.DictReader(io.StringIO(response.content.decode())))


@pytest.mark.django_db
def test_owner_and_staff_see_the_dashboard_annotators_get_403_and_outsiders_404(client):
    owner = make_user("owner")
    project, users = seed_quality_project(owner)
    staff = make_user("staff")
    staff.is_staff = True
    staff.save()
    urls = [reverse("dashboard-quality", args=[project.pk]),
            reverse("dashboard-quality-csv", args=[project.pk, "throughput"])]
    for url in urls:
        assert client.get(url).status_code == 302  # anonymous: to the login page
    for user, status in ((owner, 200), (staff, 200), (users["ann"], 403), (make_user("outsider"), 404)):
        client.force_login(user)
        for url in urls:
            assert client.get(url).status_code == status, (user.username, url)


@pytest.mark.django_db
def test_unknown_csv_table_is_404(client):
    owner = make_user("owner")
    project = make_project(owner)
    client.force_login(owner)
    assert client.get(reverse("dashboard-quality-csv", args=[project.pk, "passwords"])).status_code == 404


@pytest.mark.django_db
def test_csvs_equal_the_numbers_in_the_database(client):
    owner = make_user("owner")
    project, _ = seed_quality_project(owner)
    client.force_login(owner)

    versions = {str(v.number): v for v in ModelVersion.objects.filter(project=project).defer("artifact")}
    rows = _csv(client, project, "model-versions")
    assert [r["version"] for r in rows] == ["1", "2", "3"]
    for row in rows:
        v = versions[row["version"]]
        assert int(row["label_count"]) == v.label_count and int(row["trained_on"]) == v.trained_on
        assert float(row["accuracy"]) == v.metrics["accuracy"]
        assert (row["stop_kappa"] or None) == (None if "stop_kappa" not in v.metrics else str(v.metrics["stop_kappa"]))

    curve = _csv(client, project, "learning-curve")
    assert {(r["series"], int(r["labels"]), float(r["accuracy"])) for r in curve} == {
        ("project", v.label_count, v.metrics["accuracy"]) for v in versions.values()}

    expected = expected_throughput(project)
    rows = {r["annotator"]: r for r in _csv(client, project, "throughput")}
    assert set(rows) == {"ann", "bob", "cyd"}
    for name, want in expected.items():
        assert int(rows[name]["labels"]) == want["labels"]
        assert float(rows[name]["labels_per_hour"]) == pytest.approx(want["labels_per_hour"], rel=1e-9)
        assert float(rows[name]["median_seconds"]) == pytest.approx(want["median_seconds"])
        assert int(rows[name]["skipped"]) == want["skipped"]
        assert float(rows[name]["skip_rate"]) == pytest.approx(want["skip_rate"])

    pairs = {(r["annotator_a"], r["annotator_b"]): r for r in _csv(client, project, "agreement-pairs")}
    want_pairs = expected_pairs(project)
    assert set(pairs) == set(want_pairs) == {("ann", "bob"), ("bob", "cyd"), ("ann", "cyd")}
    for pair, (items, kappa) in want_pairs.items():
        assert int(pairs[pair]["items"]) == items
        assert float(pairs[pair]["kappa"]) == pytest.approx(kappa, abs=1e-12)


@pytest.mark.django_db
def test_page_shows_fleiss_kappa_skip_rate_and_never_loads_model_blobs(client):
    owner = make_user("owner")
    project, _ = seed_quality_project(owner)
    client.force_login(owner)
    with CaptureQueriesContext(connection) as queries:
        response = client.get(reverse("dashboard-quality", args=[project.pk]))
    assert response.status_code == 200
    assert not any("artifact" in q["sql"] or "stop_set" in q["sql"] for q in queries.captured_queries)
    assert len(queries.captured_queries) <= 25
    items, fleiss = expected_fleiss(project)
    page = response.content.decode()
    assert _attr(page, "fleiss-kappa") == pytest.approx(fleiss, abs=1e-12)
    assert f"{items} items with 2 annotators each" in page
    assert _attr(page, "skip-rate") == pytest.approx(expected_skip_rate(project))
    assert "<svg" in page and "Learning curve" in page


def _attr(page: str, element_id: str) -> float:
    start = page.index(f'id="{element_id}"')
    value = page[start:].split('data-value="', 1)[1].split('"', 1)[0]
    return float(value)


@pytest.mark.django_db
def test_project_without_versions_or_overlap_renders_and_says_why(client):
    owner = make_user("owner")
    project = make_project(owner, labels=("cat", "dog"))
    client.force_login(owner)
    page = client.get(reverse("dashboard-quality", args=[project.pk])).content.decode()
    assert "No model version yet" in page
    assert "No item has been labelled by two annotators yet: raise the project's overlap" in page
    assert "not defined: no item was labelled by two or more annotators" in page
    assert "not matched to a benchmark data set" in page
    assert "No data yet" in page  # the chart says so too
    for table in ("learning-curve", "model-versions", "throughput", "agreement-pairs"):
        assert _csv(client, project, table) == []


@pytest.mark.django_db
def test_matched_benchmark_draws_the_random_baseline_and_explains_the_difference(client):
    owner = make_user("owner")
    project, _ = seed_quality_project(owner, benchmark_dataset="digits")
    client.force_login(owner)
    page = client.get(reverse("dashboard-quality", args=[project.pk])).content.decode()
    assert "random sampling, benchmark digits" in page  # the legend of the chart
    assert "held-out 30% test split" in page and "cross-validated on its own labels" in page
    rows = _csv(client, project, "learning-curve")
    baseline = [r for r in rows if r["series"] == "random baseline (digits)"]
    assert baseline[0]["labels"] == "10" and float(baseline[0]["accuracy"]) == pytest.approx(0.6496296296296296)


@pytest.mark.django_db
def test_unknown_benchmark_dataset_says_so(client):
    owner = make_user("owner")
    project = make_project(owner)
    project.benchmark_dataset = "imagenet"
    project.save(update_fields=["benchmark_dataset"])
    client.force_login(owner)
    page = client.get(reverse("dashboard-quality", args=[project.pk])).content.decode()
    assert "The last benchmark has no data set &#x27;imagenet&#x27;" in page


@pytest.mark.django_db
def test_one_category_everywhere_shows_kappa_as_not_defined(client):
    owner = make_user("owner")
    project = make_project(owner, labels=("cat", "dog"), overlap=2)
    a, b = add_annotator(project, make_user("a")), add_annotator(project, make_user("b"))
    cat = project.labels.get(name="cat")
    for item in add_items(project, ["x", "y"]):
        for user in (a, b):
            Annotation.objects.create(project=project, item=item, annotator=user, label=cat, seconds=5.0)
    client.force_login(owner)
    page = client.get(reverse("dashboard-quality", args=[project.pk])).content.decode()
    assert 'id="fleiss-kappa" data-value=""' in page and "chance agreement is 1" in page
    assert 'data-kappa=""' in page
    assert _csv(client, project, "agreement-pairs")[0]["kappa"] == ""


@pytest.mark.django_db
def test_admin_edits_the_benchmark_dataset(client):
    admin = make_user("admin")
    admin.is_staff = admin.is_superuser = True
    admin.save()
    project = make_project(admin)
    client.force_login(admin)
    page = client.get(reverse("admin:annotate_project_change", args=[project.pk])).content.decode()
    assert 'name="benchmark_dataset"' in page
