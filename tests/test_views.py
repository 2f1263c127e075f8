"""The server-rendered UI: permissions, escaping, forms, and the upload going through a worker."""
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from annotate.models import Annotation, Assignment, ImportJob, Item
from tests.conftest import wait_for
from tests.factories import add_annotator, add_items, make_project, make_user


@pytest.fixture
def project(owner):  # owner: tests/conftest.py's persona
    project = make_project(owner, labels=("cat", "dog"), retrain_every=1000)
    add_items(project, ["first <script>alert(1)</script>", "second"], priorities=[0.9, 0.1])
    return project


@pytest.mark.django_db
def test_pages_need_login(client, project):
    response = client.get(reverse("annotate", args=[project.pk]))
    assert response.status_code == 302 and "/login/" in response["Location"]


@pytest.mark.django_db
def test_outsider_gets_404_everywhere(client, project):
    client.force_login(make_user("outsider"))
    for name in ("project-detail", "annotate", "import-upload", "project-settings"):
        assert client.get(reverse(name, args=[project.pk])).status_code == 404
    assert client.post(reverse("annotate-submit", args=[project.pk]), {"item": 1, "label": "cat"}).status_code == 404
    assert Annotation.objects.count() == 0
    listing = client.get(reverse("project-list")).content.decode()
    assert project.name not in listing and "not a member of any project" in listing


@pytest.mark.django_db
def test_annotator_cannot_import_or_change_settings(client, project):
    client.force_login(add_annotator(project))
    # A member knows the project exists: 403, not the outsider's 404.
    assert client.get(reverse("import-upload", args=[project.pk])).status_code == 403
    response = client.post(reverse("project-settings", args=[project.pk]), {
        "query_strategy": "random", "estimator": "logistic_regression", "featuriser": "text_tfidf",
        "retrain_every": 5})
    assert response.status_code == 403
    project.refresh_from_db()
    assert project.query_strategy == "margin"


@pytest.mark.django_db
def test_owner_picks_the_strategy_on_the_settings_page_and_a_retrain_is_queued(
        client, owner, project, django_capture_on_commit_callbacks):
    client.force_login(owner)
    page = client.get(reverse("project-settings", args=[project.pk])).content.decode()
    assert 'value="kcenter"' in page and 'value="text_minilm"' in page and 'value="tabular"' not in page

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = client.post(reverse("project-settings", args=[project.pk]), {
            "query_strategy": "kcenter", "estimator": "random_forest", "featuriser": "text_minilm",
            "retrain_every": 5}, follow=True)

    assert "Saved (featuriser, estimator, query_strategy, retrain_every)" in response.content.decode()
    assert len(callbacks) == 1, "one retrain request, sent when the change commits"
    project.refresh_from_db()
    assert (project.query_strategy, project.estimator, project.featuriser, project.retrain_every) == (
        "kcenter", "random_forest", "text_minilm", 5)
    detail = client.get(reverse("project-detail", args=[project.pk])).content.decode()
    assert '<span id="query-strategy">kcenter</span>' in detail


@pytest.mark.django_db
def test_settings_refuse_bald_without_the_mlp_and_change_nothing(client, owner, project):
    client.force_login(owner)
    response = client.post(reverse("project-settings", args=[project.pk]), {
        "query_strategy": "bald", "estimator": "logistic_regression", "featuriser": "text_tfidf",
        "retrain_every": 10})
    assert response.status_code == 200
    assert "needs dropout sampling; choose the &#x27;mlp&#x27; estimator" in response.content.decode()
    project.refresh_from_db()
    assert project.query_strategy == "margin"


@pytest.mark.django_db
def test_annotate_page_escapes_item_text_and_shows_labels(client, owner, project):
    client.force_login(owner)
    html = client.get(reverse("annotate", args=[project.pk])).content.decode()

    assert "first &lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<script>alert(1)" not in html
    import re
    buttons = re.findall(r'<button type="submit" name="label" value="(\w+)" data-key="(\d)"', html)
    assert buttons == [("cat", "1"), ("dog", "2")]
    assert "No model yet." in html


@pytest.mark.django_db
def test_label_skip_and_undo_forms(client, owner, project):
    client.force_login(owner)
    first = Item.objects.get(project=project, external_id="t0")
    second = Item.objects.get(project=project, external_id="t1")
    client.get(reverse("annotate", args=[project.pk]))

    response = client.post(reverse("annotate-submit", args=[project.pk]), {"item": first.pk, "label": "dog"})
    assert response.status_code == 302
    assert Annotation.objects.get().label.name == "dog"

    client.get(reverse("annotate", args=[project.pk]))
    client.post(reverse("annotate-skip", args=[project.pk]), {"item": second.pk})
    assert Assignment.objects.get(item=second).status == "skipped"

    client.post(reverse("annotate-undo", args=[project.pk]))
    assert Annotation.objects.count() == 0
    html = client.get(reverse("annotate", args=[project.pk])).content.decode()
    assert f'data-item-id="{first.pk}"' in html


