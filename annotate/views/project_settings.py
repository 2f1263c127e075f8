"""The owner's settings page: how the project learns (featuriser, estimator, query strategy)."""
from django import forms
from django.contrib import messages
from django.shortcuts import redirect, render

from annotate.access import Action
from annotate.errors import WorkbenchError
from annotate.services.projects import project_settings_update
from annotate.views.common import FORM, project_view
from learners.catalog import ESTIMATORS, FEATURISERS, STRATEGIES


def _options(catalog, modality: str | None = None) -> list[tuple[str, str]]:
    return [(c.name, f"{c.title} — {c.description}") for c in catalog.values()
            if modality is None or modality in c.modalities]


class LearningSettingsForm(forms.Form):
    query_strategy = forms.ChoiceField(label="Query strategy", help_text="Which items are worth labelling next.")
    estimator = forms.ChoiceField(label="Estimator", help_text="The model trained on the labels.")
    featuriser = forms.ChoiceField(label="Features", help_text="How items become numbers (cached per item).")
    retrain_every = forms.IntegerField(min_value=1, label="Retrain every", help_text="New labels between retrains.")

    def __init__(self, *args, modality: str, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["query_strategy"].choices = _options(STRATEGIES)
        self.fields["estimator"].choices = _options(ESTIMATORS)
        self.fields["featuriser"].choices = _options(FEATURISERS, modality)


@project_view(Action.MANAGE, FORM)
def project_settings(request, project):
    initial = {k: getattr(project, k) for k in ("query_strategy", "estimator", "featuriser", "retrain_every")}
    form = LearningSettingsForm(request.POST or None, initial=initial, modality=project.modality)
    if request.method == "POST" and form.is_valid():
        try:
            changed = project_settings_update(project=project, **form.cleaned_data)
        except WorkbenchError as exc:
            form.add_error(None, str(exc))
        else:
            if changed:
                messages.success(request, f"Saved ({', '.join(changed)}). The next retrain uses them; one is queued.")
            else:
                messages.info(request, "Nothing changed.")
            return redirect("project-settings", pk=project.pk)
    return render(request, "annotate/project_settings.html", {"project": project, "form": form})
