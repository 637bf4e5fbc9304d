"""Call records in the admin: read-only for everyone, scoped to the departments one may audit.

Superusers (and holders of a model-wide audit permission) see every record; a staff user
holding `connections.view_department_audit` on some departments (django-guardian, granted
to them or to one of their groups) sees those departments' records and nothing else.
Built to stay fast on millions of rows: no full count per page, no facet counts, filters
that resolve to indexed columns, and a CSV export streamed from a server-side cursor.
"""

from __future__ import annotations

import json

from django.contrib import admin
from django.contrib.admin.options import IncorrectLookupParameters
from django.contrib.admin.views.main import ChangeList
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest
from django.urls import path
from django.utils.html import format_html

from .admin_filters import (
    DateRangeFilter,
    DepartmentFilter,
    EstimatedCountPaginator,
    KeyPrefixFilter,
    ModelRequestedFilter,
    ProbedDatesQuerySet,
    UserFilter,
)
from .export import csv_response
from .models import CallRecord
from .money import usd
from .querysets import audit_department_ids


class _ExportChangeList(ChangeList):
    """The changelist's filters, search and ordering, without fetching a page or counting."""

    def get_results(self, request: HttpRequest) -> None:
        self.result_list = []
        self.result_count = self.full_result_count = 0
        self.can_show_all = self.multi_page = False


def _pretty_json(value: object) -> str:
    if value is None:
        return "—"
    text = json.dumps(value, indent=2, ensure_ascii=False, sort_keys=False, default=str)
    # format_html escapes the text: a body holding "<script>" is shown, never run.
    return format_html('<pre class="audit-json">{}</pre>', text)


@admin.register(CallRecord)
class CallRecordAdmin(admin.ModelAdmin):
    list_display = (
        "started_at",
        "request_id",
        "user",
        "department",
        "api_key_prefix",
        "model_requested",
        "llm",
        "connection",
        "outcome",
        "status_code",
        "tokens",
        "cost_usd",
        "latency_ms",
    )
    list_select_related = ("user", "department__group", "llm", "connection")
    list_filter = (
        DateRangeFilter,
        DepartmentFilter,
        UserFilter,
        KeyPrefixFilter,
        ModelRequestedFilter,
        ("llm", admin.RelatedFieldListFilter),
        ("connection", admin.RelatedFieldListFilter),
        "outcome",
        "streamed",
    )
    search_fields = ("=request_id",)
    search_help_text = "Exact request id (the x-request-id a caller received)."
    date_hierarchy = "started_at"
    list_per_page = 50
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER
    paginator = EstimatedCountPaginator
    actions = None
    fieldsets = (
        (
            "Call",
            {
                "fields": (
                    "request_id",
                    ("started_at", "first_token_at", "ended_at"),
                    ("latency_ms", "ttft_ms"),
                    ("endpoint", "streamed"),
                    ("outcome", "status_code"),
                    "error_message",
                )
            },
        ),
        (
            "Who",
            {
                "fields": (
                    ("user", "department"),
                    ("api_key_prefix", "purpose"),
                    ("client_ip", "user_agent"),
                )
            },
        ),
        (
            "Model",
            {"fields": (("model_requested", "alias_name"), ("llm", "connection"), "attempts_json")},
        ),
        (
            "Usage and cost",
            {
                "fields": (
                    ("prompt_tokens", "completion_tokens", "cached_tokens", "tokens_estimated"),
                    "cost",
                    ("input_price", "output_price", "cached_input_price"),
                )
            },
        ),
        ("Request and response", {"fields": ("request_json", "response_json")}),
    )

    # --- read-only, for everyone ------------------------------------------------------------

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: CallRecord | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: CallRecord | None = None) -> bool:
        return False

    def has_view_permission(self, request: HttpRequest, obj: CallRecord | None = None) -> bool:
        visible = audit_department_ids(request.user)
        if visible is None:
            return True
        if obj is not None:
            return obj.department_id in visible
        return bool(visible)

    def has_module_permission(self, request: HttpRequest) -> bool:
        return self.has_view_permission(request)

    def get_queryset(self, request: HttpRequest):
        queryset = super().get_queryset(request).visible_to(request.user)
        # Same rows; only the date hierarchy's period lookups are answered differently.
        queryset.__class__ = ProbedDatesQuerySet
        return queryset

    def get_search_results(self, request: HttpRequest, queryset, search_term: str):
        # The admin's "=field" search is case-insensitive (UPPER(...) = UPPER(...)), which no
        # index serves: on millions of rows that is a full scan. Request ids are exact.
        term = search_term.strip()
        if not term:
            return queryset, False
        return queryset.filter(request_id=term), False

    def get_readonly_fields(self, request: HttpRequest, obj: CallRecord | None = None):
        return [
            name
            for _title, options in self.fieldsets
            for row in options["fields"]
            for name in (row if isinstance(row, tuple) else (row,))
        ]

    # --- columns and detail -----------------------------------------------------------------

    @admin.display(description="Tokens in/out")
    def tokens(self, record: CallRecord) -> str:
        return f"{record.prompt_tokens}/{record.completion_tokens}"

    @admin.display(description="Cost", ordering="cost")
    def cost_usd(self, record: CallRecord) -> str:
        return usd(record.cost)

    @admin.display(description="Attempts")
    def attempts_json(self, record: CallRecord) -> str:
        return _pretty_json(record.attempts)

    @admin.display(description="Request body")
    def request_json(self, record: CallRecord) -> str:
        return _pretty_json(record.request_body)

    @admin.display(description="Response body")
    def response_json(self, record: CallRecord) -> str:
        return _pretty_json(record.response_body)

    # --- CSV export of the filtered list ----------------------------------------------------

    def get_urls(self):
        export = path(
            "export/",
            self.admin_site.admin_view(self.export_view),
            name="audit_callrecord_export",
        )
        return [export, *super().get_urls()]

    def export_view(self, request: HttpRequest) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        try:
            queryset = self._export_changelist(request).get_queryset(request)
        except IncorrectLookupParameters as exc:
            return HttpResponseBadRequest(str(exc), content_type="text/plain")
        return csv_response(request, queryset, name="call-records")

    def _export_changelist(self, request: HttpRequest) -> ChangeList:
        list_display = self.get_list_display(request)
        return _ExportChangeList(
            request,
            self.model,
            list_display,
            self.get_list_display_links(request, list_display),
            self.get_list_filter(request),
            self.date_hierarchy,
            self.get_search_fields(request),
            self.get_list_select_related(request),
            self.list_per_page,
            self.list_max_show_all,
            self.list_editable,
            self,
            self.get_sortable_by(request),
            self.search_help_text,
        )
