"""Users and groups in the admin, with permissions that read for what they do: a permission
that shows every department's data says so, since a grant for one department is given on that
department's page (its access panel), not here."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.contrib.auth.admin import GroupAdmin, UserAdmin
from django.contrib.auth.models import Group, Permission, User
from django.http import HttpRequest

# Held as a user's or a group's own permission, each of these covers ALL departments.
EVERY_DEPARTMENT = {
    ("connections", "view_department_reports"): "View and download the reports of ALL "
    "departments (for one department: its page's access panel)",
    ("connections", "view_department_audit"): "View the audit records of ALL departments "
    "(for one department: its page's access panel)",
    ("audit", "view_callrecord"): "View the call records of ALL departments",
    ("audit", "view_chargebackreport"): "View the chargeback reports of ALL departments",
}


def permission_label(permission: Permission) -> str:
    key = (permission.content_type.app_label, permission.codename)
    if key in EVERY_DEPARTMENT:
        return f"{permission.content_type.app_label} | {EVERY_DEPARTMENT[key]}"
    return str(permission)


class _PermissionLabels:
    def formfield_for_manytomany(self, db_field, request: HttpRequest, **kwargs: Any):
        field = super().formfield_for_manytomany(db_field, request, **kwargs)
        if field is not None and db_field.name in {"user_permissions", "permissions"}:
            field.label_from_instance = permission_label
        return field


admin.site.unregister(User)
admin.site.unregister(Group)


@admin.register(User)
class MeshgateUserAdmin(_PermissionLabels, UserAdmin):
    pass


@admin.register(Group)
class MeshgateGroupAdmin(_PermissionLabels, GroupAdmin):
    pass
