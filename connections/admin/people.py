"""Users and groups in the admin. Permissions read for what they do: one that shows every
department's data says so, since a grant for one department is given on that department's
page (its access panel). Permission and group-membership changes made here go through the
services, so each is a ChangeEvent with the acting user."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.contrib.auth.admin import GroupAdmin, UserAdmin
from django.contrib.auth.models import Group, User
from django.http import HttpRequest

from .. import services


class _PermissionLabels:
    def formfield_for_manytomany(self, db_field, request: HttpRequest, **kwargs: Any):
        field = super().formfield_for_manytomany(db_field, request, **kwargs)
        if field is not None and db_field.name in {"user_permissions", "permissions"}:
            field.label_from_instance = services.permission_label
        return field


admin.site.unregister(User)
admin.site.unregister(Group)


@admin.register(User)
class MeshgateUserAdmin(_PermissionLabels, UserAdmin):
    def save_related(self, request: HttpRequest, form: Any, formsets: list, change: bool) -> None:
        # Taken out of cleaned_data, the form's own m2m save leaves them to the services.
        permissions = form.cleaned_data.pop("user_permissions", None)
        groups = form.cleaned_data.pop("groups", None)
        super().save_related(request, form, formsets, change)
        if groups is not None:
            services.user_groups_set(user=form.instance, groups=groups, actor=request.user)
        if permissions is not None:
            services.permissions_set(
                user=form.instance, permissions=permissions, actor=request.user
            )


@admin.register(Group)
class MeshgateGroupAdmin(_PermissionLabels, GroupAdmin):
    def save_related(self, request: HttpRequest, form: Any, formsets: list, change: bool) -> None:
        permissions = form.cleaned_data.pop("permissions", None)
        super().save_related(request, form, formsets, change)
        if permissions is not None:
            services.permissions_set(
                group=form.instance, permissions=permissions, actor=request.user
            )
