"""The Reports page: each user sees and downloads the chargeback reports of the departments
they hold `view_department_reports` on, and nothing else (another department's file is 404)."""

from __future__ import annotations

from itertools import groupby

from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render
from django.views.decorators.http import require_GET

from .models import ChargebackReport
from .reports import CONTENT_TYPES


@login_required
@require_GET
def report_list(request: HttpRequest) -> HttpResponse:
    reports = ChargebackReport.objects.visible_to(request.user).without_files()
    months = [
        {"month": month, "reports": list(rows)}
        for month, rows in groupby(
            reports.order_by("-month", "department_name", "-version"),
            key=lambda report: report.month,
        )
    ]
    return render(request, "audit/reports.html", {"months": months})


@login_required
@require_GET
def report_download(request: HttpRequest, pk: int, fmt: str) -> HttpResponse:
    return report_file_response(ChargebackReport.objects.visible_to(request.user), pk, fmt)


def report_file_response(queryset, pk: int, fmt: str) -> HttpResponse:
    """The report's stored file as an attachment; 404 when outside `queryset` (the caller's
    scope), so another department's report is indistinguishable from a missing one."""
    if fmt not in CONTENT_TYPES:
        raise Http404("Unknown format.")
    column = f"{fmt}_file"
    report = get_object_or_404(
        queryset.only("pk", "month", "cost_center", "version", column), pk=pk
    )
    response = HttpResponse(bytes(getattr(report, column)), content_type=CONTENT_TYPES[fmt])
    response["Content-Disposition"] = f'attachment; filename="{report.file_name(fmt)}"'
    response["Cache-Control"] = "private, no-store"
    return response
