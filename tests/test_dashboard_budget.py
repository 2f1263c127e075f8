"""The budget dashboard: who may see it, the budget and quota forms, their effect on the queue, the CSVs."""
from __future__ import annotations

import csv
import io
from datetime import timedelta
from datetime import timezone as dt_timezone
from decimal import Decimal

import pytest
from django.db.models import Count, Sum
from django.urls import reverse
from django.utils import timezone

from annotate.errors import QueueClosed
from annotate.models import Annotation, AnnotationSource, Budget, Membership
from annotate.services.annotations import annotation_create
from annotate.services.budgets import BudgetInvalid, budget_update, quota_update
from annotate.services.queue import queue_next_item
from tests.factories import add_annotator, add_items, make_project, make_user

pytestmark = pytest.mark.django_db


def label_items(project, annotator, n: int, label: str = "cat") -> None:
    """`annotator` labels the next `n` items through the real queue and annotation services."""
    for _ in range(n):
        assignment = queue_next_item(project=project, annotator=annotator)
        annotation_create(project=project, annotator=annotator, item_id=assignment.item_id, label=label)


@pytest.fixture
def owner():
    return make_user("budget-owner")


@pytest.fixture
def project(owner):
    project = make_project(owner, retrain_every=1000, max_labels=100)
    add_items(project, [f"text {i}" for i in range(12)])
    budget_update(project=project, cost_per_label="0.50", max_cost="40.00")
    return project


@pytest.fixture
def annotator(project):
    return add_annotator(project, make_user("ann"), quota=10)


def url(project) -> str:
    return reverse("dashboard-budget", args=[project.pk])


def csv_rows(client, project, table: str) -> list[dict]:
    response = client.get(reverse("dashboard-budget-csv", args=[project.pk, table]))
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    return list(csv.DictReader(io.StringIO(response.content.decode())))


# --- who sees it ----------------------------------------------------------------

def test_owner_sees_the_dashboard_with_its_numbers(client, owner, project, annotator):
    label_items(project, annotator, 3)
    client.force_login(owner)

    page = client.get(url(project)).content.decode()

    # 3 labels at 0.50 = 1.50; labels left min(100 - 3, (40.00 - 1.50) / 0.50 = 77) = 77.
    assert '<span id="labels-spent">3</span>' in page
    assert '<span id="cost-spent">1.50</span>' in page
    assert '<span id="labels-left">77</span>' in page
    assert '<span id="cost-left">38.50</span>' in page
    assert '<svg role="img" aria-label="Labels given against the budget"' in page
    assert 'data-username="ann"' in page


def test_staff_who_is_not_a_member_sees_it(client, project):
    staff = make_user("staff")
    staff.is_staff = True
    staff.save()
    client.force_login(staff)

    assert client.get(url(project)).status_code == 200
    assert client.get(reverse("dashboard-budget-csv", args=[project.pk, "annotators"])).status_code == 200


def test_annotator_gets_403_outsider_404_and_neither_changes_anything(client, project, annotator):
    for user, refused in ((annotator, 403), (make_user("outsider"), 404)):
        client.force_login(user)
        assert client.get(url(project)).status_code == refused
        assert client.get(reverse("dashboard-budget-csv", args=[project.pk, "burn-down"])).status_code == refused
        response = client.post(url(project), {"form": "budget", "max_labels": "1", "cost_per_label": "0"})
        assert response.status_code == refused
        response = client.post(url(project), {"form": "quota", "user": annotator.pk, "quota": "99"})
        assert response.status_code == refused
    assert Budget.objects.get(project=project).max_labels == 100
    assert Membership.objects.get(project=project, user=annotator).quota == 10


def test_dashboard_needs_login(client, project):
    response = client.get(url(project))
    assert response.status_code == 302 and "/login/" in response["Location"]


def test_unknown_csv_table_is_404(client, owner, project):
    client.force_login(owner)
    assert client.get(reverse("dashboard-budget-csv", args=[project.pk, "everything"])).status_code == 404


def test_an_unknown_form_is_a_bad_request(client, owner, project):
    client.force_login(owner)
    assert client.post(url(project), {"form": "sites"}).status_code == 400


# --- the budget form ------------------------------------------------------------

def test_budget_form_saves_and_redirects(client, owner, project):
    client.force_login(owner)

    response = client.post(url(project), {
        "form": "budget", "max_labels": "250", "cost_per_label": "0.75", "max_cost": ""})

    assert response.status_code == 302 and response["Location"] == url(project)
    budget = Budget.objects.get(project=project)
    assert (budget.max_labels, budget.cost_per_label, budget.max_cost) == (250, Decimal("0.75"), None)
    page = client.get(url(project)).content.decode()
    assert "Budget saved: most labels 250, cost per label 0.75, most cost no limit." in page
    assert '<span id="max-cost">no cost limit</span>' in page


