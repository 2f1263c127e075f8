"""The Celery task API against a real worker process on a real Redis.

Tasks are sent by name from a separate Python process that imports only
`celery` (the client example printed in docs/celery-api.md, run verbatim).
"""
import io
import json
import re
import subprocess
import sys
from pathlib import Path

import joblib
import numpy as np
import pytest
from django.conf import settings

from annotate.demo_data import bbc_news
from annotate.models import Item, Project
from annotate.services.annotations import annotation_create
from annotate.services.importing import import_items
from annotate.services.queue import queue_next_item
from learners.ml.strategies import margin
from learners.models import FeatureSpace, ModelVersion
from learners.services.features import features_load
from tests.conftest import wait_for
from tests.factories import add_annotator, make_project

pytestmark = pytest.mark.django_db(transaction=True)
DOC = Path(__file__).resolve().parent.parent / "docs" / "celery-api.md"


def doc_client_example() -> str:
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    assert len(blocks) == 1, "docs/celery-api.md should hold exactly one client example"
    return blocks[0]


def run_isolated_client(code: str, *args: str, tmp_path: Path) -> subprocess.CompletedProcess:
    """Run `code` with `python -I` from an empty folder: the project is not importable."""
    script = tmp_path / "client.py"
    script.write_text(code + "\nassert not {'workbench', 'annotate', 'learners'} & set(sys.modules), sys.modules.keys()\n")
    return subprocess.run(
        [sys.executable, "-I", str(script), *args], cwd=tmp_path, capture_output=True, text=True, timeout=300,
        env={"WORKBENCH_BROKER_URL": settings.CELERY_BROKER_URL, "PATH": "/usr/bin:/bin"},
    )


def bbc_project(per_topic: int, **options) -> tuple[Project, dict[str, str]]:
    """A text project of real BBC articles; returns it and the true topic of each external id."""
    project = make_project(labels=("business", "entertainment", "politics", "sport", "tech"), **options)
    taken: dict[str, int] = {}
    lines, gold = [], {}
    for external_id, text, topic in bbc_news():
        if taken.get(topic, 0) < per_topic:
            taken[topic] = taken.get(topic, 0) + 1
            lines.append(json.dumps({"id": external_id, "text": text}))
            gold[external_id] = topic
    import_items(project=project, stream=io.BytesIO("\n".join(lines).encode()), file_format="jsonl", source_name="bbc")
    return project, gold


def label_next(project, annotator, gold, n: int) -> list[int]:
    served = []
    for _ in range(n):
        assignment = queue_next_item(project=project, annotator=annotator)
        annotation_create(project=project, annotator=annotator, item_id=assignment.item_id,
                          label=gold[assignment.item.external_id])
        served.append(assignment.item_id)
    return served


def test_doc_client_sends_tasks_by_name_to_a_real_worker(celery_worker, tmp_path):
    project, gold = bbc_project(per_topic=12, retrain_every=1000)
    label_next(project, add_annotator(project), gold, 15)

    run = run_isolated_client(doc_client_example(), str(project.pk), tmp_path=tmp_path)

    assert run.returncode == 0, run.stderr + celery_worker.log()[-2000:]
    before = json.loads(re.search(r"^before: (.*)$", run.stdout, re.M).group(1))
    retrain = json.loads(re.search(r"^retrain: (.*)$", run.stdout, re.M).group(1))
    after = json.loads(re.search(r"^after: (.*)$", run.stdout, re.M).group(1))
    assert before["model_version"] is None and before["labels"] == 15
    assert retrain["status"] == "trained" and retrain["trained_on"] == 15
    assert retrain["items_scored"] == 60 - 15
    assert after["model_version"]["number"] == 1
    assert ModelVersion.objects.filter(project=project).count() == 1
    assert "workbench.retrain" in celery_worker.log()
    stages = [json.loads(line)["stage"] for line in re.findall(r"^progress: (.*)$", run.stdout, re.M)]
    assert stages, "the client saw the retrain's progress in task state"
    assert set(stages) <= {"featurising", "training", "scoring"}
    assert re.search(r"^error: TaskInputError export format 'xml' is not one of \['jsonl', 'csv'\]$", run.stdout, re.M)


