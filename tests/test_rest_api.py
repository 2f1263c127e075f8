"""The REST API: each endpoint's happy path, its permissions (owner, teammate, outsider, staff) and its errors.

Clients authenticate with a real token, as scripts do. Tests that need a
worker use the session's real `celery_worker`; the others only check what
the web process answers.
"""
from __future__ import annotations

import json
from decimal import Decimal

import pytest
from django.conf import settings
from django.core.management import call_command
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from annotate.models import Annotation, ImportJob, Item, Label, Membership, Project
from annotate.services.annotations import annotation_create
from annotate.services.exporting import annotations_export
from annotate.services.queue import queue_next_item
from learners.models import ModelVersion
from tests.conftest import wait_for
from tests.factories import add_items, make_project, make_user

API = "/api/v1"


def api(user) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.get_or_create(user=user)[0].key}")
    return client


def task_finished(client: APIClient, status_url: str, timeout: float) -> dict:
    """Poll a task's status URL until it succeeds or fails; returns its last answer."""
    def finished():
        body = client.get(status_url).json()
        return body if body["state"] in ("SUCCESS", "FAILURE") else None

    return wait_for(finished, timeout=timeout, message=f"the task at {status_url} to finish")


def label_next(project: Project, user, label: str) -> Annotation:
    """Serve `user` their next item and label it, through the services."""
    item = queue_next_item(project=project, annotator=user).item
    return annotation_create(project=project, annotator=user, item_id=item.pk, label=label)


def project_urls(project: Project) -> list[str]:
    base = f"{API}/projects/{project.pk}"
    item = Item.objects.filter(project=project).first()
    label = Label.objects.filter(project=project).first()
    return [f"{base}/", f"{base}/labels/", f"{base}/labels/{label.pk}/", f"{base}/items/", f"{base}/items/{item.pk}/",
            f"{base}/export/", f"{base}/annotations/", f"{base}/model-versions/", f"{base}/budget/",
            f"{base}/members/", f"{base}/status/"]


# --- permissions -------------------------------------------------------------------------------------------

@pytest.mark.django_db
def test_api_needs_a_token():
    assert APIClient().get(f"{API}/projects/").status_code == 401


@pytest.mark.django_db
def test_outsider_gets_404_on_every_project_url_and_writes_nothing(project, outsider):
    client = api(outsider)
    for url in project_urls(project):
        assert client.get(url).status_code == 404, url
    base = f"{API}/projects/{project.pk}"
    writes = [
        ("patch", f"{base}/", {"retrain_every": 3}), ("post", f"{base}/labels/", {"name": "cow"}),
        ("post", f"{base}/items/", {"items": [{"id": "x", "text": "x"}]}),
        ("patch", f"{base}/budget/", {"max_labels": 1}), ("post", f"{base}/retrain/", {}),
        ("post", f"{base}/next/", {}), ("post", f"{base}/skip/", {"item": 1}),
        ("post", f"{base}/annotations/", {"item": 1, "label": "cat"}), ("post", f"{base}/undo/", {}),
    ]
    for method, url, body in writes:
        assert getattr(client, method)(url, body, format="json").status_code == 404, url
    project.refresh_from_db()
    assert project.retrain_every == 1000 and project.labels.count() == 2 and project.budget.max_labels is None
    assert Item.objects.filter(project=project).count() == 4


