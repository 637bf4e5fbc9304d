"""Aliases, departments and the read-only change log in the admin."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db import transaction
from django.db.models import Count, QuerySet
from django.http import HttpRequest

from .. import services
from ..forms import DepartmentForm
from ..models import Alias, AliasTarget, ChangeEvent, Department


class AliasTargetInline(admin.TabularInline):
    model = AliasTarget
    fields = ("position", "llm")
    autocomplete_fields = ("llm",)
    ordering = ("position", "id")
    extra = 1
    verbose_name = "target (tried in order of position)"
    verbose_name_plural = (
        "targets (tried in order of position: the first, then the next on failure)"
    )


@admin.register(Alias)
class AliasAdmin(admin.ModelAdmin):
    list_display = ("name", "target_list", "description", "updated_at")
    search_fields = ("name", "description", "targets__llm__mesh_id")
    inlines = (AliasTargetInline,)

    def get_queryset(self, request: HttpRequest) -> QuerySet[Alias]:
        return (
            super()
            .get_queryset(request)
            .prefetch_related("targets__llm")
            .distinct()  # the search spans targets
        )

    @admin.display(description="Targets, in order")
    def target_list(self, obj: Alias) -> str:
        return " → ".join(t.llm.mesh_id for t in obj.targets.all()) or "-"

    def save_model(self, request: HttpRequest, obj: Alias, form: Any, change: bool) -> None:
        values = {
            "name": form.cleaned_data["name"],
            "description": form.cleaned_data["description"],
        }
        if change:
            saved = services.alias_update(
                alias=Alias.objects.get(pk=obj.pk), actor=request.user, **values
            )
        else:
            saved = services.alias_create(actor=request.user, **values)
        obj.pk = saved.pk
        obj._state.adding = False
        obj.refresh_from_db()

    def save_related(self, request: HttpRequest, form: Any, formsets: list, change: bool) -> None:
        # The inline is read as the ordered list it describes and saved by one service call.
        rows = []
        for formset in formsets:
            for row in formset.forms:
                data = getattr(row, "cleaned_data", None)
                if data and data.get("llm") and not data.get("DELETE"):
                    rows.append((data.get("position") or 0, len(rows), data["llm"]))
            # The admin's history message reads these (set by formset.save() normally).
            formset.new_objects, formset.changed_objects, formset.deleted_objects = [], [], []
        services.alias_set_targets(
            alias=form.instance,
            llms=[llm for *_, llm in sorted(rows, key=lambda r: r[:2])],
            actor=request.user,
        )

    def delete_model(self, request: HttpRequest, obj: Alias) -> None:
        services.alias_delete(alias=obj, actor=request.user)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Alias]) -> None:
        for alias in queryset:
            services.alias_delete(alias=alias, actor=request.user)


@admin.register(Department)
class DepartmentAdmin(admin.ModelAdmin):
    form = DepartmentForm
    list_display = ("name", "cost_center", "member_count")
    readonly_fields = ("everywhere",)
    search_fields = ("group__name", "cost_center")
    list_select_related = ("group",)
    ordering = ("group__name",)

    def get_queryset(self, request: HttpRequest) -> QuerySet[Department]:
        return super().get_queryset(request).annotate(_members=Count("group__user", distinct=True))

    @admin.display(description="Name", ordering="group__name")
    def name(self, obj: Department) -> str:
        return obj.group.name

    def get_fieldsets(self, request: HttpRequest, obj: Department | None = None) -> list:
        fieldsets: list = [(None, {"fields": ("name", "cost_center", "contacts")})]
        if obj is not None:
            fieldsets += [
                (
                    "Access",
                    {
                        "fields": ("members", "llms"),
                        "description": "Who is in this department and which models it may use.",
                    },
                ),
                (
                    f"Who may view {obj.name}'s reports and audit records",
                    {
                        "fields": (
                            "report_users",
                            "report_groups",
                            "audit_users",
                            "audit_groups",
                            "everywhere",
                        ),
                        "description": f"A grant here shows {obj.name}'s data only. "
                        "Superusers, and people or groups holding the global permission "
                        "(on their own page), see ALL departments.",
                    },
                ),
            ]
        return fieldsets

    @admin.display(description="Also every department's, by a global permission")
    def everywhere(self, obj: Department) -> str:
        lines = []
        for key, access in services.ACCESSES.items():
            users, groups = services.department_access_global_holders(access=key)
            holders = [u.username for u in users] + [f"group {g.name}" for g in groups]
            lines.append(f"{access.label}: {', '.join(holders) or 'nobody'}")
        return "; ".join(lines) + " (and superusers)"

    @admin.display(description="Members", ordering="_members")
    def member_count(self, obj: Department) -> int:
        return obj._members

    def save_model(self, request: HttpRequest, obj: Department, form: Any, change: bool) -> None:
        values = {k: form.cleaned_data[k] for k in ("name", "cost_center", "contacts")}
        with transaction.atomic():
            if change:
                saved = services.department_update(
                    department=Department.objects.get(pk=obj.pk), actor=request.user, **values
                )
                services.department_access_set(
                    department=saved, actor=request.user, **form.access_changes()
                )
            else:
                saved = services.department_create(actor=request.user, **values)
        obj.pk = saved.pk
        obj.group_id = saved.group_id
        obj._state.adding = False
        obj.refresh_from_db()

    def delete_model(self, request: HttpRequest, obj: Department) -> None:
        services.department_delete(department=obj, actor=request.user)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Department]) -> None:
        for department in queryset:
            services.department_delete(department=department, actor=request.user)


@admin.register(ChangeEvent)
class ChangeEventAdmin(admin.ModelAdmin):
    """The change log: read-only for everyone, superusers included."""

    list_display = ("at", "event_type", "object_repr", "actor", "summary")
    list_filter = ("event_type", "at")
    search_fields = ("object_repr", "actor__username", "event_type")
    list_select_related = ("actor",)
    date_hierarchy = "at"
    fields = ("at", "event_type", "object_repr", "actor", "details")
    readonly_fields = fields

    @admin.display(description="Details")
    def summary(self, obj: ChangeEvent) -> str:
        parts = []
        for key, value in (obj.details or {}).items():
            if key.endswith("_id"):
                continue  # the object is named in its own column
            if isinstance(value, dict) and set(value) == {"from", "to"}:
                value = f"{value['from']} → {value['to']}"
            elif isinstance(value, dict):
                value = ", ".join(
                    f"{k}: {v['from']} → {v['to']}" if isinstance(v, dict) and "to" in v else k
                    for k, v in value.items()
                )
            elif isinstance(value, list):
                value = ", ".join(str(v) for v in value) or "none"
            parts.append(f"{key.replace('_', ' ')}: {value}")
        text = "; ".join(parts)
        return text if len(text) <= 160 else text[:159] + "…"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
