"""Importing CSV/JSONL: good files, seed labels, and every kind of bad input (nothing written)."""
import io
import json

import pytest
from django.core.management import CommandError, call_command

from annotate.models import Annotation, ImportJob, Item
from annotate.services.importing import ImportFailed, import_file, import_items
from tests.factories import make_project

pytestmark = pytest.mark.django_db


def run_import(project, body: bytes | str, fmt: str, **options):
    data = body.encode() if isinstance(body, str) else body
    return import_items(project=project, stream=io.BytesIO(data), file_format=fmt, source_name=f"f.{fmt}", **options)


def assert_rejected(project, body, fmt, *expected: str, **options) -> ImportFailed:
    with pytest.raises(ImportFailed) as failed:
        run_import(project, body, fmt, **options)
    text = "\n".join(failed.value.errors)
    for fragment in expected:
        assert fragment in text, f"{fragment!r} not in errors:\n{text}"
    assert Item.objects.filter(project=project).count() == 0
    assert Annotation.objects.filter(project=project).count() == 0
    job = ImportJob.objects.get(project=project)
    assert job.status == "failed" and job.rows_imported == 0
    return failed.value


@pytest.fixture
def project():
    return make_project(labels=("cat", "dog"))


def test_csv_import_creates_items_and_seed_labels(project):
    report = run_import(project, "id,text,label,source\n1,a cat,cat,web\n2,a dog,,web\n3,\"multi\nline\",dog,x\n", "csv")

    assert (report.rows_read, report.rows_imported, report.labels_imported) == (3, 3, 2)
    items = {i.external_id: i for i in Item.objects.filter(project=project)}
    assert items["1"].data == {"text": "a cat", "meta": {"source": "web"}}
    assert items["3"].text == "multi\nline"
    assert items["1"].done and not items["2"].done
    assert sorted(Annotation.objects.values_list("label__name", flat=True)) == ["cat", "dog"]


def test_jsonl_import_with_bom_and_generated_ids(project):
    body = "\ufeff" + '{"text": "one"}\n\n{"text": "two", "label": "dog"}\n'
    report = run_import(project, body, "jsonl")

    assert report.rows_imported == 2
    assert all(i.external_id.startswith("sha1:") for i in Item.objects.all())


def test_tabular_import_takes_every_other_column_as_features():
    project = make_project(modality="tabular", labels=("yes", "no"))
    run_import(project, "id,age,city,label\na,31,Oslo,yes\nb,,Rome,\n", "csv")

    item = Item.objects.get(external_id="a")
    assert item.data == {"age": "31", "city": "Oslo"}


def test_missing_text_column_is_rejected(project):
    assert_rejected(project, "id,body\n1,hello\n2,world\n", "csv", "row 1: missing field 'text'", "row 2:")


def test_unknown_label_names_row_and_label_set(project):
    assert_rejected(project, "id,text,label\n1,a,cat\n2,b,cta\n", "csv",
                    "row 2: label 'cta' is not in the label set {cat, dog}")


def test_bad_encoding_names_the_line(project):
    body = "id,text\n1,fine\n".encode() + b"2,caf\xe9\n"
    assert_rejected(project, body, "csv", "line 3: not valid UTF-8 (byte 0xe9")


def test_empty_file_is_rejected(project):
    assert_rejected(project, b"", "csv", "the file is empty")
    ImportJob.objects.all().delete()
    assert_rejected(project, b"", "jsonl", "the file has no rows")


def test_header_only_file_is_rejected(project):
    assert_rejected(project, "id,text\n", "csv", "the file has no rows")


def test_duplicate_ids_within_the_file_are_rejected(project):
    assert_rejected(project, "id,text\n1,a\n2,b\n1,c\n", "csv", "row 3: id '1' appears earlier in this file")


def test_duplicate_ids_across_batches_are_rejected(project, settings):
    settings.IMPORT_BATCH_ROWS = 2
    body = "".join(json.dumps({"id": f"x{i % 5}", "text": f"t{i}"}) + "\n" for i in range(7))
    assert_rejected(project, body, "jsonl", "line 6: id 'x0' appears earlier", "line 7: id 'x1' appears earlier")


def test_duplicate_content_without_ids_is_rejected(project):
    assert_rejected(project, '{"text": "same"}\n{"text": "same"}\n', "jsonl", "line 2: id 'sha1:")


def test_id_already_in_project_is_rejected_unless_skip_existing(project):
    run_import(project, "id,text\n1,a\n", "csv")
    with pytest.raises(ImportFailed) as failed:
        run_import(project, "id,text\n1,a again\n2,b\n", "csv")
    assert "row 1: id '1' already exists in the project" in failed.value.errors
    assert Item.objects.count() == 1

    report = run_import(project, "id,text\n1,a again\n2,b\n", "csv", skip_existing=True)

    assert (report.rows_imported, report.rows_skipped) == (1, 1)
    assert Item.objects.get(external_id="1").text == "a"


