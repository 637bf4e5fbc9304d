"""Audit's routes under `/api/` (included by meshsite/urls.py): calls, usage and reports."""

from __future__ import annotations

from django.urls import include, path
from rest_framework.routers import DefaultRouter

from . import api, api_reports

router = DefaultRouter(trailing_slash=True)
router.include_root_view = False
router.register("calls", api.CallRecordViewSet, basename="api-call")

report_list = api_reports.ReportViewSet.as_view({"get": "list"})
report_detail = api_reports.ReportViewSet.as_view({"get": "retrieve"})

urlpatterns = [
    path("", include(router.urls)),
    path("usage/", api_reports.UsageView.as_view(), name="api-usage"),
    path("reports/", report_list, name="api-report-list"),
    path("reports/<int:pk>/", report_detail, name="api-report-detail"),
    path(
        "reports/<int:pk>/<str:fmt>/",
        api_reports.ReportDownloadView.as_view(),
        name="api-report-download",
    ),
]
