"""Retraining as a service: labels by majority, honest metrics, idempotency, the queue swap."""
import io

import joblib
import numpy as np
import pytest
from scipy.stats import spearmanr

from annotate.models import Annotation, AnnotationSource, Item
from annotate.selectors import training_labels
from annotate.services.annotations import annotation_create
from annotate.services.importing import import_items
from annotate.services.projects import project_settings_update
from annotate.services.queue import queue_next_item
from learners.ml.estimators import estimator_create
from learners.ml.evaluation import cross_validated_accuracy
from learners.ml.featurisers import featuriser_create
from learners.ml.strategies import margin
from learners.models import ModelVersion
from learners.services.features import feature_space_current, features_load
from learners.services.training import featurise_and_order, model_version_train, pool_rescore
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


def test_an_automatic_retrain_makes_no_version_without_new_labels_but_sees_labels_made_during_training():
    project = labelled_project()
    annotator = add_annotator(project)
    labelled = Annotation.objects.filter(project=project).count()

    def label_during_training(stage, done, total):
        if stage == "training" and done == 0:  # a label arrives after the labels were read
            served = queue_next_item(project=project, annotator=annotator)
            annotation_create(project=project, annotator=annotator, item_id=served.item_id, label="cat")

    first = model_version_train(project_id=project.pk, request_id="a", progress=label_during_training)
    second = model_version_train(project_id=project.pk, request_id="b", only_new_labels=True)
    third = model_version_train(project_id=project.pk, request_id="c", only_new_labels=True)

    assert first["status"] == "trained" and first["trained_on"] == labelled
    assert second["status"] == "trained" and second["trained_on"] == labelled + 1, "the label made during training is new"
    assert third["status"] == "up_to_date" and third["model_version"] == 2
    assert ModelVersion.objects.filter(project=project).count() == 2


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
    X = featuriser_create("text_tfidf").fit(texts).transform(texts)
    metrics = cross_validated_accuracy(estimator_create("logistic_regression"), X, labels)
    assert metrics["cv_folds"] == 5 and metrics["accuracy"] < 0.75
    few = cross_validated_accuracy(estimator_create("logistic_regression"), X[:2], ["x", "y"])
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
def test_unreachable_broker_keeps_the_label_and_the_retrain_request_which_is_sent_once_it_answers(
        settings, caplog):
    import os
    from datetime import timedelta
    from pathlib import Path

    import redis
    from django.utils import timezone

    from learners.models import Work
    from learners.services.work import work_reconcile
    from workbench.celery import _sender
    from workbench.embedded_redis import EmbeddedRedis

    project = make_project(labels=("cat", "dog"), retrain_every=1)
    add_items(project, ["a", "b"])
    annotator = add_annotator(project)
    # A broker of this test's own, that no worker takes from: what is sent stays there to be counted.
    server = EmbeddedRedis(Path("/tmp") / f"wb-unreachable-{os.getpid()}" / "redis.sock")
    broker = settings.CELERY_BROKER_URL
    settings.CELERY_BROKER_URL = f"redis+socket://{server.socket_path}"
    _sender.cache_clear()
    try:
        served = queue_next_item(project=project, annotator=annotator)
        annotation_create(project=project, annotator=annotator, item_id=served.item_id, label="cat")
        assert work_reconcile() == {"handed_on": [], "sent": []}, "still no broker: nothing sent"
        assert Annotation.objects.filter(project=project).count() == 1
        assert "could not send retrain of project" in caplog.text
        work = Work.objects.get(project=project, kind="retrain")
        assert work.pending_since is not None and work.sent_at is None, "the request is kept, unsent"

        server.start()
        queued = redis.Redis(unix_socket_path=str(server.socket_path))
        assert work_reconcile() == {"handed_on": [], "sent": [work.pk]}, "the broker answers: sent, no label needed"
        work.refresh_from_db()
        assert work.sent_at is not None and work.requested == 1
        assert work_reconcile() == {"handed_on": [], "sent": []}, "sent once, not at every sweep"
        assert queued.llen("celery") == 1
        # Sent, but not taken for longer than a run may go silent: a Redis crash may have lost it.
        Work.objects.filter(pk=work.pk).update(sent_at=timezone.now() - timedelta(seconds=settings.WORK_STALE_SECONDS + 1))
        assert work_reconcile() == {"handed_on": [], "sent": [work.pk]}, "sent again in case the broker lost it"
        assert work_reconcile() == {"handed_on": [], "sent": []}
        assert queued.llen("celery") == 2
        assert work.pk in work_reconcile(startup=True)["sent"], "a starting worker sends every pending request"
    finally:
        settings.CELERY_BROKER_URL = broker
        _sender.cache_clear()
        server.stop()


# Five tight clusters at the corners and the centre of a square. Only clusters 0 ("a", at 0,0) and
# 1 ("b", at 10,0) are labelled, so the decision boundary x = 5 runs through cluster 4 (5,5) alone
# and clusters 2 and 3 (the top corners) are unexplored.
CENTRES = np.array([[0, 0], [10, 0], [0, 10], [10, 10], [5, 5]], dtype=float)


