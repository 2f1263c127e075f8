"""Budget arithmetic against numbers worked out by hand (annotate.metrics.budget: no Django, no database)."""
from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from decimal import Decimal

import pytest

from annotate.metrics.budget import (
    FORECAST_HORIZON_DAYS,
    SpendEvent,
    burn_down,
    cost_left,
    forecast_exhaustion,
    labels_affordable,
    labels_left,
    quota_left,
    share,
)

D = Decimal
UTC = timezone.utc
PLUS_TWO = timezone(timedelta(hours=2))


def daily(*rows: tuple[date, int, str]):
    """Burn-down points from (day, labels, cost) rows."""
    return burn_down(SpendEvent(at=day, labels=labels, cost=D(cost)) for day, labels, cost in rows)


# --- burn-down ----------------------------------------------------------------

def test_burn_down_groups_by_utc_day_and_accumulates_in_day_order():
    events = [
        SpendEvent(at=date(2025, 3, 3), labels=4, cost=D("2.00")),  # out of order on purpose
        SpendEvent(at=datetime(2025, 3, 1, 9, 0, tzinfo=UTC), labels=1, cost=D("0.50")),
        # 23:59 at UTC+2 is 21:59 UTC: still 1 March.
        SpendEvent(at=datetime(2025, 3, 1, 23, 59, tzinfo=PLUS_TWO), labels=2, cost=D("1.00")),
        # 00:30 on 2 March at UTC+2 is 22:30 UTC on 1 March.
        SpendEvent(at=datetime(2025, 3, 2, 0, 30, tzinfo=PLUS_TWO), labels=1, cost=D("0.50")),
    ]

    points = burn_down(events)

    # 1 March: 1 + 2 + 1 = 4 labels, 0.50 + 1.00 + 0.50 = 2.00; 3 March: 4 labels, 2.00 -> totals 8 and 4.00.
    assert [(p.day, p.labels, p.cost, p.labels_total, p.cost_total) for p in points] == [
        (date(2025, 3, 1), 4, D("2.00"), 4, D("2.00")),
        (date(2025, 3, 3), 4, D("2.00"), 8, D("4.00")),
    ]


def test_burn_down_of_nothing_is_empty():
    assert burn_down([]) == []


def test_burn_down_refuses_a_naive_timestamp():
    with pytest.raises(ValueError, match="no time zone"):
        burn_down([SpendEvent(at=datetime(2025, 3, 1, 9, 0), labels=1, cost=D("0"))])


# --- what is left ---------------------------------------------------------------

def test_labels_affordable_rounds_down_to_whole_labels():
    # 10.00 - 7.30 = 2.70 left; 2.70 / 0.75 = 3.6 -> 3 more labels (a 4th would make 10.30 > 10.00).
    assert labels_affordable(max_cost=D("10.00"), cost_spent=D("7.30"), cost_per_label=D("0.75")) == 3


def test_labels_affordable_is_zero_when_overspent_and_none_without_a_cost_limit():
    assert labels_affordable(max_cost=D("10.00"), cost_spent=D("10.50"), cost_per_label=D("0.75")) == 0
    assert labels_affordable(max_cost=None, cost_spent=D("1"), cost_per_label=D("0.75")) is None
    # Free labels never reach a cost limit, as in the queue's budget_check.
    assert labels_affordable(max_cost=D("10.00"), cost_spent=D("0"), cost_per_label=D("0")) is None


def test_labels_left_is_the_smaller_of_the_label_and_cost_limits():
    # Label limit: 100 - 40 = 60. Cost: (50.00 - 20.00) / 0.50 = 60 -> tie, 60.
    assert labels_left(max_labels=100, label_count=40, max_cost=D("50.00"), cost_spent=D("20.00"),
                       cost_per_label=D("0.50")) == 60
    # Cost limit 30.00: (30.00 - 20.00) / 0.50 = 20 < 60.
    assert labels_left(max_labels=100, label_count=40, max_cost=D("30.00"), cost_spent=D("20.00"),
                       cost_per_label=D("0.50")) == 20
    # A label limit lowered below what is spent leaves 0, not -5.
    assert labels_left(max_labels=35, label_count=40, max_cost=None, cost_spent=D("20.00"),
                       cost_per_label=D("0.50")) == 0
    assert labels_left(max_labels=None, label_count=40, max_cost=None, cost_spent=D("20.00"),
                       cost_per_label=D("0.50")) is None


