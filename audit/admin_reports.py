"""Roll-ups and chargeback reports in the admin: reports by month and department with totals
and downloads, "Generate now" for any month, and a usage dashboard with charts.

Everything is read-only: reports are immutable versions (regenerating adds one), roll-ups are
recomputed by tasks. A staff user who holds `view_department_reports` on some departments sees
those departments' rows; superusers and model-wide viewers see all. Registered from
`AuditConfig.ready()`.
"""

from __future__ import annotations

import datetime as dt

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.db.models import Sum
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html

from . import tasks
from .models import ChargebackReport, UsageRollup
from .money import usd
from .querysets import report_department_ids
from .services import parse_month
from .trail import DELETED
from .usage import dashboard_data
from .views_reports import report_file_response


class _DepartmentScopedAdmin(admin.ModelAdmin):
    """Read-only, and scoped to the departments whose reports the user may see."""

    actions = None

    def get_queryset(self, request: HttpRequest):
        return super().get_queryset(request).visible_to(request.user)

    def has_module_permission(self, request: HttpRequest) -> bool:
        return request.user.is_active and report_department_ids(request.user) != []

    def has_view_permission(self, request: HttpRequest, obj=None) -> bool:
        department_ids = report_department_ids(request.user)
        if department_ids is None:
            return True
        if obj is None:
            return bool(department_ids)
        return obj.department_id in department_ids

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


@admin.register(UsageRollup)
class UsageRollupAdmin(_DepartmentScopedAdmin):
    list_display = (
        "day",
        "department_label",
        "user_label",
        "llm_label",
        "purpose",
        "api_key_prefix",
        "requests",
        "errors",
        "prompt_tokens",
        "completion_tokens",
        "cached_tokens",
        "cost_usd",
    )
    list_select_related = ("department__group", "user", "llm")
    list_filter = (("department", admin.RelatedOnlyFieldListFilter), "llm")
    search_fields = ("=api_key_prefix", "purpose", "user_name", "llm_name", "department_name")
    date_hierarchy = "day"
    show_facets = admin.ShowFacets.NEVER

    # The roll-up keeps ids and the names at roll-up time: what was deleted since shows as
    # "name (deleted)" (the LEFT JOIN of list_select_related finds no row).
    @staticmethod
    def _label(live, pk, snapshot: str, none: str) -> str:
        if pk is None:
            return none
        return str(live) if live is not None else f"{snapshot or f'#{pk}'}{DELETED}"

    @admin.display(description="Department", ordering="department_name")
    def department_label(self, rollup: UsageRollup) -> str:
        return self._label(
            rollup.department, rollup.department_id, rollup.department_name, "(unassigned)"
        )

    @admin.display(description="User", ordering="user_name")
    def user_label(self, rollup: UsageRollup) -> str:
        return self._label(rollup.user, rollup.user_id, rollup.user_name, "(no user)")

    @admin.display(description="LLM", ordering="llm_name")
    def llm_label(self, rollup: UsageRollup) -> str:
        live = rollup.llm.mesh_id if rollup.llm is not None else None
        return self._label(live, rollup.llm_id, rollup.llm_name, "(no model)")

    @admin.display(description="Cost", ordering="cost")
    def cost_usd(self, rollup: UsageRollup) -> str:
        return usd(rollup.cost)


class GenerateForm(forms.Form):
    month = forms.CharField(
        label="Month",
        widget=forms.DateInput(attrs={"type": "month"}),
        help_text="YYYY-MM. Reports for a month already reported become a new current version.",
    )

    def clean_month(self) -> dt.date:
        try:
            month = parse_month(self.cleaned_data["month"])
        except ValueError:
            raise forms.ValidationError("Enter a month as YYYY-MM.")
        if month > timezone.now().date().replace(day=1):
            raise forms.ValidationError("That month has not started yet.")
        return month


