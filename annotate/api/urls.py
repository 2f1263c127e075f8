"""/api/v1/: the REST API (docs/rest-api.md); the schema and its browsable docs are served here too."""
from django.urls import path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from annotate.api import background, budgets, exports, items, labels, model_versions, projects, views

urlpatterns = [
    path("schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
    path("projects/", projects.ProjectList.as_view(), name="api-projects"),
    path("projects/<id:pk>/", projects.ProjectDetail.as_view(), name="api-project"),
    path("projects/<id:pk>/labels/", labels.LabelList.as_view(), name="api-labels"),
    path("projects/<id:pk>/labels/<id:label_id>/", labels.LabelDetail.as_view(), name="api-label"),
    path("projects/<id:pk>/items/", items.ItemList.as_view(), name="api-items"),
    path("projects/<id:pk>/items/<id:item_id>/", items.ItemDetail.as_view(), name="api-item"),
    path("projects/<id:pk>/export/", exports.AnnotationsExport.as_view(), name="api-export"),
    path("projects/<id:pk>/model-versions/", model_versions.ModelVersionList.as_view(), name="api-model-versions"),
    path("projects/<id:pk>/model-versions/<id:number>/", model_versions.ModelVersionDetail.as_view(),
         name="api-model-version"),
    path("projects/<id:pk>/budget/", budgets.BudgetDetail.as_view(), name="api-budget"),
    path("projects/<id:pk>/members/", budgets.MemberList.as_view(), name="api-members"),
    path("projects/<id:pk>/members/<id:user_id>/", budgets.MemberDetail.as_view(), name="api-member"),
    path("projects/<id:pk>/retrain/", background.Retrain.as_view(), name="api-retrain"),
    path("tasks/<str:task_id>/", background.TaskDetail.as_view(), name="api-task"),
    # The queue (kept from the first API): lease, label (POST annotations/), skip, undo, status.
    path("projects/<id:pk>/next/", views.next_item, name="api-next"),
    path("projects/<id:pk>/annotations/", views.ProjectAnnotations.as_view(), name="api-annotate"),
    path("projects/<id:pk>/skip/", views.skip, name="api-skip"),
    path("projects/<id:pk>/undo/", views.undo, name="api-undo"),
    path("projects/<id:pk>/status/", views.status_view, name="api-status"),
]
