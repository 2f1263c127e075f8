"""Meta-model pages and a project's warm start in the UI: who may do what, bad input refused with nothing written,
the project page's account of who orders the queue, and the first adaptation asked for by the label that
completes k_shot of every label."""
from __future__ import annotations

import time

import pytest
import torch
from django.urls import reverse

from annotate.models import Item
from annotate.services.annotations import annotation_create
from annotate.services.queue import queue_next_item
from learners.meta import MetaMLP, ProtoNet, ResidualMLP
from learners.models import MetaModel, MetaModelStatus, WarmStart
from learners.services.meta import warm_start_set
from tests.factories import add_annotator, make_user
from tests.test_meta_tasks import digits_project, stored_meta_model
from workbench.activity import KEEP, project_tasks

pytestmark = pytest.mark.django_db


@pytest.fixture
def owner():
    return make_user("owner")


def owned_sources(owner):
    a = digits_project([0, 1, 2], labelled=8, owner=owner)
    b = digits_project([3, 4, 5], labelled=8, owner=owner)
    return a, b


def test_owner_starts_a_meta_training_from_the_page(client, owner):
    a, b = owned_sources(owner)
    client.force_login(owner)
    page = client.get(reverse("meta-model-list")).content.decode()
    assert a.name in page and "Meta-train" in page

    response = client.post(reverse("meta-model-list"), {
        "name": "digits", "algorithm": "protonet", "sources": [a.pk, b.pk], "n_way": "3", "k_shot": "1",
        "q_query": "5", "steps": "20", "hidden": "32", "meta_lr": "0.001", "lr": "", "adapt_steps": "",
    })

    assert response.status_code == 302
    made = MetaModel.objects.get()
    assert made.hyper_parameters["steps"] == 20 and "lr" not in made.hyper_parameters
    assert made.task_id, "workbench.meta_train was sent and its id stored"
    status = client.get(reverse("meta-model-status", args=[made.pk])).json()
    assert status["id"] == made.pk and status["status"] in {"queued", "running", "succeeded"}


def test_bad_requests_are_refused_on_the_page_and_nothing_is_written(client, owner):
    a, b = owned_sources(owner)
    stranger_project = digits_project([6, 7, 8], labelled=8)
    client.force_login(owner)
    base = {"name": "digits", "algorithm": "protonet", "sources": [a.pk, b.pk], "n_way": "3", "steps": "20"}
    cases = [
        # A project the user may not see is reported as missing, as any other id they cannot see.
        ({"sources": [a.pk, stranger_project.pk]}, f"no project with id [{stranger_project.pk}]"),
        ({"steps": "lots"}, "steps: &#x27;lots&#x27; is not a number"),
        ({"steps": "2.5"}, "hyper_parameters.steps: expected an integer, got 2.5"),
        ({"n_way": "9"}, "9-way episodes need 9 classes"),
        ({"algorithm": "metasgd"}, "algorithm: &#x27;metasgd&#x27; is not one of"),
    ]
    for change, message in cases:
        response = client.post(reverse("meta-model-list"), base | change)
        assert response.status_code == 400 and message in response.content.decode(), change
    assert not MetaModel.objects.exists()


def test_outsiders_neither_see_nor_cancel_meta_models(client, owner):
    a, b = owned_sources(owner)
    meta_model = MetaModel.objects.create(name="secret sources", modality="image", featuriser="image_pixels",
                                          algorithm="protonet", status=MetaModelStatus.RUNNING)
    meta_model.source_projects.set([a, b])
    outsider = make_user("outsider")
    client.force_login(outsider)
    assert "secret sources" not in client.get(reverse("meta-model-list")).content.decode()
    assert client.get(reverse("meta-model-status", args=[meta_model.pk])).status_code == 404
    assert client.post(reverse("meta-model-cancel", args=[meta_model.pk])).status_code == 404
    meta_model.refresh_from_db()
    assert not meta_model.cancel_requested

    client.force_login(owner)
    assert client.post(reverse("meta-model-cancel", args=[meta_model.pk])).status_code == 302
    meta_model.refresh_from_db()
    assert meta_model.cancel_requested and meta_model.status == MetaModelStatus.RUNNING


