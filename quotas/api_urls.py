"""Included under /api/ by meshsite/urls.py."""

from __future__ import annotations

from django.urls import include, path
from rest_framework.routers import DefaultRouter

from .api import QuotaViewSet

router = DefaultRouter(trailing_slash=True)
router.include_root_view = False
router.register("quotas", QuotaViewSet, basename="api-quota")

urlpatterns = [path("", include(router.urls))]
