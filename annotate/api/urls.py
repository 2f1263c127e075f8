from django.urls import path

from annotate.api import views

urlpatterns = [
    path("projects/<int:pk>/next/", views.next_item, name="api-next"),
    path("projects/<int:pk>/annotations/", views.annotate, name="api-annotate"),
    path("projects/<int:pk>/skip/", views.skip, name="api-skip"),
    path("projects/<int:pk>/undo/", views.undo, name="api-undo"),
    path("projects/<int:pk>/status/", views.status_view, name="api-status"),
]