@pytest.mark.parametrize("field, value, error", [
    ("max_labels", "lots", "Enter a whole number."),
    ("max_labels", "-5", "must be between 0 and 2,000,000,000, got -5"),
    ("cost_per_label", "0.125", "at most 999999.99 with 2 decimal places, got Decimal(&#x27;0.125&#x27;)"),
    ("cost_per_label", "", "a price is needed (0 for unpaid labels)"),
    ("max_cost", "-1", "must be a non-negative amount"),
])
def test_budget_form_shows_the_error_next_to_the_field_and_writes_nothing(client, owner, project, field, value,
                                                                         error):
    client.force_login(owner)
    data = {"form": "budget", "max_labels": "50", "cost_per_label": "1.00", "max_cost": "10.00", field: value}

    response = client.post(url(project), data)

    assert response.status_code == 200
    page = response.content.decode()
    assert f'<span class="errors" id="id_{field}-error" role="alert">' in page
    assert error in page.split(f'id="id_{field}-error"', 1)[1].split("</span>", 1)[0]
    assert 'aria-invalid="true"' in page
    budget = Budget.objects.get(project=project)
    assert (budget.max_labels, budget.cost_per_label, budget.max_cost) == (100, Decimal("0.50"), Decimal("40.00"))


def test_budget_lowered_to_the_spent_count_closes_the_queue_at_once_and_raising_it_reopens(
        client, owner, project, annotator):
    label_items(project, annotator, 3)
    client.force_login(owner)

    client.post(url(project), {"form": "budget", "max_labels": "3", "cost_per_label": "0.50", "max_cost": "40.00"})

    with pytest.raises(QueueClosed) as closed:
        queue_next_item(project=project, annotator=annotator)
    assert closed.value.code == "budget_spent"
    page = client.get(url(project)).content.decode()
    assert '<span id="labels-left">0</span>' in page
    assert 'data-status="spent"' in page

    client.post(url(project), {"form": "budget", "max_labels": "4", "cost_per_label": "0.50", "max_cost": "40.00"})

    assert queue_next_item(project=project, annotator=annotator).item_id is not None


def test_cost_limit_lowered_to_what_is_spent_closes_the_queue(client, owner, project, annotator):
    label_items(project, annotator, 3)  # 3 x 0.50 = 1.50
    client.force_login(owner)

    client.post(url(project), {"form": "budget", "max_labels": "", "cost_per_label": "0.50", "max_cost": "1.99"})

    # 1.50 + 0.50 = 2.00 > 1.99: no more labels.
    with pytest.raises(QueueClosed) as closed:
        queue_next_item(project=project, annotator=annotator)
    assert closed.value.code == "budget_spent"


# --- the quota form -------------------------------------------------------------

def test_quota_lowered_to_the_count_closes_the_queue_for_that_annotator_and_raising_it_reopens(
        client, owner, project, annotator):
    other = add_annotator(project, make_user("other"))
    label_items(project, annotator, 2)
    client.force_login(owner)

    response = client.post(url(project), {"form": "quota", "user": annotator.pk, "quota": "2"})

    assert response.status_code == 302
    assert Membership.objects.get(project=project, user=annotator).quota == 2
    with pytest.raises(QueueClosed) as closed:
        queue_next_item(project=project, annotator=annotator)
    assert closed.value.code == "quota_spent"
    assert queue_next_item(project=project, annotator=other).item_id is not None, "others are not limited"

    client.post(url(project), {"form": "quota", "user": annotator.pk, "quota": ""})

    assert Membership.objects.get(project=project, user=annotator).quota is None
    assert queue_next_item(project=project, annotator=annotator).item_id is not None


@pytest.mark.parametrize("value, error", [("-1", "must be between 0 and 2,000,000,000, got -1"),
                                          ("ten", "Enter a whole number.")])
def test_quota_form_shows_the_error_in_that_row_and_writes_nothing(client, owner, project, annotator, value, error):
    client.force_login(owner)

    response = client.post(url(project), {"form": "quota", "user": annotator.pk, "quota": value})

    assert response.status_code == 200
    page = response.content.decode()
    row = page.split('data-username="ann"', 1)[1].split("</tr>", 1)[0]
    assert f'id="quota-{annotator.pk}-error"' in row and error in row
    assert f'value="{value}"' in row, "the typed value is kept for correcting"
    assert Membership.objects.get(project=project, user=annotator).quota == 10


def test_quota_of_a_non_member_is_refused_above_the_table(client, owner, project):
    outsider = make_user("not-in-project")
    client.force_login(owner)

    response = client.post(url(project), {"form": "quota", "user": outsider.pk, "quota": "5"})

    assert response.status_code == 200
    assert f"user {outsider.pk} is not a member of project {project.pk}" in response.content.decode()
    assert not Membership.objects.filter(user=outsider).exists()


# --- the services behind the forms ---------------------------------------------

def test_budget_update_validates_every_field_before_writing(project):
    with pytest.raises(BudgetInvalid, match="max_cost"):
        budget_update(project=project, max_labels=5, max_cost="abc")
    assert Budget.objects.get(project=project).max_labels == 100


