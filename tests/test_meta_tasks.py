"""Meta-models on the Django side: creation checks, `workbench.meta_train` and `workbench.adapt` sent by name to a
real worker, progress and cancellation, and the warm start's hand-over to the project's own model.

Data: scikit-learn's digits as 8x8 image projects (featuriser image_pixels, a shared feature space). Source
projects hold some digits, the warm-started project the others, so the meta-model never saw its classes.
"""
from __future__ import annotations

import io
import json

import joblib
import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from annotate.access import OPERATOR
from annotate.models import Item
from annotate.services.importing import import_items
from learners.meta import MetaMLP, ProtoNet, ResidualMLP, meta_learner_from_bytes, meta_learner_to_bytes
from learners.ml.strategies import margin
from learners.models import MetaModel, MetaModelStatus, ModelVersion, WarmStart
from learners.services.features import feature_space_current, features_load
from learners.services.meta import (
    AdaptationFailed,
    MetaModelInvalid,
    meta_model_cancel,
    meta_model_create,
    meta_model_enqueue,
    meta_model_train,
    warm_start_set,
)
from learners.services.training import model_version_adapt, model_version_train
from tests.conftest import wait_for
from tests.factories import make_project
from workbench.celery import app, task_state

pytestmark = pytest.mark.usefixtures("one_torch_thread")

DIGITS = load_digits()


def pixel_project(labels, rows, **options):
    """An image project of (external id, pixels, label or None) rows (featuriser image_pixels, no auto-retrain)."""
    project = make_project(labels=tuple(labels), modality="image", featuriser="image_pixels", retrain_every=1000,
                           **options)
    lines = []
    for external_id, pixels, label in rows:
        record = {"id": external_id, "pixels": " ".join(str(int(v)) for v in pixels)}
        if label is not None:
            record["label"] = label
        lines.append(json.dumps(record))
    import_items(project=project, stream=io.BytesIO("\n".join(lines).encode()), file_format="jsonl",
                 source_name="pixels.jsonl", featurise=False)
    return project


def digits_project(digits, *, labelled: int, unlabelled: int = 0, offset: int = 0, **options):
    """An image project of the given digits: `labelled` labelled and `unlabelled` open items of each.

    External ids start with the true digit ("d7-1234"), labelled or not.
    """
    rows = [(f"d{d}-{row}", DIGITS.data[row], f"d{d}" if n < labelled else None)
            for d in digits for n, row in enumerate(np.flatnonzero(DIGITS.target == d)[offset:offset + labelled
                                                                                       + unlabelled])]
    return pixel_project([f"d{d}" for d in digits], rows, **options)


def sources():
    return digits_project([0, 1, 2], labelled=12), digits_project([3, 4, 5], labelled=12)


def stored_meta_model(algorithm, *, name="handmade", k_shot=1, featuriser="image_pixels") -> MetaModel:
    """A succeeded meta-model record around a hand-built algorithm (for hand-over cases with a known outcome)."""
    return MetaModel.objects.create(name=name, modality="image", featuriser=featuriser, algorithm=algorithm.name,
                                    hyper_parameters={"k_shot": k_shot, "n_way": 3},
                                    status=MetaModelStatus.SUCCEEDED, artifact=meta_learner_to_bytes(algorithm))


# --- creation checks (nothing written on bad input) ---------------------------------------------------------------


