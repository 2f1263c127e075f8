"""Exporting a project's annotations as JSONL (one line per labelled item) or CSV (one row per annotation).

The JSONL file re-imports as seed labels: each line has the item's id, its
payload fields (text, pixels or columns) and its majority label, plus every
annotation with annotator, source, seconds and time. Files are written to a
temporary name and renamed, so a reader never sees half an export.
"""
from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Callable

from django.conf import settings
from django.utils import timezone

from annotate.errors import WorkbenchError
from annotate.models import Annotation, Item, Project
from annotate.selectors import training_labels

FORMATS = ("jsonl", "csv")
CHUNK = 5_000
CSV_COLUMNS = ["item_id", "label", "annotator", "source", "seconds", "cost", "created_at", "majority_label"]


def annotations_export(
    *, project: Project, file_format: str = "jsonl", path: str | Path | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict:
    """Write the export; returns {"path", "format", "items", "annotations"}.

    Raises WorkbenchError for an unknown format or an unwritable path (nothing is written).
    """
    if file_format not in FORMATS:
        raise WorkbenchError(f"export format {file_format!r} is not one of {list(FORMATS)}")
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
    item_ids, labels = training_labels(project)
    majority = dict(zip(item_ids, labels))
    annotations = 0
    try:
        with out:
            writer = csv.writer(out) if file_format == "csv" else None
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
                    annotations += 1
                    record = {"label": label, "annotator": annotator, "source": source, "seconds": seconds,
                              "cost": str(cost), "created_at": created_at.isoformat()}
                    if writer:
                        writer.writerow([items[item_id], label, annotator or "", source,
                                         "" if seconds is None else seconds, cost, record["created_at"],
                                         majority[item_id]])
                    else:
                        by_item.setdefault(item_id, []).append(record)
                if not writer:
                    for item_id in chunk:
                        line = {"id": items[item_id], **_payload_fields(project, data[item_id]),
                                "label": majority[item_id], "annotations": by_item.get(item_id, [])}
                        out.write(json.dumps(line, ensure_ascii=False) + "\n")
                if progress:
                    progress(min(start + CHUNK, len(item_ids)), len(item_ids))
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return {"path": str(path), "format": file_format, "items": len(item_ids), "annotations": annotations}


def _payload_fields(project: Project, data: dict) -> dict:
    """The item's fields as the importer reads them back (meta fields flattened)."""
    fields = {k: v for k, v in data.items() if k != "meta"}
    fields.update(data.get("meta") or {})
    return fields
