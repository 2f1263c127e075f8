"""Budget arithmetic: the burn-down, what is left, quotas, and when the budget runs out.

Pure functions over plain values (no Django), so every number on the budget
dashboard can be checked by hand. Days are UTC calendar days. "Labels" are
labels given by annotators; imported seed labels cost nothing and are not
counted. "Left" follows the queue's own rule (`annotate.services.budgets.budget_check`):
the queue closes when the label limit is reached, or when one more label at
the current price would take the cost past its limit.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal

# A forecast further out than this is reported as "distant" rather than as a
# date: a trickle of labels against a large budget would otherwise overflow
# `date` (year 9999) and says nothing useful anyway.
FORECAST_HORIZON_DAYS = 100 * 365


@dataclass(frozen=True)
class SpendEvent:
    """Labels given at one moment (or on one UTC day), and what they cost."""

    at: datetime | date
    labels: int
    cost: Decimal


@dataclass(frozen=True)
class BurnDownPoint:
    """One UTC day: what was given that day, and the totals at the end of it."""

    day: date
    labels: int
    cost: Decimal
    labels_total: int
    cost_total: Decimal


@dataclass(frozen=True)
class Forecast:
    """When the budget runs out at the current rate.

    `status` is one of:

    - ``no_budget``: neither limit can close the queue; no date.
    - ``spent``: nothing is left; `day` is the UTC day the spending reached
      the limit (None when the limit allows no labels at all).
    - ``no_activity``: no label was ever given, so there is no rate; no date.
    - ``idle``: no label in the trailing window, so the rate is zero; no date.
    - ``distant``: the date lies more than FORECAST_HORIZON_DAYS away; no date.
    - ``forecast``: `day` is the forecast exhaustion day.

    `reason` says the same in words, for the page.
    """

    status: str
    day: date | None
    reason: str
    labels_total: int = 0
    labels_left: int | None = None
    rate_per_day: float | None = None
    window_start: date | None = None
    window_days: int | None = None
    labels_in_window: int | None = None


def utc_day(at: datetime | date) -> date:
    """The UTC calendar day of an aware datetime (a `date` is taken as a UTC day already)."""
    if isinstance(at, datetime):
        if at.tzinfo is None or at.utcoffset() is None:
            raise ValueError(f"timestamp {at.isoformat()} has no time zone; budget days are UTC days")
        return at.astimezone(timezone.utc).date()
    return at


def burn_down(events: Iterable[SpendEvent]) -> list[BurnDownPoint]:
    """The cumulative series: one point per UTC day with labels, in day order.

    Events of the same day are added up, in any order; days without labels
    have no point (the totals are flat between points).
    """
    by_day: dict[date, tuple[int, Decimal]] = {}
    for event in events:
        day = utc_day(event.at)
        labels, cost = by_day.get(day, (0, Decimal("0")))
        by_day[day] = (labels + event.labels, cost + Decimal(event.cost))
    points: list[BurnDownPoint] = []
    labels_total, cost_total = 0, Decimal("0")
    for day in sorted(by_day):
        labels, cost = by_day[day]
        labels_total += labels
        cost_total += cost
        points.append(BurnDownPoint(day=day, labels=labels, cost=cost,
                                    labels_total=labels_total, cost_total=cost_total))
    return points


def cost_limited(max_cost: Decimal | None, cost_per_label: Decimal) -> bool:
    """Whether the cost limit can close the queue: a limit is set and labels are not free."""
    return max_cost is not None and cost_per_label > 0


def labels_affordable(*, max_cost: Decimal | None, cost_spent: Decimal, cost_per_label: Decimal) -> int | None:
    """How many more labels the cost left buys at the current price; None when cost sets no limit.

    The queue serves a label while ``cost_spent + cost_per_label <= max_cost``,
    so this is ``floor((max_cost - cost_spent) / cost_per_label)``, at least 0.
    """
    if not cost_limited(max_cost, cost_per_label):
        return None
    return max(0, int((max_cost - cost_spent) // cost_per_label))


def labels_left(
    *, max_labels: int | None, label_count: int, max_cost: Decimal | None, cost_spent: Decimal,
    cost_per_label: Decimal,
) -> int | None:
    """Labels the budget still allows: the smaller of what the label limit and the cost left allow.

    None means no limit. Leases in progress are not subtracted (the queue
    reserves them as it serves; see `annotate.services.budgets.budget_check`).
    """
    limits = []
    if max_labels is not None:
        limits.append(max(0, max_labels - label_count))
    affordable = labels_affordable(max_cost=max_cost, cost_spent=cost_spent, cost_per_label=cost_per_label)
    if affordable is not None:
        limits.append(affordable)
    return min(limits) if limits else None


def cost_left(*, max_cost: Decimal | None, cost_spent: Decimal) -> Decimal | None:
    """Money left under the cost limit (never below 0); None without a limit."""
    if max_cost is None:
        return None
    return max(max_cost - cost_spent, Decimal("0"))


def quota_left(*, quota: int | None, label_count: int) -> int | None:
    """Labels an annotator may still give (never below 0); None without a quota."""
    if quota is None:
        return None
    return max(0, quota - label_count)


def share(part: int | Decimal, whole: int | Decimal) -> float | None:
    """`part` as a fraction of `whole`; None when the whole is zero (nothing to share)."""
    if not whole:
        return None
    return float(Decimal(part) / Decimal(whole))


def forecast_exhaustion(
    points: Sequence[BurnDownPoint], *, today: date, max_labels: int | None = None,
    max_cost: Decimal | None = None, cost_per_label: Decimal = Decimal("0"), window_days: int = 7,
) -> Forecast:
    """The UTC day the budget runs out if labels keep coming at the current rate.

    The current rate is labels per day over a trailing window of
    `window_days` calendar days ending today (today included), shortened to
    start on the first day with labels for a project younger than the window::

        window_start = max(first labelled day, today - (window_days - 1))
        days         = (today - window_start) + 1
        rate         = labels given from window_start to today / days

    A window anchored at today (not at the last label) makes a project whose
    annotators stopped read as idle instead of forecasting a date in the past.
    At that rate the labels left (`labels_left`, at the current price for a
    cost limit) are used up ``ceil(labels_left / rate)`` days after today:
    30 labels over 3 days is 10 a day, and 70 left run out 7 days after today.

    Edge cases: no limit -> ``no_budget``; nothing left -> ``spent`` with the
    first day the totals reached the current limit; no label ever ->
    ``no_activity``; none in the window (rate zero) -> ``idle``. Only
    ``spent`` and ``forecast`` carry a day.

    `points` is the burn-down (see `burn_down`); points after `today` are ignored.
    """
    if window_days < 1:
        raise ValueError(f"window_days must be at least 1, got {window_days}")
    points = [p for p in points if p.day <= today]
    labels_total = points[-1].labels_total if points else 0
    cost_total = points[-1].cost_total if points else Decimal("0")
    budget = {"max_labels": max_labels, "max_cost": max_cost, "cost_per_label": cost_per_label}
    left = labels_left(label_count=labels_total, cost_spent=cost_total, **budget)
    if left is None:
        return Forecast(status="no_budget", day=None, labels_total=labels_total,
                        reason="No label or cost limit is set, so the budget never runs out.")
    if left == 0:
        spent_on = next(
            (p.day for p in points
             if labels_left(label_count=p.labels_total, cost_spent=p.cost_total, **budget) == 0),
            None,
        )
        reason = ("The budget allows no labels." if spent_on is None
                  else f"The budget was spent on {spent_on.isoformat()}.")
        return Forecast(status="spent", day=spent_on, labels_total=labels_total, labels_left=0, reason=reason)
    if not points:
        return Forecast(status="no_activity", day=None, labels_total=0, labels_left=left,
                        reason="No labels yet, so there is no rate to forecast from.")
    window_start = max(points[0].day, today - timedelta(days=window_days - 1))
    days = (today - window_start).days + 1
    in_window = sum(p.labels for p in points if p.day >= window_start)
    common = {"labels_total": labels_total, "labels_left": left, "window_start": window_start,
              "window_days": days, "labels_in_window": in_window}
    if in_window == 0:
        return Forecast(status="idle", day=None, rate_per_day=0.0,
                        reason=f"No labels in the last {window_days} days, so the current rate is zero.", **common)
    rate = in_window / days
    # ceil(left / (in_window / days)) in integers, so 70 / (30 / 3) is exactly 7.
    days_needed = -(-left * days // in_window)
    if days_needed > FORECAST_HORIZON_DAYS:
        return Forecast(status="distant", day=None, rate_per_day=rate,
                        reason=f"More than {FORECAST_HORIZON_DAYS // 365} years away at {rate:.2f} labels a day.",
                        **common)
    day = today + timedelta(days=days_needed)
    return Forecast(status="forecast", day=day, rate_per_day=rate,
                    reason=f"At {rate:.2f} labels a day, the {left} labels left last until {day.isoformat()}.",
                    **common)
