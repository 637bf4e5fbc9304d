"""Reads of the audit trail and its roll-ups: who may see which records, roll-ups and reports,
the common filters, and the grouped sums of usage."""

from __future__ import annotations

import datetime as dt

from django.db import models
from django.db.models import Max, Sum
from django.db.models.functions import TruncMonth
from guardian.shortcuts import get_objects_for_user

AUDIT_PERM = "connections.view_department_audit"
# A model-wide grant of either permission means "auditor of every department".
GLOBAL_AUDIT_PERMS = (AUDIT_PERM, "audit.view_callrecord")
_CACHE = "_audit_department_ids"


def audit_department_ids(user) -> list[int] | None:
    """Departments whose records `user` may read; None means all of them (records with no
    department included). An empty list means none.

    The grant is the per-department object permission `view_department_audit`, held by the
    user or by one of their groups (django-guardian). It is evaluated once into a short list
    so that the record query filters on literal ids and keeps using its indexes.
    """
    if user is None or not user.is_authenticated or not user.is_active:
        return []
    if user.is_superuser or any(user.has_perm(perm) for perm in GLOBAL_AUDIT_PERMS):
        return None
    # One admin page asks several times (permissions, queryset, filters, sidebar); the user
    # object lives for one request, like Django's own permission caches on it.
    cached = getattr(user, _CACHE, None)
    if cached is None:
        from connections.models import Department

        departments = get_objects_for_user(
            user, AUDIT_PERM, klass=Department, accept_global_perms=False, with_superuser=False
        )
        cached = sorted(departments.values_list("pk", flat=True))
        setattr(user, _CACHE, cached)
    return list(cached)


class CallRecordQuerySet(models.QuerySet):
    def visible_to(self, user) -> CallRecordQuerySet:
        """The records `user` may read: all for superusers and global auditors, otherwise
        those of the departments they hold `view_department_audit` on."""
        department_ids = audit_department_ids(user)
        if department_ids is None:
            return self.all()
        if not department_ids:
            return self.none()
        return self.filter(department_id__in=department_ids)

    def started_between(
        self, start: dt.datetime | None = None, end: dt.datetime | None = None
    ) -> CallRecordQuerySet:
        """Records started in [start, end); either bound may be left open."""
        queryset = self
        if start is not None:
            queryset = queryset.filter(started_at__gte=start)
        if end is not None:
            queryset = queryset.filter(started_at__lt=end)
        return queryset

    def ok(self) -> CallRecordQuerySet:
        return self.filter(outcome="ok")


# --- roll-ups and reports ---------------------------------------------------------------------

REPORTS_PERM = "connections.view_department_reports"
# A model-wide grant of either permission means "report viewer of every department".
GLOBAL_REPORT_PERMS = (REPORTS_PERM, "audit.view_chargebackreport")

# group-by name -> the roll-up values it groups on. Departments, users and LLMs group on their
# id alone (a rename splits nothing); `label_usage` names them afterwards.
GROUPS: dict[str, tuple] = {
    "day": ("day",),
    "month": ("month",),
    "department": ("department_id",),
    "user": ("user_id",),
    "llm": ("llm_id",),
    "purpose": ("purpose",),
    "api_key": ("api_key_prefix",),
}
# group-by name -> (trail kind, {roll-up snapshot column: label key})
NAMED = {
    "department": (
        "department",
        {"department_name": "department_name", "cost_center": "cost_center"},
    ),
    "user": ("user", {"user_name": "user_name"}),
    "llm": ("llm", {"llm_name": "llm_name"}),
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
        # The snapshot names of each id (any one of them), for ids deleted without a trace.
        snapshots = {
            f"snapshot_{column}": Max(column)
            for name in group_by
            if name in NAMED
            for column in NAMED[name][1]
        }
        return queryset.values(*fields).annotate(**sums, **snapshots).order_by(*fields)