def test_oversized_field_is_rejected(project, settings):
    settings.IMPORT_MAX_FIELD_CHARS = 50
    assert_rejected(project, f"id,text\n1,{'x' * 51}\n", "csv",
                    "row 1: field 'text' has 51 characters; the limit is 50")


def test_ragged_csv_row_and_bad_json_are_rejected(project):
    assert_rejected(project, "id,text\n1,a,extra\n", "csv", "row 1: has 3 fields; the header has 2")
    ImportJob.objects.all().delete()
    assert_rejected(project, '{"id": 1, "text": "a"}\n{"id": 2, "text": \n[1]\n', "jsonl",
                    "line 2: not valid JSON", "line 3: must be a JSON object, not list")


def test_nested_values_and_empty_text_are_rejected(project):
    assert_rejected(project, '{"id": 1, "text": {"a": 1}}\n{"id": 2, "text": "  "}\n', "jsonl",
                    "line 1: field 'text' must be a single value", "line 2: field 'text' is empty")


def test_skip_bad_rows_imports_the_good_ones(project):
    report = run_import(project, "id,text,label\n1,a,cat\n2,b,cta\n3,c,\n", "csv", skip_bad_rows=True)

    assert (report.rows_imported, report.rows_skipped, report.status) == (2, 1, "succeeded")
    assert report.errors == ["row 2: label 'cta' is not in the label set {cat, dog}"]
    assert sorted(Item.objects.values_list("external_id", flat=True)) == ["1", "3"]


def test_every_error_is_reported_up_to_a_cap(project):
    body = "id,text,label\n" + "".join(f"{i},t{i},bad\n" for i in range(150))
    failed = assert_rejected(project, body, "csv", "row 1: label 'bad'", "row 100: label 'bad'")
    assert len(failed.errors) == 100
    assert ImportJob.objects.get().errors[-1] == "... and 50 more errors"


