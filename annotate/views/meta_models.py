"""Meta-models (create from source projects, follow, cancel) and a project's warm start (choose, adapt now)."""
from __future__ import annotations

from django.contrib import messages
from django.http import Http404, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from kombu.exceptions import OperationalError

from annotate.access import Action, can_cancel_meta_model, meta_models_visible, projects_managed
from annotate.views.activity import project_task_send
from annotate.views.common import FORM, READ, WRITE, page_view, project_view
from learners.catalog import META_ALGORITHMS
from learners.models import MetaModel, MetaModelStatus
from learners.services.meta import (
    HYPER_PARAMETERS,
    MetaModelInvalid,
    meta_model_cancel,
    meta_model_create,
    meta_model_enqueue,
    meta_models_for,
    warm_start_clear,
    warm_start_set,
)
from workbench.activity import progress_of
from workbench.celery import enqueue, task_state

# The hyper-parameters the form offers; the rest keep their defaults (the command and the task API take all).
FORM_FIELDS = ("n_way", "k_shot", "q_query", "steps", "hidden", "meta_lr", "lr", "adapt_steps")


def _progress(meta_model: MetaModel) -> dict:
    row = {"id": meta_model.pk, "status": meta_model.status, "percent": None, "done": None, "total": None}
    if meta_model.status == MetaModelStatus.RUNNING and meta_model.task_id:
        state, info = task_state(meta_model.task_id)
        row |= progress_of(state, info if state == "PROGRESS" else None)
    return row


@page_view(FORM)
def meta_model_list(request):
    """The meta-models the user can see, and a form to meta-train a new one on projects they own."""
    owned = list(projects_managed(request.user).order_by("name", "pk"))
    errors, values = [], {"name": "", "algorithm": "protonet", "sources": [],
                          **{k: HYPER_PARAMETERS[k][3] for k in FORM_FIELDS}}
    if request.method == "POST":
        values |= {k: request.POST.get(k, "").strip() for k in ("name", "algorithm", *FORM_FIELDS)}
        values["sources"] = request.POST.getlist("sources")
        try:
            source_ids = [int(s) for s in values["sources"]]
        except ValueError:
            source_ids = []
        hyper = {}
        for key in FORM_FIELDS:
            raw = values[key]
            if raw == "":
                continue
            try:
                number = float(raw)
                hyper[key] = int(number) if HYPER_PARAMETERS[key][0] is int and number.is_integer() else number
            except ValueError:
                errors.append(f"{key}: {raw!r} is not a number")
        if values["algorithm"] == "protonet":
            hyper.pop("lr", None), hyper.pop("adapt_steps", None)
        if not errors:
            try:
                meta_model = meta_model_create(user=request.user, name=values["name"], source_project_ids=source_ids,
                                               algorithm=values["algorithm"], hyper_parameters=hyper)
            except MetaModelInvalid as exc:
                errors.append(str(exc))
            else:
                try:
                    meta_model_enqueue(meta_model)
                except OperationalError as exc:
                    meta_model_cancel(meta_model)
                    messages.error(request, f"The task queue cannot be reached, so the meta-model was not "
                                            f"trained (it is marked cancelled): {exc}")
                else:
                    messages.success(request, f"Meta-training of {meta_model.name!r} started.")
                return redirect("meta-model-list")
    meta_models = list(meta_models_visible(request.user).prefetch_related("source_projects"))
    rows = [{"meta_model": m, "progress": _progress(m), "sources": list(m.source_projects.all())} for m in meta_models]
    running = any(m.status in (MetaModelStatus.QUEUED, MetaModelStatus.RUNNING) for m in meta_models)
    return render(request, "annotate/meta_models.html", {
        "rows": rows, "owned": owned, "algorithms": META_ALGORITHMS.values(), "errors": errors, "values": values,
        "fields": [(k, HYPER_PARAMETERS[k]) for k in FORM_FIELDS], "running": running,
    }, status=400 if errors else 200)


@page_view(READ)
def meta_model_status(request, pk: int):
    """Status and progress of one meta-model, as JSON (for scripts and the page's refresh)."""
    meta_model = get_object_or_404(meta_models_visible(request.user), pk=pk)
    return JsonResponse(_progress(meta_model) | {"metrics": meta_model.metrics, "error": meta_model.error})


@page_view(WRITE)
def meta_model_cancel_view(request, pk: int):
    meta_model = get_object_or_404(meta_models_visible(request.user), pk=pk)
    if not can_cancel_meta_model(request.user, meta_model):
        raise Http404("No such meta-model")
    meta_model = meta_model_cancel(meta_model)
    messages.success(request, f"{meta_model.name!r}: {meta_model.status}"
                              f"{' (stops within a few steps)' if meta_model.status == 'running' else ''}.")
    return redirect("meta-model-list")


@project_view(Action.MANAGE, WRITE)
def project_warm_start(request, project):
    """Choose (or clear, with an empty choice) the project's warm start; a retrain then decides who orders the queue."""
    choice = request.POST.get("meta_model", "").strip()
    if not choice:
        warm_start_clear(project)
        messages.success(request, "Warm start removed; the project's own model orders the queue.")
        return redirect("project-detail", pk=project.pk)
    meta_model = meta_models_for(project).filter(pk=int(choice) if choice.isdigit() else -1).first()
    if meta_model is None:
        messages.error(request, f"meta_model: {choice!r} is not a succeeded meta-model of this project's modality "
                                "and featuriser")
        return redirect("project-detail", pk=project.pk)
    try:
        warm_start_set(project, meta_model)
    except MetaModelInvalid as exc:
        messages.error(request, str(exc))
        return redirect("project-detail", pk=project.pk)
    try:
        enqueue("workbench.retrain", project_id=project.pk)
    except OperationalError as exc:
        messages.warning(request, f"Warm start set, but no retrain could be queued: {exc}")
    else:
        messages.success(request, f"Warm start: {meta_model.name}. A retrain compares it with the project's own "
                                  "model; its progress shows under Background work.")
    return redirect("project-detail", pk=project.pk)


@project_view(Action.MANAGE, WRITE)
def project_adapt(request, project):
    """Adapt the warm-start meta-model now (workbench.adapt), whatever the comparison says."""
    return project_task_send(request, project, "workbench.adapt", started="Adapting the warm-start meta-model",
                             not_started="nothing was adapted")
