from __future__ import annotations

from django.urls import path

from . import views_reports

app_name = "reports"

urlpatterns = [
    path("", views_reports.report_list, name="list"),
    path("<int:pk>/<str:fmt>/", views_reports.report_download, name="download"),
]
