"""Quotas and rate limits in the admin, with each quota's spend, reservations and room."""

from __future__ import annotations

from django import forms
from django.contrib import admin
from django.core.exceptions import ValidationError
from django.http import HttpRequest

from audit.money import usd
from quotas.models import Quota, QuotaAlert, RateLimit

from .services import (
    QUOTA_FIELDS,
    quota_create,
    quota_delete,
    quota_status,
    quota_update,
    validate_quota,
)


class QuotaForm(forms.ModelForm):
    class Meta:
        model = Quota
        fields = (
            "name",
            "amount",
            "period",
            "rolling_days",
            "mode",
            "is_active",
            "alert_thresholds",
            "is_catch_all",
            "department",
            "user",
            "api_key",
            "purpose",
            "connection",
            "llm",
        )

    def _post_clean(self) -> None:
        super()._post_clean()
        try:
            validate_quota(self.instance)
        except ValidationError as exc:
            self._update_errors(exc)


@admin.register(Quota)
class QuotaAdmin(admin.ModelAdmin):
    form = QuotaForm
    list_display = (
        "name",
        "scope",
        "period",
        "mode",
        "amount",
        "spent",
        "reserved",
        "remaining",
        "is_active",
    )
    list_filter = ("period", "mode", "is_active", "is_catch_all")
    search_fields = ("name", "purpose", "department__group__name", "user__username")
    list_select_related = ("department__group", "user", "api_key", "connection", "llm")
    raw_id_fields = ("user", "api_key")
    readonly_fields = ("standing",)
    fieldsets = (
        (None, {"fields": ("name", "amount", "period", "rolling_days", "mode", "is_active")}),
        ("Alerts", {"fields": ("alert_thresholds",)}),
        (
            "Scope (empty fields match every call)",
            {
                "fields": (
                    "is_catch_all",
                    "department",
                    "user",
                    "api_key",
                    "purpose",
                    "connection",
                    "llm",
                )
            },
        ),
        ("This period", {"fields": ("standing",)}),
    )

    def get_queryset(self, request: HttpRequest):
        self._status_cache: dict[int, dict] = {}
        return super().get_queryset(request)

    def _status(self, quota: Quota) -> dict:
        cache = getattr(self, "_status_cache", {})
        if quota.pk not in cache:
            cache[quota.pk] = quota_status(quota)
        return cache[quota.pk]

    @admin.display(description="scope")
    def scope(self, quota: Quota) -> str:
        if quota.is_catch_all:
            return "everything else"
        parts = [
            f"{label}: {value}"
            for label, value in (
                ("department", quota.department),
                ("user", quota.user),
                ("key", quota.api_key and quota.api_key.prefix),
                ("purpose", quota.purpose),
                ("connection", quota.connection),
                ("LLM", quota.llm),
            )
            if value
        ]
        return ", ".join(parts) or "every call"

    @admin.display(description="spent")
    def spent(self, quota: Quota) -> str:
        return usd(self._status(quota)["spent"])

    @admin.display(description="reserved")
    def reserved(self, quota: Quota) -> str:
        return usd(self._status(quota)["reserved"])

    @admin.display(description="remaining")
    def remaining(self, quota: Quota) -> str:
        return usd(self._status(quota)["remaining"])

    @admin.display(description="standing")
    def standing(self, quota: Quota) -> str:
        if quota.pk is None:
            return "-"
        status = self._status(quota)
        return (
            f"spent {usd(status['spent'])}, reserved {usd(status['reserved'])}, "
            f"remaining {usd(status['remaining'])} ({status['percent']:.1f} %)"
        )

    def save_model(self, request: HttpRequest, obj: Quota, form, change: bool) -> None:
        fields = {
            name: form.cleaned_data[name] for name in QUOTA_FIELDS if name in form.cleaned_data
        }
        try:
            if change:
                quota_update(quota=obj, actor=request.user, **fields)
            else:
                saved = quota_create(actor=request.user, **fields)
                obj.pk = saved.pk
        except ValidationError as exc:
            # The form validated; a service rule still refused: show it instead of a 500.
            self.message_user(request, "; ".join(exc.messages), level="error")

    def delete_model(self, request: HttpRequest, obj: Quota) -> None:
        quota_delete(quota=obj, actor=request.user)

    def delete_queryset(self, request: HttpRequest, queryset) -> None:
        for quota in queryset:
            quota_delete(quota=quota, actor=request.user)


@admin.register(RateLimit)
class RateLimitAdmin(admin.ModelAdmin):
    list_display = (
        "name",
        "scope",
        "api_key",
        "department",
        "llm",
        "requests_per_minute",
        "tokens_per_minute",
        "is_active",
    )
    list_filter = ("scope", "is_active")
    search_fields = ("name",)
    list_select_related = ("api_key", "department__group", "llm")
    raw_id_fields = ("api_key",)


@admin.register(QuotaAlert)
class QuotaAlertAdmin(admin.ModelAdmin):
    list_display = ("quota", "threshold", "period_start", "spent", "sent_at")
    list_filter = ("threshold",)
    search_fields = ("quota__name",)
    list_select_related = ("quota",)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False
