from django.contrib import admin

from learners.models import ModelVersion


@admin.register(ModelVersion)
class ModelVersionAdmin(admin.ModelAdmin):
    list_display = ["project", "number", "estimator", "query_strategy", "trained_on", "items_scored", "created_at"]
    list_filter = ["project"]
    exclude = ["artifact"]
    readonly_fields = ["project", "number", "request_id", "estimator", "query_strategy", "trained_on",
                       "label_count", "metrics", "items_scored", "train_seconds", "score_seconds"]
