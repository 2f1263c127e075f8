"""The defects one access module and one budget rule fixed, each shown on the interface where it was found."""
from __future__ import annotations

import uuid
from decimal import Decimal

import pytest
from django.core.management import CommandError, call_command
from django.test import Client
from django.urls import reverse
from rest_framework.test import APIClient

from annotate.access import OPERATOR, Action, can_manage, can_view, project_for
from annotate.errors import NotAllowed, ProjectNotFound
from annotate.models import ImportJob, Project
from annotate.services.budgets import budget_update
from annotate.tasks import TaskInputError
from annotate.tasks import queue_status as queue_status_task
from learners.models import MetaModel
from tests.factories import make_project, make_user
from workbench.activity import task_recorded
from workbench.celery import app

API = "/api/v1"


def api(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def web(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


# --- one budget rule ------------------------------------------------------------------------------

@pytest.mark.django_db
def test_every_reader_says_the_same_labels_left_when_the_cost_limit_binds(owner, project):
    """max_labels=100, cost 1 a label, max_cost=10: 10 labels are left, not 100, wherever it is read."""
    budget_update(project=project, max_labels=100, cost_per_label="1", max_cost="10")

    page = web(owner).get(reverse("annotate", args=[project.pk])).context
    budget_api = api(owner).get(f"{API}/projects/{project.pk}/budget/").json()
    task = queue_status_task(project_id=project.pk)
    dashboard = web(owner).get(reverse("dashboard-budget", args=[project.pk])).context["data"]

    assert page["budget"]["labels_left"] == 10
    assert budget_api["labels_left"] == 10
    assert task["budget"]["labels_left"] == 10
    assert dashboard["left"]["labels"] == 10


@pytest.mark.django_db
def test_the_queue_closes_where_the_readers_say_nothing_is_left(owner, project):
    budget_update(project=project, max_labels=100, cost_per_label="2.50", max_cost="5")
    client = api(owner)
    for _ in range(2):
        served = client.post(f"{API}/projects/{project.pk}/next/").json()
        client.post(f"{API}/projects/{project.pk}/annotations/", {"item": served["item"]["id"], "label": "cat"},
                    format="json")
    assert client.get(f"{API}/projects/{project.pk}/budget/").json()["labels_left"] == 0
    closed = client.post(f"{API}/projects/{project.pk}/next/").json()
    assert closed["item"] is None and closed["code"] == "budget_spent"
    assert "budget of 5.00 is spent" in closed["detail"]
    project.refresh_from_db()
    assert project.cost_spent == Decimal("5.00")


# --- one access rule ------------------------------------------------------------------------------

@pytest.mark.django_db
def test_staff_have_the_same_powers_on_the_settings_page_and_in_the_api(project, staff):
    assert web(staff).get(reverse("project-settings", args=[project.pk])).status_code == 200
    response = api(staff).patch(f"{API}/projects/{project.pk}/", {"retrain_every": 7}, format="json")
    assert response.status_code == 200
    assert can_manage(staff, project) and can_view(staff, project)


@pytest.mark.django_db
def test_the_queue_endpoints_tell_an_outsider_nothing(project, outsider):
    """They used to answer "<user> is not a member of project '<name>'" for any id that exists."""
    missing = Project.objects.order_by("-pk").first().pk + 100
    for path in ("next/", "skip/", "undo/", "annotations/"):
        existing = api(outsider).post(f"{API}/projects/{project.pk}/{path}", {"item": 1}, format="json")
        absent = api(outsider).post(f"{API}/projects/{missing}/{path}", {"item": 1}, format="json")
        assert existing.status_code == absent.status_code == 404, path
        assert existing.content == absent.content == b'{"detail":"No such project."}', path


@pytest.mark.django_db
def test_project_for_names_no_project_to_outsiders_and_refuses_members_by_role(project, teammate, outsider):
    assert project_for(teammate, project.pk, Action.ANNOTATE) == project
    with pytest.raises(NotAllowed, match="owners"):
        project_for(teammate, project.pk, Action.MANAGE)
    for pk in (project.pk, project.pk + 1000, 10**30, "x", None, -1):
        with pytest.raises(ProjectNotFound) as refused:
            project_for(outsider, pk, Action.VIEW)
        assert str(refused.value) == "No such project."


# --- task progress only for those who may see the project ---------------------------------------

def _failed_import(project: Project, secret_row: str) -> str:
    """A failed import task of `project`, its failure stored in the real result backend as a worker stores it."""
    task_id = str(uuid.uuid4())
    task_recorded(project_id=project.pk, name="workbench.import_items", task_id=task_id)
    app.backend.store_result(task_id, TaskInputError(f"import rejected, nothing written: line 3: {secret_row}"),
                             "FAILURE")
    return task_id


@pytest.mark.django_db
def test_a_failed_tasks_error_text_is_for_the_projects_managers_only(owner, project, teammate, outsider):
    task_id = _failed_import(project, "patient 4411, 'Jane Roe'")
    mine = api(owner).get(f"{API}/tasks/{task_id}/").json()
    assert mine["state"] == "FAILURE" and "Jane Roe" in mine["error"]

    theirs = api(teammate).get(f"{API}/tasks/{task_id}/").json()
    assert theirs == {"task_id": task_id, "state": "FAILURE",
                      "error": "The task failed; the project's owners can see why."}
    activity = web(teammate).get(reverse("project-activity", args=[project.pk])).content.decode()
    page = web(teammate).get(reverse("project-detail", args=[project.pk])).content.decode()
    assert "Jane Roe" not in activity and "Jane Roe" not in page
    assert "Jane Roe" in web(owner).get(reverse("project-activity", args=[project.pk])).content.decode()

    assert api(outsider).get(f"{API}/tasks/{task_id}/").status_code == 404


@pytest.mark.django_db
def test_an_import_page_shows_only_its_own_projects_task(owner):
    a, b = make_project(owner), make_project(owner)
    task_of_a = _failed_import(a, "row of project A")
    ImportJob.objects.create(project=a, source_name="a.csv", file_format="csv", task_id=task_of_a, status="failed")
    client = web(owner)
    assert client.get(reverse("import-status", args=[a.pk, task_of_a])).status_code == 200
    response = client.get(reverse("import-status", args=[b.pk, task_of_a]))
    assert response.status_code == 404 and b"row of project A" not in response.content


# --- REST bodies and parameters -----------------------------------------------------------------

@pytest.mark.django_db
@pytest.mark.parametrize("field", ["owner", "label_count"])
def test_unknown_fields_in_a_body_are_refused_by_name(owner, field):
    body = {"name": "n", "modality": "text", "labels": ["a", "b"], field: 7}
    response = api(owner).post(f"{API}/projects/", body, format="json")
    assert response.status_code == 400
    assert "unknown field" in response.json()[field][0]
    assert not Project.objects.filter(name="n").exists()


@pytest.mark.django_db
def test_an_unknown_field_in_a_budget_patch_changes_nothing(owner, project):
    response = api(owner).patch(f"{API}/projects/{project.pk}/budget/", {"max_label": 5}, format="json")
    assert response.status_code == 400 and "max_label" in response.json()
    assert api(owner).get(f"{API}/projects/{project.pk}/budget/").json()["max_labels"] is None


@pytest.mark.django_db
@pytest.mark.parametrize("size", ["0", "-3", "ten"])
def test_a_page_size_that_is_no_positive_number_is_refused(owner, project, size):
    response = api(owner).get(f"{API}/projects/{project.pk}/items/", {"page_size": size})
    assert response.status_code == 400 and "page_size" in response.json()


# --- commands act for an explicit user ----------------------------------------------------------

@pytest.mark.django_db
def test_a_command_run_for_a_user_has_that_users_powers(owner, project, teammate, outsider, tmp_path):
    out = tmp_path / "export.jsonl"
    call_command("export_annotations", str(project.pk), "--user", teammate.username, "--path", str(out))
    assert out.exists()
    with pytest.raises(CommandError, match="does not exist"):
        call_command("export_annotations", str(project.pk), "--user", outsider.username, "--path", str(out))
    with pytest.raises(CommandError, match="owners"):
        call_command("retrain", str(project.pk), "--user", teammate.username)
    with pytest.raises(CommandError, match="no active user"):
        call_command("retrain", str(project.pk), "--user", "nobody")
    rows = tmp_path / "rows.csv"
    rows.write_text("id,text\nn1,new text\n")
    before = project.items.count()
    with pytest.raises(CommandError, match="owners"):
        call_command("import_items", str(project.pk), str(rows), "--user", teammate.username)
    with pytest.raises(CommandError, match="does not exist"):
        call_command("import_items", str(project.pk), str(rows), "--user", outsider.username)
    assert project.items.count() == before
    call_command("import_items", str(project.pk), str(rows), "--user", owner.username)
    assert project.items.count() == before + 1


@pytest.mark.django_db
def test_meta_training_for_a_user_needs_projects_they_manage(owner, project, teammate):
    with pytest.raises(CommandError, match=r"you may meta-train only on projects you own; not on \[\d+\]"):
        call_command("meta_train", "--name", "m", "--sources", str(project.pk), "--user", teammate.username)
    stranger = make_project(make_user("stranger"))
    with pytest.raises(CommandError, match=rf"no project with id \[{stranger.pk}\]"):
        call_command("meta_train", "--name", "m", "--sources", f"{project.pk},{stranger.pk}",
                     "--user", owner.username)
    assert not MetaModel.objects.exists()
    assert project_for(OPERATOR, stranger.pk, Action.MANAGE) == stranger

