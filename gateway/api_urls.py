"""The gateway's routes under `/api/` (included by meshsite/urls.py): API keys."""

from __future__ import annotations

from django.urls import include, path
from rest_framework.routers import DefaultRouter

from . import api

router = DefaultRouter(trailing_slash=True)
router.include_root_view = False  # the root listing would be one more public-ish page
router.register("keys", api.ApiKeyViewSet, basename="api-key")

urlpatterns = [path("", include(router.urls))]
