from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path, register_converter
from django.views.decorators.http import require_http_methods

from workbench.converters import DatabaseId

# Before the apps' URLconfs are included: they use <id:...> for every database id.
register_converter(DatabaseId, "id")

urlpatterns = [
    path("admin/", admin.site.urls),
    # Django's LoginView takes PUT as POST; like every page here it answers only the methods it means.
    path("login/", require_http_methods(["GET", "HEAD", "POST"])(auth_views.LoginView.as_view()), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("api/v1/", include("annotate.api.urls")),
    path("", include("annotate.urls")),
]
