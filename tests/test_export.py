"""Exporting annotations: JSONL that re-imports as seed labels, CSV with one row per annotation."""
import csv
import io
import json

import pytest

from annotate.errors import WorkbenchError
from annotate.models import Item
from annotate.selectors import training_labels
from annotate.services.annotations import annotation_create
from annotate.services.exporting import annotations_export, csv_cell
from annotate.services.importing import import_file, import_items
from annotate.services.queue import queue_next_item
from tests.factories import add_annotator, add_items, make_project, make_user

pytestmark = pytest.mark.django_db


def labelled(tmp_path):
    project = make_project(labels=("cat", "dog"), overlap=2, retrain_every=1000)
    add_items(project, ["purr", "bark", "meow"], priorities=[0.9, 0.8, 0.1])  # meow stays unlabelled
    alice, bob = add_annotator(project), add_annotator(project)
    votes = {"purr": ("cat", "cat"), "bark": ("dog", "cat")}
    for annotator, k in ((alice, 0), (bob, 1)):
        for _ in range(2):
            item = queue_next_item(project=project, annotator=annotator).item
            annotation_create(project=project, annotator=annotator, item_id=item.pk, label=votes[item.text][k])
    return project, alice, bob


def test_jsonl_export_re_imports_as_the_majority_labels(tmp_path):
    project, alice, bob = labelled(tmp_path)
    # purr: cat+cat; bark: dog then cat, a tie, which goes to the newest (bob's cat).
    result = annotations_export(project=project, file_format="jsonl", path=tmp_path / "out.jsonl")

    assert result == {"path": str(tmp_path / "out.jsonl"), "format": "jsonl", "items": 2, "annotations": 4}
    lines = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    by_text = {line["text"]: line for line in lines}
    assert by_text["purr"]["label"] == "cat" and by_text["bark"]["label"] == "cat"
    assert [a["label"] for a in by_text["bark"]["annotations"]] == ["dog", "cat"]
    assert {a["annotator"] for a in by_text["bark"]["annotations"]} == {alice.username, bob.username}
    assert not list(tmp_path.glob("*.partial"))

    copy = make_project(labels=("cat", "dog"))
    report = import_file(project=copy, path=tmp_path / "out.jsonl")
    assert report.labels_imported == 2
    item_ids, labels = training_labels(copy)
    texts = dict(Item.objects.filter(pk__in=item_ids).values_list("id", "data"))
    assert {texts[i]["text"]: label for i, label in zip(item_ids, labels)} == {"purr": "cat", "bark": "cat"}


def test_csv_export_has_one_row_per_annotation(tmp_path):
    project, alice, _ = labelled(tmp_path)
    result = annotations_export(project=project, file_format="csv", path=tmp_path / "out.csv")
    rows = list(csv.DictReader(io.StringIO((tmp_path / "out.csv").read_text())))
    assert result["annotations"] == len(rows) == 4
    assert {r["annotator"] for r in rows} >= {alice.username}
    assert {(r["label"], r["majority_label"]) for r in rows if r["item_id"] == "t1"} == {("dog", "cat"), ("cat", "cat")}


def test_bad_format_or_path_is_refused_and_nothing_is_written(tmp_path):
    project, _, _ = labelled(tmp_path)
    with pytest.raises(WorkbenchError, match="export format 'xml' is not one of"):
        annotations_export(project=project, file_format="xml", path=tmp_path / "out.xml")
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(WorkbenchError, match="cannot write the export to"):
        annotations_export(project=project, path=blocker / "out.jsonl")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_csv_export_neutralises_cells_a_spreadsheet_would_run_as_formulas(tmp_path):
    project = make_project(labels=("=cmd|' /C calc'!A0", "dog"), overlap=1, retrain_every=1000)
    body = "".join(json.dumps({"id": external_id, "text": text}) + "\n" for external_id, text in
                   [('=HYPERLINK("http://evil.example","x")', "one"), ("@SUM(A1)", "two"), ("-2+3", "three"),
                    ("+1", "four"), ("plain", "five")])
    import_items(project=project, stream=io.BytesIO(body.encode()), file_format="jsonl", source_name="f.jsonl")
    annotator = add_annotator(project, make_user("-alice"))
    for _ in range(5):
        item = queue_next_item(project=project, annotator=annotator).item
        annotation_create(project=project, annotator=annotator, item_id=item.pk, label="=cmd|' /C calc'!A0")

    annotations_export(project=project, file_format="csv", path=tmp_path / "out.csv")
    annotations_export(project=project, file_format="jsonl", path=tmp_path / "out.jsonl")

    rows = list(csv.DictReader(io.StringIO((tmp_path / "out.csv").read_text())))
    assert sorted(r["item_id"] for r in rows) == sorted(
        ["'+1", "'-2+3", "'=HYPERLINK(\"http://evil.example\",\"x\")", "'@SUM(A1)", "plain"])
    assert {r["label"] for r in rows} == {r["majority_label"] for r in rows} == {"'=cmd|' /C calc'!A0"}
    assert {r["annotator"] for r in rows} == {"'-alice"}
    assert {r["source"] for r in rows} == {"human"}
    exact = {json.loads(line)["id"] for line in (tmp_path / "out.jsonl").read_text().splitlines()}
    assert '=HYPERLINK("http://evil.example","x")' in exact, "JSONL keeps values exactly"


def test_csv_cell_prefixes_every_owasp_formula_start():
    assert [csv_cell(v) for v in ["=1", "+1", "-1", "@a", "\tx", "\rx", "a=1", " =1", ""]] == \
        ["'=1", "'+1", "'-1", "'@a", "'\tx", "'\rx", "a=1", " =1", ""]
