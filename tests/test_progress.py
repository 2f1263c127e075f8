"""Progress where long work happens: management-command progress bars, the per-project task list
with state read from a real worker, and the project page's Background work panel in a browser."""
from __future__ import annotations

import io
import json

import pytest
from django.core.management import CommandError, call_command

from annotate.models import Item
from annotate.services.import_readers import rows_estimate
from annotate.services.importing import import_items
from learners.models import ModelVersion
from tests.browser import ARTIFACTS, log_in
from tests.conftest import wait_for
from tests.factories import add_annotator, make_project, make_user
from workbench.activity import progress_of, project_tasks

pytestmark = pytest.mark.django_db(transaction=True)

WORDS = {"cat": "purr whiskers meow kitten mouse", "dog": "bark fetch puppy bone leash"}


def labelled_project(n: int = 40, labelled: int = 12, **options):
    """A text project: n items, the first `labelled` of them with seed labels of both classes."""
    project = make_project(**options)
    lines = []
    for i in range(n):
        label = "cat" if i % 2 else "dog"
        row = {"id": f"x{i}", "text": f"{WORDS[label]} number {i}"}
        if i < labelled:
            row["label"] = label
        lines.append(json.dumps(row))
    import_items(project=project, stream=io.BytesIO("\n".join(lines).encode()), file_format="jsonl",
                 source_name="x.jsonl", featurise=False)
    return project