@pytest.mark.django_db
def test_teammate_reads_but_gets_403_on_owner_only_operations(project, teammate):
    client = api(teammate)
    base = f"{API}/projects/{project.pk}"
    label = project.labels.get(name="cat")
    assert client.get(f"{base}/").json()["role"] == "annotator"
    assert client.get(f"{base}/items/").status_code == 200
    forbidden = [
        client.patch(f"{base}/", {"retrain_every": 3}, format="json"),
        client.post(f"{base}/labels/", {"name": "cow"}, format="json"),
        client.patch(f"{base}/labels/{label.pk}/", {"name": "kitty"}, format="json"),
        client.delete(f"{base}/labels/{label.pk}/"),
        client.post(f"{base}/items/", {"items": [{"id": "x", "text": "x"}]}, format="json"),
        client.get(f"{base}/budget/"), client.patch(f"{base}/budget/", {"max_labels": 1}, format="json"),
        client.get(f"{base}/members/"),
        client.patch(f"{base}/members/{teammate.pk}/", {"quota": 100}, format="json"),
        client.post(f"{base}/retrain/"),
    ]
    assert [r.status_code for r in forbidden] == [403] * len(forbidden)
    assert "owner" in forbidden[0].json()["detail"]
    assert project.labels.count() == 2 and Membership.objects.get(user=teammate).quota is None


@pytest.mark.django_db
def test_staff_read_and_manage_any_project(project):
    staff = make_user("staff")
    staff.is_staff = True
    staff.save()
    client = api(staff)
    assert project.name in [p["name"] for p in client.get(f"{API}/projects/").json()["results"]]
    assert client.get(f"{API}/projects/{project.pk}/").json()["role"] is None
    response = client.patch(f"{API}/projects/{project.pk}/budget/", {"max_labels": 7}, format="json")
    assert response.status_code == 200 and response.json()["max_labels"] == 7


# --- projects ----------------------------------------------------------------------------------------------

@pytest.mark.django_db
def test_project_list_shows_only_my_projects_a_page_at_a_time(owner, outsider):
    mine = sorted(make_project(owner).name for _ in range(3))
    make_project(outsider)
    client = api(owner)

    first = client.get(f"{API}/projects/", {"page_size": 2}).json()
    second = client.get(first["next"]).json()

    assert first["count"] == 3 and second["next"] is None
    assert [p["name"] for p in first["results"] + second["results"]] == mine
    assert {p["role"] for p in first["results"]} == {"owner"}


@pytest.mark.django_db
def test_create_project_makes_the_creator_its_owner(owner):
    response = api(owner).post(f"{API}/projects/", {
        "name": "Reviews", "modality": "text", "labels": ["good", "bad"], "query_strategy": "entropy",
        "max_labels": 100}, format="json")

    assert response.status_code == 201, response.json()
    body = response.json()
    assert (body["labels"], body["role"], body["featuriser"], body["query_strategy"]) == (
        ["good", "bad"], "owner", "text_tfidf", "entropy")
    project = Project.objects.get(pk=body["id"])
    assert Membership.objects.get(project=project).user == owner and project.budget.max_labels == 100


@pytest.mark.django_db
@pytest.mark.parametrize("body, field", [
    ({"name": "x", "modality": "text", "labels": ["a"]}, "labels"),
    ({"name": "x", "modality": "audio", "labels": ["a", "b"]}, "modality"),
    ({"name": "x", "modality": "text", "labels": ["a", "b"], "overlap": 0}, "overlap"),
])
def test_create_project_refuses_bad_fields_naming_them(owner, body, field):
    response = api(owner).post(f"{API}/projects/", body, format="json")
    assert response.status_code == 400 and field in response.json()
    assert not Project.objects.exists()


@pytest.mark.django_db
def test_create_project_refuses_a_choice_that_does_not_fit(owner):
    response = api(owner).post(f"{API}/projects/", {
        "name": "x", "modality": "text", "labels": ["a", "b"], "query_strategy": "bald"}, format="json")
    assert response.status_code == 400 and "choose the 'mlp'" in response.json()["detail"]


