"""Reads of roll-ups and reports: who may see which department's, and the usage queries the
REST API, the Reports page and the admin dashboard share."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from django.db import models
from django.db.models import Count, Q, Sum
from django.db.models.functions import TruncMonth
from guardian.shortcuts import get_objects_for_user

REPORTS_PERM = "connections.view_department_reports"
# A model-wide grant of either permission means "report viewer of every department".
GLOBAL_REPORT_PERMS = (REPORTS_PERM, "audit.view_chargebackreport")

# group-by name -> the roll-up values it groups on (the first is the key, the rest labels)
GROUPS: dict[str, tuple] = {
    "day": ("day",),
    "month": ("month",),
    "department": ("department_id", "department__group__name", "department__cost_center"),
    "user": ("user_id", "user__username"),
    "llm": ("llm_id", "llm__mesh_id"),
    "purpose": ("purpose",),
    "api_key": ("api_key_prefix",),
}
SUMS = ("requests", "errors", "prompt_tokens", "completion_tokens", "cached_tokens", "cost")


def report_department_ids(user) -> list[int] | None:
    """Departments whose usage and reports `user` may see; None means all (unassigned usage
    included), [] none. The grant is django-guardian's per-department object permission
    `view_department_reports`, held by the user or one of their groups."""
    if user is None or not user.is_authenticated or not user.is_active:
        return []
    if user.is_superuser or any(user.has_perm(perm) for perm in GLOBAL_REPORT_PERMS):
        return None
    from connections.models import Department

    departments = get_objects_for_user(
        user, REPORTS_PERM, klass=Department, accept_global_perms=False, with_superuser=False
    )
    return sorted(departments.values_list("pk", flat=True))


class _DepartmentScoped(models.QuerySet):
    def visible_to(self, user):
        department_ids = report_department_ids(user)
        if department_ids is None:
            return self.all()
        if not department_ids:
            return self.none()
        return self.filter(department_id__in=department_ids)


class ChargebackReportQuerySet(_DepartmentScoped):
    def current(self):
        return self.filter(is_current=True)

    def without_files(self):
        """Lists never need the files' bytes."""
        return self.defer("csv_file", "xlsx_file", "breakdowns")


class UsageRollupQuerySet(_DepartmentScoped):
    def between(self, first: dt.date | None = None, last: dt.date | None = None):
        """Days from `first` to `last` inclusive; either bound may be left open."""
        queryset = self
        if first is not None:
            queryset = queryset.filter(day__gte=first)
        if last is not None:
            queryset = queryset.filter(day__lte=last)
        return queryset

    def summed_by(self, *group_by: str):
        """One row per group with the summed counters, grouped in SQL; no group-by: one total."""
        unknown = set(group_by) - set(GROUPS)
        if unknown:
            raise ValueError(f"Unknown group-by: {', '.join(sorted(unknown))}.")
        queryset = self.order_by()
        if "month" in group_by:
            queryset = queryset.annotate(month=TruncMonth("day"))
        fields = [field for name in group_by for field in GROUPS[name]]
        sums = {name: Sum(name) for name in SUMS}
        if not fields:
            return [queryset.aggregate(**sums)]
        return queryset.values(*fields).annotate(**sums).order_by(*fields)


def error_rate(requests: int | None, errors: int | None) -> float:
    return round((errors or 0) / requests, 4) if requests else 0.0


def money(value) -> str:
    """Costs leave the database as exact decimal strings, never floats."""
    return str(Decimal(value or 0).quantize(Decimal("0.0000000001")))


def calls_per_day(queryset) -> list[dict]:
    """For the dashboard: requests, errors and tokens per day (already summed in roll-ups)."""
    rows = (
        queryset.order_by()
        .values("day")
        .annotate(
            requests=Sum("requests"),
            errors=Sum("errors"),
            prompt_tokens=Sum("prompt_tokens"),
            completion_tokens=Sum("completion_tokens"),
            cached_tokens=Sum("cached_tokens"),
            groups=Count("pk"),
        )
    )
    return list(rows.order_by("day"))


def unassigned(queryset) -> dict:
    """Usage with no department: refused calls. Its cost should be zero."""
    return queryset.filter(Q(department__isnull=True)).aggregate(
        requests=Sum("requests"), cost=Sum("cost")
    )
