"""`/api/`: the management API, its OpenAPI schema and browsable docs (login required)."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView
from rest_framework.routers import DefaultRouter

from . import api, api_departments

router = DefaultRouter(trailing_slash=True)
router.include_root_view = False  # the root listing would be one more public-ish page
router.register("connections", api.ConnectionViewSet, basename="api-connection")
router.register("llms", api.LLMViewSet, basename="api-llm")
router.register("aliases", api.AliasViewSet, basename="api-alias")
router.register("keys", api.ApiKeyViewSet, basename="api-key")
router.register("departments", api_departments.DepartmentViewSet, basename="api-department")

urlpatterns = [
    path("", include(router.urls)),
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
