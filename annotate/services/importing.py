"""Importing items from CSV or JSONL, streamed, validated row by row.

Rules (documented in docs/importing.md):

- Files are UTF-8 (a BOM is allowed). CSV has a header row; "row N" counts
  data rows from 1. JSONL has one object per line; "line N" counts lines.
- Text projects need a `text` field; tabular projects take every other
  column as a feature. `id` (or `external_id`) names the item; without it the
  id is `sha1:` + a hash of the content, so identical rows count as duplicates.
  `label`, when present and not empty, must be in the label set and imports
  the item as already labelled (a seed set).
- An id repeated within the file, or already in the project, is an error;
  with `skip_existing` ids already in the project are skipped instead.
- By default the import is all-or-nothing: any bad row fails it and nothing
  is written. With `skip_bad_rows` bad rows are reported and left out.
- Values are checked for what the project's featuriser reads, so a bad row
  fails here, not later in every featurising run: `text` is a string; all
  images of a project have the same pixel count; a tabular number fits a
  float32. Column and field names have at most MAX_COLUMN_NAME_CHARS characters.
- Every import that stops, for any reason, ends its ImportJob `failed` with a
  message (a worker killed mid-import: see annotate.services.uploads).
"""
from __future__ import annotations

import hashlib
import json
import math
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Callable, Iterator

from django.conf import settings
from django.db import connection, transaction
from django.db.models import QuerySet
from django.utils import timezone

from annotate.errors import WorkbenchError
from annotate.models import Annotation, AnnotationSource, ImportJob, ImportStatus, Item, Modality, Project
from annotate.services.import_readers import MAX_COLUMN_NAME_CHARS, FatalFileError, detect_format, read_rows

MAX_REPORTED_ERRORS = 100
ID_FIELDS = ("id", "external_id")
RESERVED = {"id", "external_id", "label"}
# numpy.finfo(numpy.float32).max: feature rows are stored as float32, so a larger number cannot be featurised.
FLOAT32_MAX = 3.4028234663852886e38


class ImportFailed(WorkbenchError):
    """The file was rejected; `errors` lists what and where. Nothing was written."""

    def __init__(self, errors: list[str], job: ImportJob | None = None) -> None:
        self.errors = errors
        self.job = job
        super().__init__("; ".join(errors[:5]) + (f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""))


class RowInvalid(Exception):
    pass


@dataclass
class ImportReport:
    job_id: int
    status: str
    rows_read: int = 0
    rows_imported: int = 0
    rows_skipped: int = 0
    labels_imported: int = 0
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


@dataclass
class _Draft:
    where: str
    external_id: str
    data: dict[str, Any]
    label: str | None


def _content_id(data: dict[str, Any]) -> str:
    canonical = json.dumps(data, sort_keys=True, ensure_ascii=False).encode()
    return "sha1:" + hashlib.sha1(canonical).hexdigest()


def _text_check(name: str, text: str) -> None:
    """Refuse text a database cannot store: PostgreSQL has no NUL, and no driver encodes a lone surrogate."""
    if "\x00" in text:
        raise RowInvalid(f"field {name!r} contains a NUL character")
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise RowInvalid(f"field {name!r} is not valid Unicode (a lone surrogate such as \\ud800)") from None


def json_kind(value: Any) -> str:
    """How a value reads in JSON, for messages: "null", "true", "the number 42", "the string 'x'", "a list"."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return f"the number {_number_shown(value)}"
    if isinstance(value, str):
        return f"the string {_number_shown(value)}"
    return f"a {type(value).__name__}"


def _number_shown(value: Any) -> str:
    """A number (or text read as one) for a message, shortened when long."""
    if isinstance(value, int) and abs(value) >= 10**20:
        return f"{str(value)[:12]}... ({len(str(abs(value))):,} digits)"
    if isinstance(value, str) and len(value) > 24:
        return f"{value[:12]!r}... ({len(value):,} characters)"
    return repr(value) if isinstance(value, str) else str(value)


def _feature_number_check(name: str, value: Any) -> None:
    """A tabular value that reads as a number must fit a float32 (text that is no number is a category)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return
        if math.isnan(number):  # "nan": the tabular featuriser reads it as a category
            return
    else:
        number = value
    if not abs(number) <= FLOAT32_MAX:  # int or float: compared exactly, so 10**400 fails too
        raise RowInvalid(
            f"field {name!r} is {_number_shown(value)}, out of range: numbers must be finite and between "
            "-3.4e38 and 3.4e38 (features are stored as 32-bit floats)"
        )


