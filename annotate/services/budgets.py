"""Changing a project's budget and its annotators' quotas.

The dashboard form, the admin and the REST API all write through here. The
queue reads the budget and the quota on every request (`budget_check`, below),
so a change takes effect at the next `next`: lowering a budget below what is
spent closes the queue at once; raising it reopens it.
"""
from __future__ import annotations

from decimal import Decimal, InvalidOperation

from django.db import transaction

from annotate.errors import QueueClosed, WorkbenchError
from annotate.metrics.budget import quota_left
from annotate.models import Budget, Membership, Project
from annotate.selectors import budget_limits, project_labels_left

_UNSET = object()


class BudgetInvalid(WorkbenchError):
    """A budget or quota value that cannot be stored; the message names the field."""


def budget_check(*, project: Project, membership: Membership, reserved: int = 0) -> None:
    """Raise QueueClosed when one more label would exceed the annotator's quota or the project's budget.

    The queue asks before it serves (`reserved` counts labels promised to open
    leases, so a budget of 100 with 98 labels and 2 open leases serves nothing
    more) and the annotation service asks again, under the project's row
    lock, before it stores a label (`reserved=0`). "Left" is
    `annotate.selectors.project_labels_left`, the number every page shows.
    """
    if quota_left(quota=membership.quota, label_count=membership.label_count) == 0:
        raise QueueClosed(
            f"Your quota of {membership.quota} labels in this project is used up.", code="quota_spent"
        )
    left = project_labels_left(project)
    if left is None or left > reserved:
        return
    limits = budget_limits(project)
    in_progress = f", {reserved} in progress" if reserved else ""
    if limits["max_labels"] is not None and project.label_count + reserved >= limits["max_labels"]:
        raise QueueClosed(
            f"The project's budget of {limits['max_labels']} labels is spent "
            f"({project.label_count} given{in_progress}).", code="budget_spent",
        )
    raise QueueClosed(
        f"The project's budget of {limits['max_cost']} is spent ({project.cost_spent} used{in_progress}; "
        f"a label costs {limits['cost_per_label']}).", code="budget_spent",
    )


def _whole(field: str, value) -> int | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise BudgetInvalid(f"{field}: expected a whole number of labels or empty (no limit), got {value!r}")
    try:
        number = int(str(value).strip())
    except ValueError:
        raise BudgetInvalid(f"{field}: expected a whole number of labels or empty (no limit), got {value!r}") from None
    if number < 0 or number > 2_000_000_000:
        raise BudgetInvalid(f"{field}: must be between 0 and 2,000,000,000, got {number}")
    return number


def _money(field: str, value, *, optional: bool) -> Decimal | None:
    if value is None or value == "":
        if optional:
            return None
        raise BudgetInvalid(f"{field}: a price is needed (0 for unpaid labels)")
    if isinstance(value, bool):
        raise BudgetInvalid(f"{field}: expected an amount such as 0.25, got {value!r}")
    try:
        amount = Decimal(str(value).strip())
    except InvalidOperation:
        raise BudgetInvalid(f"{field}: expected an amount such as 0.25, got {value!r}") from None
    if not amount.is_finite() or amount < 0:
        raise BudgetInvalid(f"{field}: must be a non-negative amount, got {value!r}")
    limit = Decimal("999999.99") if field == "cost_per_label" else Decimal("9999999999.99")
    if amount > limit or amount != amount.quantize(Decimal("0.01")):
        raise BudgetInvalid(f"{field}: at most {limit} with 2 decimal places, got {value!r}")
    return amount


def budget_update(
    *, project: Project, max_labels=_UNSET, cost_per_label=_UNSET, max_cost=_UNSET,
) -> Budget:
    """Set any of the budget's fields (empty or None: no limit); all are validated before anything is written."""
    changes = {}
    if max_labels is not _UNSET:
        changes["max_labels"] = _whole("max_labels", max_labels)
    if cost_per_label is not _UNSET:
        changes["cost_per_label"] = _money("cost_per_label", cost_per_label, optional=False)
    if max_cost is not _UNSET:
        changes["max_cost"] = _money("max_cost", max_cost, optional=True)
    with transaction.atomic():
        budget, _ = Budget.objects.select_for_update().get_or_create(project=project)
        for name, value in changes.items():
            setattr(budget, name, value)
        if changes:
            budget.save(update_fields=list(changes))
    project.budget = budget
    return budget


def quota_update(*, project: Project, user_id: int, quota) -> Membership:
    """Set one member's label quota in the project (empty or None: no quota)."""
    value = _whole("quota", quota)
    with transaction.atomic():
        membership = Membership.objects.select_for_update().filter(project=project, user_id=user_id).first()
        if membership is None:
            raise BudgetInvalid(f"quota: user {user_id} is not a member of project {project.pk}")
        membership.quota = value
        membership.save(update_fields=["quota"])
    return membership
