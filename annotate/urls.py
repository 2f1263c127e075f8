from django.urls import path

from annotate.views import activity, annotating, imports, meta_models, project_settings, projects
from annotate.views.dashboard_budget import dashboard_budget, dashboard_budget_csv
from annotate.views.dashboard_quality import dashboard_quality, dashboard_quality_csv

urlpatterns = [
    path("", projects.project_list, name="project-list"),
    path("projects/<id:pk>/", projects.project_detail, name="project-detail"),
    path("projects/<id:pk>/settings/", project_settings.project_settings, name="project-settings"),
    path("projects/<id:pk>/activity/", activity.project_activity, name="project-activity"),
    path("projects/<id:pk>/retrain/", activity.project_retrain, name="project-retrain"),
    path("projects/<id:pk>/warm-start/", meta_models.project_warm_start, name="project-warm-start"),
    path("projects/<id:pk>/adapt/", meta_models.project_adapt, name="project-adapt"),
    path("meta-models/", meta_models.meta_model_list, name="meta-model-list"),
    path("meta-models/<id:pk>/status/", meta_models.meta_model_status, name="meta-model-status"),
    path("meta-models/<id:pk>/cancel/", meta_models.meta_model_cancel_view, name="meta-model-cancel"),
    path("projects/<id:pk>/annotate/", annotating.annotate_page, name="annotate"),
    path("projects/<id:pk>/annotate/label/", annotating.annotate_submit, name="annotate-submit"),
    path("projects/<id:pk>/annotate/skip/", annotating.annotate_skip, name="annotate-skip"),
    path("projects/<id:pk>/annotate/undo/", annotating.annotate_undo, name="annotate-undo"),
    path("projects/<id:pk>/import/", imports.import_upload, name="import-upload"),
    path("projects/<id:pk>/import/<str:task_id>/", imports.import_status, name="import-status"),
    path("projects/<id:pk>/dashboard/quality/", dashboard_quality, name="dashboard-quality"),
    path("projects/<id:pk>/dashboard/quality/<slug:table>.csv", dashboard_quality_csv,
         name="dashboard-quality-csv"),
    path("projects/<id:pk>/dashboard/budget/", dashboard_budget, name="dashboard-budget"),
    path("projects/<id:pk>/dashboard/budget/<slug:table>.csv", dashboard_budget_csv, name="dashboard-budget-csv"),
]