def test_owner_chooses_a_warm_start_and_the_page_says_who_orders_the_queue(client, owner):
    target = digits_project([6, 7, 8], labelled=0, unlabelled=4, owner=owner)
    usable = stored_meta_model(ProtoNet(ResidualMLP(64, 16, 3)), name="digits 0-5", k_shot=2)
    other = stored_meta_model(ProtoNet(ResidualMLP(384, 16, 3)), name="news", featuriser="text_minilm")
    annotator = add_annotator(target)

    client.force_login(annotator)
    assert client.post(reverse("project-warm-start", args=[target.pk]), {"meta_model": usable.pk}).status_code == 403
    client.force_login(owner)
    page = client.get(reverse("project-detail", args=[target.pk])).content.decode()
    assert "digits 0-5 (protonet)" in page and "news" not in page, "only meta-models of the project's features"

    response = client.post(reverse("project-warm-start", args=[target.pk]), {"meta_model": other.pk}, follow=True)
    assert "is not a succeeded meta-model of this project" in response.content.decode()
    assert not WarmStart.objects.exists()

    client.post(reverse("project-warm-start", args=[target.pk]), {"meta_model": usable.pk})
    assert WarmStart.objects.get(project=target).meta_model == usable
    assert any(t["name"] == "workbench.retrain" for t in project_tasks(target.pk))
    page = client.get(reverse("project-detail", args=[target.pk])).content.decode()
    assert "Waiting for 2 labelled items of every label" in page

    warm = WarmStart.objects.get(project=target)
    warm.comparison = {"own_accuracy": 0.5, "adapted_accuracy": 0.75, "folds": 2, "n_labelled": 6, "version": 1}
    warm.save()
    page = client.get(reverse("project-detail", args=[target.pk])).content.decode()
    assert "The adapted meta-model orders the queue (v1)" in page and "0.750 against 0.500" in page
    warm.handed_over_version = 2
    warm.save()
    assert "Handed over at v2" in client.get(reverse("project-detail", args=[target.pk])).content.decode()

    client.post(reverse("project-warm-start", args=[target.pk]), {"meta_model": ""})
    assert not WarmStart.objects.exists()


def test_the_label_that_completes_k_shot_of_every_label_asks_for_the_first_adaptation(
        owner, django_capture_on_commit_callbacks):
    target = digits_project([6, 7], labelled=0, unlabelled=5, owner=owner)
    encoder = MetaMLP(64, 8, 2)
    with torch.no_grad():
        encoder.body[0].weight.normal_()
    warm_start_set(target, stored_meta_model(ProtoNet(encoder), k_shot=2))
    annotator = add_annotator(target)

    def label_next():
        assignment = queue_next_item(project=target, annotator=annotator)
        item = Item.objects.get(pk=assignment.item_id)
        with django_capture_on_commit_callbacks(execute=True):
            annotation_create(project=target, annotator=annotator, item_id=item.pk,
                              label=item.external_id.split("-")[0])
        return item.external_id.split("-")[0]

    def retrains():
        # Only this test's: Redis outlives the test database, whose project ids start again at 1.
        return sum(t["name"] == "workbench.retrain" and t["sent"] >= started
                   for t in project_tasks(target.pk, limit=KEEP))

    given = {"d6": 0, "d7": 0}
    started = time.time()
    while min(given.values()) < 2:
        before = retrains()
        label = label_next()
        given[label] += 1
        completes = min(given.values()) == 2 and given[label] == 2
        assert retrains() == before + (1 if completes else 0), given
    before = retrains()
    label_next()
    assert retrains() == before, "asked once, not again for every later label"
