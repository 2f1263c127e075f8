"""Project list and project page."""
from django.contrib.auth.decorators import login_required
from django.shortcuts import render

from annotate.models import Role
from annotate.selectors import annotator_progress, projects_for_user, queue_status
from annotate.views.common import project_for_member
from workbench.activity import project_tasks


@login_required
def project_list(request):
    rows = [{"project": p, "status": queue_status(p)} for p in projects_for_user(request.user)]
    return render(request, "annotate/project_list.html", {"rows": rows})


@login_required
def project_detail(request, pk: int):
    from learners.services.meta import meta_models_for, warm_start_view

    project, membership = project_for_member(request, pk)
    is_owner = membership.role == Role.OWNER
    return render(request, "annotate/project_detail.html", {
        "project": project,
        "status": queue_status(project),
        "mine": annotator_progress(project, request.user),
        "is_owner": is_owner,
        "warm": warm_start_view(project),
        "warm_choices": list(meta_models_for(project).only("pk", "name", "algorithm")) if is_owner else [],
        "imports": project.import_jobs.order_by("-id")[:10],
        "versions": project.model_versions.defer("artifact", "stop_set").order_by("-number")[:10],
        "tasks": project_tasks(project.pk),
    })
