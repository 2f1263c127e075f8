"""JSON API over the same services as the UI (token or session auth).

The full REST API (listing, export, budgets, OpenAPI) grows in a later issue;
this part serves the queue to scripts, load tests and other front ends.
"""
from django.shortcuts import get_object_or_404
from rest_framework import serializers, status
from rest_framework.decorators import api_view
from rest_framework.response import Response

from annotate.errors import LeaseError, NotAMember, QueueClosed, UnknownLabel, WorkbenchError
from annotate.models import Project
from annotate.selectors import queue_status
from annotate.services.annotations import annotation_create, annotation_undo_last, assignment_skip
from annotate.services.queue import queue_next_item
from annotate.views.common import project_for_member


def _project(request, pk: int) -> Project:
    """The project; membership is checked by the service each endpoint calls
    (NotAMember answers 404, so outsiders learn nothing)."""
    return get_object_or_404(Project, pk=pk)


def _error(exc: WorkbenchError) -> Response:
    code = {
        NotAMember: status.HTTP_404_NOT_FOUND,
        UnknownLabel: status.HTTP_400_BAD_REQUEST,
        LeaseError: status.HTTP_409_CONFLICT,
        QueueClosed: status.HTTP_409_CONFLICT,
    }.get(type(exc), status.HTTP_400_BAD_REQUEST)
    body = {"detail": str(exc)}
    if isinstance(exc, QueueClosed):
        body["code"] = exc.code
    return Response(body, status=code)


def assignment_json(assignment) -> dict:
    item = assignment.item
    return {
        "item": {"id": item.pk, "external_id": item.external_id, "data": item.data},
        "lease_expires_at": assignment.expires_at.isoformat(),
        "prediction": None if item.predicted_label_id is None else {
            "label_id": item.predicted_label_id, "confidence": item.confidence,
            "model_version": item.scored_by_version,
        },
    }


@api_view(["POST"])
def next_item(request, pk: int):
    """Lease the next item (POST: it changes state)."""
    project = _project(request, pk)
    try:
        assignment = queue_next_item(project=project, annotator=request.user)
    except QueueClosed as exc:
        return Response({"item": None, "code": exc.code, "detail": str(exc)})
    return Response(assignment_json(assignment))


class AnnotationIn(serializers.Serializer):
    item = serializers.IntegerField()
    label = serializers.CharField(max_length=100)


class ItemIn(serializers.Serializer):
    item = serializers.IntegerField()


@api_view(["POST"])
def annotate(request, pk: int):
    project = _project(request, pk)
    data = AnnotationIn(data=request.data)
    data.is_valid(raise_exception=True)
    try:
        annotation = annotation_create(
            project=project, annotator=request.user,
            item_id=data.validated_data["item"], label=data.validated_data["label"],
        )
    except WorkbenchError as exc:
        return _error(exc)
    return Response({"id": annotation.pk, "item": annotation.item_id, "label": annotation.label.name},
                    status=status.HTTP_201_CREATED)


@api_view(["POST"])
def skip(request, pk: int):
    project = _project(request, pk)
    data = ItemIn(data=request.data)
    data.is_valid(raise_exception=True)
    try:
        assignment_skip(project=project, annotator=request.user, item_id=data.validated_data["item"])
    except WorkbenchError as exc:
        return _error(exc)
    return Response(status=status.HTTP_204_NO_CONTENT)


@api_view(["POST"])
def undo(request, pk: int):
    project = _project(request, pk)
    try:
        assignment = annotation_undo_last(project=project, annotator=request.user)
    except WorkbenchError as exc:
        return _error(exc)
    return Response(assignment_json(assignment))


@api_view(["GET"])
def status_view(request, pk: int):
    project, _ = project_for_member(request, pk)
    return Response(queue_status(project))
