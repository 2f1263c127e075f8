"""Exporting a project's annotations as JSONL (one line per labelled item) or CSV (one row per annotation).

The JSONL file re-imports as seed labels: each line has the item's id, its
payload fields (text, pixels or columns) and its majority label, plus every
annotation with annotator, source, seconds and time. Files are written to a
temporary name and renamed, so a reader never sees half an export. The REST
API streams the same text from `export_chunks`.

CSV is for spreadsheets, so a text cell that a spreadsheet would run as a
formula (one starting with = + - @, a tab or a carriage return: OWASP's CSV
injection list) is written with a ' in front. JSONL is written as stored.
"""
from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from django.conf import settings
from django.utils import timezone

from annotate.errors import WorkbenchError
from annotate.models import Annotation, Item, Project
from annotate.selectors import training_labels

FORMATS = ("jsonl", "csv")
CHUNK = 5_000
CSV_COLUMNS = ["item_id", "label", "annotator", "source", "seconds", "cost", "created_at", "majority_label"]
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: str) -> str:
    """A text cell a spreadsheet shows as text: one it would read as a formula gets a leading '."""
    return "'" + value if value.startswith(FORMULA_STARTS) else value


@dataclass
class ExportCounts:
    """Filled in while an export's chunks are consumed."""

    items: int = 0
    annotations: int = 0


def export_chunks(
    *, project: Project, file_format: str, counts: ExportCounts | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Iterator[str]:
    """The export's text in pieces of up to CHUNK items, for a file or an HTTP stream.

    The format is checked now, so a caller can answer an error before it
    starts writing; the database is read as the pieces are consumed.
    Raises WorkbenchError for an unknown format.
    """
    if file_format not in FORMATS:
        raise WorkbenchError(f"export format {file_format!r} is not one of {list(FORMATS)}")
    return _chunks(project, file_format, counts if counts is not None else ExportCounts(), progress)


def _chunks(project: Project, file_format: str, counts: ExportCounts,
            progress: Callable[[int, int], None] | None) -> Iterator[str]:
    item_ids, labels = training_labels(project)
    majority = dict(zip(item_ids, labels))
    counts.items = len(item_ids)
    buffer = io.StringIO()
    writer = csv.writer(buffer) if file_format == "csv" else None
    if writer:
        writer.writerow(CSV_COLUMNS)
    for start in range(0, len(item_ids), CHUNK):
        chunk = item_ids[start:start + CHUNK]
        items = dict(Item.objects.filter(project=project, pk__in=chunk).values_list("id", "external_id"))
        data = dict(Item.objects.filter(project=project, pk__in=chunk).values_list("id", "data"))
        by_item: dict[int, list[dict]] = {}
        rows = (Annotation.objects.filter(project=project, item_id__in=chunk)
                .order_by("item_id", "id")
                .values_list("item_id", "label__name", "annotator__username", "source", "seconds", "cost",
                             "created_at"))
        for item_id, label, annotator, source, seconds, cost, created_at in rows:
            counts.annotations += 1
            record = {"label": label, "annotator": annotator, "source": source, "seconds": seconds,
                      "cost": str(cost), "created_at": created_at.isoformat()}
            if writer:
                writer.writerow([csv_cell(items[item_id]), csv_cell(label), csv_cell(annotator or ""), source,
                                 "" if seconds is None else seconds, cost, record["created_at"],
                                 csv_cell(majority[item_id])])
            else:
                by_item.setdefault(item_id, []).append(record)
        if not writer:
            for item_id in chunk:
                line = {"id": items[item_id], **_payload_fields(project, data[item_id]),
                        "label": majority[item_id], "annotations": by_item.get(item_id, [])}
                buffer.write(json.dumps(line, ensure_ascii=False) + "\n")
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
        if progress:
            progress(min(start + CHUNK, len(item_ids)), len(item_ids))
    if buffer.tell():  # a CSV header with no annotations under it
        yield buffer.getvalue()


def annotations_export(
    *, project: Project, file_format: str = "jsonl", path: str | Path | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict:
    """Write the export; returns {"path", "format", "items", "annotations"}.

    Raises WorkbenchError for an unknown format or an unwritable path (nothing is written).
    """
    counts = ExportCounts()
    chunks = export_chunks(project=project, file_format=file_format, counts=counts, progress=progress)
    if path is None:
        stamp = timezone.now().strftime("%Y%m%dT%H%M%S")
        path = settings.DATA_DIR / "exports" / f"project-{project.pk}-{stamp}.{file_format}"
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".partial")
        out = partial.open("w", encoding="utf-8", newline="")
    except OSError as exc:
        raise WorkbenchError(f"cannot write the export to {str(path)!r}: {exc.strerror}") from None
    try:
        with out:
            for text in chunks:
                out.write(text)
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return {"path": str(path), "format": file_format, "items": counts.items, "annotations": counts.annotations}


def _payload_fields(project: Project, data: dict) -> dict:
    """The item's fields as the importer reads them back (meta fields flattened)."""
    fields = {k: v for k, v in data.items() if k != "meta"}
    fields.update(data.get("meta") or {})
    return fields
