"""A busy database as an answer: 503 with Retry-After instead of a hanging request or a 500.

The SQLite backend raises `DatabaseBusy` when another writer has held the write
lock for longer than `settings.SQLITE_LOCK_TIMEOUT` (workbench.sqlite_backend).
It is raised when a transaction begins, so nothing was written and the client
can simply send the request again. REST API views (DRF) re-raise errors their
exception handler does not know, so this one middleware answers both: JSON for
the API, a short text page for the forms.
"""
from __future__ import annotations

import logging
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse, JsonResponse
from rest_framework.views import APIView

from workbench.sqlite_backend.base import DatabaseBusy

logger = logging.getLogger(__name__)

# The holder has already kept the lock for the whole timeout; a few seconds more
# usually sees it commit (a large queue swap), or sees it still stuck.
RETRY_AFTER_SECONDS = 5
PAGE_TEXT = "The database is busy, try again in a moment.\n"
API_DETAIL = "the database is busy, try again"


def database_busy_response(request: HttpRequest) -> HttpResponse:
    """The 503 answer: `{"detail": ...}` for a REST API view, plain text for a page."""
    match = getattr(request, "resolver_match", None)
    view_class = getattr(match.func, "cls", None) if match is not None else None
    if isinstance(view_class, type) and issubclass(view_class, APIView):
        response: HttpResponse = JsonResponse({"detail": API_DETAIL}, status=503)
    else:
        response = HttpResponse(PAGE_TEXT, status=503, content_type="text/plain; charset=utf-8")
    response["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response


class DatabaseBusyMiddleware:
    """Answers a view's `DatabaseBusy` with 503 and Retry-After; every other exception goes on as before.

    Only exceptions from views reach `process_exception`: a DatabaseBusy raised
    in another middleware (a session saved after the view) is still a 500.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if not isinstance(exception, DatabaseBusy):
            return None
        logger.warning("%s %s answered 503: %s", request.method, request.path, exception)
        return database_busy_response(request)
