"""API keys in the admin: created through a form that shows the key once, revoked by an action.

A key is never edited (its hash least of all) and never deleted: call records point
at it, and revoking is what stops it.
"""

from __future__ import annotations

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.utils import timezone

from .forms import AdminApiKeyForm
from .keys import apikey_create, apikey_revoke
from .models import KEY_PREFIX, ApiKey


class StatusFilter(admin.SimpleListFilter):
    title = "status"
    parameter_name = "status"

    def lookups(self, request, model_admin):
        return [("active", "Active"), ("revoked", "Revoked"), ("expired", "Expired")]

    def queryset(self, request, queryset: QuerySet[ApiKey]) -> QuerySet[ApiKey]:
        if self.value() == "active":
            return queryset.active()
        if self.value() == "revoked":
            return queryset.filter(revoked_at__isnull=False)
        if self.value() == "expired":
            return queryset.filter(revoked_at__isnull=True, expires_at__lte=timezone.now())
        return queryset


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = (
        "prefix",
        "owner",
        "department",
        "purpose",
        "status",
        "created_at",
        "expires_at",
        "revoked_at",
        "last_used_at",
    )
    list_select_related = ("owner", "department__group")
    list_filter = (StatusFilter, "department")
    search_fields = ("public_id", "owner__username", "purpose")
    date_hierarchy = "created_at"
    fields = (
        "prefix",
        "owner",
        "department",
        "purpose",
        "created_at",
        "expires_at",
        "revoked_at",
        "revoked_by",
        "last_used_at",
    )
    readonly_fields = fields
    actions = ["revoke_keys"]

    # --- permissions: view and revoke, never edit or delete ----------------------------------

    def has_change_permission(self, request: HttpRequest, obj: ApiKey | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: ApiKey | None = None) -> bool:
        return False

    def has_revoke_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("gateway.change_apikey")

    @admin.display(description="Prefix", ordering="public_id")
    def prefix(self, api_key: ApiKey) -> str:
        return api_key.prefix

    @admin.display(description="Status")
    def status(self, api_key: ApiKey) -> str:
        if api_key.revoked_at is not None:
            return "revoked"
        return "active" if api_key.is_active else "expired"

    def get_search_results(self, request, queryset, search_term):
        # People paste the prefix as they see it ("mg-1a2b3c4d"); the column holds the id part.
        if search_term.startswith(KEY_PREFIX):
            search_term = search_term[len(KEY_PREFIX) :].split("-", 1)[0]
        return super().get_search_results(request, queryset, search_term)

    @admin.action(description="Revoke selected API keys", permissions=["revoke"])
    def revoke_keys(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        revoked = 0
        for api_key in queryset.filter(revoked_at__isnull=True):
            apikey_revoke(api_key=api_key, actor=request.user)
            self.log_change(request, api_key, [{"changed": {"fields": ["revoked"]}}])
            revoked += 1
        self.message_user(request, f"{revoked} key(s) revoked.", messages.SUCCESS)

    # --- the add page: a form, then a confirmation page that is the key's only appearance ---

    def add_view(
        self, request: HttpRequest, form_url: str = "", extra_context=None
    ) -> HttpResponse:
        if not self.has_add_permission(request):
            raise PermissionDenied
        form = AdminApiKeyForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            try:
                api_key, raw_key = apikey_create(
                    owner=form.cleaned_data["owner"],
                    department=form.cleaned_data["department"],
                    purpose=form.cleaned_data["purpose"],
                    expires_at=form.expires_at(),
                    actor=request.user,
                )
            except ValidationError as exc:
                form.add_error(None, exc)
            else:
                # The history entry says "Added." and names the prefix: never the key.
                self.log_addition(request, api_key, [{"added": {}}])
                response = TemplateResponse(
                    request,
                    "admin/gateway/apikey/created.html",
                    {
                        **self._context(request, "API key created"),
                        "api_key": api_key,
                        "raw_key": raw_key,
                    },
                )
                response["Cache-Control"] = "no-store"
                return response
        return TemplateResponse(
            request,
            "admin/gateway/apikey/add.html",
            {**self._context(request, "Add API key"), "form": form, **(extra_context or {})},
        )

    def _context(self, request: HttpRequest, title: str) -> dict:
        return {
            **self.admin_site.each_context(request),
            "title": title,
            "opts": self.opts,
            "has_view_permission": self.has_view_permission(request),
        }
