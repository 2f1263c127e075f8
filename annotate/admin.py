from django.contrib import admin

from annotate.models import Annotation, Assignment, Budget, ImportJob, Item, Label, Membership, Project
from annotate.services.projects import project_overlap_apply


class LabelInline(admin.TabularInline):
    model = Label
    extra = 0


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    readonly_fields = ["label_count"]


class BudgetInline(admin.StackedInline):
    model = Budget


@admin.register(Project)
class ProjectAdmin(admin.ModelAdmin):
    list_display = ["name", "modality", "query_strategy", "estimator", "label_count", "overlap", "retrain_every"]
    readonly_fields = ["label_count", "cost_spent", "retrain_requested_at"]
    inlines = [LabelInline, BudgetInline, MembershipInline]

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        if change and "overlap" in form.changed_data:
            changed = project_overlap_apply(project=obj)
            self.message_user(request, f"Overlap is now {obj.overlap}: {changed} items reopened or closed.")


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
