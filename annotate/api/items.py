"""Items: a filtered, paginated list, one item with its annotations, and imports (see item_imports)."""
from __future__ import annotations

import math

from django.db.models import Exists, OuterRef, Prefetch, QuerySet
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.exceptions import NotFound
from rest_framework.generics import GenericAPIView
from rest_framework.response import Response

from annotate.access import Action, project_for
from annotate.api import item_imports
from annotate.api.background import TaskQueuedOut
from annotate.api.errors import ImportErrorOut, error_responses
from annotate.api.parsers import JSONParser, MultiPartParser
from annotate.models import Annotation, Item, Label, Project

# `ordering` values; the default is the queue's own order (best first, then oldest).
ORDERINGS = {
    "priority": ("priority", "id"),
    "-priority": ("-priority", "id"),
    "id": ("id",),
    "-id": ("-id",),
}
QUEUE_ORDER = ORDERINGS["-priority"]


class FiniteFloatField(serializers.FloatField):
    """A float that is a real number: NaN passes min/max checks, so refuse it (and infinities) here."""

    def to_internal_value(self, data):
        value = super().to_internal_value(data)
        if not math.isfinite(value):
            self.fail("invalid")
        return value


class ItemFilters(serializers.Serializer):
    """Query parameters of the item list; an invalid value answers 400 naming the parameter."""

    done = serializers.BooleanField(required=False, help_text="true: items with all the labels they need.")
    labelled = serializers.BooleanField(required=False, help_text="true: items with at least one annotation "
                                                                  "(given by an annotator or imported).")
    label = serializers.CharField(required=False, max_length=100,
                                  help_text="Items with an annotation of this label name.")
    predicted_label = serializers.CharField(required=False, max_length=100,
                                            help_text="Items the current model predicts as this label name.")
    external_id = serializers.CharField(required=False, max_length=255, help_text="The item with this id.")
    min_confidence = FiniteFloatField(required=False, min_value=0, max_value=1,
                                      help_text="Items whose prediction has at least this confidence.")
    max_confidence = FiniteFloatField(required=False, min_value=0, max_value=1,
                                      help_text="Items whose prediction has at most this confidence.")
    ordering = serializers.ChoiceField(choices=list(ORDERINGS), required=False,
                                       help_text="Default: queue order (-priority, then id).")

    def _label(self, name: str) -> Label:
        project: Project = self.context["project"]
        label = Label.objects.filter(project=project, name=name).first()
        if label is None:
            names = ", ".join(project.labels.values_list("name", flat=True))
            raise serializers.ValidationError(f"{name!r} is not in the label set {{{names}}}")
        return label

    def validate_label(self, name: str) -> Label:
        return self._label(name)

    def validate_predicted_label(self, name: str) -> Label:
        return self._label(name)

    def validate(self, attrs: dict) -> dict:
        low, high = attrs.get("min_confidence"), attrs.get("max_confidence")
        if low is not None and high is not None and low > high:
            raise serializers.ValidationError({"max_confidence": "must be at least min_confidence"})
        return attrs


def items_filtered(project: Project, filters: dict) -> QuerySet[Item]:
    """The project's items narrowed by validated ItemFilters values, in the asked order."""
    items = Item.objects.filter(project=project).select_related("predicted_label")
    if "done" in filters:
        items = items.filter(done=filters["done"])
    if "labelled" in filters:
        # annotation_count is kept exact by the services, imported labels included.
        items = items.filter(annotation_count__gt=0) if filters["labelled"] else items.filter(annotation_count=0)
    if "label" in filters:
        items = items.filter(Exists(Annotation.objects.filter(item=OuterRef("pk"), label=filters["label"])))
    if "predicted_label" in filters:
        items = items.filter(predicted_label=filters["predicted_label"])
    if "external_id" in filters:
        items = items.filter(external_id=filters["external_id"])
    if "min_confidence" in filters:
        items = items.filter(confidence__gte=filters["min_confidence"])
    if "max_confidence" in filters:
        items = items.filter(confidence__lte=filters["max_confidence"])
    return items.order_by(*ORDERINGS.get(filters.get("ordering"), QUEUE_ORDER))


class ItemOut(serializers.ModelSerializer):
    predicted_label = serializers.SlugRelatedField(slug_field="name", read_only=True, allow_null=True,
                                                   help_text="The current model's prediction; null before scoring.")

    class Meta:
        model = Item
        fields = ["id", "external_id", "data", "priority", "done", "annotation_count", "predicted_label",
                  "confidence", "scored_by_version", "created_at"]
        read_only_fields = fields


class ItemAnnotationOut(serializers.ModelSerializer):
    label = serializers.SlugRelatedField(slug_field="name", read_only=True)
    annotator = serializers.SlugRelatedField(slug_field="username", read_only=True, allow_null=True)

    class Meta:
        model = Annotation
        fields = ["id", "label", "annotator", "source", "seconds", "created_at"]
        read_only_fields = fields


class ItemDetailOut(ItemOut):
    annotations = ItemAnnotationOut(many=True, read_only=True)

    class Meta(ItemOut.Meta):
        fields = [*ItemOut.Meta.fields, "annotations"]
        read_only_fields = fields


@extend_schema(tags=["items"])
class ItemList(GenericAPIView):
    serializer_class = ItemOut
    parser_classes = [JSONParser, MultiPartParser]

    @extend_schema(summary="The project's items, filtered and paginated", parameters=[ItemFilters],
                   responses={200: ItemOut(many=True), **error_responses(400, 404)})
    def get(self, request, pk: int):
        project = project_for(request.user, pk, Action.VIEW)
        filters = ItemFilters(data=request.query_params.dict(), context={"project": project})
        filters.is_valid(raise_exception=True)
        page = self.paginate_queryset(items_filtered(project, filters.validated_data))
        return self.get_paginated_response(ItemOut(page, many=True).data)

    @extend_schema(
        summary="Import items (owner): JSON rows now, or a CSV/JSONL file in the background",
        description=(
            "application/json: up to {max} rows imported before the answer (201 with the report). "
            "multipart/form-data: a `file` queued for a worker (202 with the task's id and status URL). "
            "Rows follow docs/importing.md; one bad row rejects the whole request unless skip_bad_rows."
        ).format(max=f"{item_imports.MAX_JSON_ROWS:,}"),
        request={"application/json": item_imports.RowsIn, "multipart/form-data": item_imports.UploadIn},
        responses={201: item_imports.ImportReportOut, 202: TaskQueuedOut,
                   400: ImportErrorOut, **error_responses(403, 404, 413, 503)},
    )
    def post(self, request, pk: int):
        project = project_for(request.user, pk, Action.MANAGE)
        if request.content_type.startswith("multipart/"):
            return item_imports.upload_import(request, project)
        return item_imports.rows_import(request, project)


@extend_schema(tags=["items"])
class ItemDetail(GenericAPIView):
    serializer_class = ItemDetailOut

    @extend_schema(summary="One item with its annotations", responses={200: ItemDetailOut, **error_responses(404)})
    def get(self, request, pk: int, item_id: int):
        project = project_for(request.user, pk, Action.VIEW)
        annotations = Annotation.objects.select_related("label", "annotator").order_by("id")
        item = (Item.objects.filter(project=project, pk=item_id).select_related("predicted_label")
                .prefetch_related(Prefetch("annotations", queryset=annotations)).first())
        if item is None:
            raise NotFound(f"Project {project.pk} has no item {item_id}.")
        return Response(ItemDetailOut(item).data)