def test_management_command_reports_errors_and_writes_nothing(project, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("id,text,label\n1,a,cta\n")
    with pytest.raises(CommandError, match="row 1: label 'cta'"):
        call_command("import_items", project.pk, str(bad))
    good = tmp_path / "good.jsonl"
    good.write_text('{"id": "a", "text": "x"}\n')
    out = io.StringIO()
    call_command("import_items", project.pk, str(good), stdout=out)
    assert "imported 1 of 1 rows" in out.getvalue()


def test_unknown_extension_is_refused(project, tmp_path):
    path = tmp_path / "items.xlsx"
    path.write_bytes(b"x")
    with pytest.raises(Exception, match="use a .csv or .jsonl file"):
        import_file(project=project, path=path)


def test_special_characters_round_trip_exactly(project):
    text = 'tab\there, back\\slash, "quotes", newline\\n literal, café, 東京, emoji 🙂, NUL-free \u2028 end'
    run_import(project, json.dumps({"id": "é\t1", "text": text, "note": "x\\y"}) + "\n", "jsonl")

    item = Item.objects.get(project=project)
    assert item.external_id == "é\t1"
    assert item.data == {"text": text, "meta": {"note": "x\\y"}}


# --- bad input gets a clear error, and the job never stays "running" --------------------------------


def test_text_that_is_not_a_string_is_refused_as_such(project):
    body = '{"id": 1, "text": 42}\n{"id": 2, "text": null}\n{"id": 3, "text": true}\n{"id": 4, "body": "x"}\n'
    assert_rejected(project, body, "jsonl", "line 1: field 'text' must be a string, not the number 42",
                    "line 2: field 'text' must be a string, not null", "line 3: field 'text' must be a string, not true",
                    "line 4: missing field 'text'")


def test_csv_with_a_quote_left_open_at_the_end_of_the_file_is_refused_naming_the_line(project):
    body = 'id,text\n1,fine\n2,"never closed\nmore text\n'
    failed = assert_rejected(project, body, "csv", "row 2: the record starting on line 3 has a quoted field that "
                                                  "is not closed before the end of the file")
    assert 'add the missing closing "' in failed.errors[0]


def test_csv_text_after_a_closing_quote_is_refused_not_dropped(project):
    assert_rejected(project, 'id,text\n1,"ab"c\n', "csv", "row 1: ',' expected after '\"' (in the record starting "
                                                        "on line 2)")


def test_a_file_cut_off_inside_a_utf8_character_is_refused_naming_the_line(project):
    cut = "id,text\n1,ok\n2,café".encode()[:-1]  # the last byte of "é" is missing
    assert_rejected(project, cut, "csv", "line 3: the file ends in the middle of a UTF-8 character")
    ImportJob.objects.all().delete()
    cut = '{"id": 1, "text": "ok"}\n{"id": 2, "text": "naïve"}'.encode() + "東".encode()[:2]
    assert_rejected(project, cut, "jsonl", "line 2: the file ends in the middle of a UTF-8 character")


def test_a_column_name_over_the_limit_is_refused_naming_its_position(project):
    long_name = "x" * 200_000
    failed = assert_rejected(project, f"id,text,{long_name}\n1,a,b\n", "csv",
                             "header: column 3 ('xxxxxxxx", "has a name of 200,000 characters; the limit is 200")
    assert len(failed.errors[0]) < 300, "the error quotes the start of the name, not all of it"
    ImportJob.objects.all().delete()
    assert_rejected(project, json.dumps({"id": 1, "text": "a", "k" * 201: 1}) + "\n", "jsonl",
                    "line 1: field 3 ('kkkk", "has a name of 201 characters; the limit is 200")
    ImportJob.objects.all().delete()
    run_import(project, json.dumps({"id": 1, "text": "a", "k" * 200: 1}) + "\n", "jsonl")  # at the limit: fine


def test_deep_nesting_and_huge_integers_are_row_errors_and_the_command_fails_the_job(project, tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(
        json.dumps({"id": 1, "text": "fine"}) + "\n"
        + '{"id": 2, "text": ' + "[" * 5_000 + "]" * 5_000 + "}\n"
        + '{"id": 3, "text": "x", "n": ' + "7" * 5_000 + "}\n"
    )
    with pytest.raises(CommandError) as failed:
        call_command("import_items", project.pk, str(path))

    assert "line 2: is nested too deeply to read" in str(failed.value)
    assert "line 3: has a number of more than 4,300 digits; write it as a string" in str(failed.value)
    job = ImportJob.objects.get(project=project)
    assert job.status == "failed" and job.finished_at is not None and len(job.errors) == 2
    assert not Item.objects.filter(project=project).exists()


def test_an_import_that_stops_for_any_other_reason_ends_its_job_failed_with_why(project):
    def disk_fails_mid_file():  # the outside world: a read error after two lines
        yield b"id,text\n"
        yield b"1,a\n"
        raise OSError(5, "Input/output error")

    with pytest.raises(OSError):
        import_items(project=project, stream=disk_fails_mid_file(), file_format="csv", source_name="f.csv")

    job = ImportJob.objects.get(project=project)
    assert job.status == "failed" and job.finished_at is not None
    assert job.errors == ["the import stopped (OSError: [Errno 5] Input/output error) with 1 of the file's rows "
                          "read; nothing was imported"]
    assert not Item.objects.filter(project=project).exists()


def test_an_image_of_another_pixel_count_is_refused_naming_the_row_and_the_size():
    project = make_project(modality="image", labels=("0", "1"))
    assert_rejected(project, "id,pixels\na,0 1 2 3\nb,0 1 2\n", "csv",
                    "row 2: field 'pixels' has 3 values, but the first image of this file (row 1) has 4: "
                    "every image of a project has the same pixel count")
    ImportJob.objects.all().delete()
    run_import(project, "id,pixels\na,0 1 2 3\n", "csv")

    with pytest.raises(ImportFailed) as failed:
        run_import(project, "id,pixels\nb,0 1 2 3 4\n", "csv")
    assert failed.value.errors == ["row 1: field 'pixels' has 5 values, but the project's first item, 'a', has 4: "
                                   "every image of a project has the same pixel count"]

    from learners.services.features import feature_space_current

    feature_space_current(project)  # fitted: now the feature space says how big images are
    with pytest.raises(ImportFailed) as failed:
        run_import(project, '{"id": "c", "pixels": "1 2"}\n', "jsonl")
    assert failed.value.errors == ["line 1: field 'pixels' has 2 values, but this project's images have 4: "
                                   "every image of a project has the same pixel count"]
    assert Item.objects.filter(project=project).count() == 1


def test_a_tabular_number_that_does_not_fit_float32_is_refused_naming_row_and_field():
    project = make_project(modality="tabular", labels=("yes", "no"))
    body = ("id,x,city\n"
            "a,1.5,Oslo\n"
            f"b,{'9' * 5_000},Rome\n"
            "c,1e39,Oslo\n"
            "d,-inf,Oslo\n"
            "e,3e38,nan\n")  # in range, and "nan" is a category: both fine
    failed = assert_rejected(project, body, "csv",
                             "row 2: field 'x' is '999999999999'... (5,000 characters), out of range: numbers "
                             "must be finite and between -3.4e38 and 3.4e38 (features are stored as 32-bit floats)",
                             "row 3: field 'x' is '1e39', out of range", "row 4: field 'x' is '-inf', out of range")
    assert len(failed.errors) == 3
    ImportJob.objects.all().delete()
    assert_rejected(project, '{"id": "f", "x": ' + "1" * 400 + "}\n", "jsonl",
                    "line 1: field 'x' is 111111111111... (400 digits), out of range")
    ImportJob.objects.all().delete()
    report = run_import(project, '{"id": "g", "x": 1e38, "y": -2}\n', "jsonl")
    assert report.rows_imported == 1
