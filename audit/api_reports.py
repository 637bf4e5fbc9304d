"""`/api/usage/` and `/api/reports/`: usage from the roll-ups and the chargeback reports, scoped
like the Reports page (superusers and global report viewers see all; others the departments
they hold `view_department_reports` on). Another department's report by id is 404."""

from __future__ import annotations

import datetime as dt

from django.db.models import Q
from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import exceptions, permissions, serializers, viewsets
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from .models import ChargebackReport, UsageRollup
from .money import PRECISION_NOTE
from .querysets import GROUPS, SUMS
from .services import month_days, parse_month
from .usage import error_rate, label_usage, money
from .views_reports import report_file_response

MAX_ROWS = 10_000


def parse_period(params) -> tuple[dt.date | None, dt.date | None]:
    """`period` = YYYY-MM, YYYY-MM-DD or FIRST..LAST (dates, inclusive); or `start`/`end`."""
    period = params.get("period")
    try:
        if period:
            if ".." in period:
                first, last = period.split("..", 1)
                return dt.date.fromisoformat(first), dt.date.fromisoformat(last)
            if len(period) == 7:
                days = month_days(parse_month(period))
                return days[0], days[-1]
            day = dt.date.fromisoformat(period)
            return day, day
        start, end = params.get("start"), params.get("end")
        return (
            dt.date.fromisoformat(start) if start else None,
            dt.date.fromisoformat(end) if end else None,
        )
    except ValueError:
        raise exceptions.ValidationError(
            {"period": "Use YYYY-MM, YYYY-MM-DD or YYYY-MM-DD..YYYY-MM-DD (UTC days)."}
        )


def filter_usage(queryset, params):
    """Filters: department (id or cost center), user (id or username), llm (id or mesh id),
    purpose, api_key (prefix)."""
    if value := params.get("department"):
        if value.isdigit():
            queryset = queryset.filter(department_id=int(value))
        else:
            queryset = queryset.filter(
                Q(department__cost_center=value) | Q(department__isnull=True, cost_center=value)
            )
    if value := params.get("user"):
        if value.isdigit():
            queryset = queryset.filter(user_id=int(value))
        else:
            queryset = queryset.filter(Q(user__username=value) | Q(user_name=value))
    if value := params.get("llm"):
        if value.isdigit():
            queryset = queryset.filter(llm_id=int(value))
        else:
            queryset = queryset.filter(Q(llm__mesh_id=value) | Q(llm_name=value))
    if "purpose" in params:
        queryset = queryset.filter(purpose=params["purpose"])
    if "api_key" in params:
        queryset = queryset.filter(api_key_prefix=params["api_key"])
    return queryset


def usage_row(row: dict, group_by: list[str]) -> dict:
    out: dict = {}
    for name in group_by:
        if name == "day":
            out["day"] = row["day"].isoformat()
        elif name == "month":
            month = row["month"]
            out["month"] = f"{month:%Y-%m}" if month else None
        elif name == "department":
            out["department"] = row["department_id"] and {
                "id": row["department_id"],
                "name": row["department_name"],
                "cost_center": row["cost_center"],
            }
        elif name == "user":
            out["user"] = row["user_id"] and {
                "id": row["user_id"],
                "username": row["user_name"],
            }
        elif name == "llm":
            out["llm"] = row["llm_id"] and {"id": row["llm_id"], "mesh_id": row["llm_name"]}
        elif name == "purpose":
            out["purpose"] = row["purpose"]
        elif name == "api_key":
            out["api_key"] = row["api_key_prefix"]
    for name in SUMS:
        out[name] = money(row[name]) if name == "cost" else row[name] or 0
    out["error_rate"] = error_rate(row["requests"], row["errors"])
    return out


USAGE_PARAMETERS = [
    OpenApiParameter("period", OpenApiTypes.STR, description="YYYY-MM, YYYY-MM-DD or A..B (UTC)"),
    OpenApiParameter("start", OpenApiTypes.DATE),
    OpenApiParameter("end", OpenApiTypes.DATE),
    OpenApiParameter("department", OpenApiTypes.STR, description="id or cost-center code"),
    OpenApiParameter("user", OpenApiTypes.STR, description="id or username"),
    OpenApiParameter("llm", OpenApiTypes.STR, description="id or mesh id (conn/model)"),
    OpenApiParameter("purpose", OpenApiTypes.STR),
    OpenApiParameter("api_key", OpenApiTypes.STR, description="key prefix"),
    OpenApiParameter(
        "group_by", OpenApiTypes.STR, description=f"comma-separated: {', '.join(GROUPS)}"
    ),
]


