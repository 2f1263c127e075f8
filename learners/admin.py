from django.contrib import admin

from learners.models import FeatureSpace, ModelVersion


@admin.register(ModelVersion)
class ModelVersionAdmin(admin.ModelAdmin):
    list_display = ["project", "number", "estimator", "query_strategy", "trained_on", "items_scored", "created_at"]
    list_filter = ["project"]
    exclude = ["artifact", "stop_set"]
    readonly_fields = ["project", "number", "request_id", "estimator", "query_strategy", "featuriser", "trained_on",
                       "label_count", "metrics", "items_scored", "train_seconds", "score_seconds"]


@admin.register(FeatureSpace)
class FeatureSpaceAdmin(admin.ModelAdmin):
    list_display = ["project", "featuriser", "version", "dim", "is_sparse", "fitted_on", "created_at"]
    list_filter = ["project"]
    exclude = ["state"]
    readonly_fields = ["project", "featuriser", "version", "dim", "is_sparse", "fitted_on"]
