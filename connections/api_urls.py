"""The connections' routes under `/api/` (included by meshsite/urls.py)."""

from __future__ import annotations

from django.urls import include, path
from rest_framework.routers import DefaultRouter

from . import api, api_departments

router = DefaultRouter(trailing_slash=True)
router.include_root_view = False  # the root listing would be one more public-ish page
router.register("connections", api.ConnectionViewSet, basename="api-connection")
router.register("llms", api.LLMViewSet, basename="api-llm")
router.register("aliases", api.AliasViewSet, basename="api-alias")
router.register("departments", api_departments.DepartmentViewSet, basename="api-department")

urlpatterns = [path("", include(router.urls))]
