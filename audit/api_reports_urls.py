"""Mounted under /api/: usage/ and reports/ (prefixes no other app uses)."""

from __future__ import annotations

from django.urls import path

from . import api_reports

report_list = api_reports.ReportViewSet.as_view({"get": "list"})
report_detail = api_reports.ReportViewSet.as_view({"get": "retrieve"})

urlpatterns = [
    path("usage/", api_reports.UsageView.as_view(), name="api-usage"),
    path("reports/", report_list, name="api-report-list"),
    path("reports/<int:pk>/", report_detail, name="api-report-detail"),
    path(
        "reports/<int:pk>/<str:fmt>/",
        api_reports.ReportDownloadView.as_view(),
        name="api-report-download",
    ),
]
