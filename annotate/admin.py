from django import forms
from django.contrib import admin
from django.urls import reverse
from django.utils.html import format_html

from annotate.models import Annotation, Assignment, Budget, ImportJob, Item, Label, Membership, Project
from annotate.services.projects import project_overlap_apply
from learners.catalog import ESTIMATORS, FEATURISERS, STRATEGIES, InvalidChoice, choices_validate
from learners.models import WorkKind
from learners.services.work import work_request


class LabelInline(admin.TabularInline):
    model = Label
    extra = 0


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    readonly_fields = ["label_count"]


class BudgetInline(admin.StackedInline):
    model = Budget


class ProjectAdminForm(forms.ModelForm):
    """Learning choices as dropdowns from the catalog, checked against the project's modality."""

    featuriser = forms.ChoiceField(choices=[(n, c.title) for n, c in FEATURISERS.items()])
    estimator = forms.ChoiceField(choices=[(n, c.title) for n, c in ESTIMATORS.items()])
    query_strategy = forms.ChoiceField(choices=[(n, c.title) for n, c in STRATEGIES.items()])

    class Meta:
        model = Project
        fields = "__all__"

    def clean(self):
        data = super().clean()
        if all(data.get(k) for k in ("modality", "featuriser", "estimator", "query_strategy")):
            try:
                choices_validate(modality=data["modality"], featuriser=data["featuriser"],
                                 estimator=data["estimator"], query_strategy=data["query_strategy"])
            except InvalidChoice as exc:
                raise forms.ValidationError(str(exc)) from None
        return data


@admin.register(Project)
class ProjectAdmin(admin.ModelAdmin):
    form = ProjectAdminForm
    list_display = ["name", "modality", "featuriser", "query_strategy", "estimator", "label_count", "overlap",
                    "retrain_every", "dashboards"]
    readonly_fields = ["label_count", "cost_spent", "retrain_requested_at", "dashboards"]

    @admin.display(description="Dashboards")
    def dashboards(self, obj):
        if obj.pk is None:
            return "-"
        return format_html('<a href="{}">Budget</a> · <a href="{}">Progress and quality</a>',
                           reverse("dashboard-budget", args=[obj.pk]), reverse("dashboard-quality", args=[obj.pk]))
    inlines = [LabelInline, BudgetInline, MembershipInline]

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        if change and "overlap" in form.changed_data:
            changed = project_overlap_apply(project=obj)
            self.message_user(request, f"Overlap is now {obj.overlap}: {changed} items reopened or closed.")
        learning = {"featuriser", "estimator", "query_strategy"} & set(form.changed_data)
        if change and learning:
            work_request(project_id=obj.pk, kind=WorkKind.RETRAIN, force=True,
                         reason=f"admin changed {', '.join(sorted(learning))}")
            self.message_user(request, "A retrain is queued; the queue follows the new settings after it.")


@admin.register(Item)
class ItemAdmin(admin.ModelAdmin):
    list_display = ["external_id", "project", "priority", "annotation_count", "lease_count", "done"]
    list_filter = ["project", "done"]
    search_fields = ["external_id"]
    readonly_fields = ["priority", "annotation_count", "lease_count", "lease_expires_at", "done",
                       "predicted_label", "confidence", "scored_by_version"]


@admin.register(Annotation)
class AnnotationAdmin(admin.ModelAdmin):
    list_display = ["item", "label", "annotator", "source", "seconds", "created_at"]
    list_filter = ["project", "source"]


@admin.register(Assignment)
class AssignmentAdmin(admin.ModelAdmin):
    list_display = ["item", "annotator", "status", "leased_at", "expires_at"]
    list_filter = ["project", "status"]


@admin.register(ImportJob)
class ImportJobAdmin(admin.ModelAdmin):
    list_display = ["source_name", "project", "status", "rows_read", "rows_imported", "rows_skipped", "created_at"]
