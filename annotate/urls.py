from django.urls import path

from annotate.views import activity, annotating, imports, meta_models, project_settings, projects
from annotate.views.dashboard_budget import dashboard_budget, dashboard_budget_csv
from annotate.views.dashboard_quality import dashboard_quality, dashboard_quality_csv

urlpatterns = [
    path("", projects.project_list, name="project-list"),
    path("projects/<int:pk>/", projects.project_detail, name="project-detail"),
    path("projects/<int:pk>/settings/", project_settings.project_settings, name="project-settings"),
    path("projects/<int:pk>/activity/", activity.project_activity, name="project-activity"),
    path("projects/<int:pk>/retrain/", activity.project_retrain, name="project-retrain"),
    path("projects/<int:pk>/warm-start/", meta_models.project_warm_start, name="project-warm-start"),
    path("projects/<int:pk>/adapt/", meta_models.project_adapt, name="project-adapt"),
    path("meta-models/", meta_models.meta_model_list, name="meta-model-list"),
    path("meta-models/<int:pk>/status/", meta_models.meta_model_status, name="meta-model-status"),
    path("meta-models/<int:pk>/cancel/", meta_models.meta_model_cancel_view, name="meta-model-cancel"),
    path("projects/<int:pk>/annotate/", annotating.annotate_page, name="annotate"),
    path("projects/<int:pk>/annotate/label/", annotating.annotate_submit, name="annotate-submit"),
    path("projects/<int:pk>/annotate/skip/", annotating.annotate_skip, name="annotate-skip"),
    path("projects/<int:pk>/annotate/undo/", annotating.annotate_undo, name="annotate-undo"),
    path("projects/<int:pk>/import/", imports.import_upload, name="import-upload"),
    path("projects/<int:pk>/import/<str:task_id>/", imports.import_status, name="import-status"),
    path("projects/<int:pk>/dashboard/quality/", dashboard_quality, name="dashboard-quality"),
    path("projects/<int:pk>/dashboard/quality/<slug:table>.csv", dashboard_quality_csv,
         name="dashboard-quality-csv"),
    path("projects/<int:pk>/dashboard/budget/", dashboard_budget, name="dashboard-budget"),
    path("projects/<int:pk>/dashboard/budget/<slug:table>.csv", dashboard_budget_csv, name="dashboard-budget-csv"),
]
