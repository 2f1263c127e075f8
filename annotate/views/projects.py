"""Project list and project page."""
from django.shortcuts import render

from annotate.access import Action, can_annotate, can_manage, projects_visible
from annotate.selectors import annotator_progress, queue_status
from annotate.views.common import page_view, project_view
from workbench.activity import project_tasks


@page_view()
def project_list(request):
    rows = [{"project": p, "status": queue_status(p), "can_annotate": can_annotate(request.user, p)}
            for p in projects_visible(request.user).order_by("name", "pk")]
    return render(request, "annotate/project_list.html", {"rows": rows})


@project_view(Action.VIEW)
def project_detail(request, project):
    from learners.services.meta import meta_models_for, warm_start_view

    is_owner = can_manage(request.user, project)
    return render(request, "annotate/project_detail.html", {
        "project": project,
        "status": queue_status(project),
        "mine": annotator_progress(project, request.user),
        "is_owner": is_owner,
        "can_annotate": can_annotate(request.user, project),
        "warm": warm_start_view(project),
        "warm_choices": list(meta_models_for(project).only("pk", "name", "algorithm")) if is_owner else [],
        "imports": project.import_jobs.order_by("-id")[:10],
        "versions": project.model_versions.defer("artifact", "stop_set").order_by("-number")[:10],
        "tasks": project_tasks(project.pk, errors=is_owner),
    })
