"""The budget dashboard in a real browser: the numbers it shows are the database's, and its form writes.

Each expected number is computed here from the database with its own queries
(never through annotate.dashboards.budget), then read from the page.
"""
from __future__ import annotations

from datetime import date, timedelta
from datetime import timezone as dt_timezone
from decimal import ROUND_FLOOR, Decimal

import pytest
from django.utils import timezone

from annotate.models import Annotation, AnnotationSource, Assignment, AssignmentStatus, Budget, Item, Membership
from annotate.services.annotations import annotation_create
from annotate.services.budgets import budget_update
from annotate.services.queue import queue_next_item
from tests.browser import ARTIFACTS, log_in
from tests.factories import add_annotator, add_items, make_project, make_user

pytestmark = pytest.mark.django_db(transaction=True)


def label_items(project, annotator, n: int) -> list[int]:
    """Label `n` items through the real queue; the new annotations' ids."""
    ids = []
    for _ in range(n):
        assignment = queue_next_item(project=project, annotator=annotator)
        ids.append(annotation_create(project=project, annotator=annotator, item_id=assignment.item_id,
                                     label="cat").pk)
    return ids


def seed():
    """Four annotators over ten days, two prices, one open lease."""
    owner = make_user("payer")
    project = make_project(owner, retrain_every=1000, max_labels=40)
    add_items(project, [f"text {i}" for i in range(30)])
    budget_update(project=project, cost_per_label="0.50", max_cost="30.00")
    alice = add_annotator(project, make_user("alice"), quota=15)
    bob = add_annotator(project, make_user("bob"))
    carol = add_annotator(project, make_user("carol"), quota=5)
    dave = add_annotator(project, make_user("dave"))
    first_alice = label_items(project, alice, 8)
    budget_update(project=project, cost_per_label="0.75")
    bobs = label_items(project, bob, 6)
    label_items(project, carol, 3)  # today
    queue_next_item(project=project, annotator=dave)  # served, not labelled yet
    now = timezone.now()
    # created_at is auto_now_add: move the labels into the past afterwards.
    Annotation.objects.filter(pk__in=first_alice[:4]).update(created_at=now - timedelta(days=9))
    Annotation.objects.filter(pk__in=first_alice[4:]).update(created_at=now - timedelta(days=3))
    Annotation.objects.filter(pk__in=bobs).update(created_at=now - timedelta(days=1))
    return owner, project


