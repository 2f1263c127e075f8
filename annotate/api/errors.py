"""Service errors as HTTP answers, in one table, and the error bodies for the schema.

Services raise named errors (annotate.errors and each service's own); an
endpoint catches WorkbenchError and answers with `error_response`, so the
same error gets the same status everywhere.

A busy SQLite database (`DatabaseBusy`, raised when a transaction begins) is
not a service error: DRF re-raises it, and workbench.busy answers it for every
endpoint with 503, Retry-After and `{"detail": "the database is busy, try again"}`.
"""
from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse
from rest_framework import serializers, status
from rest_framework.response import Response

from annotate.errors import LeaseError, NotAllowed, ProjectNotFound, QueueClosed, UnknownLabel, WorkbenchError
from annotate.services.importing import ImportFailed
from annotate.services.labels import LabelInUse, LabelSetTooSmall

# First match wins; anything else a service raises is the caller's mistake (400).
_STATUS: list[tuple[type[WorkbenchError], int]] = [
    (ProjectNotFound, status.HTTP_404_NOT_FOUND),
    (NotAllowed, status.HTTP_403_FORBIDDEN),
    (UnknownLabel, status.HTTP_400_BAD_REQUEST),
    (LeaseError, status.HTTP_409_CONFLICT),
    (QueueClosed, status.HTTP_409_CONFLICT),
    (LabelInUse, status.HTTP_409_CONFLICT),
    (LabelSetTooSmall, status.HTTP_409_CONFLICT),
]


def error_response(exc: WorkbenchError) -> Response:
    code = next((code for kind, code in _STATUS if isinstance(exc, kind)), status.HTTP_400_BAD_REQUEST)
    body: dict = {"detail": str(exc)}
    if isinstance(exc, QueueClosed):
        body["code"] = exc.code
    if isinstance(exc, ImportFailed):
        body["errors"] = exc.errors
    return Response(body, status=code)


class ErrorOut(serializers.Serializer):
    detail = serializers.CharField(help_text="What went wrong, in words a user can act on.")
    code = serializers.CharField(required=False, help_text="Why the queue is closed: budget_spent, quota_spent, "
                                                           "queue_empty.")


class ImportErrorOut(serializers.Serializer):
    """The importer's refusal ({detail, errors}), or {field: [messages]} for a request it never saw."""

    detail = serializers.CharField(required=False)
    errors = serializers.ListField(child=serializers.CharField(), required=False,
                                   help_text="Every bad row (up to 100), each naming its line: line N is items[N-1].")


_DESCRIPTIONS = {
    400: "Invalid input: {'detail': ...} from a service, or {field: [messages]} naming each bad field or parameter.",
    403: "A member asked for what their role does not allow (an annotator for an owner-only operation, or staff "
         "who are not members for the queue).",
    404: "No such project (or you are not a member of it), no such object in it, or no such page.",
    409: "The request conflicts with the current state (see detail).",
    413: "Too many rows for one request: upload a file instead.",
    503: "The task queue cannot be reached; nothing was enqueued.",
}


def error_responses(*codes: int) -> dict[int, OpenApiResponse]:
    """Schema entries for the error statuses an operation can answer."""
    return {
        code: OpenApiResponse(OpenApiTypes.OBJECT if code == 400 else ErrorOut, description=_DESCRIPTIONS[code])
        for code in codes
    }