def _scalar(name: str, value: Any, limit: int) -> Any:
    _text_check(name, name)
    if isinstance(value, (dict, list)):
        raise RowInvalid(f"field {name!r} must be a single value, not a {type(value).__name__}")
    if isinstance(value, float) and not math.isfinite(value):  # JSON lines may hold NaN, Infinity or 1e999
        raise RowInvalid(f"field {name!r} is {value}; numbers must be finite")
    if isinstance(value, str):
        if len(value) > limit:
            raise RowInvalid(
                f"field {name!r} has {len(value):,} characters; the limit is {limit:,} (IMPORT_MAX_FIELD_CHARS)"
            )
        _text_check(name, value)
    return value


class RowValidator:
    """Turns one parsed row into an item draft, or raises RowInvalid."""

    def __init__(self, project: Project) -> None:
        self.project = project
        self.labels = set(project.labels.values_list("name", flat=True))
        self.label_list = ", ".join(sorted(self.labels))
        self.max_chars = settings.IMPORT_MAX_FIELD_CHARS  # read once: a settings lookup per field showed in profiles
        self.image_size = _ImageSize(project) if project.modality == Modality.IMAGE else None

    def __call__(self, where: str, row: dict[str, Any]) -> _Draft:
        if "__error__" in row:
            raise RowInvalid(row["__error__"])
        # "annotations" is the per-annotator history our export writes; on import `label` carries the label.
        cleaned = {}
        for position, (key, value) in enumerate(row.items(), start=1):
            name = str(key)
            if len(name) > MAX_COLUMN_NAME_CHARS:
                raise RowInvalid(
                    f"field {position} ({name[:40]!r}...) has a name of {len(name):,} characters; "
                    f"the limit is {MAX_COLUMN_NAME_CHARS}"
                )
            if name != "annotations":
                cleaned[name.strip()] = _scalar(name, value, self.max_chars)
        row = cleaned
        external_id = next((row[f] for f in ID_FIELDS if row.get(f) not in (None, "")), None)
        label = row.get("label")
        label = None if label is None or (isinstance(label, str) and not label.strip()) else str(label).strip()
        if label is not None and label not in self.labels:
            raise RowInvalid(f"label {label!r} is not in the label set {{{self.label_list}}}")
        fields = {k: v for k, v in row.items() if k not in RESERVED}
        if self.project.modality == Modality.TEXT:
            if "text" not in fields:
                raise RowInvalid("missing field 'text'")
            text = fields.pop("text")
            if not isinstance(text, str):
                raise RowInvalid(f"field 'text' must be a string, not {json_kind(text)}")
            if not text.strip():
                raise RowInvalid("field 'text' is empty")
            data: dict[str, Any] = {"text": text}
            if fields:
                data["meta"] = fields
        elif self.project.modality == Modality.IMAGE:
            pixels = fields.pop("pixels", None)
            if pixels is None:
                raise RowInvalid("missing field 'pixels' (intensities separated by spaces)")
            self.image_size.check(where, _pixels_check(pixels))
            data = {"pixels": str(pixels).strip()}
            if fields:
                data["meta"] = fields
        else:
            if not fields:
                raise RowInvalid("no feature columns (every column is id or label)")
            for name, value in fields.items():
                _feature_number_check(name, value)
            data = fields
        if external_id is None:
            external_id = _content_id(data)
        external_id = str(external_id).strip()
        if len(external_id) > 255:
            raise RowInvalid(f"id has {len(external_id)} characters; the limit is 255")
        return _Draft(where, external_id, data, label)


