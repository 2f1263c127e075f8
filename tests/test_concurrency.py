"""Concurrent annotators over HTTP: nothing served twice beyond overlap, no label lost.

Clients are separate processes (true parallelism, each its own user and
token) against a threaded live server on the suite's database, so the
database does the serialising: SQLite's write lock, or PostgreSQL's row
locks with SKIP LOCKED.
"""
import multiprocessing
from collections import Counter

import pytest
from rest_framework.authtoken.models import Token

from annotate.models import Annotation, Assignment, Item, Project
from tests.factories import add_annotator, add_items, make_project
from tests.http_annotator import annotator_session

pytestmark = pytest.mark.django_db(transaction=True)


def run_annotators(live_server, project: Project, users, cycles: int) -> list[dict]:
    tokens = [Token.objects.create(user=u).key for u in users]
    labels = [l.name for l in project.labels.all()]
    context = multiprocessing.get_context("spawn")
    with context.Pool(len(users)) as pool:
        return pool.starmap_async(annotator_session, [
            (live_server.url, token, project.pk, cycles, labels[i % len(labels)]) for i, token in enumerate(tokens)
        ]).get(timeout=180)


def test_eight_concurrent_annotators_never_share_an_item(live_server):
    project = make_project(retrain_every=10_000)
    add_items(project, [f"text {i}" for i in range(300)])
    users = [add_annotator(project) for _ in range(8)]

    results = run_annotators(live_server, project, users, cycles=25)

    served = [item for r in results for item in r["served"]]
    saved = [a for r in results for a in r["saved"]]
    assert all(not r["errors"] for r in results), [r["errors"] for r in results]
    assert len(served) == 8 * 25
    assert len(set(served)) == len(served), "an item was served to two annotators"
    assert Annotation.objects.filter(project=project).count() == len(saved) == 200
    per_item = Counter(Annotation.objects.filter(project=project).values_list("item_id", flat=True))
    assert max(per_item.values()) == 1
    project.refresh_from_db()
    assert project.label_count == 200
    assert Item.objects.filter(project=project, done=True).count() == 200
    assert not Item.objects.filter(project=project, lease_count__gt=0).exists()


def test_concurrent_annotators_respect_overlap_two(live_server):
    project = make_project(retrain_every=10_000, overlap=2)
    add_items(project, [f"text {i}" for i in range(120)])
    users = [add_annotator(project) for _ in range(8)]

    results = run_annotators(live_server, project, users, cycles=12)

    assert all(not r["errors"] for r in results), [r["errors"] for r in results]
    per_item = Counter(Annotation.objects.filter(project=project).values_list("item_id", flat=True))
    assert sum(per_item.values()) == 8 * 12
    assert max(per_item.values()) == 2, "no item may get more than `overlap` annotations"
    pairs = Counter(Annotation.objects.filter(project=project).values_list("item_id", "annotator_id"))
    assert max(pairs.values()) == 1, "the same annotator labelled one item twice"
    assert Item.objects.filter(project=project, done=True).count() == sum(1 for c in per_item.values() if c == 2)


def test_budget_is_never_overspent_under_concurrency(live_server):
    project = make_project(retrain_every=10_000, max_labels=30)
    add_items(project, [f"text {i}" for i in range(100)])
    users = [add_annotator(project) for _ in range(8)]

    results = run_annotators(live_server, project, users, cycles=10)

    assert Annotation.objects.filter(project=project).count() == 30
    closed = [body for r in results for _, body in r["errors"]]
    assert closed and all(body.get("code") == "budget_spent" for body in closed)
    assert not Assignment.objects.filter(project=project, status="active").exists()