def test_cost_left_quota_left_and_share():
    assert cost_left(max_cost=D("10.00"), cost_spent=D("7.25")) == D("2.75")
    assert cost_left(max_cost=D("10.00"), cost_spent=D("12.00")) == D("0")
    assert cost_left(max_cost=None, cost_spent=D("12.00")) is None
    assert quota_left(quota=5, label_count=3) == 2
    assert quota_left(quota=5, label_count=7) == 0
    assert quota_left(quota=None, label_count=7) is None
    assert share(1, 4) == 0.25
    assert share(D("2.25"), D("9.00")) == 0.25
    assert share(0, 0) is None


# --- forecast -----------------------------------------------------------------

def test_forecast_ten_a_day_with_seventy_left_runs_out_seven_days_after_today():
    points = daily((date(2025, 3, 1), 10, "0"), (date(2025, 3, 2), 10, "0"), (date(2025, 3, 3), 10, "0"))

    forecast = forecast_exhaustion(points, today=date(2025, 3, 3), max_labels=100)

    # 30 labels over 3 days (1-3 March, younger than the 7-day window) = 10 a day; 100 - 30 = 70 left;
    # 70 / 10 = 7 days -> 3 + 7 = 10 March.
    assert forecast.status == "forecast"
    assert forecast.day == date(2025, 3, 10)
    assert (forecast.rate_per_day, forecast.labels_in_window, forecast.window_days) == (10.0, 30, 3)
    assert (forecast.labels_total, forecast.labels_left) == (30, 70)


def test_forecast_uses_only_the_trailing_seven_days():
    points = daily((date(2025, 3, 1), 50, "0"), (date(2025, 3, 10), 7, "0"), (date(2025, 3, 14), 7, "0"))

    forecast = forecast_exhaustion(points, today=date(2025, 3, 16), max_labels=100)

    # Window 10-16 March (7 days): 7 + 7 = 14 labels -> 2 a day (the 50 of 1 March are older).
    # Left 100 - 64 = 36 -> 18 days -> 16 March + 18 = 3 April.
    assert forecast.window_start == date(2025, 3, 10)
    assert forecast.rate_per_day == 2.0
    assert forecast.day == date(2025, 4, 3)


def test_forecast_rounds_a_part_day_up():
    points = daily((date(2025, 3, 1), 3, "0"))

    forecast = forecast_exhaustion(points, today=date(2025, 3, 2), max_labels=10)

    # 3 labels over 2 days (1-2 March) = 1.5 a day; 7 left / 1.5 = 4.67 -> the 7th label comes on day 5: 7 March.
    assert forecast.rate_per_day == 1.5
    assert forecast.day == date(2025, 3, 7)


def test_forecast_of_a_cost_limit_uses_the_current_price():
    points = daily((date(2025, 4, 1), 10, "5.00"), (date(2025, 4, 2), 10, "2.50"))
    budget = {"max_cost": D("20.00"), "cost_per_label": D("0.50")}

    by_cost = forecast_exhaustion(points, today=date(2025, 4, 2), **budget)
    both = forecast_exhaustion(points, today=date(2025, 4, 2), max_labels=30, **budget)

    # Spent 5.00 + 2.50 = 7.50; 12.50 left buys 25 labels at 0.50. 20 labels over 2 days = 10 a day;
    # 25 / 10 = 2.5 -> 3 days -> 5 April.
    assert (by_cost.labels_left, by_cost.day) == (25, date(2025, 4, 5))
    # With a label limit of 30: min(30 - 20, 25) = 10 left -> 1 day -> 3 April.
    assert (both.labels_left, both.day) == (10, date(2025, 4, 3))