class _ImageSize:
    """The pixel count every image of the project must have.

    The featuriser fits one size for the project (learners.ml.featurisers.ImagePixels), and an image
    of another size cannot be featurised. The size is that of the project's fitted image_pixels
    feature space, else of its first item, else of the first image of this file.
    """

    def __init__(self, project: Project) -> None:
        self.size: int | None = None
        self.source = ""
        from learners.models import FeatureSpace  # lazily: the human side reads the machine side's fit only here

        space = FeatureSpace.objects.filter(project=project, featuriser="image_pixels").order_by("-pk").first()
        if space is not None:
            self.size, self.source = space.dim, "this project's images have"
            return
        first = Item.objects.filter(project=project).order_by("pk").values_list("external_id", "data").first()
        if first is not None:
            pixels = first[1].get("pixels") if isinstance(first[1], dict) else None
            self.size = len(str(pixels or "").replace(",", " ").split()) or None
            self.source = f"the project's first item, {first[0]!r}, has"

    def check(self, where: str, count: int) -> None:
        if self.size is None:
            self.size, self.source = count, f"the first image of this file ({where}) has"
        elif count != self.size:
            raise RowInvalid(
                f"field 'pixels' has {count:,} values, but {self.source} {self.size:,}: "
                "every image of a project has the same pixel count"
            )


def _pixels_check(pixels: Any) -> int:
    """Pixels are non-negative numbers separated by spaces or commas; returns how many."""
    parts = str(pixels).replace(",", " ").split()
    if not parts:
        raise RowInvalid("field 'pixels' is empty")
    for k, part in enumerate(parts):
        try:
            value = float(part)
        except ValueError:
            raise RowInvalid(f"field 'pixels': value {k + 1} ({part[:20]!r}) is not a number") from None
        if not math.isfinite(value) or value < 0:
            raise RowInvalid(f"field 'pixels': value {k + 1} ({part[:20]!r}) must be a finite number >= 0")
    return len(parts)


def _cold_start_priority(seed: int, external_id: str) -> float:
    """A seeded random number in [0, 1) that depends only on the item's id."""
    digest = hashlib.blake2b(f"{seed}:{external_id}".encode(), digest_size=8).digest()
    return struct.unpack(">Q", digest)[0] / 2**64


