"""LLMs in the admin: cost and speed beside each model, approval, and who may call it."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.db.models import Prefetch, QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse

from .. import services
from ..forms import GroupPickForm, LLMForm
from ..models import LLM, LLMGroupObjectPermission


def _money(value: Decimal | None) -> str:
    if value is None:
        return "-"
    # 0.075 stays 0.075, 2.500000 becomes 2.50.
    text = f"{value.normalize():f}"
    whole, _, cents = text.partition(".")
    return f"${whole}.{cents.ljust(2, '0')}"


@admin.register(LLM)
class LLMAdmin(admin.ModelAdmin):
    form = LLMForm
    list_display = (
        "mesh_id",
        "kind",
        "approved",
        "input_cost",
        "output_cost",
        "cached_cost",
        "context_window",
        "speed",
        "groups_allowed",
        "connection",
    )
    list_filter = ("approved", "kind", "connection", "connection__kind")
    search_fields = ("mesh_id", "name", "description")
    list_select_related = ("connection",)
    readonly_fields = ("mesh_id", "approval", "measured", "catalog_note")
    actions = ("approve", "withdraw", "grant_to_groups", "revoke_from_groups")
    save_on_top = True

    def get_fieldsets(self, request: HttpRequest, obj: LLM | None = None) -> list:
        identity = ["connection", "name", "kind", "description"]
        if obj is not None:
            identity = ["mesh_id", "kind", "description"]
        return [
            (None, {"fields": identity}),
            ("Approval and access", {"fields": ["approved", "approval", "groups"]}),
            (
                "Prices (USD per million tokens)",
                {"fields": ["input_price", "output_price", "cached_input_price"]},
            ),
            (
                "Limits and speed",
                {
                    "fields": [
                        "context_window",
                        "max_output_tokens",
                        "catalog_tokens_per_second",
                        "catalog_date",
                        "catalog_note",
                        "measured",
                    ]
                },
            ),
        ]

    def get_readonly_fields(self, request: HttpRequest, obj: LLM | None = None) -> tuple:
        if obj is None:
            return self.readonly_fields
        # The mesh id callers use is the connection slug and the name: fixed once created.
        return (*self.readonly_fields, "connection", "name")

    def get_queryset(self, request: HttpRequest) -> QuerySet[LLM]:
        grants = LLMGroupObjectPermission.objects.filter(
            permission__codename="use_llm"
        ).select_related("group")
        return (
            super()
            .get_queryset(request)
            .prefetch_related(
                Prefetch("llmgroupobjectpermission_set", queryset=grants, to_attr="use_grants")
            )
        )

    @admin.display(description="In $/1M", ordering="input_price")
    def input_cost(self, obj: LLM) -> str:
        return _money(obj.input_price)

    @admin.display(description="Out $/1M", ordering="output_price")
    def output_cost(self, obj: LLM) -> str:
        return _money(obj.output_price)

    @admin.display(description="Cached $/1M", ordering="cached_input_price")
    def cached_cost(self, obj: LLM) -> str:
        return _money(obj.cached_input_price)

    @admin.display(description="Speed (catalog | measured)", ordering="catalog_tokens_per_second")
    def speed(self, obj: LLM) -> str:
        catalog = (
            f"{obj.catalog_tokens_per_second:.0f} tok/s" if obj.catalog_tokens_per_second else "-"
        )
        parts = []
        if obj.measured_p50_ms is not None:
            parts.append(f"p50 {obj.measured_p50_ms} ms")
        if obj.measured_tokens_per_second:
            parts.append(f"{obj.measured_tokens_per_second:.0f} tok/s")
        return f"{catalog} | {', '.join(parts) or 'not measured'}"

    @admin.display(description="Groups")
    def groups_allowed(self, obj: LLM) -> str:
        names = sorted(grant.group.name for grant in getattr(obj, "use_grants", []))
        return ", ".join(names) or "-"

    @admin.display(description="Approved by")
    def approval(self, obj: LLM) -> str:
        if not obj.approved:
            return "Not approved: nobody can call it."
        when = f"{obj.approved_at:%Y-%m-%d %H:%M} UTC" if obj.approved_at else "an unknown time"
        return f"{obj.approved_by or 'the system'} on {when}"

    @admin.display(description="Measured (last 7 days)")
    def measured(self, obj: LLM) -> str:
        if obj.measured_at is None:
            return "Not measured yet."
        return (
            f"p50 {obj.measured_p50_ms} ms, p95 {obj.measured_p95_ms} ms, "
            f"first token {obj.measured_ttft_ms} ms, "
            f"{obj.measured_tokens_per_second or 0:.0f} tok/s (at {obj.measured_at:%Y-%m-%d %H:%M})"
        )

    @admin.display(description="Catalog")
    def catalog_note(self, obj: LLM) -> str:
        if obj.catalog_date is None:
            return "Not from the catalog."
        return f"Figures from the catalog of {obj.catalog_date:%Y-%m-%d}; edit any of them."

    # --- saving through the services -----------------------------------------------------

    def save_model(self, request: HttpRequest, obj: LLM, form: LLMForm, change: bool) -> None:
        actor = request.user
        if change:
            saved = services.llm_update(
                llm=LLM.objects.get(pk=obj.pk), actor=actor, **form.llm_changes()
            )
        else:
            saved = services.llm_create(
                actor=actor,
                connection=form.cleaned_data["connection"],
                name=form.cleaned_data["name"],
                # Only what the admin typed: the catalog fills in the rest.
                **form.llm_changes(),
            )
        if "approved" in form.changed_data or not change:
            if form.cleaned_data["approved"]:
                services.llm_approve(llm=saved, actor=actor)
            else:
                services.llm_withdraw(llm=saved, actor=actor)
        services.llm_set_groups(llm=saved, groups=form.cleaned_data["groups"], actor=actor)
        obj.pk = saved.pk
        obj._state.adding = False
        obj.refresh_from_db()

    def save_related(self, request: HttpRequest, form: LLMForm, formsets: Any, change: bool):
        # Groups were saved by save_model through llm_set_groups; nothing else is related.
        pass

    def delete_model(self, request: HttpRequest, obj: LLM) -> None:
        services.llm_delete(llm=obj, actor=request.user)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[LLM]) -> None:
        for llm in queryset:
            services.llm_delete(llm=llm, actor=request.user)

    # --- actions -------------------------------------------------------------------------

    @admin.action(description="Approve the selected models", permissions=["change"])
    def approve(self, request: HttpRequest, queryset: QuerySet[LLM]) -> None:
        changed = sum(services.llm_approve(llm=llm, actor=request.user) for llm in queryset)
        self.message_user(request, f"{changed} model(s) approved.", messages.SUCCESS)

    @admin.action(description="Withdraw approval of the selected models", permissions=["change"])
    def withdraw(self, request: HttpRequest, queryset: QuerySet[LLM]) -> None:
        changed = sum(services.llm_withdraw(llm=llm, actor=request.user) for llm in queryset)
        self.message_user(request, f"Approval withdrawn from {changed} model(s).", messages.SUCCESS)

    @admin.action(description="Grant use to group…", permissions=["change"])
    def grant_to_groups(self, request: HttpRequest, queryset: QuerySet[LLM]) -> HttpResponse | None:
        return self._pick_groups(request, queryset, "grant_to_groups", grant=True)

    @admin.action(description="Revoke use from group…", permissions=["change"])
    def revoke_from_groups(
        self, request: HttpRequest, queryset: QuerySet[LLM]
    ) -> HttpResponse | None:
        return self._pick_groups(request, queryset, "revoke_from_groups", grant=False)

    def _pick_groups(
        self, request: HttpRequest, queryset: QuerySet[LLM], action: str, *, grant: bool
    ) -> HttpResponse | None:
        """An intermediate page to pick the groups, then one service call per model and group."""
        form = GroupPickForm(request.POST if "apply" in request.POST else None)
        if form.is_valid():
            service = services.llm_grant if grant else services.llm_revoke
            changed = 0
            for llm in queryset:
                for group in form.cleaned_data["groups"]:
                    changed += service(llm=llm, group=group, actor=request.user)
            names = ", ".join(g.name for g in form.cleaned_data["groups"])
            verb = "granted to" if grant else "revoked from"
            self.message_user(
                request,
                f"Use of {queryset.count()} model(s) {verb} {names} ({changed} change(s)).",
                messages.SUCCESS,
            )
            return None
        context = {
            **self.admin_site.each_context(request),
            "title": "Grant use to groups" if grant else "Revoke use from groups",
            "opts": self.model._meta,
            "form": form,
            "queryset": queryset,
            "action": action,
            "grant": grant,
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
            "selected": request.POST.getlist(helpers.ACTION_CHECKBOX_NAME),
            "select_across": request.POST.get("select_across", "0"),
        }
        return TemplateResponse(request, "admin/connections/llm/pick_groups.html", context)
