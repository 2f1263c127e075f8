"""Writing labels: annotate, skip and undo, each in one transaction.

Lock order is project row, then item row, everywhere, so these never deadlock
with each other; the queue scan locks item rows only.
"""
from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from annotate.errors import LeaseError, NothingToUndo, QueueClosed, UnknownLabel
from annotate.models import (
    Annotation,
    AnnotationSource,
    Assignment,
    AssignmentStatus,
    Budget,
    Item,
    Label,
    Membership,
    Project,
)
from annotate.services.budgets import budget_check
from annotate.services.queue import item_assignments, item_counters_update, membership_get


def _lock_project(project: Project) -> Project:
    return Project.objects.select_for_update(no_key=True, of=("self",)).select_related("budget").get(pk=project.pk)


def _lock_item(project: Project, item_id: int) -> Item:
    try:
        return Item.objects.select_for_update(no_key=True).get(project=project, pk=item_id)
    except Item.DoesNotExist:
        raise LeaseError(f"item {item_id} is not in project '{project.name}'") from None


def _label_get(project: Project, label: str | int) -> Label:
    labels = {l.name: l for l in project.labels.all()}
    by_id = {l.pk: l for l in labels.values()}
    if isinstance(label, int) and label in by_id:
        return by_id[label]
    if isinstance(label, str) and label in labels:
        return labels[label]
    raise UnknownLabel(f"label {label!r} is not in the label set {{{', '.join(labels)}}}")


def _held_assignment(item: Item, rows: list[Assignment], annotator) -> Assignment:
    """The annotator's assignment among a locked item's rows, if they may still label it."""
    assignment = next((a for a in rows if a.annotator_id == annotator.pk), None)
    if assignment is None:
        raise LeaseError(f"item {item.external_id!r} was not served to you")
    if assignment.status in (AssignmentStatus.ACTIVE, AssignmentStatus.EXPIRED):
        return assignment
    raise LeaseError(f"you have already {assignment.status} item {item.external_id!r}")


def annotation_create(*, project: Project, annotator, item_id: int, label: str | int) -> Annotation:
    """Store a label for an item served to `annotator` and close its lease.

    A lease that expired is still honoured while the item has room under the
    project's overlap, so a slow annotator's work is not thrown away.
    Enqueues a retrain on commit every `project.retrain_every` labels.
    """
    now = timezone.now()
    with transaction.atomic():
        project = _lock_project(project)
        membership = membership_get(project=project, user=annotator)
        chosen = _label_get(project, label)
        item = _lock_item(project, item_id)
        rows = item_assignments(item, now)
        assignment = _held_assignment(item, rows, annotator)
        if assignment.status == AssignmentStatus.EXPIRED:
            others = sum(1 for a in rows if a.status == AssignmentStatus.ACTIVE)
            if item.annotation_count + others >= project.overlap:
                raise LeaseError(f"your lease on item {item.external_id!r} expired and it was served to others")
        try:
            budget_check(project=project, membership=membership)
        except QueueClosed as closed:
            # Give the item back and commit that before refusing the label.
            refusal = closed
            _release(assignment, rows, item, project, AssignmentStatus.EXPIRED, now)
        else:
            refusal = None
            annotation = _annotation_store(project, membership, assignment, rows, item, chosen, annotator, now)
    if refusal is not None:
        raise refusal
    return annotation


def _annotation_store(
    project: Project, membership: Membership, assignment: Assignment, rows: list[Assignment], item: Item,
    label: Label, annotator, now,
) -> Annotation:
    """Write the label and every counter it moves; the caller holds the project and item locks."""
    from learners.models import WorkKind
    from learners.services.work import warm_start_just_ready, work_request

    try:
        cost = project.budget.cost_per_label
    except Budget.DoesNotExist:
        cost = Decimal("0")
    annotation = Annotation.objects.create(
        project=project, item=item, annotator=annotator, label=label,
        source=AnnotationSource.HUMAN, cost=cost,
        seconds=(now - assignment.leased_at).total_seconds(),
    )
    _release(assignment, rows, item, project, AssignmentStatus.ANNOTATED, now, annotated=True)
    Membership.objects.filter(pk=membership.pk).update(label_count=F("label_count") + 1)
    Project.objects.filter(pk=project.pk).update(
        label_count=F("label_count") + 1, cost_spent=F("cost_spent") + cost
    )
    new_count = project.label_count + 1
    if new_count - project.retrain_requested_at >= project.retrain_every:
        Project.objects.filter(pk=project.pk).update(retrain_requested_at=new_count)
        work_request(project_id=project.pk, kind=WorkKind.RETRAIN, reason=f"{new_count} labels")
    elif warm_start_just_ready(project, label.pk):
        # The warm start can adapt now: the first queue from it should not wait for the next N labels.
        Project.objects.filter(pk=project.pk).update(retrain_requested_at=new_count)
        work_request(project_id=project.pk, kind=WorkKind.RETRAIN, force=True,
                     reason="every label has the warm start's k_shot examples")
    return annotation


def _release(
    assignment: Assignment, rows: list[Assignment], item: Item, project: Project, status: str, now,
    annotated: bool = False,
) -> None:
    """Close `assignment` (one of the locked item's `rows`) with `status`, keeping counters exact."""
    assignment.status = status
    assignment.finished_at = now
    assignment.save(update_fields=["status", "finished_at"])
    item_counters_update(item, rows, project, item.annotation_count + (1 if annotated else 0))


def assignment_skip(*, project: Project, annotator, item_id: int) -> None:
    """Give an item back: the annotator will not be served it again; others may be."""
    now = timezone.now()
    with transaction.atomic():
        item = _lock_item(project, item_id)
        rows = item_assignments(item, now)
        _release(_held_assignment(item, rows, annotator), rows, item, project, AssignmentStatus.SKIPPED, now)


def annotation_undo_last(*, project: Project, annotator) -> Assignment:
    """Take back the annotator's newest label in `project` and serve that item again."""
    now = timezone.now()
    with transaction.atomic():
        project = _lock_project(project)
        membership = membership_get(project=project, user=annotator)
        annotation = (
            Annotation.objects.filter(project=project, annotator=annotator, source=AnnotationSource.HUMAN)
            .order_by("-id")
            .first()
        )
        if annotation is None:
            raise NothingToUndo("You have no label in this project to undo.")
        item = _lock_item(project, annotation.item_id)
        cost = annotation.cost
        annotation.delete()
        rows = item_assignments(item, now)
        assignment = next(a for a in rows if a.annotator_id == annotator.pk)
        assignment.status = AssignmentStatus.ACTIVE
        assignment.leased_at = now
        assignment.expires_at = now + timedelta(seconds=project.lease_seconds)
        assignment.finished_at = None
        assignment.save(update_fields=["status", "leased_at", "expires_at", "finished_at"])
        item_counters_update(item, rows, project, item.annotation_count - 1)
        Membership.objects.filter(pk=membership.pk).update(label_count=F("label_count") - 1)
        Project.objects.filter(pk=project.pk).update(
            label_count=F("label_count") - 1, cost_spent=F("cost_spent") - cost
        )
        assignment.item = item
    return assignment
