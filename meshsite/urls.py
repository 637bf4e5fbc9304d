from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView

admin.site.site_header = "Meshgate administration"
admin.site.site_title = "Meshgate"
admin.site.index_title = "LLM gateway"

# `/api/`: each app mounts its own routes; the schema and its docs cover them all.
api_urlpatterns = [
    path("", include("connections.api_urls")),
    path("", include("quotas.api_urls")),
    path("", include("audit.api_urls")),
    path("", include("gateway.api_urls")),
    # The schema view answers API clients (401/403); the docs pages are for people and
    # send anonymous visitors to the login page.
    path("schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path(
        "docs/",
        login_required(SpectacularSwaggerView.as_view(url_name="api-schema")),
        name="api-docs",
    ),
    path(
        "docs/redoc/",
        login_required(SpectacularRedocView.as_view(url_name="api-schema")),
        name="api-redoc",
    ),
]

urlpatterns = [
    path("admin/", admin.site.urls),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("api/", include(api_urlpatterns)),
    path("reports/", include("audit.urls")),
    path("keys/", include("gateway.urls")),
    path("playground/", include("playground.urls")),
]