def run_command(*args) -> tuple[dict, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command(*args, stdout=out, stderr=err)
    return json.loads(out.getvalue().strip().splitlines()[-1]), err.getvalue()


def test_retrain_command_draws_a_bar_per_stage_and_prints_the_result():
    project = labelled_project()

    result, bars = run_command("retrain", str(project.pk))

    # The seed labels also asked for a retrain: a worker left running by earlier tests may make
    # version 1 first, so the command's version is 1 or 2; either way it is stored and reported.
    assert result["status"] == "trained" and result["trained_on"] == 12
    assert ModelVersion.objects.filter(project=project, number=result["model_version"]).exists()
    for stage in ("training", "scoring"):  # featurising too, unless that worker featurised first
        assert stage in bars, f"no {stage} bar in {bars!r}"
    assert "100%" in bars and "28/28" in bars, "scoring ends at every open item (40 - 12 labelled)"


def test_import_command_bar_counts_rows_against_the_file_length(tmp_path):
    project = make_project()
    path = tmp_path / "items.jsonl"
    path.write_text("".join(json.dumps({"id": f"r{i}", "text": f"row {i}"}) + "\n" for i in range(250)))
    out, err = io.StringIO(), io.StringIO()

    call_command("import_items", str(project.pk), str(path), stdout=out, stderr=err)

    assert "imported 250 of 250 rows" in out.getvalue()
    assert "importing" in err.getvalue() and "250/250" in err.getvalue() and "100%" in err.getvalue()
    assert Item.objects.filter(project=project).count() == 250


def test_export_command_bar_and_file(tmp_path):
    project = labelled_project(n=10, labelled=6)
    target = tmp_path / "out.csv"

    result, bars = run_command("export_annotations", str(project.pk), "--format", "csv", "--path", str(target))

    assert result == {"path": str(target), "format": "csv", "items": 6, "annotations": 6}
    assert "exporting" in bars and "6/6" in bars
    assert len(target.read_text().splitlines()) == 1 + 6


@pytest.mark.parametrize("command", ["retrain", "featurise", "score_pool", "export_annotations"])
def test_commands_name_a_missing_project(command):
    with pytest.raises(CommandError, match="project 999999 does not exist"):
        call_command(command, "999999", stdout=io.StringIO(), stderr=io.StringIO())


def test_rows_estimate_counts_lines_less_the_csv_header(tmp_path):
    jsonl = tmp_path / "a.jsonl"
    jsonl.write_bytes(b'{"id": 1}\n{"id": 2}\n{"id": 3}')  # no newline after the last line
    csv_file = tmp_path / "a.csv"
    csv_file.write_bytes(b"id,text\n1,a\n2,b\n")
    assert rows_estimate(jsonl, "jsonl") == 3
    assert rows_estimate(csv_file, "csv") == 2


def test_progress_of_reads_every_task_shape():
    assert progress_of("PROGRESS", {"stage": "scoring", "done": 50, "total": 200}) == {
        "stage": "scoring", "done": 50, "total": 200, "percent": 25.0}
    assert progress_of("PROGRESS", {"stage": "importing", "rows_read": 30, "rows_total": 120})["percent"] == 25.0
    assert progress_of("PROGRESS", {"stage": "importing", "rows_read": 30, "rows_total": None})["percent"] is None
    assert progress_of("SUCCESS", None)["percent"] == 100.0
    assert progress_of("PENDING", None) == {"stage": None, "done": None, "total": None, "percent": None}


def test_background_retrain_is_listed_with_its_state_for_members_only(celery_worker, client):
    project = labelled_project()  # its seed labels ask the worker for a first retrain
    wait_for(lambda: ModelVersion.objects.filter(project=project).exists(), timeout=120,
             message="the retrain the seed labels asked for")
    owner = project.memberships.get().user
    outsider = make_user()

    result, bars = run_command("retrain", str(project.pk), "--background", "--timeout", "180")

    assert result["status"] == "trained" and result["model_version"] == 2
    assert "sent workbench.retrain as task" in bars
    tasks = project_tasks(project.pk)
    assert [t["name"] for t in tasks] == ["workbench.retrain", "workbench.retrain"], "newest first"
    assert tasks[0]["state"] == "SUCCESS" and tasks[0]["percent"] == 100.0 and not tasks[0]["running"]
    assert tasks[0]["summary"] == "model v2 on 12 labels, 28 items scored"
    client.force_login(owner)
    assert client.get(f"/projects/{project.pk}/activity/").json()["tasks"][0]["id"] == tasks[0]["id"]
    client.force_login(outsider)
    assert client.get(f"/projects/{project.pk}/activity/").status_code == 404


def test_owner_starts_a_retrain_and_watches_it_finish_on_the_project_page(celery_worker, live_server, new_page):
    from playwright.sync_api import expect

    project = make_project()
    owner = project.memberships.get().user
    annotator = add_annotator(project, make_user())
    page = new_page()
    log_in(page, live_server, owner)
    page.goto(f"{live_server.url}/projects/{project.pk}/")
    expect(page.locator("#activity-list")).to_contain_text("No recent background work")
    project = labelled_project(owner=owner)  # its seed labels ask the worker for a first retrain
    wait_for(lambda: ModelVersion.objects.filter(project=project).exists(), timeout=120,
             message="the retrain the seed labels asked for")
    add_annotator(project, annotator)
    page.goto(f"{live_server.url}/projects/{project.pk}/")
    expect(page.locator("#activity-list li")).to_have_count(1)
    expect(page.locator("#activity-list li .task-state")).to_have_text("done: model v1 on 12 labels, 28 items scored")

    with page.expect_navigation():
        page.get_by_role("button", name="Retrain now").click()
    # What the server rendered, read before the first poll (0 ms when nothing runs, else 1 s) redraws it: an idle
    # worker can finish the retrain before the redirected page is rendered, and then the page is already current.
    rendered = page.locator("#activity-list li").first.get_attribute("data-state")

    row = page.locator("#activity-list li").first
    expect(page.locator("#activity-list li")).to_have_count(2)
    expect(row.locator(".task-title")).to_have_text("Retrain")
    expect(row).to_have_attribute("data-state", "SUCCESS", timeout=120_000)
    expect(row.locator(".task-state")).to_have_text("done: model v2 on 12 labels, 28 items scored")
    assert row.locator("progress").evaluate("p => p.value") == 100
    if rendered in ("PENDING", "RECEIVED", "STARTED", "PROGRESS"):
        expect(page.locator("#activity-reload")).to_be_visible()  # finished after the page was drawn
    else:
        expect(page.locator("#activity-reload")).to_be_hidden()  # the page was drawn with the result
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "project-background-work.png"), full_page=True)
    assert ModelVersion.objects.filter(project=project).count() == 2
    # An annotator sees the panel but not the button.
    other = new_page()
    log_in(other, live_server, annotator)
    other.goto(f"{live_server.url}/projects/{project.pk}/")
    expect(other.locator("#activity-list li").first).to_have_attribute("data-state", "SUCCESS")
    expect(other.get_by_role("button", name="Retrain now")).to_have_count(0)
