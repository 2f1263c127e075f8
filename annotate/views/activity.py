"""Background work of a project: the progress panel's JSON, and the owner's "Retrain now"."""
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import JsonResponse
from django.shortcuts import redirect
from django.views.decorators.http import require_POST
from kombu.exceptions import OperationalError

from annotate.views.common import project_for_member
from workbench.activity import project_tasks
from workbench.celery import enqueue


@login_required
def project_activity(request, pk: int):
    """The project's latest tasks with state and progress; the project page polls this while any runs."""
    project, _ = project_for_member(request, pk)
    return JsonResponse({"tasks": project_tasks(project.pk)})


def project_task_send(request, project, name: str, *, started: str, not_started: str):
    """Send task `name` for the project and say so in a message (or why it could not be sent); back to its page."""
    try:
        enqueue(name, project_id=project.pk)
    except OperationalError as exc:
        messages.error(request, f"The task queue cannot be reached, so {not_started}: {exc}")
    else:
        messages.success(request, f"{started}; its progress shows under Background work.")
    return redirect("project-detail", pk=project.pk)


@login_required
@require_POST
def project_retrain(request, pk: int):
    project, _ = project_for_member(request, pk, owner=True)
    return project_task_send(request, project, "workbench.retrain", started="Retrain started",
                             not_started="no retrain was started")