@pytest.mark.django_db
def test_owner_changes_settings_and_a_retrain_is_requested(owner, project, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = api(owner).patch(f"{API}/projects/{project.pk}/", {"query_strategy": "entropy",
                                                                     "retrain_every": 5}, format="json")
    assert response.status_code == 200
    assert response.json()["changed"] == ["query_strategy", "retrain_every"]
    assert len(callbacks) == 1, "one retrain request, sent on commit"
    project.refresh_from_db()
    assert (project.query_strategy, project.retrain_every, project.estimator) == ("entropy", 5, "logistic_regression")


@pytest.mark.django_db
def test_settings_refuse_bald_without_the_mlp(owner, project):
    response = api(owner).patch(f"{API}/projects/{project.pk}/", {"query_strategy": "bald"}, format="json")
    assert response.status_code == 400 and "needs dropout sampling" in response.json()["detail"]
    project.refresh_from_db()
    assert project.query_strategy == "margin"


# --- labels ------------------------------------------------------------------------------------------------

@pytest.mark.django_db
def test_owner_adds_renames_moves_and_deletes_labels(owner, project):
    client = api(owner)
    base = f"{API}/projects/{project.pk}/labels/"

    added = client.post(base, {"name": " bird "}, format="json")
    assert added.status_code == 201 and added.json() == {
        "id": added.json()["id"], "name": "bird", "position": 2, "annotations": 0}
    bird = added.json()["id"]
    moved = client.patch(f"{base}{bird}/", {"name": "parrot", "position": 0}, format="json")
    assert moved.status_code == 200 and moved.json()["name"] == "parrot"
    assert [(l["name"], l["position"]) for l in client.get(base).json()] == [("cat", 0), ("parrot", 0), ("dog", 1)]

    assert client.delete(f"{base}{bird}/").status_code == 204
    assert list(project.labels.values_list("name", flat=True)) == ["cat", "dog"]


@pytest.mark.django_db
def test_label_names_stay_unique(owner, project):
    client = api(owner)
    dog = project.labels.get(name="dog")
    assert client.post(f"{API}/projects/{project.pk}/labels/", {"name": "cat"}, format="json").status_code == 400
    response = client.patch(f"{API}/projects/{project.pk}/labels/{dog.pk}/", {"name": "cat"}, format="json")
    assert response.status_code == 400 and "already has a label 'cat'" in response.json()["detail"]


@pytest.mark.django_db
def test_deleting_a_used_label_is_refused_with_409(owner, project):
    label_next(project, owner, "cat")
    client = api(owner)
    client.post(f"{API}/projects/{project.pk}/labels/", {"name": "bird"}, format="json")
    cat = project.labels.get(name="cat")

    response = client.delete(f"{API}/projects/{project.pk}/labels/{cat.pk}/")

    assert response.status_code == 409
    assert response.json()["detail"].startswith("label 'cat' is used by 1 annotation, so it cannot be deleted")
    assert project.labels.filter(name="cat").exists()


@pytest.mark.django_db
def test_a_label_set_keeps_two_labels(owner, project):
    dog = project.labels.get(name="dog")
    response = api(owner).delete(f"{API}/projects/{project.pk}/labels/{dog.pk}/")
    assert response.status_code == 409 and "at least 2 labels" in response.json()["detail"]


@pytest.mark.django_db
def test_renaming_a_used_label_keeps_its_annotations_and_asks_for_a_retrain(
        owner, project, django_capture_on_commit_callbacks):
    annotation = label_next(project, owner, "cat")
    cat = project.labels.get(name="cat")
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = api(owner).patch(f"{API}/projects/{project.pk}/labels/{cat.pk}/", {"name": "kitten"},
                                    format="json")
    assert response.status_code == 200 and response.json()["annotations"] == 1
    assert len(callbacks) == 1
    annotation.refresh_from_db()
    assert annotation.label.name == "kitten"


# --- items -------------------------------------------------------------------------------------------------

@pytest.fixture
def scored(project, owner):
    """The project with one labelled item and model predictions on the others."""
    label_next(project, owner, "cat")  # purr, the top priority
    cat, dog = project.labels.get(name="cat"), project.labels.get(name="dog")
    for external_id, label, confidence in (("t1", dog, 0.9), ("t2", cat, 0.55), ("t3", dog, 0.6)):
        Item.objects.filter(project=project, external_id=external_id).update(
            predicted_label=label, confidence=confidence, scored_by_version=1)
    return project


def item_ids(client, project, **params) -> list[str]:
    response = client.get(f"{API}/projects/{project.pk}/items/", params)
    assert response.status_code == 200, response.json()
    return [i["external_id"] for i in response.json()["results"]]


@pytest.mark.django_db
def test_item_filters(owner, scored):
    client = api(owner)
    assert item_ids(client, scored) == ["t0", "t1", "t2", "t3"], "queue order by default"
    assert item_ids(client, scored, done="true") == ["t0"]
    assert item_ids(client, scored, done="false", ordering="-id") == ["t3", "t2", "t1"]
    assert item_ids(client, scored, labelled="true") == ["t0"]
    assert item_ids(client, scored, labelled="false", ordering="priority") == ["t3", "t2", "t1"]
    assert item_ids(client, scored, label="cat") == ["t0"]
    assert item_ids(client, scored, label="dog") == []
    assert item_ids(client, scored, predicted_label="dog") == ["t1", "t3"]
    assert item_ids(client, scored, min_confidence="0.58", max_confidence="0.95") == ["t1", "t3"]
    assert item_ids(client, scored, external_id="t2") == ["t2"]


@pytest.mark.django_db
@pytest.mark.parametrize("param, value", [
    ("done", "maybe"), ("labelled", "2"), ("min_confidence", "abc"), ("max_confidence", "1.5"),
    ("min_confidence", "nan"), ("ordering", "text"), ("label", "cow"), ("predicted_label", "cow"),
])
def test_bad_item_filter_answers_400_naming_the_parameter(owner, project, param, value):
    response = api(owner).get(f"{API}/projects/{project.pk}/items/", {param: value})
    assert response.status_code == 400 and list(response.json()) == [param]


@pytest.mark.django_db
def test_item_pages_are_bounded(owner):
    project = make_project(owner)
    add_items(project, [f"text {i}" for i in range(520)])
    client = api(owner)
    page = client.get(f"{API}/projects/{project.pk}/items/", {"page_size": 10_000, "ordering": "id"}).json()
    assert page["count"] == 520 and len(page["results"]) == 500
    assert client.get(f"{API}/projects/{project.pk}/items/").json()["results"].__len__() == 50
    last = client.get(page["next"]).json()
    assert [i["external_id"] for i in last["results"]] == [f"t{i}" for i in range(500, 520)]


@pytest.mark.django_db
def test_item_detail_shows_its_annotations(owner, scored):
    item = Item.objects.get(project=scored, external_id="t0")
    body = api(owner).get(f"{API}/projects/{scored.pk}/items/{item.pk}/").json()
    assert body["data"] == {"text": "purr"} and body["done"] is True
    assert [(a["label"], a["annotator"], a["source"]) for a in body["annotations"]] == [("cat", "owner", "human")]


@pytest.mark.django_db
def test_item_of_another_project_is_404(owner, project):
    other = make_project(owner)
    add_items(other, ["elsewhere"])
    item = Item.objects.get(project=other)
    assert api(owner).get(f"{API}/projects/{project.pk}/items/{item.pk}/").status_code == 404


# --- importing ---------------------------------------------------------------------------------------------

@pytest.mark.django_db
def test_bulk_import_of_json_rows(owner, project, django_capture_on_commit_callbacks):
    rows = [{"id": "n1", "text": "hiss", "label": "cat"}, {"id": "n2", "text": "growl", "source": "zoo"}]
    with django_capture_on_commit_callbacks(execute=False):
        response = api(owner).post(f"{API}/projects/{project.pk}/items/", {"items": rows}, format="json")

    assert response.status_code == 201, response.json()
    assert {k: response.json()[k] for k in ("status", "rows_imported", "labels_imported")} == {
        "status": "succeeded", "rows_imported": 2, "labels_imported": 1}
    assert Item.objects.get(project=project, external_id="n2").data == {"text": "growl", "meta": {"source": "zoo"}}
    assert Annotation.objects.get(item__external_id="n1").source == "import"


@pytest.mark.django_db
def test_bulk_import_with_a_bad_row_writes_nothing(owner, project):
    rows = [{"id": "n1", "text": "hiss"}, {"id": "n2", "text": "moo", "label": "cow"}, {"id": "t0", "text": "dup"}]
    response = api(owner).post(f"{API}/projects/{project.pk}/items/", {"items": rows}, format="json")

    assert response.status_code == 400
    assert response.json()["errors"] == ["line 2: label 'cow' is not in the label set {cat, dog}",
                                         "line 3: id 't0' already exists in the project"]
    assert Item.objects.filter(project=project).count() == 4
    assert ImportJob.objects.filter(project=project, status="failed").count() == 1


@pytest.mark.django_db
def test_bulk_import_skips_existing_and_bad_rows_when_asked(owner, project, django_capture_on_commit_callbacks):
    rows = [{"id": "n1", "text": "hiss"}, {"id": "n2", "text": "moo", "label": "cow"}, {"id": "t0", "text": "dup"}]
    with django_capture_on_commit_callbacks(execute=False):
        response = api(owner).post(f"{API}/projects/{project.pk}/items/", {
            "items": rows, "skip_existing": True, "skip_bad_rows": True}, format="json")
    assert response.status_code == 201
    assert (response.json()["rows_imported"], response.json()["rows_skipped"]) == (1, 2)


@pytest.mark.django_db
@pytest.mark.parametrize("row, error", [
    ({"id": "n1", "text": "nul \x00 byte"}, "line 1: field 'text' contains a NUL character"),
    ({"id": "n1", "text": "a lone \ud800 surrogate"},
     "line 1: field 'text' is not valid Unicode (a lone surrogate such as \\ud800)"),
    ({"id": "n1", "text": "x", "score": 1e999}, "line 1: field 'score' is inf; numbers must be finite"),
])
def test_bulk_import_refuses_values_no_database_stores(owner, project, row, error):
    # Valid JSON that DRF parses into a lone surrogate or an infinite float (1e999 overflows to inf).
    body = json.dumps({"items": [row]}).replace("Infinity", "1e999")
    response = api(owner).post(f"{API}/projects/{project.pk}/items/", body, content_type="application/json")
    assert response.status_code == 400 and response.json()["errors"] == [error]
    assert Item.objects.filter(project=project).count() == 4


@pytest.mark.django_db
def test_too_many_json_rows_asks_for_a_file(owner, project):
    rows = [{"id": f"n{i}", "text": "x"} for i in range(5_001)]
    response = api(owner).post(f"{API}/projects/{project.pk}/items/", {"items": rows}, format="json")
    assert response.status_code == 413
    assert response.json()["detail"].startswith("5,001 rows is more than the 5,000 one JSON request may import; "
                                                 "upload the rows as a CSV or JSONL file")
    assert Item.objects.filter(project=project).count() == 4


@pytest.mark.django_db
def test_too_big_a_json_body_is_refused_before_it_is_read(owner, project):
    text = "x" * 50_000
    rows = [{"id": f"n{i}", "text": text} for i in range(500)]  # 500 rows, but 25 MB
    response = api(owner).post(f"{API}/projects/{project.pk}/items/", {"items": rows}, format="json")
    assert response.status_code == 413 and response.json()["detail"].startswith("the body is more than the 20 MiB")


@pytest.mark.django_db
def test_json_nested_too_deeply_is_a_400_not_a_crash(owner, project):
    body = "[" * 100_000 + "]" * 100_000  # Python's json decoder raises RecursionError on this
    response = api(owner).post(f"{API}/projects/{project.pk}/items/", body, content_type="application/json")
    assert response.status_code == 400 and "nested too deeply" in response.json()["detail"]


@pytest.mark.django_db
def test_upload_with_an_unknown_extension_is_refused(owner, project):
    from django.core.files.uploadedfile import SimpleUploadedFile

    response = api(owner).post(f"{API}/projects/{project.pk}/items/", {
        "file": SimpleUploadedFile("items.xlsx", b"abc")}, format="multipart")
    assert response.status_code == 400 and "use a .csv or .jsonl file" in response.json()["file"][0]


@pytest.mark.django_db(transaction=True)
def test_file_upload_is_imported_by_a_worker_and_followed_by_its_task(celery_worker, owner):
    from django.core.files.uploadedfile import SimpleUploadedFile

    project = make_project(owner, retrain_every=1000)
    client = api(owner)
    response = client.post(f"{API}/projects/{project.pk}/items/", {
        "file": SimpleUploadedFile("../../etc/items.csv", b"id,text,label\na,meow,cat\nb,woof,\n"),
        "skip_existing": "true"}, format="multipart")

    assert response.status_code == 202, response.json()
    task = response.json()
    assert task["status_url"].endswith(f"/api/v1/tasks/{task['task_id']}/")
    done = task_finished(client, task["status_url"], timeout=60)
    assert done["state"] == "SUCCESS", done
    assert (done["result"]["rows_imported"], done["result"]["labels_imported"]) == (2, 1)
    job = ImportJob.objects.get(task_id=task["task_id"])
    assert job.options["skip_existing"] is True
    assert job.source_name == f"{task['task_id']}-items.csv", "stored under a name the server chose"
    assert not (settings.UPLOAD_DIR / job.source_name).exists(), "an imported upload is deleted"


@pytest.mark.django_db(transaction=True)
def test_a_rejected_file_fails_its_task_with_the_row_errors(celery_worker, owner):
    from django.core.files.uploadedfile import SimpleUploadedFile

    project = make_project(owner, retrain_every=1000)
    client = api(owner)
    task = client.post(f"{API}/projects/{project.pk}/items/", {
        "file": SimpleUploadedFile("items.jsonl", b'{"id": "a", "text": "meow", "label": "cta"}\n')},
        format="multipart").json()

    done = task_finished(client, task["status_url"], timeout=60)

    assert done["state"] == "FAILURE"
    assert done["error"] == ("TaskInputError: import rejected, nothing written: "
                             "line 1: label 'cta' is not in the label set {cat, dog}")
    assert not Item.objects.filter(project=project).exists()


# --- annotations and export --------------------------------------------------------------------------------

@pytest.fixture
def labelled(project, owner, teammate):
    label_next(project, owner, "cat")
    label_next(project, teammate, "dog")
    label_next(project, owner, "dog")
    return project


@pytest.mark.django_db
@pytest.mark.parametrize("file_format", ["jsonl", "csv"])
def test_export_streams_what_annotations_export_writes(owner, labelled, tmp_path, file_format):
    annotations_export(project=labelled, file_format=file_format, path=tmp_path / f"out.{file_format}")

    response = api(owner).get(f"{API}/projects/{labelled.pk}/export/", {"format": file_format})

    assert response.status_code == 200 and response.streaming
    assert response["Content-Type"].startswith({"jsonl": "application/x-ndjson", "csv": "text/csv"}[file_format])
    assert f"project-{labelled.pk}-annotations.{file_format}" in response["Content-Disposition"]
    assert b"".join(response.streaming_content) == (tmp_path / f"out.{file_format}").read_bytes()


@pytest.mark.django_db
def test_export_of_an_unknown_format_is_400(owner, project):
    response = api(owner).get(f"{API}/projects/{project.pk}/export/", {"format": "xml"})
    assert response.status_code == 400 and list(response.json()) == ["format"]


@pytest.mark.django_db
def test_annotation_list(owner, teammate, labelled):
    body = api(teammate).get(f"{API}/projects/{labelled.pk}/annotations/", {"page_size": 2}).json()
    assert body["count"] == 3
    first = body["results"][0]
    assert {k: first[k] for k in ("item_external_id", "label", "annotator", "source", "cost")} == {
        "item_external_id": "t0", "label": "cat", "annotator": "owner", "source": "human", "cost": "0.00"}
    assert first["seconds"] >= 0 and first["created_at"]


@pytest.mark.django_db
def test_labelling_through_the_api_still_works(teammate, project):
    client = api(teammate)
    served = client.post(f"{API}/projects/{project.pk}/next/").json()
    response = client.post(f"{API}/projects/{project.pk}/annotations/", {"item": served["item"]["id"],
                                                                        "label": "dog"}, format="json")
    assert response.status_code == 201 and response.json()["label"] == "dog"


# --- model versions ----------------------------------------------------------------------------------------

@pytest.mark.django_db
def test_model_versions_without_the_fitted_model(owner, project):
    for number in (1, 2):
        ModelVersion.objects.create(project=project, number=number, request_id=f"r{number}", estimator="lr",
                                    query_strategy="margin", featuriser="text_tfidf", trained_on=10 * number,
                                    label_count=10 * number, metrics={"accuracy": 0.5 + number / 10},
                                    artifact=b"pickled", stop_set={"ids": [1]})
    client = api(owner)
    listing = client.get(f"{API}/projects/{project.pk}/model-versions/").json()
    assert [v["number"] for v in listing["results"]] == [2, 1]
    one = client.get(f"{API}/projects/{project.pk}/model-versions/1/").json()
    assert one["metrics"] == {"accuracy": 0.6} and one["trained_on"] == 10
    assert "artifact" not in one and "stop_set" not in one
    assert client.get(f"{API}/projects/{project.pk}/model-versions/3/").status_code == 404


# --- budgets and quotas ------------------------------------------------------------------------------------

@pytest.mark.django_db
def test_budget_shows_limits_spent_and_left(owner, project):
    client = api(owner)
    client.put(f"{API}/projects/{project.pk}/budget/", {"max_labels": 3, "cost_per_label": "0.50",
                                                        "max_cost": "10"}, format="json")
    label_next(project, owner, "cat")
    assert client.get(f"{API}/projects/{project.pk}/budget/").json() == {
        "max_labels": 3, "cost_per_label": "0.50", "max_cost": "10.00", "labels_spent": 1, "cost_spent": "0.50",
        "labels_left": 2, "cost_left": "9.50"}


@pytest.mark.django_db
def test_budget_change_takes_effect_at_the_next_request(owner, project):
    client = api(owner)
    base = f"{API}/projects/{project.pk}"
    served = client.post(f"{base}/next/").json()
    client.post(f"{base}/annotations/", {"item": served["item"]["id"], "label": "cat"}, format="json")

    spent = client.patch(f"{base}/budget/", {"max_labels": 1}, format="json")
    assert spent.json()["labels_left"] == 0
    closed = client.post(f"{base}/next/").json()
    assert closed["item"] is None and closed["code"] == "budget_spent"

    client.patch(f"{base}/budget/", {"max_labels": 2}, format="json")
    assert client.post(f"{base}/next/").json()["item"] is not None


@pytest.mark.django_db
@pytest.mark.parametrize("method, body, message", [
    ("patch", {"max_labels": "lots"}, "max_labels: expected a whole number of labels"),
    ("patch", {"max_cost": "-1"}, "max_cost: must be a non-negative amount"),
    ("patch", {"cost_per_label": None}, "cost_per_label: a price is needed"),
])
def test_invalid_budget_answers_the_service_message_and_changes_nothing(owner, project, method, body, message):
    response = getattr(api(owner), method)(f"{API}/projects/{project.pk}/budget/", body, format="json")
    assert response.status_code == 400 and response.json()["detail"].startswith(message)
    project.budget.refresh_from_db()
    assert (project.budget.max_labels, project.budget.max_cost, project.budget.cost_per_label) == (
        None, None, Decimal("0"))


@pytest.mark.django_db
def test_put_needs_every_budget_field(owner, project):
    response = api(owner).put(f"{API}/projects/{project.pk}/budget/", {"max_labels": 3}, format="json")
    assert response.status_code == 400 and set(response.json()) == {"cost_per_label", "max_cost"}


@pytest.mark.django_db
def test_members_and_quotas(owner, project, teammate):
    client = api(owner)
    base = f"{API}/projects/{project.pk}/members/"
    assert [(m["username"], m["role"], m["quota"]) for m in client.get(base).json()["results"]] == [
        ("owner", "owner", None), ("teammate", "annotator", None)]

    response = client.patch(f"{base}{teammate.pk}/", {"quota": 0}, format="json")
    assert response.status_code == 200 and response.json()["quota"] == 0
    closed = api(teammate).post(f"{API}/projects/{project.pk}/next/").json()
    assert closed["code"] == "quota_spent"

    assert client.patch(f"{base}{teammate.pk}/", {"quota": -1}, format="json").status_code == 400
    assert client.patch(f"{base}{make_user().pk}/", {"quota": 1}, format="json").status_code == 404
    client.patch(f"{base}{teammate.pk}/", {"quota": None}, format="json")
    assert Membership.objects.get(user=teammate).quota is None


# --- background tasks --------------------------------------------------------------------------------------

@pytest.mark.django_db
def test_retrain_answers_202_with_where_to_follow_it(owner, project):
    response = api(owner).post(f"{API}/projects/{project.pk}/retrain/")
    assert response.status_code == 202
    task_id = response.json()["task_id"]
    assert len(task_id) == 36 and response["Location"] == response.json()["status_url"]


@pytest.mark.django_db
@pytest.mark.parametrize("task_id", ["abc", "0" * 36, "6F9619FF-8B86-D011-B42D-00C04FC964FF", "x" * 200])
def test_task_ids_are_checked(owner, task_id):
    response = api(owner).get(f"{API}/tasks/{task_id}/")
    assert response.status_code == 400 and "task_id" in response.json()


@pytest.mark.django_db
@pytest.mark.parametrize("task_id", ["00000000-0000-4000-8000-000000000000", "0123456789abcdef0123456789abcdef"])
def test_unknown_task_is_not_found(owner, task_id):
    """Both forms of a Celery id (the API's 36 characters, the upload page's 32 hex digits): no project, no task."""
    response = api(owner).get(f"{API}/tasks/{task_id}/")
    assert response.status_code == 404 and response.json() == {"detail": "No such task."}


@pytest.mark.django_db(transaction=True)
def test_retrain_through_a_worker_makes_a_model_version(celery_worker, owner):
    project = make_project(owner, retrain_every=1000)
    client = api(owner)
    rows = [{"id": f"s{i}", "text": text, "label": label}
            for i, (text, label) in enumerate([("purr meow", "cat"), ("meow purr", "cat"), ("woof bark", "dog"),
                                               ("bark woof", "dog"), ("meow", "cat"), ("woof", "dog")])]
    client.post(f"{API}/projects/{project.pk}/items/", {"items": rows + [{"id": "open", "text": "purr"}]},
                format="json")

    task = client.post(f"{API}/projects/{project.pk}/retrain/").json()
    done = task_finished(client, task["status_url"], timeout=120)

    assert done["state"] == "SUCCESS", done
    number = done["result"]["model_version"]
    version = client.get(f"{API}/projects/{project.pk}/model-versions/{number}/").json()
    assert version["trained_on"] == 6 and version["estimator"] == "logistic_regression"


# --- schema ------------------------------------------------------------------------------------------------

def test_openapi_schema_is_valid_without_warnings(tmp_path):
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(tmp_path / "schema.yaml"))
    assert "/api/v1/projects/{id}/items/:" in (tmp_path / "schema.yaml").read_text()


@pytest.mark.django_db
def test_schema_and_swagger_ui_are_served_without_network(client):
    schema = client.get(f"{API}/schema/", {"format": "json"})
    assert schema.status_code == 200 and schema.json()["info"]["title"] == "Annotation workbench API"
    page = client.get(f"{API}/docs/").content.decode()
    assert "drf_spectacular_sidecar/swagger-ui-dist/" in page and "cdn." not in page
