from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

admin.site.site_header = "Meshgate administration"
admin.site.site_title = "Meshgate"
admin.site.index_title = "LLM gateway"

urlpatterns = [
    path("admin/", admin.site.urls),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("api/", include("gateway.api_urls")),
    path("api/", include("quotas.api_urls")),
    path("api/", include("audit.api_urls")),
    path("api/", include("audit.api_reports_urls")),
    path("reports/", include("audit.urls")),
    path("keys/", include("gateway.urls")),
    path("playground/", include("playground.urls")),
]