@pytest.mark.django_db
def test_unknown_label_shows_an_error_and_writes_nothing(client, owner, project):
    client.force_login(owner)
    client.get(reverse("annotate", args=[project.pk]))
    item = Item.objects.get(project=project, external_id="t0")

    response = client.post(reverse("annotate-submit", args=[project.pk]), {"item": item.pk, "label": "cow"}, follow=True)

    assert "label &#x27;cow&#x27; is not in the label set {cat, dog}" in response.content.decode()
    assert Annotation.objects.count() == 0


@pytest.mark.django_db
def test_queue_closed_message_when_budget_spent(client, owner, project):
    project.budget.max_labels = 0
    project.budget.save()
    client.force_login(owner)
    html = client.get(reverse("annotate", args=[project.pk])).content.decode()
    assert 'data-code="budget_spent"' in html and "budget of 0 labels is spent" in html


def upload(client, owner, body: bytes, name: str = "items.csv"):
    """Log in as the owner of a new project and post `body` to its upload form."""
    project = make_project(owner, labels=("cat", "dog"))
    client.force_login(owner)
    response = client.post(reverse("import-upload", args=[project.pk]), {"file": SimpleUploadedFile(name, body)})
    return project, response


@pytest.mark.django_db(transaction=True)
def test_upload_form_imports_through_the_worker(client, celery_worker, owner):
    project, response = upload(client, owner, b"id,text,label\na,meow,cat\nb,woof,\n")

    assert response.status_code == 302
    job = wait_for(lambda: ImportJob.objects.filter(project=project, status="succeeded").first(), timeout=60,
                   message="the worker to import the upload")
    assert (job.rows_imported, job.labels_imported) == (2, 1)
    page = client.get(response["Location"]).content.decode()
    assert "succeeded" in page and "2 imported" in page


@pytest.mark.django_db(transaction=True)
def test_bad_upload_reports_rows_and_imports_nothing(client, celery_worker, owner):
    project, response = upload(client, owner, b"id,text,label\na,meow,cta\n")

    wait_for(lambda: ImportJob.objects.filter(project=project, status="failed").exists(), timeout=60,
             message="the import to fail")
    page = client.get(response["Location"]).content.decode()
    assert "row 1: label &#x27;cta&#x27; is not in the label set {cat, dog}" in page
    assert "Nothing was imported" in page
    assert Item.objects.filter(project=project).count() == 0


@pytest.mark.django_db
def test_upload_form_refuses_unknown_extension(client, owner):
    project, response = upload(client, owner, b"abc", name="x.xlsx")
    assert response.status_code == 200 and "use a .csv or .jsonl file" in response.content.decode()


@pytest.mark.django_db
def test_api_status_for_members_only(client, owner, project):
    client.force_login(owner)
    status = client.get(f"/api/v1/projects/{project.pk}/status/").json()
    assert (status["items"], status["items_open"], status["labels"], status["model_version"]) == (2, 2, 0, None)

    client.force_login(make_user("stranger"))
    assert client.get(f"/api/v1/projects/{project.pk}/status/").status_code == 404


@pytest.mark.django_db
def test_project_page_says_when_the_model_has_stopped_changing(client, owner, project):
    from annotate.selectors import queue_status
    from learners.models import ModelVersion

    def version(number, kappa):
        metrics = {"accuracy": 0.9} | ({} if kappa is None else {"stop_kappa": kappa})
        ModelVersion.objects.create(project=project, number=number, request_id=f"r{number}", estimator="e",
                                    query_strategy="margin", trained_on=10, label_count=10, metrics=metrics)

    client.force_login(owner)
    version(1, None)
    version(2, 0.90)
    version(3, 0.995)
    version(4, 1.0)
    assert not queue_status(project)["stopping"]["stable"]  # mean of (1.0, 0.995, 0.90) < 0.99
    assert "stopped changing" not in client.get(reverse("project-detail", args=[project.pk])).content.decode()

    version(5, 0.99)
    status = queue_status(project)["stopping"]
    assert status["stable"] and status["kappas"] == [0.99, 1.0, 0.995]
    page = client.get(reverse("project-detail", args=[project.pk])).content.decode()
    assert "The model has stopped changing: further labels add little." in page