@pytest.mark.django_db
def test_create_refuses_bad_requests_and_writes_nothing():
    a, b = sources()
    text = make_project(featuriser="text_tfidf")
    cases = [
        ({"algorithm": "metasgd"}, r"algorithm: 'metasgd' is not one of \['anil', 'fomaml', 'maml', 'protonet', "),
        ({"hyper_parameters": {"n_wya": 3}}, r"hyper_parameters: unknown \['n_wya'\]"),
        ({"hyper_parameters": {"k_shot": 0}}, r"hyper_parameters.k_shot: 0 is outside \[1, 50\]"),
        ({"hyper_parameters": {"steps": "many"}}, r"hyper_parameters.steps: expected an integer, got 'many'"),
        ({"hyper_parameters": {"steps": 2.5}}, r"hyper_parameters.steps: expected an integer, got 2.5"),
        ({"hyper_parameters": {"meta_lr": True}}, r"hyper_parameters.meta_lr: expected a number, got True"),
        ({"hyper_parameters": [1]}, r"hyper_parameters: expected an object"),
        ({"source_project_ids": [a.pk, 999_999]}, r"source_project_ids: no project with id \[999999\]"),
        ({"source_project_ids": []}, r"source_project_ids: give a list of project ids"),
        ({"source_project_ids": [a.pk, text.pk]}, r"source_project_ids: source projects must share modality"),
        ({"name": "  "}, r"name: give a name"),
        # 12 labelled items per class, 7 classes wanted with 1 + 5 each: the sources have 6.
        ({"hyper_parameters": {"n_way": 7}}, r"7-way episodes need 7 classes with at least 6 labelled items"),
        ({"hyper_parameters": {"n_way": 3, "k_shot": 8}}, r"3-way episodes need 3 classes with at least 13 labelled items"),
    ]
    for change, message in cases:
        request = {"user": OPERATOR, "name": "digits", "source_project_ids": [a.pk, b.pk], "algorithm": "protonet",
                   "hyper_parameters": {"n_way": 3}}
        request.update(change)
        with pytest.raises(MetaModelInvalid, match=message):
            meta_model_create(**request)
    assert not MetaModel.objects.exists()

    made = meta_model_create(user=OPERATOR, name="digits", source_project_ids=[b.pk, a.pk, a.pk], algorithm="maml",
                             hyper_parameters={"n_way": 3, "steps": 10})
    assert made.status == MetaModelStatus.QUEUED and (made.modality, made.featuriser) == ("image", "image_pixels")
    assert sorted(made.source_projects.values_list("pk", flat=True)) == sorted([a.pk, b.pk])
    assert made.hyper_parameters["steps"] == 10 and made.hyper_parameters["k_shot"] == 1  # defaults filled in


@pytest.mark.django_db
def test_warm_start_must_match_and_adapt_needs_k_examples_of_every_label():
    a, b = sources()
    meta_model = stored_meta_model(ProtoNet(ResidualMLP(64, 16, 3)), k_shot=2)
    other_space = stored_meta_model(ProtoNet(ResidualMLP(384, 16, 3)), featuriser="text_minilm")
    target = digits_project([6, 7, 8], labelled=2, unlabelled=3)
    target.labels.create(name="d9", position=9)  # a label nobody has used yet

    with pytest.raises(MetaModelInvalid, match="trained on image items with 'text_minilm' features"):
        warm_start_set(target, other_space)
    queued = meta_model_create(user=OPERATOR, name="q", source_project_ids=[a.pk, b.pk], algorithm="protonet",
                               hyper_parameters={"n_way": 3})
    with pytest.raises(MetaModelInvalid, match="is queued, not succeeded"):
        warm_start_set(target, queued)
    warm_start_set(target, meta_model)
    with pytest.raises(AdaptationFailed, match=r"at least 2 labelled item\(s\) of every label \(k_shot\); short: "
                                               r"\{'d9': 0\}"):
        model_version_adapt(project_id=target.pk, request_id="r1")
    assert not ModelVersion.objects.filter(project=target).exists()


