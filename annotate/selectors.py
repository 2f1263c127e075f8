"""Reads of the human side: progress, budget left, queue state."""
from __future__ import annotations

from collections import Counter, defaultdict
from decimal import Decimal

from django.db.models import Count, Q
from django.utils import timezone

from annotate.metrics.budget import cost_left, labels_left
from annotate.models import Annotation, Assignment, AssignmentStatus, Budget, Item, Membership, Project


def projects_for_user(user):
    return Project.objects.filter(memberships__user=user).order_by("name")


def budget_limits(project: Project) -> dict:
    """The project's limits (max_labels, cost_per_label, max_cost); a project without a Budget row has none."""
    try:
        budget = project.budget
    except Budget.DoesNotExist:
        return {"max_labels": None, "cost_per_label": Decimal("0"), "max_cost": None}
    return {"max_labels": budget.max_labels, "cost_per_label": budget.cost_per_label, "max_cost": budget.max_cost}


def project_labels_left(project: Project) -> int | None:
    """Labels the project's budget still allows (None: no limit): the one rule every reader and the queue use.

    The smaller of what the label limit and the cost left at the current price
    allow (`annotate.metrics.budget.labels_left`); leases in progress are not
    subtracted here (the queue subtracts them as it serves).
    """
    return labels_left(label_count=project.label_count, cost_spent=project.cost_spent, **budget_limits(project))


def budget_left(project: Project) -> dict:
    """The budget as the annotate page, the REST API and `workbench.queue_status` show it (JSON-able)."""
    limits = budget_limits(project)
    left = cost_left(max_cost=limits["max_cost"], cost_spent=project.cost_spent)
    return {
        "max_labels": limits["max_labels"], "labels_left": project_labels_left(project),
        "max_cost": None if limits["max_cost"] is None else str(limits["max_cost"]),
        "cost_left": None if left is None else str(left), "cost_spent": str(project.cost_spent),
        "cost_per_label": str(limits["cost_per_label"]),
    }


def queue_status(project: Project) -> dict:
    """Counts, budget left, and the current model version with its metrics (JSON-able)."""
    from learners.selectors import model_version_latest, stopping_signal

    now = timezone.now()
    counts = Item.objects.filter(project=project).aggregate(
        items=Count("id"), done=Count("id", filter=Q(done=True)),
    )
    active = Assignment.objects.filter(
        project=project, status=AssignmentStatus.ACTIVE, expires_at__gt=now
    ).count()
    version = model_version_latest(project)
    return {
        "project_id": project.pk,
        "project": project.name,
        "items": counts["items"],
        "items_done": counts["done"],
        "items_open": counts["items"] - counts["done"],
        "active_leases": active,
        "labels": project.label_count,
        "overlap": project.overlap,
        "budget": budget_left(project),
        "model_version": None if version is None else {
            "number": version.number,
            "trained_on": version.trained_on,
            "metrics": version.metrics,
            "created_at": version.created_at.isoformat(),
            "query_strategy": version.query_strategy,
            "estimator": version.estimator,
            "featuriser": version.featuriser,
        },
        "settings": {
            "featuriser": project.featuriser, "estimator": project.estimator,
            "query_strategy": project.query_strategy,
        },
        "stopping": stopping_signal(project),
    }


def annotator_progress(project: Project, user) -> dict:
    membership = Membership.objects.filter(project=project, user=user).first()
    return {
        "my_labels": membership.label_count if membership else 0,
        "my_quota": membership.quota if membership else None,
    }


def training_labels(project: Project) -> tuple[list[int], list[str]]:
    """One label per labelled item: the majority of its annotations, ties to the newest."""
    votes: dict[int, Counter] = defaultdict(Counter)
    newest: dict[tuple[int, str], int] = {}
    rows = Annotation.objects.filter(project=project).values_list("item_id", "label__name", "id")
    for item_id, label, annotation_id in rows.iterator(chunk_size=10_000):
        votes[item_id][label] += 1
        newest[(item_id, label)] = max(newest.get((item_id, label), 0), annotation_id)
    item_ids, labels = [], []
    for item_id in sorted(votes):
        counter = votes[item_id]
        top = max(counter.values())
        winner = max((l for l, c in counter.items() if c == top), key=lambda l: newest[(item_id, l)])
        item_ids.append(item_id)
        labels.append(winner)
    return item_ids, labels
