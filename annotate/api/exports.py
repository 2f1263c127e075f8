"""The annotations export, streamed: the same text `annotations_export` writes to a file."""
from __future__ import annotations

from django.http import StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.renderers import JSONRenderer
from rest_framework.views import APIView

from annotate.access import Action, project_for
from annotate.api.errors import error_responses
from annotate.services.exporting import FORMATS, export_chunks

MEDIA_TYPES = {"jsonl": "application/x-ndjson", "csv": "text/csv"}


class ErrorsAsJSON(BaseContentNegotiation):
    """`?format=` picks the export here, not one of DRF's renderers, so errors are always JSON."""

    def select_parser(self, request, parsers):
        return parsers[0] if parsers else None

    def select_renderer(self, request, renderers, format_suffix=None):
        return JSONRenderer(), JSONRenderer.media_type


class ExportParams(serializers.Serializer):
    format = serializers.ChoiceField(choices=list(FORMATS), required=False, default="jsonl",
                                     help_text="jsonl: one line per labelled item with its majority label "
                                               "(re-imports as seed labels); csv: one row per annotation.")


@extend_schema(tags=["annotations"])
class AnnotationsExport(APIView):
    renderer_classes = [JSONRenderer]
    content_negotiation_class = ErrorsAsJSON

    @extend_schema(
        summary="Export the project's annotations (streamed)", parameters=[ExportParams],
        responses={(200, MEDIA_TYPES["jsonl"]): OpenApiResponse(OpenApiTypes.STR, description="JSON lines"),
                   (200, MEDIA_TYPES["csv"]): OpenApiResponse(OpenApiTypes.STR, description="CSV with a header"),
                   **{(code, "application/json"): response for code, response in error_responses(400, 404).items()}},
    )
    def get(self, request, pk: int):
        project = project_for(request.user, pk, Action.VIEW)
        params = ExportParams(data=request.query_params.dict())
        params.is_valid(raise_exception=True)
        file_format = params.validated_data["format"]
        response = StreamingHttpResponse(export_chunks(project=project, file_format=file_format),
                                         content_type=f"{MEDIA_TYPES[file_format]}; charset=utf-8")
        response["Content-Disposition"] = f'attachment; filename="project-{project.pk}-annotations.{file_format}"'
        return response