class _Importer:
    def __init__(self, project: Project, job: ImportJob, skip_bad_rows: bool, skip_existing: bool,
                 progress: Callable[[int], None] | None) -> None:
        self.project = project
        self.job = job
        self.skip_bad_rows = skip_bad_rows
        self.skip_existing = skip_existing
        self.progress = progress
        self.validate = RowValidator(project)
        self.label_ids = dict(project.labels.values_list("name", "id"))
        self.report = ImportReport(job_id=job.pk, status=ImportStatus.RUNNING)
        self.error_count = 0

    def error(self, message: str) -> None:
        self.error_count += 1
        if len(self.report.errors) < MAX_REPORTED_ERRORS:
            self.report.errors.append(message)

    def run(self, rows: Iterator[tuple[str, dict[str, Any]]]) -> None:
        batch: list[_Draft] = []
        for where, row in rows:
            self.report.rows_read += 1
            try:
                batch.append(self.validate(where, row))
            except RowInvalid as exc:
                self.error(f"{where}: {exc}")
            if len(batch) >= settings.IMPORT_BATCH_ROWS:
                self.flush(batch)
                batch = []
        self.flush(batch)
        if self.report.rows_read == 0:
            self.error("the file has no rows")

    def flush(self, batch: list[_Draft]) -> None:
        if batch:
            self._insert(self._drop_duplicates(batch))
        if self.progress:
            self.progress(self.report.rows_read)

    def _drop_duplicates(self, batch: list[_Draft]) -> list[_Draft]:
        existing = _existing_ids(self.project, [d.external_id for d in batch])
        kept, seen = [], {}
        for draft in batch:
            if draft.external_id in seen or existing.get(draft.external_id, -1) == self.job.pk:
                self.error(f"{draft.where}: id {draft.external_id!r} appears earlier in this file")
            elif draft.external_id in existing:
                if self.skip_existing:
                    self.report.rows_skipped += 1
                else:
                    self.error(f"{draft.where}: id {draft.external_id!r} already exists in the project")
            else:
                seen[draft.external_id] = draft
                kept.append(draft)
        return kept

    def _insert(self, drafts: list[_Draft]) -> None:
        """Insert a batch in one statement: COPY on PostgreSQL, executemany on SQLite.

        bulk_create builds a model instance and prepares 13 fields per row,
        which was 70% of import time; the payload is JSON text either way.
        """
        if not drafts:
            return
        seed = self.project.cold_start_seed
        now = timezone.now()
        rows = [
            (self.project.pk, d.external_id, json.dumps(d.data, ensure_ascii=False), self.job.pk,
             _cold_start_priority(seed, d.external_id), 1 if d.label else 0, 0, bool(d.label), now)
            for d in drafts
        ]
        _items_insert(rows)
        self.report.rows_imported += len(drafts)
        labelled = {d.external_id: d.label for d in drafts if d.label}
        if labelled:
            ids = Item.objects.filter(project=self.project, external_id__in=list(labelled)).values_list(
                "external_id", "id"
            )
            Annotation.objects.bulk_create([
                Annotation(project=self.project, item_id=item_id, label_id=self.label_ids[labelled[external_id]],
                           source=AnnotationSource.IMPORT)
                for external_id, item_id in ids
            ])
            self.report.labels_imported += len(labelled)


def _existing_ids(project: Project, external_ids: list[str]) -> dict[str, int | None]:
    """external_id -> import_job_id of the given ids already in the project."""
    if connection.vendor == "postgresql":
        # One array parameter; psycopg spends ~1 s per 100k rows splitting a 5,000-placeholder IN list.
        quote = connection.ops.quote_name
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT {quote('external_id')}, {quote('import_job_id')} FROM {quote(Item._meta.db_table)} "
                f"WHERE {quote('project_id')} = %s AND {quote('external_id')} = ANY(%s)",
                [project.pk, external_ids],
            )
            return dict(cursor.fetchall())
    return dict(
        Item.objects.filter(project=project, external_id__in=external_ids).values_list("external_id", "import_job_id")
    )


_ITEM_COLUMNS = ("project_id", "external_id", "data", "import_job_id", "priority", "annotation_count",
                 "lease_count", "done", "created_at")


def _items_insert(rows: list[tuple]) -> None:
    quote = connection.ops.quote_name
    table = quote(Item._meta.db_table)
    columns = ", ".join(quote(c) for c in _ITEM_COLUMNS)
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            with cursor.cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
        else:
            created_at = connection.ops.adapt_datetimefield_value(rows[0][-1])
            cursor.executemany(
                f"INSERT INTO {table} ({columns}) VALUES ({', '.join(['%s'] * len(_ITEM_COLUMNS))})",
                [row[:-1] + (created_at,) for row in rows],
            )


