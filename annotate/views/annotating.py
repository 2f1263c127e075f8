"""The annotate screen: serve, label, skip, undo. Plain forms, keyboard shortcuts in annotate.js."""
from django.contrib import messages
from django.shortcuts import redirect, render

from annotate.access import Action
from annotate.errors import QueueClosed, WorkbenchError
from annotate.selectors import annotator_progress, budget_left
from annotate.services.annotations import annotation_create, annotation_undo_last, assignment_skip
from annotate.services.queue import queue_next_item
from annotate.views.common import WRITE, project_view


def _pixel_cells(data: dict) -> dict | None:
    """A square greyscale image as SVG cells (x, y, grey 0-255, dark on light); None when not square."""
    values = [float(v) for v in str(data.get("pixels", "")).replace(",", " ").split()]
    side = int(round(len(values) ** 0.5))
    if not values or side * side != len(values):
        return None
    top = max(values) or 1.0
    cells = [(k % side, k // side, int(255 - 255 * v / top)) for k, v in enumerate(values)]
    return {"side": side, "cells": cells}


def _table_rows(data: dict) -> list[tuple[str, object]]:
    return list(data.items())


@project_view(Action.ANNOTATE)
def annotate_page(request, project):
    context = {"project": project, "labels": list(project.labels.all())}
    try:
        assignment = queue_next_item(project=project, annotator=request.user)
    except QueueClosed as closed:
        context.update(closed=str(closed), closed_code=closed.code)
    else:
        item = assignment.item
        context.update(
            assignment=assignment, item=item,
            text=item.text if project.modality == "text" else None,
            table=_table_rows(item.data) if project.modality == "tabular" else None,
            image=_pixel_cells(item.data) if project.modality == "image" else None,
        )
    project.refresh_from_db(fields=["label_count", "cost_spent"])
    context.update(budget=budget_left(project), mine=annotator_progress(project, request.user))
    return render(request, "annotate/annotate.html", context)


def _item_id(request) -> int | None:
    try:
        return int(request.POST.get("item", ""))
    except ValueError:
        return None


@project_view(Action.ANNOTATE, WRITE)
def annotate_submit(request, project):
    pk = project.pk
    item_id = _item_id(request)
    if item_id is None:
        messages.error(request, "The form did not say which item was labelled.")
        return redirect("annotate", pk=pk)
    try:
        annotation_create(project=project, annotator=request.user, item_id=item_id, label=request.POST.get("label", ""))
    except WorkbenchError as exc:
        messages.error(request, str(exc))
    return redirect("annotate", pk=pk)


@project_view(Action.ANNOTATE, WRITE)
def annotate_skip(request, project):
    pk = project.pk
    item_id = _item_id(request)
    try:
        if item_id is None:
            raise WorkbenchError("The form did not say which item to skip.")
        assignment_skip(project=project, annotator=request.user, item_id=item_id)
    except WorkbenchError as exc:
        messages.error(request, str(exc))
    return redirect("annotate", pk=pk)


@project_view(Action.ANNOTATE, WRITE)
def annotate_undo(request, project):
    pk = project.pk
    try:
        annotation_undo_last(project=project, annotator=request.user)
        messages.info(request, "Your last label was taken back; the item is shown again.")
    except WorkbenchError as exc:
        messages.error(request, str(exc))
    return redirect("annotate", pk=pk)