@admin.register(ChargebackReport)
class ChargebackReportAdmin(_DepartmentScopedAdmin):
    list_display = (
        "month_label",
        "department_name",
        "cost_center",
        "version_label",
        "requests",
        "errors",
        "total_usd",
        "downloads",
        "generated_at",
        "generated_by",
    )
    list_select_related = ("generated_by",)
    list_filter = ("is_current", ("department", admin.RelatedOnlyFieldListFilter))
    search_fields = ("department_name", "=cost_center")
    date_hierarchy = "month"
    show_facets = admin.ShowFacets.NEVER
    exclude = ("breakdowns",)
    readonly_fields = ("breakdown_tables",)

    def get_queryset(self, request: HttpRequest):
        return super().get_queryset(request).defer("csv_file", "xlsx_file")

    def get_urls(self):
        own = [
            path(
                "generate/",
                self.admin_site.admin_view(self.generate_view),
                name="audit_chargebackreport_generate",
            ),
            path(
                "dashboard/",
                self.admin_site.admin_view(self.dashboard_view),
                name="audit_usage_dashboard",
            ),
            path(
                "<int:pk>/download/<str:fmt>/",
                self.admin_site.admin_view(self.download_view),
                name="audit_chargebackreport_download",
            ),
        ]
        return own + super().get_urls()

    @admin.display(description="Month", ordering="month")
    def month_label(self, report: ChargebackReport) -> str:
        return f"{report.month:%Y-%m}"

    @admin.display(description="Version", ordering="version")
    def version_label(self, report: ChargebackReport) -> str:
        return f"v{report.version} (current)" if report.is_current else f"v{report.version}"

    @admin.display(description="Total", ordering="total_cost")
    def total_usd(self, report: ChargebackReport) -> str:
        return usd(report.total_cost)

    @admin.display(description="Download")
    def downloads(self, report: ChargebackReport) -> str:
        name = "admin:audit_chargebackreport_download"
        return format_html(
            '<a href="{}">CSV</a> · <a href="{}">XLSX</a>',
            reverse(name, args=[report.pk, "csv"]),
            reverse(name, args=[report.pk, "xlsx"]),
        )

    @admin.display(description="Breakdowns")
    def breakdown_tables(self, report: ChargebackReport) -> str:
        from django.template.loader import render_to_string

        from .reports import BREAKDOWNS

        sections = [
            (title, report.breakdowns.get(name, [])) for name, (_c, title) in BREAKDOWNS.items()
        ]
        return render_to_string("admin/audit/chargeback_breakdowns.html", {"sections": sections})

    def changelist_view(self, request: HttpRequest, extra_context=None):
        response = super().changelist_view(request, extra_context)
        changelist = getattr(response, "context_data", {}).get("cl")
        if changelist is not None:
            # Totals of the current versions only: superseded ones would count twice.
            response.context_data["report_totals"] = changelist.queryset.filter(
                is_current=True
            ).aggregate(requests=Sum("requests"), cost=Sum("total_cost"))
            response.context_data["can_generate"] = self._can_generate(request)
        return response

    def _can_generate(self, request: HttpRequest) -> bool:
        return request.user.has_perm("audit.add_chargebackreport")

    def download_view(self, request: HttpRequest, pk: int, fmt: str) -> HttpResponse:
        return report_file_response(ChargebackReport.objects.visible_to(request.user), pk, fmt)

    def generate_view(self, request: HttpRequest) -> HttpResponse:
        if not self._can_generate(request):
            raise PermissionDenied
        today = timezone.now().date()
        last_month = (today.replace(day=1) - dt.timedelta(days=1)).replace(day=1)
        form = GenerateForm(request.POST or None, initial={"month": f"{last_month:%Y-%m}"})
        if request.method == "POST" and form.is_valid():
            month = form.cleaned_data["month"]
            args = (f"{month:%Y-%m}", request.user.pk)
            # Enqueued once the request's work is committed; runs in-process without Redis.
            transaction.on_commit(lambda: tasks.build_chargeback.delay(*args))
            if tasks.build_chargeback.app.conf.task_always_eager:
                messages.success(request, f"Reports for {month:%Y-%m} generated.")
            else:
                messages.success(
                    request, f"Reports for {month:%Y-%m} queued; they appear here in a moment."
                )
            changelist = reverse("admin:audit_chargebackreport_changelist")
            return HttpResponseRedirect(f"{changelist}?month__year={month.year}")
        context = {
            **self.admin_site.each_context(request),
            "title": "Generate chargeback reports",
            "form": form,
            "opts": self.model._meta,
        }
        return TemplateResponse(request, "admin/audit/chargeback_generate.html", context)

    def dashboard_view(self, request: HttpRequest) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        try:
            days = min(max(int(request.GET.get("days", 30)), 7), 366)
        except ValueError:
            days = 30
        data = dashboard_data(
            UsageRollup.objects.visible_to(request.user), today=timezone.now().date(), days=days
        )
        context = {
            **self.admin_site.each_context(request),
            "title": "Usage dashboard",
            "data": data,
            "days": days,
            "opts": self.model._meta,
        }
        return TemplateResponse(request, "admin/audit/usage_dashboard.html", context)