def expected_from_database(project) -> dict:
    """The dashboard's numbers, worked out here from the rows."""
    budget = Budget.objects.get(project=project)
    human = Annotation.objects.filter(project=project, source=AnnotationSource.HUMAN)
    rows = list(human.values_list("created_at", "cost", "annotator__username"))
    labels = len(rows)
    cost = sum((c for _, c, _ in rows), Decimal("0"))
    left = [budget.max_labels - labels]
    if budget.max_cost is not None and budget.cost_per_label > 0:
        left.append(int(((budget.max_cost - cost) / budget.cost_per_label).to_integral_value(ROUND_FLOOR)))
    labels_left = max(0, min(left))
    # Rate: labels of the last 7 UTC days (today included) per day, since the first label if sooner.
    today = timezone.now().astimezone(dt_timezone.utc).date()
    days = [created.astimezone(dt_timezone.utc).date() for created, _, _ in rows]
    start = max(min(days), today - timedelta(days=6))
    in_window = sum(1 for d in days if d >= start)
    window = (today - start).days + 1
    forecast = today + timedelta(days=-(-labels_left * window // in_window))
    people = {}
    for membership in Membership.objects.filter(project=project).select_related("user"):
        mine = [c for _, c, name in rows if name == membership.user.username]
        people[membership.user.username] = {
            "labels": len(mine), "cost": sum(mine, Decimal("0")),
            "quota_left": None if membership.quota is None else membership.quota - len(mine),
        }
    items = Item.objects.filter(project=project)
    return {
        "labels": labels, "cost": cost, "labels_left": labels_left, "forecast": forecast, "today": today,
        "rate": in_window / window, "people": people,
        "items_open": items.filter(done=False).count(), "items_done": items.filter(done=True).count(),
        "active_leases": Assignment.objects.filter(project=project, status=AssignmentStatus.ACTIVE,
                                                   expires_at__gt=timezone.now()).count(),
    }


def text(page, selector: str) -> str:
    return page.locator(selector).inner_text().strip()


def test_dashboard_shows_the_database_numbers_and_its_form_changes_the_budget(live_server, new_page):
    from playwright.sync_api import expect

    owner, project = seed()
    expected = expected_from_database(project)
    today: date = expected["today"]
    # By hand: alice 8 x 0.50 = 4.00, bob 6 x 0.75 = 4.50, carol 3 x 0.75 = 2.25 -> 17 labels, 10.75.
    # Left: min(40 - 17 = 23, (30.00 - 10.75) / 0.75 = 25.67 -> 25) = 23.
    # Window: the first label was 9 days ago, so the last 7 days (today - 6 .. today): alice's later 4 (3 days
    # ago), bob's 6 (yesterday), carol's 3 (today) = 13 labels / 7 days; 23 / (13 / 7) = 12.4 -> 13 days.
    assert (expected["labels"], expected["cost"], expected["labels_left"]) == (17, Decimal("10.75"), 23)
    assert expected["forecast"] == today + timedelta(days=13)

    page = new_page()
    log_in(page, live_server, owner)
    response = page.goto(f"{live_server.url}/projects/{project.pk}/dashboard/budget/")
    assert response is not None and response.status == 200
    expect(page.get_by_role("heading", name="Budget", exact=True)).to_be_visible()
    expect(page.locator("svg[role=img]")).to_be_visible()
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "dashboard-budget.png"), full_page=True)

    assert text(page, "#labels-spent") == str(expected["labels"])
    assert Decimal(text(page, "#cost-spent")) == expected["cost"]
    assert text(page, "#labels-left") == str(expected["labels_left"])
    assert text(page, "#forecast-date") == expected["forecast"].isoformat()
    assert text(page, "#forecast-rate") == f"{expected['rate']:.2f}"
    for name, person in expected["people"].items():
        row = page.locator(f'#annotators tr[data-username="{name}"]')
        assert text(row, "td[data-col=labels]") == str(person["labels"]), name
        assert Decimal(text(row, "td[data-col=cost]")) == person["cost"], name
        quota_left = "no quota" if person["quota_left"] is None else str(person["quota_left"])
        assert text(row, "td[data-col=quota-left]") == quota_left, name
    assert text(page, "#items-open") == str(expected["items_open"])
    assert text(page, "#items-done") == str(expected["items_done"])
    assert text(page, "#active-leases") == str(expected["active_leases"]) == "1"
    # The chart's table: one row per day with labels, totals ending at the project's.
    assert page.locator("#burn-down tbody tr").count() == 4
    assert text(page, "#burn-down tbody tr:last-child td[data-col=labels-total]") == str(expected["labels"])

    # Lower the label limit to what is spent, through the form.
    page.get_by_label("Most labels").fill(str(expected["labels"]))
    page.get_by_role("button", name="Save the budget").click()
    expect(page.locator(".messages")).to_contain_text("Budget saved: most labels 17")
    assert Budget.objects.get(project=project).max_labels == 17
    assert text(page, "#labels-left") == "0"
    expect(page.locator("#forecast")).to_have_attribute("data-status", "spent")
    assert text(page, "#forecast-date") == today.isoformat(), "the 17th label was given today"

    # And a quota, in the annotators' table.
    carol = Membership.objects.get(project=project, user__username="carol")
    page.get_by_label("Quota of carol").fill("3")
    page.get_by_role("button", name="Save quota of carol").click()
    expect(page.locator(".messages")).to_contain_text("Quota of carol saved: 3")
    carol.refresh_from_db()
    assert carol.quota == 3
    assert text(page, '#annotators tr[data-username="carol"] td[data-col=quota-left]') == "0"
