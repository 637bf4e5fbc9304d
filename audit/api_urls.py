"""`/api/calls/` (included under `api/` by meshsite/urls.py)."""

from __future__ import annotations

from django.urls import include, path
from rest_framework.routers import DefaultRouter

from . import api

router = DefaultRouter(trailing_slash=True)
router.include_root_view = False
router.register("calls", api.CallRecordViewSet, basename="api-call")

urlpatterns = [path("", include(router.urls))]
