"""Retraining as a service: labels by majority, honest metrics, idempotency, the queue swap."""
import pytest

from annotate.models import Annotation, AnnotationSource, Item
from annotate.services.annotations import annotation_create
from annotate.services.queue import queue_next_item
from learners.ml.estimators import estimator_for
from learners.ml.evaluation import cross_validated_accuracy
from learners.models import ModelVersion
from learners.services.training import model_version_train, training_labels
from tests.factories import add_annotator, add_items, make_project

pytestmark = pytest.mark.django_db

CATS = ["the cat purrs on the mat", "a kitten chases a mouse", "my cat sleeps all day", "cats meow at night",
        "the cat licks its fur", "a tabby cat purrs"]
DOGS = ["the dog barks at the mailman", "a puppy fetches the ball", "my dog wags its tail", "dogs bark at night",
        "the dog digs in the yard", "a beagle barks loudly"]


def labelled_project(**options):
    project = make_project(labels=("cat", "dog"), retrain_every=1000, **options)
    add_items(project, CATS + DOGS + ["a cat and a dog", "a kitten purrs", "the puppy barks"])
    annotator = add_annotator(project)
    truth = {f"t{i}": "cat" for i in range(6)} | {f"t{i}": "dog" for i in range(6, 12)}
    for _ in range(12):
        served = queue_next_item(project=project, annotator=annotator)
        label = truth.get(served.item.external_id)
        if label is None:
            from annotate.services.annotations import assignment_skip
            assignment_skip(project=project, annotator=annotator, item_id=served.item_id)
            continue
        annotation_create(project=project, annotator=annotator, item_id=served.item_id, label=label)
    return project


def test_retrain_stores_a_version_and_scores_every_open_item():
    project = labelled_project()
    labelled = Annotation.objects.filter(project=project).count()

    result = model_version_train(project_id=project.pk, request_id="r1")

    assert result["status"] == "trained" and result["model_version"] == 1
    open_items = Item.objects.filter(project=project, done=False)
    assert result["items_scored"] == open_items.count() == 15 - labelled
    assert all(i.scored_by_version == 1 and 0.0 <= i.priority <= 1.0 for i in open_items)
    assert 0.0 <= result["metrics"]["accuracy"] <= 1.0 and result["metrics"]["n_labelled"] == labelled


def test_the_same_request_twice_makes_one_version():
    project = labelled_project()
    first = model_version_train(project_id=project.pk, request_id="same")
    second = model_version_train(project_id=project.pk, request_id="same")
    third = model_version_train(project_id=project.pk, request_id="other")

    assert (first["status"], second["status"], third["status"]) == ("trained", "already_trained", "trained")
    assert list(ModelVersion.objects.filter(project=project).values_list("number", flat=True)) == [2, 1]


def test_one_class_only_is_skipped_with_a_reason():
    project = make_project(labels=("cat", "dog"))
    add_items(project, ["a", "b"])
    annotator = add_annotator(project)
    served = queue_next_item(project=project, annotator=annotator)
    annotation_create(project=project, annotator=annotator, item_id=served.item_id, label="cat")

    result = model_version_train(project_id=project.pk, request_id="x")

    assert result["status"] == "skipped" and "at least two classes" in result["reason"]
    assert not ModelVersion.objects.exists()


def test_training_label_is_the_majority_with_ties_to_the_newest():
    project = make_project(labels=("cat", "dog"), overlap=3)
    item = add_items(project, ["x"])[0]
    cat, dog = project.labels.get(name="cat"), project.labels.get(name="dog")
    for label in (dog, cat, cat):
        Annotation.objects.create(project=project, item=item, label=label, source=AnnotationSource.IMPORT)
    assert training_labels(project) == ([item.pk], ["cat"])
    Annotation.objects.create(project=project, item=item, label=dog, source=AnnotationSource.IMPORT)
    assert training_labels(project) == ([item.pk], ["dog"])


def test_accuracy_is_cross_validated_not_measured_on_training_data():
    # Labels that no text feature predicts: cross-validation must show chance, not 100%.
    texts = [f"word{i} other{i}" for i in range(40)]
    labels = ["a" if i % 2 else "b" for i in range(40)]
    metrics = cross_validated_accuracy(estimator_for("logistic_regression", "text"), texts, labels)
    assert metrics["cv_folds"] == 5 and metrics["accuracy"] < 0.75
    few = cross_validated_accuracy(estimator_for("logistic_regression", "text"), ["a", "b"], ["x", "y"])
    assert few["accuracy"] is None and "too few labels" in few["accuracy_reason"]


def test_retrain_request_is_made_once_per_n_labels(django_capture_on_commit_callbacks):
    project = make_project(labels=("cat", "dog"), retrain_every=3)
    add_items(project, [f"t{i}" for i in range(7)])
    annotator = add_annotator(project)
    requests = 0
    for _ in range(7):
        served = queue_next_item(project=project, annotator=annotator)
        with django_capture_on_commit_callbacks(execute=False) as callbacks:
            annotation_create(project=project, annotator=annotator, item_id=served.item_id, label="cat")
        requests += len(callbacks)
    assert requests == 2  # after labels 3 and 6
    project.refresh_from_db()
    assert project.retrain_requested_at == 6


@pytest.mark.django_db(transaction=True)
def test_unreachable_broker_keeps_the_label_and_asks_again_on_the_next_one(settings, tmp_path, caplog):
    from workbench.celery import _sender

    project = make_project(labels=("cat", "dog"), retrain_every=1)
    add_items(project, ["a", "b"])
    annotator = add_annotator(project)
    settings.CELERY_BROKER_URL = f"redis+socket://{tmp_path}/no-redis-here.sock"
    _sender.cache_clear()
    try:
        served = queue_next_item(project=project, annotator=annotator)
        annotation_create(project=project, annotator=annotator, item_id=served.item_id, label="cat")
    finally:
        _sender.cache_clear()

    assert Annotation.objects.filter(project=project).count() == 1
    assert "could not enqueue retrain" in caplog.text
    project.refresh_from_db()
    assert project.retrain_requested_at == 0, "the request is re-armed so the next label asks again"
