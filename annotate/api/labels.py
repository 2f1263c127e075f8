"""A project's label set: list (members), add, rename, reorder and delete (owner)."""
from __future__ import annotations

from django.db.models import Count
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import NotFound
from rest_framework.generics import GenericAPIView
from rest_framework.response import Response

from annotate.access import Action, project_for
from annotate.api.bodies import StrictBody
from annotate.api.errors import error_response, error_responses
from annotate.errors import WorkbenchError
from annotate.models import Label, Project
from annotate.services.labels import MAX_NAME_CHARS, MAX_POSITION, label_create, label_delete, label_update


class LabelOut(serializers.ModelSerializer):
    annotations = serializers.IntegerField(source="annotation_count", read_only=True,
                                           help_text="Annotations with this label; a label with any cannot "
                                                     "be deleted.")

    class Meta:
        model = Label
        fields = ["id", "name", "position", "annotations"]
        read_only_fields = fields


class LabelIn(StrictBody):
    name = serializers.CharField(max_length=MAX_NAME_CHARS)
    position = serializers.IntegerField(min_value=0, max_value=MAX_POSITION, required=False,
                                        help_text="Place among the buttons; default: after the last label.")


class LabelChange(StrictBody):
    name = serializers.CharField(max_length=MAX_NAME_CHARS, required=False)
    position = serializers.IntegerField(min_value=0, max_value=MAX_POSITION, required=False)


def _labels(project: Project):
    return Label.objects.filter(project=project).annotate(annotation_count=Count("annotations")).order_by("position", "id")


def _label(project: Project, label_id: int) -> Label:
    label = _labels(project).filter(pk=label_id).first()
    if label is None:
        raise NotFound(f"Project {project.pk} has no label {label_id}.")
    return label


@extend_schema(tags=["labels"])
class LabelList(GenericAPIView):
    serializer_class = LabelOut
    pagination_class = None  # a label set is short, and its order is the point

    @extend_schema(summary="The label set, in button order", responses={200: LabelOut(many=True),
                                                                       **error_responses(404)})
    def get(self, request, pk: int):
        project = project_for(request.user, pk, Action.VIEW)
        return Response(LabelOut(_labels(project), many=True).data)

    @extend_schema(summary="Add a label (owner)", request=LabelIn,
                   responses={201: LabelOut, **error_responses(400, 403, 404)})
    def post(self, request, pk: int):
        project = project_for(request.user, pk, Action.MANAGE)
        data = LabelIn(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            label = label_create(project=project, **data.validated_data)
        except WorkbenchError as exc:
            return error_response(exc)
        return Response(LabelOut(_label(project, label.pk)).data, status=status.HTTP_201_CREATED)


@extend_schema(tags=["labels"])
class LabelDetail(GenericAPIView):
    serializer_class = LabelOut

    @extend_schema(summary="A label", responses={200: LabelOut, **error_responses(404)})
    def get(self, request, pk: int, label_id: int):
        return Response(LabelOut(_label(project_for(request.user, pk, Action.VIEW), label_id)).data)

    @extend_schema(summary="Rename or move a label (owner); its annotations follow it", request=LabelChange,
                   responses={200: LabelOut, **error_responses(400, 403, 404)})
    def patch(self, request, pk: int, label_id: int):
        project = project_for(request.user, pk, Action.MANAGE)
        label = _label(project, label_id)
        data = LabelChange(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            label_update(label=label, **data.validated_data)
        except WorkbenchError as exc:
            return error_response(exc)
        return Response(LabelOut(_label(project, label.pk)).data)

    @extend_schema(summary="Delete a label no annotation uses (owner)",
                   responses={204: None, **error_responses(403, 404, 409)})
    def delete(self, request, pk: int, label_id: int):
        project = project_for(request.user, pk, Action.MANAGE)
        try:
            label_delete(label=_label(project, label_id))
        except WorkbenchError as exc:
            return error_response(exc)
        return Response(status=status.HTTP_204_NO_CONTENT)
