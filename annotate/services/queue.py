"""Serving items: `queue_next_item` leases the best item an annotator may label.

Concurrency protocol: every change to an item's leases or annotations happens
while its row is locked (SELECT ... FOR UPDATE on PostgreSQL; on SQLite every
transaction takes the database write lock at BEGIN, see settings). The scan
uses the denormalised counters on the item as a fast pre-filter and SKIP LOCKED
so concurrent annotators walk past each other's candidates; once a row is
locked the capacity check is redone exactly from the assignment rows, which no
one else can change while we hold the lock.

Row locks are FOR NO KEY UPDATE, never FOR UPDATE: Django's foreign keys on
PostgreSQL are checked at COMMIT with FOR KEY SHARE on the referenced rows,
which FOR UPDATE blocks, so a lease committing (checking its project) and an
annotation holding that project while it waits for the leased item would
deadlock. No transaction here changes a key.
"""
from __future__ import annotations

from datetime import datetime, timedelta
from typing import Iterable

from django.db import connection, transaction
from django.db.models import Exists, F, OuterRef, Q
from django.utils import timezone

from annotate.errors import NotAMember, QueueClosed
from annotate.metrics.budget import cost_limited
from annotate.models import Assignment, AssignmentStatus, Item, Membership, Project
from annotate.selectors import budget_limits
from annotate.services.budgets import budget_check

# How many locked candidates to re-check before giving up on one request. A
# stale counter costs one try; more than a handful means heavy churn.
_MAX_TRIES = 8


def membership_get(*, project: Project, user) -> Membership:
    try:
        return Membership.objects.get(project=project, user=user)
    except Membership.DoesNotExist:
        raise NotAMember() from None  # the same answer as for a project that does not exist


def active_lease_count(*, project: Project, now: datetime) -> int:
    return Assignment.objects.filter(
        project=project, status=AssignmentStatus.ACTIVE, expires_at__gt=now
    ).count()


def _has_project_limit(project: Project) -> bool:
    """Whether the project's budget can close the queue (so serving needs the exact count of open leases)."""
    limits = budget_limits(project)
    return limits["max_labels"] is not None or cost_limited(limits["max_cost"], limits["cost_per_label"])


def _candidates(project: Project, annotator, now: datetime, tried: list[int]):
    seen_by_me = Assignment.objects.filter(
        item=OuterRef("pk"),
        annotator=annotator,
        status__in=[AssignmentStatus.ANNOTATED, AssignmentStatus.SKIPPED],
    )
    queryset = (
        Item.objects.filter(project=project, done=False)
        .alias(taken=F("annotation_count") + F("lease_count"))
        .filter(Q(taken__lt=project.overlap) | Q(lease_expires_at__lte=now))
        .filter(~Exists(seen_by_me))
        .order_by("-priority", "id")
    )
    if tried:
        queryset = queryset.exclude(pk__in=tried)
    return queryset.select_for_update(skip_locked=True, of=("self",), no_key=True)


def item_assignments(item: Item, now: datetime) -> list[Assignment]:
    """Every assignment of a locked item, with leases past their expiry marked expired.

    One query (an item has a row per annotator who was served it); the
    counters derived from it are exact because the caller holds the item lock.
    """
    rows = list(Assignment.objects.filter(item=item))
    stale = [a for a in rows if a.status == AssignmentStatus.ACTIVE and a.expires_at <= now]
    if stale:
        Assignment.objects.filter(pk__in=[a.pk for a in stale]).update(status=AssignmentStatus.EXPIRED)
        for assignment in stale:
            assignment.status = AssignmentStatus.EXPIRED
    return rows


def item_counters_update(item: Item, rows: list[Assignment], project: Project, annotation_count: int) -> None:
    """Write an item's lease and completion counters from its (locked) assignment rows."""
    active = [a.expires_at for a in rows if a.status == AssignmentStatus.ACTIVE]
    Item.objects.filter(pk=item.pk).update(
        lease_count=len(active),
        lease_expires_at=max(active, default=None),
        annotation_count=annotation_count,
        done=annotation_count >= project.overlap,
    )


def _lease_locked_item(item: Item, project: Project, annotator, now: datetime) -> Assignment | None:
    """Lease `item` (already locked) to `annotator` if it still has room."""
    rows = item_assignments(item, now)
    active = [a for a in rows if a.status == AssignmentStatus.ACTIVE]
    mine = next((a for a in rows if a.annotator_id == annotator.pk), None)
    has_room = item.annotation_count + len(active) < project.overlap
    if not has_room or (mine is not None and mine.status != AssignmentStatus.EXPIRED):
        # The counters were stale; correct them so the scan stops offering it.
        item_counters_update(item, rows, project, item.annotation_count)
        return None
    expires_at = now + timedelta(seconds=project.lease_seconds)
    if mine is None:
        mine = Assignment.objects.create(
            project=project, item=item, annotator=annotator,
            status=AssignmentStatus.ACTIVE, leased_at=now, expires_at=expires_at,
        )
        rows.append(mine)
    else:
        mine.status = AssignmentStatus.ACTIVE
        mine.leased_at = now
        mine.expires_at = expires_at
        mine.finished_at = None
        mine.save(update_fields=["status", "leased_at", "expires_at", "finished_at"])
    item_counters_update(item, rows, project, item.annotation_count)
    mine.item = item
    return mine