def test_quota_update_refuses_a_non_member(project):
    with pytest.raises(BudgetInvalid, match="not a member"):
        quota_update(project=project, user_id=make_user().pk, quota=3)


# --- the CSVs -------------------------------------------------------------------

def test_csvs_equal_the_database(client, owner, project, annotator):
    second = add_annotator(project, make_user("second"))
    label_items(project, annotator, 4)
    budget_update(project=project, cost_per_label="1.25")
    label_items(project, second, 2)
    # Spread the labels over two UTC days: the annotator's four yesterday.
    yesterday = timezone.now() - timedelta(days=1)
    Annotation.objects.filter(project=project, annotator=annotator).update(created_at=yesterday)
    client.force_login(owner)

    burn = csv_rows(client, project, "burn-down")
    people = {row["username"]: row for row in csv_rows(client, project, "annotators")}

    human = Annotation.objects.filter(project=project, source=AnnotationSource.HUMAN)
    by_day: dict[str, tuple[int, Decimal]] = {}
    for created_at, cost in human.values_list("created_at", "cost"):
        day = created_at.astimezone(dt_timezone.utc).date().isoformat()
        labels, total = by_day.get(day, (0, Decimal("0")))
        by_day[day] = (labels + 1, total + cost)
    assert [(r["day"], int(r["labels"]), Decimal(r["cost"])) for r in burn] == [
        (day, labels, cost) for day, (labels, cost) in sorted(by_day.items())]
    # 4 x 0.50 = 2.00 yesterday, then 2 x 1.25 = 2.50 today: totals 4 / 2.00 and 6 / 4.50.
    assert [(int(r["labels_total"]), Decimal(r["cost_total"])) for r in burn] == [(4, Decimal("2.00")),
                                                                                (6, Decimal("4.50"))]
    # Labels left today: min(100 - 6, (40.00 - 4.50) / 1.25 = 28.4 -> 28) = 28.
    assert burn[-1]["labels_left"] == "28"

    sums = {row["annotator__username"]: row for row in human.values("annotator__username").annotate(
        labels=Count("id"), cost=Sum("cost"))}
    total_cost = sum(row["cost"] for row in sums.values())
    for membership in Membership.objects.filter(project=project).select_related("user"):
        name = membership.user.username
        row = people[name]
        expected = sums.get(name, {"labels": 0, "cost": Decimal("0")})
        assert int(row["labels"]) == expected["labels"] == membership.label_count
        assert Decimal(row["cost"]) == expected["cost"]
        assert row["quota"] == ("" if membership.quota is None else str(membership.quota))
        assert row["quota_left"] == ("" if membership.quota is None else str(membership.quota - membership.label_count))
        assert row["share_of_spend"] == f"{expected['cost'] / total_cost:.4f}"
    assert people["ann"]["quota_left"] == "6"  # quota 10, 4 labels
    assert people["second"]["share_of_spend"] == "0.5556"  # 2.50 / 4.50


def test_former_member_and_deleted_user_labels_still_count(client, owner, project, annotator):
    gone = add_annotator(project, make_user("gone"))
    deleted = add_annotator(project, make_user("deleted"))
    label_items(project, gone, 1)
    label_items(project, deleted, 1)
    Membership.objects.filter(user=gone).delete()
    deleted.delete()
    client.force_login(owner)

    people = {row["username"]: row for row in csv_rows(client, project, "annotators")}

    assert (people["gone"]["role"], people["gone"]["labels"], people["gone"]["quota"]) == ("former member", "1", "")
    assert people["(deleted user)"]["labels"] == "1"
    assert sum(int(row["labels"]) for row in people.values()) == 2


def test_queue_numbers_on_the_page(client, owner, project, annotator):
    label_items(project, annotator, 3)
    queue_next_item(project=project, annotator=annotator)  # an open lease
    client.force_login(owner)

    page = client.get(url(project)).content.decode()

    # 12 items, overlap 1: 3 done, 9 open, 1 being labelled; 9 more labels finish the queue.
    assert '<span id="items-open">9</span>' in page
    assert '<span id="items-done">3</span>' in page
    assert '<span id="active-leases">1</span>' in page
    assert '<span id="labels-needed">9</span>' in page


def test_the_dashboard_reads_with_a_fixed_number_of_queries(project, annotator):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from annotate.dashboards.budget import budget_dashboard

    label_items(project, annotator, 1)
    with CaptureQueriesContext(connection) as small:
        budget_dashboard(project)
    for _ in range(4):
        label_items(project, add_annotator(project), 2)
    Annotation.objects.filter(project=project, annotator=annotator).update(
        created_at=timezone.now() - timedelta(days=3))
    with CaptureQueriesContext(connection) as large:
        data = budget_dashboard(project)

    assert len(data["annotators"]) == 6 and len(data["burn_down"]) == 2
    assert len(large.captured_queries) == len(small.captured_queries)
