"""Background work: ask for a retrain, and follow any task the API queued.

Web processes only send tasks (`workbench.celery.enqueue`) and read their
state once from the result backend (`task_state`); they never hold an
AsyncResult. A task is shown only to users who may view the project it
works on (`workbench.activity.task_project`); any other id, unknown or not,
answers the same 404. A failed task's error text (an import's quotes the
bad rows) is shown only to those who may manage the project.
"""
from __future__ import annotations

import re
import uuid

import redis
from django.urls import reverse
from drf_spectacular.utils import OpenApiParameter, extend_schema
from kombu.exceptions import OperationalError
from rest_framework import serializers, status
from rest_framework.exceptions import NotFound
from rest_framework.response import Response
from rest_framework.views import APIView

from annotate.access import Action, can_manage, project_for
from annotate.api.errors import error_responses
from annotate.errors import ProjectNotFound
from workbench.activity import task_project
from workbench.celery import enqueue, task_state

# Celery ids are UUIDs: 36 characters, or 32 hex digits (upload-page imports queued before uploads.py).
TASK_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|[0-9a-f]{32}")
FAILED_STATES = {"FAILURE", "RETRY", "REVOKED"}


class TaskQueuedOut(serializers.Serializer):
    task_id = serializers.CharField()
    status_url = serializers.URLField(help_text="GET it for the task's state, progress and result.")


def task_queued(request, task_id: str) -> Response:
    """202 with where to follow the task; every endpoint that queues work answers so."""
    url = request.build_absolute_uri(reverse("api-task", args=[task_id]))
    return Response({"task_id": task_id, "status_url": url}, status=status.HTTP_202_ACCEPTED,
                    headers={"Location": url})


def queue_unreachable(exc: OperationalError) -> Response:
    return Response({"detail": f"The task queue cannot be reached, so nothing was queued: {exc}"},
                    status=status.HTTP_503_SERVICE_UNAVAILABLE)


class TaskStateOut(serializers.Serializer):
    task_id = serializers.CharField()
    state = serializers.CharField(help_text="PENDING (unknown or not started), STARTED, PROGRESS, SUCCESS, "
                                            "FAILURE, RETRY or REVOKED.")
    progress = serializers.DictField(required=False, help_text="While PROGRESS: the task's stage and counts.")
    result = serializers.JSONField(required=False, help_text="When SUCCESS: the task's JSON result.")
    error = serializers.CharField(required=False, help_text="When FAILURE, RETRY or REVOKED: why.")


@extend_schema(tags=["tasks"])
class Retrain(APIView):
    @extend_schema(summary="Queue a retrain of the project's model (owner or staff)", request=None,
                   responses={202: TaskQueuedOut, **error_responses(403, 404, 503)})
    def post(self, request, pk: int):
        project = project_for(request.user, pk, Action.MANAGE)
        task_id = str(uuid.uuid4())
        try:
            enqueue("workbench.retrain", task_id=task_id, project_id=project.pk)
        except OperationalError as exc:
            return queue_unreachable(exc)
        return task_queued(request, task_id)


def task_json(task_id: str, *, errors: bool = True) -> dict:
    """A task's state as the API shows it; `errors`: include a failure's text (else only that it failed)."""
    state, result = task_state(task_id)
    body: dict = {"task_id": task_id, "state": state}
    if state == "PROGRESS" and isinstance(result, dict):
        body["progress"] = result
    elif state == "SUCCESS":
        body["result"] = result
    elif state in FAILED_STATES and result is not None and not errors:
        body["error"] = "The task failed; the project's owners can see why."
    elif state in FAILED_STATES and result is not None:
        body["error"] = f"{type(result).__name__}: {result}" if isinstance(result, BaseException) else str(result)
    return body


@extend_schema(tags=["tasks"])
class TaskDetail(APIView):
    @extend_schema(summary="A queued task's state, progress, result or error",
                   parameters=[OpenApiParameter("task_id", str, OpenApiParameter.PATH, pattern=f"^{TASK_ID.pattern}$",
                                                description="The id a 202 answer gave.")],
                   responses={200: TaskStateOut, **error_responses(400, 404, 503)})
    def get(self, request, task_id: str):
        if not TASK_ID.fullmatch(task_id):
            return Response({"task_id": [f"expected a task id such as {uuid.UUID(int=0)}, got {task_id[:60]!r}"]},
                            status=status.HTTP_400_BAD_REQUEST)
        try:
            project_id = task_project(task_id)
            try:
                project = project_for(request.user, project_id, Action.VIEW)
            except ProjectNotFound:
                raise NotFound("No such task.") from None
            return Response(task_json(task_id, errors=can_manage(request.user, project)))
        except redis.exceptions.ConnectionError as exc:
            return Response({"detail": f"The result store cannot be reached: {exc}"},
                            status=status.HTTP_503_SERVICE_UNAVAILABLE)