class UsageView(APIView):
    permission_classes = [permissions.IsAuthenticated]

    @extend_schema(parameters=USAGE_PARAMETERS, responses=OpenApiTypes.OBJECT)
    def get(self, request: Request) -> Response:
        params = request.query_params
        first, last = parse_period(params)
        group_by = [name.strip() for name in params.get("group_by", "department").split(",")]
        group_by = [name for name in group_by if name]
        unknown = [name for name in group_by if name not in GROUPS]
        if unknown:
            raise exceptions.ValidationError(
                {"group_by": f"Unknown: {', '.join(unknown)}. Choose from {', '.join(GROUPS)}."}
            )
        queryset = filter_usage(
            UsageRollup.objects.visible_to(request.user).between(first, last), params
        )
        rows = list(queryset.summed_by(*group_by)[: MAX_ROWS + 1]) if group_by else []
        rows = label_usage(rows, group_by)
        if len(rows) > MAX_ROWS:
            raise exceptions.ValidationError(
                {"group_by": f"More than {MAX_ROWS} groups: narrow the period or the filters."}
            )
        totals = queryset.summed_by()[0]
        return Response(
            {
                "period": {
                    "first": first.isoformat() if first else None,
                    "last": last.isoformat() if last else None,
                },
                "group_by": group_by,
                "precision": PRECISION_NOTE,
                "results": [usage_row(row, group_by) for row in rows],
                "totals": usage_row(totals, []),
            }
        )


class ReportSerializer(serializers.ModelSerializer):
    month = serializers.SerializerMethodField()
    total_cost = serializers.DecimalField(max_digits=18, decimal_places=10)
    downloads = serializers.SerializerMethodField()

    class Meta:
        model = ChargebackReport
        fields = [
            "id",
            "month",
            "department",
            "department_name",
            "cost_center",
            "version",
            "is_current",
            "requests",
            "errors",
            "prompt_tokens",
            "completion_tokens",
            "cached_tokens",
            "total_cost",
            "generated_at",
            "downloads",
        ]

    def get_month(self, report: ChargebackReport) -> str:
        return f"{report.month:%Y-%m}"

    def get_downloads(self, report: ChargebackReport) -> dict[str, str]:
        request = self.context["request"]
        return {
            fmt: request.build_absolute_uri(reverse("api-report-download", args=[report.pk, fmt]))
            for fmt in ("csv", "xlsx")
        }


class ReportDetailSerializer(ReportSerializer):
    class Meta(ReportSerializer.Meta):
        fields = [*ReportSerializer.Meta.fields, "breakdowns"]


@extend_schema(
    parameters=[
        OpenApiParameter("month", OpenApiTypes.STR, description="YYYY-MM"),
        OpenApiParameter("department", OpenApiTypes.STR, description="id or cost-center code"),
        OpenApiParameter("all_versions", OpenApiTypes.BOOL, description="superseded ones too"),
    ]
)
class ReportViewSet(viewsets.ReadOnlyModelViewSet):
    permission_classes = [permissions.IsAuthenticated]

    def get_serializer_class(self):
        return ReportDetailSerializer if self.action == "retrieve" else ReportSerializer

    def get_queryset(self):
        queryset = ChargebackReport.objects.visible_to(self.request.user)
        if self.action != "list":
            return queryset.defer("csv_file", "xlsx_file")
        queryset = queryset.without_files()
        params = self.request.query_params
        if params.get("all_versions") not in {"1", "true", "yes"}:
            queryset = queryset.current()
        if month := params.get("month"):
            try:
                queryset = queryset.filter(month=parse_month(month))
            except ValueError:
                raise exceptions.ValidationError({"month": "Use YYYY-MM."})
        if value := params.get("department"):
            key = "department_id" if value.isdigit() else "cost_center"
            queryset = queryset.filter(**{key: value})
        return queryset.order_by("-month", "department_name", "-version")


class ReportDownloadView(APIView):
    """The report's file, for API clients (keys); 404 outside the caller's departments."""

    permission_classes = [permissions.IsAuthenticated]

    @extend_schema(
        operation_id="reports_download",
        responses={(200, "application/octet-stream"): OpenApiTypes.BINARY},
    )
    def get(self, request: Request, pk: int, fmt: str):
        return report_file_response(ChargebackReport.objects.visible_to(request.user), pk, fmt)