# --- the tasks on a real worker -----------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_meta_train_and_adapt_sent_by_name_run_on_a_real_worker(celery_worker):
    a, b = sources()
    meta_model = meta_model_create(user=OPERATOR, name="digits 0-5", source_project_ids=[a.pk, b.pk], algorithm="protonet",
                                   hyper_parameters={"n_way": 3, "k_shot": 1, "q_query": 5, "steps": 30,
                                                     "hidden": 32})
    task_id = meta_model_enqueue(meta_model)
    result = app.AsyncResult(task_id).get(timeout=180)

    meta_model.refresh_from_db()
    assert result["status"] == "succeeded" == meta_model.status
    assert meta_model.task_id == task_id
    assert 1 <= meta_model.metrics["steps_done"] <= 30 and meta_model.metrics["classes"] == 6
    rebuilt = meta_learner_from_bytes(bytes(meta_model.artifact))
    assert rebuilt.name == "protonet"

    # A project of digits the meta-model never saw, with 4 labels where the episodes had 3 classes.
    target = digits_project([6, 7, 8, 9], labelled=2, unlabelled=25, offset=20)
    warm_start_set(target, meta_model)
    adapt_id = app.send_task("workbench.adapt", kwargs={"project_id": target.pk}).id
    summary = app.AsyncResult(adapt_id).get(timeout=180)

    assert summary["status"] == "trained" and summary["meta_model"] == meta_model.pk
    assert summary["estimator"] == "meta:protonet" and summary["trained_on"] == 8
    version = ModelVersion.objects.get(project=target, number=summary["model_version"])
    assert version.meta_model_id == meta_model.pk and version.query_strategy == target.query_strategy
    assert set(version.metrics) >= {"accuracy", "own_accuracy", "cv_folds"}
    # The queue follows the stored adapted model: its margin, recomputed here from the artifact.
    predictor = joblib.load(io.BytesIO(bytes(version.artifact)))
    assert list(predictor.classes_) == ["d6", "d7", "d8", "d9"]
    open_items = list(Item.objects.filter(project=target, done=False).order_by("id"))
    X = features_load(feature_space_current(target), [i.pk for i in open_items])
    expected = np.argsort(-margin(predictor.predict_proba(X)), kind="stable")
    head = list(Item.objects.filter(project=target, done=False).order_by("-priority", "id")[:5])
    assert [i.pk for i in head] == [open_items[k].pk for k in expected[:5]]
    accuracy = np.mean(predictor.predict(X) == [i.external_id.split("-")[0] for i in open_items])
    assert accuracy > 0.6, f"adapted from 2 examples a digit, the model should beat chance (0.25) by far: {accuracy}"
    assert WarmStart.objects.get(project=target).comparison["version"] == version.number


@pytest.mark.django_db(transaction=True)
def test_meta_training_reports_progress_and_stops_when_cancelled(celery_worker):
    a, b = sources()
    meta_model = meta_model_create(user=OPERATOR, name="long", source_project_ids=[a.pk, b.pk], algorithm="fomaml",
                                   hyper_parameters={"n_way": 3, "steps": 50_000, "hidden": 32})
    task_id = meta_model_enqueue(meta_model)

    def progressing():
        state, info = task_state(task_id)
        return state == "PROGRESS" and info["stage"] == "meta-training" and info["done"] >= 3 and info

    seen = wait_for(progressing, timeout=120, message="meta-training progress")
    assert seen["total"] == 50_000
    meta_model_cancel(meta_model)
    result = app.AsyncResult(task_id).get(timeout=60)

    meta_model.refresh_from_db()
    assert result["status"] == "cancelled" == meta_model.status
    assert seen["done"] <= meta_model.metrics["steps_done"] < 50_000
    assert not bytes(meta_model.artifact), "a cancelled meta-model has nothing to adapt"
    with pytest.raises(MetaModelInvalid, match="is cancelled, not succeeded"):
        warm_start_set(digits_project([6, 7], labelled=1), meta_model)


# --- the warm start in retraining: who orders the queue -----------------------------------------------------------


@pytest.mark.django_db
def test_own_model_takes_over_for_good_once_it_beats_the_adapted_one():
    # A meta-model whose encoder maps every image to the same point: the adapted model guesses one class.
    collapsed = MetaMLP(64, 16, 3)
    with torch.no_grad():
        for p in collapsed.parameters():
            p.zero_()
    meta_model = stored_meta_model(ProtoNet(collapsed))
    target = digits_project([6, 7, 8, 9], labelled=6, unlabelled=10)
    warm_start_set(target, meta_model)

    summary = model_version_train(project_id=target.pk, request_id="first")

    version = ModelVersion.objects.get(project=target, number=summary["model_version"])
    warm = WarmStart.objects.get(project=target)
    assert version.meta_model is None and version.estimator == target.estimator
    assert warm.comparison["adapted_accuracy"] == pytest.approx(0.25)
    assert warm.comparison["own_accuracy"] > 0.5 and warm.handed_over_version == version.number
    assert version.metrics["warm_start_handed_over"]["adapted_accuracy"] == pytest.approx(0.25)

    # Sticky: later retrains no longer compare.
    model_version_train(project_id=target.pk, request_id="second")
    warm.refresh_from_db()
    assert warm.handed_over_version == version.number and warm.comparison["version"] == version.number