def clustered_project(**options):
    rng = np.random.default_rng(3)
    rows, cluster_of = [], {}
    for c, centre in enumerate(CENTRES):
        for k in range(30):
            x, y = centre + rng.normal(scale=0.05, size=2)
            external_id = f"c{c}-{k}"
            label = {0: "a", 1: "b"}.get(c, "") if k < 2 else ""
            rows.append(f"{external_id},{x:.4f},{y:.4f},{label}")
            cluster_of[external_id] = c
    project = make_project(labels=("a", "b"), modality="tabular", retrain_every=1000, **options)
    body = "id,x,y,label\n" + "\n".join(rows) + "\n"
    import_items(project=project, stream=io.BytesIO(body.encode()), file_format="csv", source_name="c.csv")
    add_annotator(project)
    return project, cluster_of


def queue_head(project, n):
    return list(Item.objects.filter(project=project, done=False).order_by("-priority", "id")[:n])


def test_queue_follows_the_chosen_strategy_after_each_retrain():
    project, cluster_of = clustered_project()

    model_version_train(project_id=project.pk, request_id="margin")
    # Independently: the stored model's margin on the cached features of every open item.
    version = ModelVersion.objects.get(project=project, number=1)
    estimator = joblib.load(io.BytesIO(bytes(version.artifact)))
    open_items = list(Item.objects.filter(project=project, done=False).order_by("id"))
    X = features_load(feature_space_current(project), [i.pk for i in open_items])
    expected = np.argsort(-margin(estimator.predict_proba(X)), kind="stable")
    head = queue_head(project, 3)
    assert [i.pk for i in head] == [open_items[k].pk for k in expected[:3]]
    assert {cluster_of[i.external_id] for i in head} == {4}, "margin asks about the boundary cluster only"
    served = queue_next_item(project=project, annotator=add_annotator(project))
    assert served.item_id == head[0].pk

    project_settings_update(project=project, featuriser="tabular", estimator="logistic_regression",
                            query_strategy="kcenter")
    model_version_train(project_id=project.pk, request_id="kcenter")
    head = queue_head(project, 3)
    assert {cluster_of[i.external_id] for i in head} == {2, 3, 4}, "k-center spreads the batch over the pool"

    project_settings_update(project=project, featuriser="tabular", estimator="logistic_regression",
                            query_strategy="random")
    model_version_train(project_id=project.pk, request_id="random")
    by_priority = Item.objects.filter(project=project, done=False).order_by("id").values_list("priority", flat=True)
    rho = spearmanr(list(by_priority), margin(estimator.predict_proba(X))).statistic
    assert abs(rho) < 0.3, f"random order should not follow the margin (rho={rho:.2f})"
    assert ModelVersion.objects.get(project=project, number=3).query_strategy == "random"


def test_cold_start_serves_a_spread_over_the_clusters_before_any_model():
    project, cluster_of = clustered_project()
    Annotation.objects.filter(project=project).delete()
    Item.objects.filter(project=project).update(done=False, annotation_count=0)

    result = featurise_and_order(project_id=project.pk)

    assert result["status"] == "cold_start" and result["featurised"] == 150
    head = queue_head(project, 5)
    assert {cluster_of[i.external_id] for i in head} == {0, 1, 2, 3, 4}


def test_committee_and_mlp_strategies_train_and_order_the_queue():
    project, cluster_of = clustered_project(query_strategy="qbc_vote_entropy")
    result = model_version_train(project_id=project.pk, request_id="qbc")
    assert result["status"] == "trained"
    project_settings_update(project=project, featuriser="tabular", estimator="mlp", query_strategy="bald")
    result = model_version_train(project_id=project.pk, request_id="bald")
    assert result["status"] == "trained" and ModelVersion.objects.get(number=2, project=project).estimator == "mlp"
    assert {cluster_of[i.external_id] for i in queue_head(project, 3)} <= {2, 3, 4}


def test_stop_set_agreement_is_recorded_between_versions():
    project, _ = clustered_project()
    model_version_train(project_id=project.pk, request_id="one")
    model_version_train(project_id=project.pk, request_id="two")
    first, second = ModelVersion.objects.filter(project=project).order_by("number")

    assert "stop_kappa" not in first.metrics
    assert first.stop_set["ids"] == second.stop_set["ids"] and len(first.stop_set["ids"]) == 146
    assert second.metrics["stop_agreement"] == 1.0 and second.metrics["stop_kappa"] == 1.0


def test_items_imported_after_a_model_are_scored_by_it_without_retraining():
    project, cluster_of = clustered_project()
    model_version_train(project_id=project.pk, request_id="v1")
    # New items right on the boundary (x = 5) and far from it; the importer gives them random priorities.
    body = "id,x,y\nnew-boundary,5.0,2.0\nnew-far,0.0,0.5\n"
    import_items(project=project, stream=io.BytesIO(body.encode()), file_format="csv", source_name="more.csv")

    result = featurise_and_order(project_id=project.pk)

    assert result["status"] == "scored" and result["featurised"] == 2 and result["model_version"] == 1
    new = {i.external_id: i for i in Item.objects.filter(project=project, external_id__startswith="new-")}
    assert {i.scored_by_version for i in new.values()} == {1}
    assert new["new-boundary"].priority > 0.9 and new["new-far"].priority < 0.3
    assert new["new-far"].predicted_label.name == "a"
    assert ModelVersion.objects.filter(project=project).count() == 1, "no retrain"


def test_rescore_without_a_model_says_so():
    project, _ = clustered_project()
    Annotation.objects.filter(project=project).delete()
    assert pool_rescore(project_id=project.pk)["status"] == "no_model"
