"""Background work of a project: the progress panel's JSON, and the owner's "Retrain now"."""
from django.contrib import messages
from django.http import JsonResponse
from django.shortcuts import redirect
from kombu.exceptions import OperationalError

from annotate.access import Action, can_manage
from annotate.views.common import WRITE, project_view
from workbench.activity import project_tasks
from workbench.celery import enqueue


@project_view(Action.VIEW)
def project_activity(request, project):
    """The project's latest tasks with state and progress; the project page polls this while any runs."""
    return JsonResponse({"tasks": project_tasks(project.pk, errors=can_manage(request.user, project))})


def project_task_send(request, project, name: str, *, started: str, not_started: str):
    """Send task `name` for the project and say so in a message (or why it could not be sent); back to its page."""
    try:
        enqueue(name, project_id=project.pk)
    except OperationalError as exc:
        messages.error(request, f"The task queue cannot be reached, so {not_started}: {exc}")
    else:
        messages.success(request, f"{started}; its progress shows under Background work.")
    return redirect("project-detail", pk=project.pk)


@project_view(Action.MANAGE, WRITE)
def project_retrain(request, project):
    return project_task_send(request, project, "workbench.retrain", started="Retrain started",
                             not_started="no retrain was started")