def test_forecast_without_a_budget_is_none():
    points = daily((date(2025, 3, 1), 10, "5.00"))

    for budget in ({}, {"max_cost": D("100.00"), "cost_per_label": D("0")}):
        forecast = forecast_exhaustion(points, today=date(2025, 3, 1), **budget)
        assert (forecast.status, forecast.day) == ("no_budget", None)
        assert "never runs out" in forecast.reason


def test_forecast_without_activity_is_none_with_a_reason():
    forecast = forecast_exhaustion([], today=date(2025, 3, 1), max_labels=100)

    assert (forecast.status, forecast.day, forecast.labels_left) == ("no_activity", None, 100)
    assert forecast.reason == "No labels yet, so there is no rate to forecast from."


def test_forecast_of_a_spent_budget_is_the_day_it_was_spent():
    points = daily((date(2025, 3, 1), 10, "10.00"), (date(2025, 3, 2), 10, "10.00"), (date(2025, 3, 3), 10, "10.00"))

    # Totals 10, 20, 30: a limit of 20 (lowered after the fact) was reached on 2 March.
    by_labels = forecast_exhaustion(points, today=date(2025, 3, 9), max_labels=20)
    # Cost 10.00, 20.00, 30.00 at 1.00 a label: a limit of 25.50 leaves 0.50 after 3 March, less than one
    # label -> spent on 3 March (on 2 March 5.50 was left: 5 labels).
    by_cost = forecast_exhaustion(points, today=date(2025, 3, 9), max_cost=D("25.50"), cost_per_label=D("1.00"))

    assert (by_labels.status, by_labels.day, by_labels.labels_left) == ("spent", date(2025, 3, 2), 0)
    assert by_labels.reason == "The budget was spent on 2025-03-02."
    assert (by_cost.status, by_cost.day) == ("spent", date(2025, 3, 3))


def test_forecast_of_a_zero_budget_without_labels_is_spent_without_a_day():
    forecast = forecast_exhaustion([], today=date(2025, 3, 1), max_labels=0)

    assert (forecast.status, forecast.day) == ("spent", None)
    assert forecast.reason == "The budget allows no labels."


def test_forecast_with_no_labels_in_the_window_is_none_rate_zero():
    points = daily((date(2025, 3, 1), 10, "0"))

    idle = forecast_exhaustion(points, today=date(2025, 3, 8), max_labels=100)
    last_day_in_window = forecast_exhaustion(points, today=date(2025, 3, 7), max_labels=100)

    # On 8 March the window is 2-8 March: no labels, rate 0.
    assert (idle.status, idle.day, idle.rate_per_day) == ("idle", None, 0.0)
    assert idle.reason == "No labels in the last 7 days, so the current rate is zero."
    # On 7 March the window is 1-7 March: 10 labels / 7 days; 90 left -> ceil(90 * 7 / 10) = 63 days
    # -> 7 March + 63 = 9 May (24 more days in March, 30 in April, 9 in May).
    assert last_day_in_window.day == date(2025, 5, 9)


def test_forecast_beyond_the_horizon_has_no_day():
    points = daily((date(2025, 3, 1), 1, "0"))

    forecast = forecast_exhaustion(points, today=date(2025, 3, 1), max_labels=2_000_000_000)

    # 1 a day against 1,999,999,999 left: far past the 100-year horizon.
    assert 1_999_999_999 > FORECAST_HORIZON_DAYS
    assert (forecast.status, forecast.day) == ("distant", None)


def test_forecast_needs_a_window_of_at_least_a_day():
    with pytest.raises(ValueError, match="window_days"):
        forecast_exhaustion([], today=date(2025, 3, 1), max_labels=1, window_days=0)