def test_nth_label_triggers_a_retrain_and_the_queue_follows_the_new_model(celery_worker):
    project, gold = bbc_project(per_topic=20, retrain_every=10, query_strategy="margin")
    annotator = add_annotator(project)
    # The import asked a worker to featurise the items and put a k-means++ spread first.
    spread = wait_for(lambda: Item.objects.filter(project=project, priority__gt=1).count(), timeout=120,
                      message="the worker to featurise the import and order a cold start")
    assert spread == 10, "the cold start placed a k-means++ batch (4 per member, at least 10) first"
    assert FeatureSpace.objects.get(project=project).rows.count() == 100
    cold_order = list(Item.objects.filter(project=project).order_by("-priority", "id").values_list("id", flat=True))

    served = label_next(project, annotator, gold, 10)

    assert served == cold_order[:10], "before any model, items come in the cold-start order"
    version = wait_for(lambda: ModelVersion.objects.filter(project=project).first(), timeout=120,
                       message="the worker to store model version 1")
    assert version.number == 1 and version.trained_on == 10
    estimator = joblib.load(io.BytesIO(bytes(version.artifact)))
    open_items = list(Item.objects.filter(project=project, done=False).order_by("id"))
    X = features_load(FeatureSpace.objects.get(project=project), [i.pk for i in open_items])
    scores = margin(estimator.predict_proba(X))
    most_uncertain = open_items[int(np.argmax(scores))]

    next_item = queue_next_item(project=project, annotator=annotator).item

    assert next_item.pk == most_uncertain.pk
    assert next_item.pk != cold_order[10], "the served order changed because a model exists"
    assert next_item.scored_by_version == 1 and next_item.predicted_label is not None


def test_import_task_by_name_imports_or_rejects_cleanly(celery_worker, tmp_path):
    from celery import Celery

    project = make_project(labels=("cat", "dog"))
    client = Celery(broker=settings.CELERY_BROKER_URL, backend=settings.CELERY_BROKER_URL)
    good = tmp_path / "good.csv"
    good.write_text("id,text,label\n1,a,cat\n2,b,\n")
    bad = tmp_path / "bad.csv"
    bad.write_text("id,text,label\n1,a,cta\n")

    try:
        report = client.send_task("workbench.import_items", kwargs={"project_id": project.pk, "path": str(good)}).get(timeout=60)
        failed = client.send_task("workbench.import_items", kwargs={"project_id": project.pk, "path": str(bad)})

        assert report["rows_imported"] == 2 and report["status"] == "succeeded"
        with pytest.raises(Exception, match=r"row 1: label 'cta' is not in the label set \{cat, dog\}"):
            failed.get(timeout=60)
        assert failed.state == "FAILURE"
        assert Item.objects.filter(project=project).count() == 2
        export = client.send_task("workbench.export_annotations",
                                  kwargs={"project_id": project.pk, "path": str(tmp_path / "out.jsonl")}).get(timeout=60)
        assert export == {"path": str(tmp_path / "out.jsonl"), "format": "jsonl", "items": 1, "annotations": 1}
        assert json.loads((tmp_path / "out.jsonl").read_text())["label"] == "cat"
        bad_export = client.send_task("workbench.export_annotations", kwargs={"project_id": project.pk, "format": "xml"})
        with pytest.raises(Exception, match="export format 'xml' is not one of"):
            bad_export.get(timeout=60)
        rescore = client.send_task("workbench.score_pool", kwargs={"project_id": project.pk}).get(timeout=60)
        assert rescore["status"] == "no_model" and "no model version yet" in rescore["reason"]
        missing = client.send_task("workbench.queue_status", kwargs={"project_id": 999_999})
        with pytest.raises(Exception, match="project 999999 does not exist"):
            missing.get(timeout=60)
    finally:
        # Close the result subscription now, not when the suite's Redis is gone.
        client.backend.result_consumer.stop()
        client.close()