@pytest.mark.django_db
def test_adapted_model_orders_the_queue_while_the_own_model_does_not_beat_it():
    # Class c lights pixel c; the other 60 pixels are loud noise. A hand-built encoder that keeps pixels 0-3
    # adapts perfectly from 2 examples a class; a logistic regression on all 64 pixels cannot be sure to.
    rng = np.random.default_rng(0)

    def image(c):
        pixels = np.concatenate([np.zeros(4), rng.integers(0, 17, size=60)])
        pixels[c] = 16
        return pixels

    labels = ["a", "b", "c", "d"]
    rows = [(f"{labels[c]}-{n}", image(c), labels[c] if n < 3 else None) for c in range(4) for n in range(13)]
    target = pixel_project(labels, rows)
    encoder = MetaMLP(64, 4, 3)
    with torch.no_grad():
        for p in encoder.parameters():
            p.zero_()
        encoder.body[0].weight[:, :4] = torch.eye(4)
        encoder.body[2].weight.copy_(torch.eye(4))
    meta_model = stored_meta_model(ProtoNet(encoder), k_shot=2)
    warm_start_set(target, meta_model)

    summary = model_version_train(project_id=target.pk, request_id="warm")

    version = ModelVersion.objects.get(project=target, number=summary["model_version"])
    warm = WarmStart.objects.get(project=target)
    comparison = warm.comparison
    assert comparison["folds"] == 3 and comparison["version"] == version.number
    assert comparison["adapted_accuracy"] == 1.0 > comparison["own_accuracy"], comparison
    assert version.meta_model_id == meta_model.pk and version.estimator == "meta:protonet"
    assert warm.active and version.metrics["accuracy"] == 1.0
    assert version.query_strategy == target.query_strategy == "margin"


# --- management commands --------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_commands_meta_train_here_then_adapt_and_refuse_bad_input():
    from django.core.management import CommandError, call_command

    a, b = sources()
    with pytest.raises(CommandError, match="--sources: expected comma-separated project ids, got 'one,two'"):
        call_command("meta_train", name="x", sources="one,two")
    with pytest.raises(CommandError, match=r"hyper_parameters: unknown \['stpes'\]"):
        call_command("meta_train", name="x", sources=f"{a.pk},{b.pk}", hyper='{"stpes": 3}')
    with pytest.raises(CommandError, match="meta-model 424242 does not exist"):
        call_command("meta_train", cancel=424242)
    assert not MetaModel.objects.exists()

    out, err = io.StringIO(), io.StringIO()
    call_command("meta_train", name="digits", sources=f"{a.pk},{b.pk}", algorithm="anil",
                 hyper='{"n_way": 3, "steps": 6, "hidden": 16}', stdout=out, stderr=err)
    result = json.loads(out.getvalue())
    assert result["status"] == "succeeded" and result["algorithm"] == "anil"
    assert "meta-training" in err.getvalue(), "a progress bar per stage"
    again = meta_model_train(meta_model_id=result["meta_model_id"])
    assert again["already"] and again["status"] == "succeeded", "a finished meta-model is not trained twice"

    target = digits_project([6, 7, 8, 9], labelled=1, unlabelled=3)
    out = io.StringIO()
    call_command("adapt", str(target.pk), meta_model_id=result["meta_model_id"], stdout=out, stderr=io.StringIO())
    summary = json.loads(out.getvalue())
    assert summary["estimator"] == "meta:anil" and summary["trained_on"] == 4
    assert joblib.load(io.BytesIO(bytes(ModelVersion.objects.get(project=target).artifact))).params_[
        "head.weight"].shape == (4, 64), "a 3-way ANIL head rebuilt for 4 labels from prototypes"
