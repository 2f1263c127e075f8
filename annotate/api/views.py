"""The queue over JSON: lease the next item, label it, skip it, undo, read the queue's status.

These serve scripts, load tests and other front ends through the same
services as the UI. Every endpoint looks the project up first through
`annotate.access.project_for` (annotate: members; view: members and staff),
so an outsider gets the same 404 for an existing and a missing project
before any body is read. The URL that labels (`annotations/`, POST) lists
the project's annotations on GET.
"""
from django.db.models import F
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.decorators import api_view
from rest_framework.generics import GenericAPIView
from rest_framework.response import Response

from annotate.access import ID_MAX, Action, project_for
from annotate.api.bodies import StrictBody
from annotate.api.errors import error_response, error_responses
from annotate.errors import QueueClosed, WorkbenchError
from annotate.models import Annotation
from annotate.selectors import queue_status
from annotate.services.annotations import annotation_create, annotation_undo_last, assignment_skip
from annotate.services.queue import queue_next_item


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


class ServedItemOut(serializers.Serializer):
    id = serializers.IntegerField()
    external_id = serializers.CharField()
    data = serializers.JSONField()


class PredictionOut(serializers.Serializer):
    label_id = serializers.IntegerField()
    confidence = serializers.FloatField(allow_null=True)
    model_version = serializers.IntegerField(allow_null=True)


class LeaseOut(serializers.Serializer):
    """A leased item, or `item: null` with why the queue is closed."""

    item = ServedItemOut(allow_null=True)
    lease_expires_at = serializers.DateTimeField(required=False)
    prediction = PredictionOut(required=False, allow_null=True)
    code = serializers.CharField(required=False, help_text="When item is null: budget_spent, quota_spent or "
                                                           "queue_empty.")
    detail = serializers.CharField(required=False)


class AnnotationIn(StrictBody):
    item = serializers.IntegerField(min_value=1, max_value=ID_MAX)
    label = serializers.CharField(max_length=100)


class AnnotationCreatedOut(serializers.Serializer):
    id = serializers.IntegerField()
    item = serializers.IntegerField()
    label = serializers.CharField()


class ItemIn(StrictBody):
    item = serializers.IntegerField(min_value=1, max_value=ID_MAX)


class AnnotationOut(serializers.ModelSerializer):
    item_external_id = serializers.CharField(read_only=True)
    label = serializers.CharField(source="label_name", read_only=True)
    annotator = serializers.CharField(source="annotator_name", read_only=True, allow_null=True,
                                      help_text="Username; null for imported labels.")

    class Meta:
        model = Annotation
        fields = ["id", "item", "item_external_id", "label", "annotator", "source", "seconds", "cost", "created_at"]
        read_only_fields = fields


@extend_schema(tags=["queue"], summary="Lease the next item to label (a POST: it changes state)", request=None,
               responses={200: LeaseOut, **error_responses(403, 404)})
@api_view(["POST"])
def next_item(request, pk: int):
    project = project_for(request.user, pk, Action.ANNOTATE)
    try:
        assignment = queue_next_item(project=project, annotator=request.user)
    except QueueClosed as exc:
        return Response({"item": None, "code": exc.code, "detail": str(exc)})
    except WorkbenchError as exc:
        return error_response(exc)
    return Response(assignment_json(assignment))


@extend_schema(tags=["annotations"])
class ProjectAnnotations(GenericAPIView):
    serializer_class = AnnotationOut

    @extend_schema(summary="The project's annotations, oldest first",
                   responses={200: AnnotationOut(many=True), **error_responses(400, 404)})
    def get(self, request, pk: int):
        project = project_for(request.user, pk, Action.VIEW)
        annotations = (
            Annotation.objects.filter(project=project)
            .annotate(item_external_id=F("item__external_id"), label_name=F("label__name"),
                      annotator_name=F("annotator__username"))
            .order_by("id")
        )
        page = self.paginate_queryset(annotations)
        return self.get_paginated_response(AnnotationOut(page, many=True).data)

    @extend_schema(summary="Label an item you were served", request=AnnotationIn,
                   responses={201: AnnotationCreatedOut, **error_responses(400, 403, 404, 409)})
    def post(self, request, pk: int):
        project = project_for(request.user, pk, Action.ANNOTATE)
        data = AnnotationIn(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            annotation = annotation_create(
                project=project, annotator=request.user,
                item_id=data.validated_data["item"], label=data.validated_data["label"],
            )
        except WorkbenchError as exc:
            return error_response(exc)
        return Response({"id": annotation.pk, "item": annotation.item_id, "label": annotation.label.name},
                        status=status.HTTP_201_CREATED)


@extend_schema(tags=["queue"], summary="Give back an item you were served; you will not be served it again", request=ItemIn,
               responses={204: None, **error_responses(400, 403, 404, 409)})
@api_view(["POST"])
def skip(request, pk: int):
    project = project_for(request.user, pk, Action.ANNOTATE)
    data = ItemIn(data=request.data)
    data.is_valid(raise_exception=True)
    try:
        assignment_skip(project=project, annotator=request.user, item_id=data.validated_data["item"])
    except WorkbenchError as exc:
        return error_response(exc)
    return Response(status=status.HTTP_204_NO_CONTENT)


@extend_schema(tags=["queue"], summary="Take back your newest label and be served that item again", request=None,
               responses={200: LeaseOut, **error_responses(400, 403, 404)})
@api_view(["POST"])
def undo(request, pk: int):
    project = project_for(request.user, pk, Action.ANNOTATE)
    try:
        assignment = annotation_undo_last(project=project, annotator=request.user)
    except WorkbenchError as exc:
        return error_response(exc)
    return Response(assignment_json(assignment))


@extend_schema(tags=["queue"], summary="Queue counts, budget left and the current model (members and staff)",
               responses={200: OpenApiTypes.OBJECT, **error_responses(404)})
@api_view(["GET"])
def status_view(request, pk: int):
    return Response(queue_status(project_for(request.user, pk, Action.VIEW)))
