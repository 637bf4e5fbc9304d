"""Reads of the audit trail: who may see which records, and the common filters."""

from __future__ import annotations

import datetime as dt

from django.db import models
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
