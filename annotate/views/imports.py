"""Upload a CSV/JSONL file; a worker imports it and the job page shows progress."""

from django import forms
from django.http import Http404
from django.shortcuts import redirect, render
from kombu.exceptions import OperationalError

from annotate.access import Action
from annotate.errors import WorkbenchError
from annotate.models import ImportJob
from annotate.services.import_readers import detect_format
from annotate.services.uploads import import_job_settle, upload_import_enqueue
from annotate.views.common import FORM, project_view
from workbench.activity import task_project
from workbench.celery import task_state


class ImportForm(forms.Form):
    file = forms.FileField(help_text="UTF-8 CSV with a header row, or JSONL (one object per line).")
    skip_bad_rows = forms.BooleanField(required=False, help_text="Import the good rows and report the bad ones.")
    skip_existing = forms.BooleanField(required=False, help_text="Skip ids already in the project.")

    def clean_file(self):
        upload = self.cleaned_data["file"]
        try:
            self.cleaned_data["format"] = detect_format(upload.name)
        except WorkbenchError as exc:
            raise forms.ValidationError(str(exc)) from None
        return upload


@project_view(Action.MANAGE, FORM)
def import_upload(request, project):
    form = ImportForm(request.POST or None, request.FILES or None)
    if request.method == "POST" and form.is_valid():
        try:
            task_id = upload_import_enqueue(user=request.user,
                project=project, upload=form.cleaned_data["file"], file_format=form.cleaned_data["format"],
                skip_bad_rows=form.cleaned_data["skip_bad_rows"], skip_existing=form.cleaned_data["skip_existing"],
            )
        except OperationalError as exc:
            form.add_error(None, f"The task queue cannot be reached, so nothing was imported: {exc}")
        else:
            return redirect("import-status", pk=project.pk, task_id=task_id)
    return render(request, "annotate/import_upload.html", {"project": project, "form": form})


@project_view(Action.MANAGE)
def import_status(request, project, task_id: str):
    # The newest: a task delivered again after its worker died has a second job.
    job = ImportJob.objects.filter(project=project, task_id=task_id).order_by("-pk").first()
    if job is None and task_project(task_id) != project.pk:
        raise Http404("No such import in this project")  # another project's task id shows nothing
    state, result = task_state(task_id)
    if job is not None:  # a job whose worker died is shown failed, not "running" for ever
        job = import_job_settle(job=job, state=state, result=result)
    info = result if isinstance(result, dict) else {}
    failure = str(result) if state == "FAILURE" else None
    finished = job is not None and job.status not in ("queued", "running")
    return render(request, "annotate/import_status.html", {
        "project": project, "job": job, "state": state, "info": info, "failure": failure,
        "finished": finished or state == "FAILURE",
    })
