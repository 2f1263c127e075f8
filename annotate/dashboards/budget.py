"""The budget dashboard's numbers: spent and left, burn-down, forecast, annotators, queue.

Reads only. Every sum and count is one SQL aggregate (a handful of queries
whatever the project's size); the arithmetic on top lives in
`annotate.metrics.budget`. Spent and left use the counters the queue enforces
(the project's `label_count` and `cost_spent`; each membership's `label_count`
for quota left), so the page says what the queue will do; the burn-down and the
per-annotator labels and cost are summed from the human annotations themselves.
"""
from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from datetime import timezone as dt_timezone
from decimal import Decimal

from django.contrib.auth import get_user_model
from django.db.models import Avg, Count, DecimalField, F, IntegerField, Q, Sum, Value
from django.db.models.functions import Coalesce, Greatest, TruncDate
from django.utils import timezone

from annotate.metrics.budget import (
    SpendEvent,
    burn_down,
    cost_left,
    forecast_exhaustion,
    labels_affordable,
    labels_left,
    quota_left,
    share,
)
from annotate.models import Annotation, AnnotationSource, Item, Membership, Project
from annotate.selectors import budget_limits, project_labels_left
from annotate.services.queue import active_lease_count

FORECAST_WINDOW_DAYS = 7

_MONEY = DecimalField(max_digits=14, decimal_places=2)
_CENT = Decimal("0.01")


def _money(value: Decimal | None) -> Decimal:
    """A summed amount to the cent: SQLite returns sums as floats, which Django does not quantize."""
    return (value or Decimal("0")).quantize(_CENT)


def _burn_down_points(project: Project):
    days = (
        Annotation.objects.filter(project=project, source=AnnotationSource.HUMAN)
        .annotate(day=TruncDate("created_at", tzinfo=dt_timezone.utc))
        .values("day")
        .annotate(labels=Count("id"), cost=Sum("cost", output_field=_MONEY))
        .order_by("day")
    )
    return burn_down(SpendEvent(at=row["day"], labels=row["labels"], cost=_money(row["cost"])) for row in days)


def _annotator_rows(project: Project) -> list[dict]:
    """One row per member, then one per former member or deleted user who gave labels."""
    spent = {
        row["annotator_id"]: row
        for row in Annotation.objects.filter(project=project, source=AnnotationSource.HUMAN)
        .values("annotator_id")
        .annotate(labels=Count("id"), cost=Sum("cost", output_field=_MONEY), seconds=Avg("seconds"))
        .order_by()
    }
    total_labels = sum(row["labels"] for row in spent.values())
    for row in spent.values():
        row["cost"] = _money(row["cost"])
    total_cost = sum((row["cost"] for row in spent.values()), Decimal("0"))

    def row_for(user_id, username: str, role: str, membership: Membership | None) -> dict:
        mine = spent.pop(user_id, {})
        labels, cost = mine.get("labels", 0), mine.get("cost", _money(None))
        return {
            "user_id": user_id, "username": username, "role": role, "member": membership is not None,
            "labels": labels, "cost": cost, "seconds_mean": mine.get("seconds"),
            "quota": membership.quota if membership else None,
            "quota_left": quota_left(quota=membership.quota, label_count=membership.label_count)
            if membership else None,
            "share_of_labels": share(labels, total_labels), "share_of_spend": share(cost, total_cost),
        }

    memberships = (
        Membership.objects.filter(project=project).select_related("user").order_by("user__username")
    )
    rows = [row_for(m.user_id, m.user.get_username(), m.get_role_display(), m) for m in memberships]
    former = {u.pk: u.get_username() for u in get_user_model().objects.filter(pk__in=[k for k in spent if k])}
    for user_id in sorted(spent, key=lambda k: (k is None, former.get(k, ""))):
        name = former.get(user_id, "(deleted user)")
        rows.append(row_for(user_id, name, "former member" if user_id else "", None))
    return rows


def _queue_counts(project: Project, now: datetime) -> dict:
    counts = Item.objects.filter(project=project).aggregate(
        items=Count("id"),
        items_done=Count("id", filter=Q(done=True)),
        # Labels still needed: each open item wants `overlap` annotations in all.
        labels_needed=Coalesce(
            Sum(Greatest(Value(project.overlap) - F("annotation_count"), Value(0), output_field=IntegerField()),
                filter=Q(done=False)),
            Value(0), output_field=IntegerField(),
        ),
    )
    return {
        "items": counts["items"], "items_done": counts["items_done"],
        "items_open": counts["items"] - counts["items_done"],
        "active_leases": active_lease_count(project=project, now=now), "labels_needed": counts["labels_needed"],
        "overlap": project.overlap,
    }


def budget_dashboard(project: Project, *, now: datetime | None = None) -> dict:
    """Everything the budget dashboard and its CSV downloads show, as of `now` (UTC days)."""
    now = now or timezone.now()
    today = now.astimezone(dt_timezone.utc).date()
    budget = budget_limits(project)
    label_count, cost_spent = project.label_count, project.cost_spent
    points = _burn_down_points(project)
    money = {"max_cost": budget["max_cost"], "cost_per_label": budget["cost_per_label"]}
    forecast = forecast_exhaustion(points, today=today, window_days=FORECAST_WINDOW_DAYS, **budget)
    return {
        "as_of": now,
        "today": today,
        "budget": budget,
        "spent": {
            "labels": label_count, "cost": cost_spent,
            "labels_fraction": share(label_count, budget["max_labels"]) if budget["max_labels"] else None,
            "cost_fraction": share(cost_spent, budget["max_cost"]) if budget["max_cost"] else None,
        },
        "left": {
            "labels": project_labels_left(project),
            "labels_by_count": None if budget["max_labels"] is None else max(0, budget["max_labels"] - label_count),
            "labels_by_cost": labels_affordable(cost_spent=cost_spent, **money),
            "cost": cost_left(max_cost=budget["max_cost"], cost_spent=cost_spent),
        },
        "forecast": asdict(forecast),
        "burn_down": [
            {**asdict(p), "labels_left": labels_left(label_count=p.labels_total, cost_spent=p.cost_total, **budget)}
            for p in points
        ],
        "annotators": _annotator_rows(project),
        "queue": _queue_counts(project, now),
    }