def celery_client():
    from celery import Celery

    return Celery(broker=settings.CELERY_BROKER_URL, backend=settings.CELERY_BROKER_URL)


def workbench_tasks() -> dict:
    """Every public task of the workbench, by name, as this process registers them."""
    from workbench.celery import app

    app.loader.import_default_modules()
    return {name: task for name, task in app.tasks.items() if name.startswith("workbench.")}


def test_every_task_fails_bad_arguments_with_task_input_error_naming_them(celery_worker):
    import inspect

    from annotate.tasks import WorkbenchTask

    tasks = workbench_tasks()
    assert len(tasks) >= 10 and all(isinstance(task, WorkbenchTask) for task in tasks.values())
    client = celery_client()
    try:
        sent = []
        for name, task in sorted(tasks.items()):
            params = [p for p in inspect.signature(task.run).parameters.values() if p.kind is p.KEYWORD_ONLY]
            required = {p.name: ("x" if p.annotation in ("str", str) else 1) for p in params if p.default is p.empty}
            cases = [(required | {"projectid": 1}, f"{name}: unknown argument 'projectid'; it takes "
                                                   f"{', '.join(p.name for p in params)}")]
            if required:  # workbench.reconcile has none
                first = next(iter(required))
                wrong = "7" if required[first] == 1 else 7
                cases += [
                    ({}, f"{name}: missing argument {first!r} (required: {', '.join(required)})"),
                    (required | {first: wrong}, f"{name}: argument {first!r} must be "),
                    (required | {first: None}, f"{name}: argument {first!r} must be "),
                ]
            sent += [(client.send_task(name, kwargs=kwargs), expected) for kwargs, expected in cases]

        for result, expected in sent:
            with pytest.raises(Exception) as failed:
                result.get(timeout=60)
            assert type(failed.value).__name__ == "TaskInputError", (expected, failed.value)
            assert str(failed.value).startswith(expected), (expected, str(failed.value))
    finally:
        client.backend.result_consumer.stop()
        client.close()


def test_a_wrong_type_names_the_argument_the_type_and_the_value(celery_worker):
    client = celery_client()
    try:
        bad = [({"project_id": "3"}, "workbench.retrain: argument 'project_id' must be an integer, not the string '3'"),
               ({"project_id": True}, "workbench.retrain: argument 'project_id' must be an integer, not true"),
               ({"project_id": 1, "request_id": 5},
                "workbench.retrain: argument 'request_id' must be a string or null, not the number 5")]
        for kwargs, expected in bad:
            with pytest.raises(Exception) as failed:
                client.send_task("workbench.retrain", kwargs=kwargs).get(timeout=60)
            assert (type(failed.value).__name__, str(failed.value)) == ("TaskInputError", expected)
        with pytest.raises(Exception, match=r"^workbench.import_items takes keyword arguments only"):
            client.send_task("workbench.import_items", args=[1, "/x.csv"]).get(timeout=60)
    finally:
        client.backend.result_consumer.stop()
        client.close()


def test_featurise_by_name_skips_an_unreadable_item_and_says_so(celery_worker):
    project = make_project(modality="image", labels=("0", "1"))
    good = "id,pixels\na,0 1 2 3\nb,4 5 6 16\nc,1 1 1 1\n"
    import_items(project=project, stream=io.BytesIO(good.encode()), file_format="csv", source_name="img.csv",
                 featurise=False)
    Item.objects.create(project=project, external_id="odd", data={"pixels": "1 2 3"})  # stored before the check
    client = celery_client()
    try:
        result = client.send_task("workbench.featurise", kwargs={"project_id": project.pk}).get(timeout=120)
    finally:
        client.backend.result_consumer.stop()
        client.close()

    assert result["status"] == "cold_start" and result["featurised"] == 3
    assert result["skipped"] == 1
    assert result["skipped_items"] == ["item 'odd': image 0 has 3 pixels; this project's images have 4"]