def import_items(
    *, project: Project, stream: IO[bytes], file_format: str, source_name: str,
    skip_bad_rows: bool = False, skip_existing: bool = False, user=None, task_id: str = "",
    progress: Callable[[int], None] | None = None, featurise: bool = True,
) -> ImportReport:
    """Import items (and optional seed labels) from a CSV or JSONL byte stream.

    The job record is committed first so a failure is recorded; the items go
    in one transaction that is rolled back on any bad row unless
    `skip_bad_rows`. Memory is bounded by settings.IMPORT_BATCH_ROWS.

    Raises
    ------
    ImportFailed
        With every error (up to 100) naming its row or line.
    """
    job = _queued_job_start(task_id) if task_id else None  # accepted from an upload: its job runs now
    if job is None:
        job = ImportJob.objects.create(
            project=project, source_name=source_name[:255], file_format=file_format, task_id=task_id or "",
            options={"skip_bad_rows": skip_bad_rows, "skip_existing": skip_existing}, created_by=user,
        )
    if task_id:  # a job of this task still running is a run whose worker died; its message came again
        import_jobs_running_fail(
            ImportJob.objects.filter(task_id=task_id).exclude(pk=job.pk),
            f"the worker running this import stopped before it finished; the task was delivered again "
            f"and import job {job.pk} took over. Nothing was imported by this run.",
        )
    importer = _Importer(project, job, skip_bad_rows, skip_existing, progress)
    try:
        with transaction.atomic():
            try:
                importer.run(read_rows(stream, file_format))
            except FatalFileError as exc:
                importer.error(str(exc))
                raise ImportFailed(importer.report.errors) from None
            if importer.error_count and (not skip_bad_rows or importer.report.rows_imported == 0):
                raise ImportFailed(importer.report.errors)
            from learners.models import WorkKind
            from learners.services.work import work_request

            if importer.report.labels_imported:
                work_request(project_id=project.pk, kind=WorkKind.RETRAIN, reason="seed labels imported", force=True)
            elif importer.report.rows_imported and featurise:
                work_request(project_id=project.pk, kind=WorkKind.FEATURISE, reason="items imported")
    except ImportFailed as exc:
        report = importer.report
        report.status = ImportStatus.FAILED
        report.rows_imported = report.labels_imported = report.rows_skipped = 0
        _finish(job, report, importer.error_count)
        exc.job = job
        raise
    except BaseException as exc:  # anything else (a bug, the database, Ctrl-C): the job must not stay "running"
        report = importer.report
        report.status = ImportStatus.FAILED
        report.rows_imported = report.labels_imported = report.rows_skipped = 0
        stopped = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        report.errors = [f"the import stopped ({stopped}) with {report.rows_read:,} of the file's rows read; "
                         "nothing was imported", *report.errors]
        _finish(job, report, importer.error_count + 1)
        raise
    report = importer.report
    report.status = ImportStatus.SUCCEEDED
    report.rows_skipped += importer.error_count
    _finish(job, report, importer.error_count)
    return report


def _finish(job: ImportJob, report: ImportReport, error_count: int) -> None:
    errors = list(report.errors)
    if error_count > len(errors):
        errors.append(f"... and {error_count - len(errors)} more errors")
    report.errors = errors
    ImportJob.objects.filter(pk=job.pk).update(
        status=report.status, rows_read=report.rows_read, rows_imported=report.rows_imported,
        rows_skipped=report.rows_skipped, labels_imported=report.labels_imported,
        errors=errors, finished_at=timezone.now(),
    )


def _queued_job_start(task_id: str) -> ImportJob | None:
    """The job queued for `task_id`, now running; None when there is none (or another delivery took it)."""
    job = ImportJob.objects.filter(task_id=task_id, status=ImportStatus.QUEUED).first()
    if job is None or not ImportJob.objects.filter(pk=job.pk, status=ImportStatus.QUEUED).update(
            status=ImportStatus.RUNNING):
        return None
    job.status = ImportStatus.RUNNING
    return job


def import_jobs_running_fail(jobs: QuerySet[ImportJob], message: str) -> int:
    """Mark those of `jobs` still running as failed with `message`; returns how many.

    One conditional UPDATE: a job that finished meanwhile keeps its own result.
    """
    return jobs.filter(status=ImportStatus.RUNNING).update(
        status=ImportStatus.FAILED, errors=[message], rows_imported=0, rows_skipped=0, labels_imported=0,
        finished_at=timezone.now(),
    )


def import_file(*, project: Project, path: str | Path, file_format: str | None = None, **options) -> ImportReport:
    path = Path(path)
    if not path.is_file():
        raise WorkbenchError(f"no file at {path}")
    with path.open("rb") as stream:
        return import_items(
            project=project, stream=stream, file_format=file_format or detect_format(path.name),
            source_name=path.name, **options,
        )