def queue_next_item(*, project: Project, annotator) -> Assignment:
    """Lease the highest-priority item `annotator` may label in `project`.

    An annotator who already holds an unexpired lease gets it back (a reload
    serves the same item). Otherwise the best open item with room under the
    project's overlap, not yet annotated or skipped by this annotator, is
    leased for `project.lease_seconds`.

    Raises
    ------
    NotAMember
        The user may not annotate this project.
    QueueClosed
        The budget or quota is spent, or no item is left for this annotator;
        `code` is one of budget_spent, quota_spent, queue_empty.
    """
    now = timezone.now()
    # Reads that need no lock run before the transaction, so the part that
    # holds the write lock (SQLite) or row locks (PostgreSQL) stays short:
    # only this annotator creates their own leases, and a project without a
    # limit needs no exact count of the others'.
    membership = membership_get(project=project, user=annotator)
    held = (
        Assignment.objects.filter(
            project=project, annotator=annotator, status=AssignmentStatus.ACTIVE, expires_at__gt=now
        )
        .select_related("item")
        .order_by("-leased_at")
        .first()
    )
    if held is not None:
        return held
    # Re-read: the budget must never come from a caller's stale instance.
    project = Project.objects.select_related("budget").get(pk=project.pk)
    limited = _has_project_limit(project)
    if not limited:
        budget_check(project=project, membership=membership, reserved=0)
    with transaction.atomic():
        if limited:
            # Exact budget accounting needs the project's counters as committed:
            # lock its row (the same lock annotating takes first, so the order
            # project -> item holds everywhere) and count the open leases.
            project = (
                Project.objects.select_for_update(no_key=True, of=("self",))
                .select_related("budget").get(pk=project.pk)
            )
            budget_check(project=project, membership=membership,
                         reserved=active_lease_count(project=project, now=now))
        tried: list[int] = []
        for _ in range(_MAX_TRIES):
            item = _candidates(project, annotator, now, tried).first()
            if item is None:
                break
            assignment = _lease_locked_item(item, project, annotator, now)
            if assignment is not None:
                return assignment
            tried.append(item.pk)
    raise QueueClosed("No items are left for you in this project.", code="queue_empty")


def queue_reorder(
    *, project: Project, item_ids, priorities, predicted_label_ids=None, confidences=None,
    version_number: int | None = None,
) -> None:
    """Replace the queue order of `project` with a model's scores.

    Call inside the transaction that records the model version, so annotators
    see either the old order or the new one, never a mix. Without predictions
    (a cold start), only priorities change.

    PostgreSQL: the scores are COPYed into a temporary table and applied by one
    UPDATE ... FROM, since a million single-row UPDATEs cost the server a parse
    each (bench/scoring: 77 s -> 41 s at 1M items). SQLite: one UPDATE per row
    by primary key in one transaction, with a page cache big enough for the
    queue index (bench/scoring: 15-20 s -> 9 s at 1M items).
    """
    table = connection.ops.quote_name(Item._meta.db_table)
    columns: dict[str, tuple[str, Iterable]] = {"priority": ("float8", (float(p) for p in priorities))}
    if predicted_label_ids is not None:
        columns["predicted_label_id"] = ("int8", (int(l) for l in predicted_label_ids))
        columns["confidence"] = ("float8", (float(c) for c in confidences))
    constants = {} if version_number is None else {"scored_by_version": int(version_number)}
    rows = zip((int(i) for i in item_ids), *(values for _, values in columns.values()))
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            _reorder_postgresql(cursor, table, project, rows, columns, constants)
            return
        cursor.execute(f"PRAGMA cache_size = -{_SQLITE_REORDER_CACHE_KIB}")
        sets = ", ".join([f"{c} = %s" for c in columns] + [f"{c} = {v}" for c, v in constants.items()])
        sql = f"UPDATE {table} SET {sets} WHERE id = %s AND project_id = {int(project.pk)}"
        batch: list[tuple] = []
        for row in rows:
            batch.append(row[1:] + row[:1])
            if len(batch) == 10_000:
                cursor.executemany(sql, batch)
                batch.clear()
        if batch:
            cursor.executemany(sql, batch)


_SQLITE_REORDER_CACHE_KIB = 128 * 1024


def _reorder_postgresql(cursor, table: str, project: Project, rows, columns: dict, constants: dict) -> None:
    names = ["id", *columns]
    types = ["int8", *(kind for kind, _ in columns.values())]
    cursor.execute(
        "CREATE TEMPORARY TABLE queue_scores (" + ", ".join(f"{c} {t}" for c, t in zip(names, types)) + ")"
    )
    with cursor.cursor.copy(f"COPY queue_scores ({', '.join(names)}) FROM STDIN (FORMAT BINARY)") as copy:
        copy.set_types(types)
        for row in rows:
            copy.write_row(row)
    cursor.execute("ANALYZE queue_scores")
    sets = ", ".join([f"{c} = s.{c}" for c in columns] + [f"{c} = {v}" for c, v in constants.items()])
    cursor.execute(
        f"UPDATE {table} SET {sets} FROM queue_scores s WHERE {table}.id = s.id AND {table}.project_id = %s",
        [project.pk],
    )
    cursor.execute("DROP TABLE queue_scores")
