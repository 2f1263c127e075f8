"""Importing items through the API: JSON rows now, or an uploaded file through a worker.

Both go through the one importer (annotate.services.importing), so the rules
and the row-level errors are those of docs/importing.md. JSON rows are
handed to it as JSONL, so its "line N" is the N-th element of `items`. A
request names no server-side path: an upload is stored under UPLOAD_DIR by
a name the server picks, and only that path reaches the worker.
"""
from __future__ import annotations

import io
import json

from drf_spectacular.utils import extend_schema_field
from kombu.exceptions import OperationalError
from rest_framework import serializers, status
from rest_framework.response import Response

from annotate.api.background import queue_unreachable, task_queued
from annotate.api.bodies import StrictBody
from annotate.api.errors import error_response
from annotate.errors import WorkbenchError
from annotate.models import Project
from annotate.services.import_readers import detect_format
from annotate.services.importing import import_items
from annotate.services.uploads import upload_import_enqueue

# What one JSON request may carry: the import runs inside the request, so bound it (rows and bytes).
MAX_JSON_ROWS = 5_000
MAX_JSON_BYTES = 20 * 1024 * 1024


@extend_schema_field({
    "type": "object",
    "properties": {
        "id": {"type": "string", "minLength": 1, "maxLength": 255,
               "description": "Your id for the item (default: a hash of its content)."},
        "text": {"type": "string", "pattern": r"\S", "description": "Text projects: the text to label."},
        "pixels": {"type": "string", "description": "Image projects: intensities separated by spaces."},
        "label": {"type": "string", "nullable": True, "description": "A name from the label set: imports the "
                                                                      "item as labelled."},
    },
    # Single values only: the importer refuses nested objects and lists.
    "additionalProperties": {"anyOf": [{"type": "string"}, {"type": "number"}, {"type": "boolean"}]},
    "description": "One item as in docs/importing.md. Text and image projects keep other fields as metadata; "
                   "tabular projects take every field but id and label as a column.",
})
class RowField(serializers.DictField):
    pass


class RowsIn(StrictBody):
    items = serializers.ListField(child=RowField(), min_length=1, max_length=MAX_JSON_ROWS)
    skip_existing = serializers.BooleanField(default=False, help_text="Skip ids already in the project.")
    skip_bad_rows = serializers.BooleanField(default=False, help_text="Import the good rows, report the bad ones.")


class UploadIn(StrictBody):
    file = serializers.FileField(help_text="UTF-8 CSV with a header row, or JSONL; named .csv, .jsonl or .ndjson.")
    skip_existing = serializers.BooleanField(default=False)
    skip_bad_rows = serializers.BooleanField(default=False)


class ImportReportOut(serializers.Serializer):
    job_id = serializers.IntegerField()
    status = serializers.CharField()
    rows_read = serializers.IntegerField()
    rows_imported = serializers.IntegerField()
    rows_skipped = serializers.IntegerField()
    labels_imported = serializers.IntegerField()
    errors = serializers.ListField(child=serializers.CharField(), help_text="Rows left out (skip_bad_rows).")


def rows_import(request, project: Project) -> Response:
    """Import JSON rows inside the request: all or nothing unless skip_bad_rows."""
    length = request.META.get("CONTENT_LENGTH") or "0"
    if length.isdigit() and int(length) > MAX_JSON_BYTES:
        return _too_large(f"the body is more than the {MAX_JSON_BYTES // 2**20} MiB")
    rows = request.data.get("items") if isinstance(request.data, dict) else None
    if isinstance(rows, list) and len(rows) > MAX_JSON_ROWS:
        return _too_large(f"{len(rows):,} rows is more than the {MAX_JSON_ROWS:,}")
    data = RowsIn(data=request.data)
    data.is_valid(raise_exception=True)
    body = "".join(json.dumps(row) + "\n" for row in data.validated_data["items"]).encode()
    try:
        report = import_items(
            project=project, stream=io.BytesIO(body), file_format="jsonl", source_name="REST API request",
            skip_bad_rows=data.validated_data["skip_bad_rows"], skip_existing=data.validated_data["skip_existing"],
            user=request.user,
        )
    except WorkbenchError as exc:
        return error_response(exc)
    return Response(report.as_dict(), status=status.HTTP_201_CREATED)


def _too_large(what: str) -> Response:
    return Response({"detail": f"{what} one JSON request may import; upload the rows as a CSV or JSONL file "
                               "instead (multipart field 'file'), which a worker imports in the background."},
                    status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE)


def upload_import(request, project: Project) -> Response:
    """Queue `workbench.import_items` for the upload (stored under a name the server picks)."""
    data = UploadIn(data=request.data)
    data.is_valid(raise_exception=True)
    upload = data.validated_data["file"]
    try:
        file_format = detect_format(upload.name)
    except WorkbenchError as exc:
        return Response({"file": [str(exc)]}, status=status.HTTP_400_BAD_REQUEST)
    try:
        task_id = upload_import_enqueue(user=request.user,
            project=project, upload=upload, file_format=file_format,
            skip_bad_rows=data.validated_data["skip_bad_rows"], skip_existing=data.validated_data["skip_existing"],
        )
    except OperationalError as exc:
        return queue_unreachable(exc)
    return task_queued(request, task_id)
