"""Connections in the admin: write-only secrets, base URL validation, discovery and tests."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import Count, Q, QuerySet
from django.http import HttpRequest
from django.utils.html import format_html, format_html_join

from .. import services
from ..forms import SECRET_LABELS, ConnectionForm, secret_status
from ..models import Connection


class _NetworkView:
    """What `transport.describe` reads of a connection, its proxy password not decrypted."""

    def __init__(self, obj: Connection) -> None:
        self.proxy_url = obj.proxy_url
        self.ca_certificate = obj.ca_certificate
        self.client_certificate = obj.client_certificate
        self.verify_tls = not obj.skip_tls_verify
        self.secrets: dict[str, str] = {}


@admin.register(Connection)
class ConnectionAdmin(admin.ModelAdmin):
    form = ConnectionForm
    list_display = (
        "name",
        "label",
        "kind",
        "enabled",
        "base_url",
        "model_count",
        "approved_count",
        "version",
        "updated_at",
    )
    list_filter = ("kind", "enabled", "is_simulator")
    search_fields = ("name", "slug", "base_url", "description")
    list_select_related = ("updated_by",)
    prepopulated_fields = {"slug": ("name",)}
    readonly_fields = (
        "what_it_is",
        "network",
        "secrets_summary",
        "version",
        "created",
        "updated",
    )
    actions = ("discover_models", "test_connection")
    save_on_top = True

    def get_fieldsets(self, request: HttpRequest, obj: Connection | None = None) -> list:
        form = self._get_form_fields(request, obj)
        secret_fields = [
            name for name in form if name in SECRET_LABELS or name.startswith("clear_")
        ]
        connection = [
            "name",
            "slug",
            "kind",
            "description",
            "enabled",
            "is_simulator",
        ]
        fieldsets: list = []
        if obj is not None:
            fieldsets.append(
                (None, {"fields": ["what_it_is", "network", "secrets_summary", "version"]})
            )
        fieldsets += [
            ("Connection", {"fields": connection}),
            (
                "Provider settings",
                {"fields": ["base_url", "api_version", "region", "options"]},
            ),
            (
                "Network (proxy, trust, headers)",
                {
                    "fields": [
                        "proxy_url",
                        "ca_certificate",
                        "client_certificate",
                        "skip_tls_verify",
                        "extra_headers",
                    ],
                    "description": "How calls, Test connection and Discover reach the provider. "
                    "Every upstream also trusts the system's certificate store and "
                    "MESHGATE_CA_BUNDLE.",
                },
            ),
            (
                "Secrets (write-only)",
                {
                    "fields": secret_fields,
                    "description": "Secrets are stored encrypted and never shown again, not even "
                    "masked. Fill a field to replace it.",
                },
            ),
            (
                "Calls",
                {"fields": ["timeout_seconds", "max_retries", "payload_policy"]},
            ),
        ]
        if obj is not None:
            fieldsets.append(("History", {"fields": ["created", "updated"]}))
        return fieldsets

    def _get_form_fields(self, request: HttpRequest, obj: Connection | None) -> list[str]:
        return list(ConnectionForm(instance=obj or Connection()).fields)

    def get_form(self, request: HttpRequest, obj: Connection | None = None, **kwargs: Any):
        # The secret fields are added by the form itself; Django must not try to find them
        # on the model.
        kwargs["fields"] = list(services.CONNECTION_FIELDS)
        return super().get_form(request, obj, **kwargs)

    def get_queryset(self, request: HttpRequest) -> QuerySet[Connection]:
        return (
            super()
            .get_queryset(request)
            .annotate(
                _models=Count("llms", distinct=True),
                _approved=Count("llms", filter=Q(llms__approved=True), distinct=True),
            )
        )

    @admin.display(description="Models", ordering="_models")
    def model_count(self, obj: Connection) -> int:
        return obj._models

    @admin.display(description="Approved", ordering="_approved")
    def approved_count(self, obj: Connection) -> int:
        return obj._approved

    @admin.display(description="")
    def label(self, obj: Connection) -> str:
        return "Simulator" if obj.is_simulator else ""

    @admin.display(description="What it is")
    def what_it_is(self, obj: Connection) -> str:
        if obj.is_simulator:
            return format_html(
                "<strong>Simulator</strong>: a local stand-in speaking the {} wire protocol, "
                "for demos and tests. Not a real provider.",
                obj.get_kind_display(),
            )
        return obj.get_kind_display()

    @admin.display(description="Network")
    def network(self, obj: Connection) -> str:
        """Which proxy applies to this connection's provider, whom it trusts; in red when
        certificates are not verified."""
        from ..providers import ProviderError, adapter_class
        from ..providers.transport import describe

        if obj.kind == Connection.Kind.HUGGINGFACE_LOCAL:
            return "No network: the models run in this process."
        try:
            url = obj.base_url or adapter_class(obj.kind).default_url(obj.region)
        except ProviderError:  # an unknown kind
            url = obj.base_url
        config = _NetworkView(obj)
        text = describe(config, url or "https://provider.invalid")
        if obj.skip_tls_verify:
            return format_html('<strong style="color:#ba2121">{}</strong>', text)
        return text

    @admin.display(description="Secrets")
    def secrets_summary(self, obj: Connection) -> str:
        if not obj.secret_field_names:
            return "This kind of connection takes no secret."
        return format_html_join(
            ", ",
            "{}: {}",
            (
                (SECRET_LABELS.get(name, name), secret_status(obj, name))
                for name in obj.secret_field_names
            ),
        )

    @admin.display(description="Created")
    def created(self, obj: Connection) -> str:
        return f"{obj.created_at:%Y-%m-%d %H:%M} by {obj.created_by or 'the system'}"

    @admin.display(description="Last changed")
    def updated(self, obj: Connection) -> str:
        return f"{obj.updated_at:%Y-%m-%d %H:%M} by {obj.updated_by or 'the system'}"

    # --- saving through the services -----------------------------------------------------

    def save_model(self, request: HttpRequest, obj: Connection, form: ConnectionForm, change: bool):
        if change:
            before = Connection.objects.get(pk=obj.pk)
            had_secrets = bool(before.secrets_set_at)
            saved = services.connection_update(
                connection=before,
                actor=request.user,
                secrets=form.secret_values(),
                clear_secrets=form.secrets_to_clear(),
                **form.model_changes(),
            )
            if had_secrets and not saved.secrets_set_at and not saved.enabled:
                self.message_user(
                    request,
                    "The connection now points elsewhere, so its secrets were cleared and it "
                    "was disabled: type the secrets again for the new place, then enable it.",
                    messages.WARNING,
                )
        else:
            saved = services.connection_create(
                actor=request.user, secrets=form.secret_values(), **form.model_values()
            )
        # The admin goes on with `obj` (history entry, redirect): make it the saved row.
        obj.pk = saved.pk
        obj._state.adding = False
        obj.refresh_from_db()

    def delete_model(self, request: HttpRequest, obj: Connection) -> None:
        services.connection_delete(connection=obj, actor=request.user)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Connection]) -> None:
        for connection in queryset:
            services.connection_delete(connection=connection, actor=request.user)

    # --- actions -------------------------------------------------------------------------

    @admin.action(description="Discover models (added as not approved)", permissions=["change"])
    def discover_models(self, request: HttpRequest, queryset: QuerySet[Connection]) -> None:
        for connection in queryset:
            result = services.models_discover(connection=connection, actor=request.user)
            if result.ok:
                added = f": {', '.join(result.added)}" if result.added else ""
                self.message_user(
                    request, f"{connection}: {result.message}{added}", messages.SUCCESS
                )
            else:
                self.message_user(
                    request, f"{connection}: discovery failed: {result.message}", messages.ERROR
                )

    @admin.action(description="Test connection", permissions=["change"])
    def test_connection(self, request: HttpRequest, queryset: QuerySet[Connection]) -> None:
        for connection in queryset:
            result = services.connection_test(connection=connection)
            if result.ok:
                self.message_user(request, f"{connection}: OK. {result.message}", messages.SUCCESS)
            else:
                self.message_user(
                    request, f"{connection}: failed: {result.message}", messages.ERROR
                )
