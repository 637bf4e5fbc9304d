"""What can be called: departments, provider connections, their models, aliases.

Writes go through `connections.services`; reads through the querysets here.
"""

from __future__ import annotations

from decimal import Decimal

from django.conf import settings
from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from django.db import models
from django.utils import timezone
from guardian.models import GroupObjectPermissionBase, UserObjectPermissionBase

from . import crypto
from .validators import is_url_option, validate_base_url, validate_region

PRICE = {"max_digits": 12, "decimal_places": 6, "default": Decimal("0")}


class Department(models.Model):
    """A Django group that is charged for calls: it carries a cost-center code."""

    group = models.OneToOneField(Group, on_delete=models.CASCADE, related_name="department")
    cost_center = models.CharField(max_length=32, unique=True)
    contacts = models.TextField(
        blank=True, help_text="E-mail addresses (one per line) told about quota alerts."
    )

    class Meta:
        ordering = ["group__name"]
        # Granted per department on its admin page (django-guardian object permissions).
        # Held globally (a user's or group's permissions), each covers ALL departments.
        permissions = [
            ("view_department_reports", "Can view and download the department's reports"),
            ("view_department_audit", "Can view the department's audit records"),
        ]

    def __str__(self) -> str:
        return self.group.name

    @property
    def name(self) -> str:
        return self.group.name


class DepartmentUserObjectPermission(UserObjectPermissionBase):
    content_object = models.ForeignKey(Department, on_delete=models.CASCADE)


class DepartmentGroupObjectPermission(GroupObjectPermissionBase):
    content_object = models.ForeignKey(Department, on_delete=models.CASCADE)


class Connection(models.Model):
    """One provider account. Its secrets are encrypted at rest and write-only."""

    class Kind(models.TextChoices):
        OPENAI = "openai", "OpenAI"
        AZURE_OPENAI = "azure_openai", "Azure OpenAI"
        BEDROCK = "bedrock", "AWS Bedrock"
        OPENAI_COMPATIBLE = "openai_compatible", "OpenAI-compatible (vLLM, TGI, Ollama)"
        HUGGINGFACE_LOCAL = "huggingface_local", "Hugging Face (local models)"

    class PayloadPolicy(models.TextChoices):
        FULL = "full", "Full request and response bodies"
        METADATA = "metadata", "Metadata only (no bodies)"
        REDACTED = "redacted", "Bodies with personal data redacted"

    # The secret fields each kind takes; values are stored encrypted in `secrets_ciphertext`.
    # Every kind that goes over the network also takes the network's secrets: the private
    # key of its client certificate, its proxy's password, and secret request headers.
    NETWORK_SECRETS = ("client_key", "proxy_password", "secret_headers")
    SECRET_FIELDS: dict[str, tuple[str, ...]] = {
        Kind.OPENAI: ("api_key", *NETWORK_SECRETS),
        Kind.AZURE_OPENAI: ("api_key", *NETWORK_SECRETS),
        Kind.BEDROCK: (
            "aws_access_key_id",
            "aws_secret_access_key",
            "aws_session_token",
            *NETWORK_SECRETS,
        ),
        Kind.OPENAI_COMPATIBLE: ("api_key", *NETWORK_SECRETS),
        Kind.HUGGINGFACE_LOCAL: (),
    }

    name = models.CharField(max_length=100, unique=True)
    slug = models.SlugField(
        max_length=50, unique=True, help_text="First part of every mesh id: <slug>/<model>."
    )
    kind = models.CharField(max_length=32, choices=Kind.choices)
    description = models.TextField(blank=True)
    base_url = models.URLField(
        blank=True,
        max_length=500,
        help_text="API base URL, e.g. https://api.openai.com/v1 or http://vllm:8000/v1. "
        "For Bedrock, an optional endpoint override.",
    )
    api_version = models.CharField(max_length=40, blank=True, help_text="Azure OpenAI api-version.")
    region = models.CharField(max_length=40, blank=True, help_text="AWS region for Bedrock.")
    options = models.JSONField(
        default=dict,
        blank=True,
        help_text="Kind-specific non-secret settings (Azure deployments, local models directory, "
        "device, ...).",
    )
    # The network between Meshgate and the provider (see connections/providers/transport.py).
    proxy_url = models.CharField(
        max_length=500,
        blank=True,
        help_text="Egress proxy: empty uses the environment's HTTPS_PROXY/HTTP_PROXY/ALL_PROXY "
        "and NO_PROXY; 'none' goes direct; or http://[user@]host:port (the password is a "
        "secret below).",
    )
    ca_certificate = models.TextField(
        blank=True,
        help_text="Extra certificate authority (PEM) trusted for this connection, besides the "
        "system's trust store and MESHGATE_CA_BUNDLE.",
    )
    client_certificate = models.TextField(
        blank=True,
        help_text="Client certificate (PEM) for mutual TLS; its private key is a secret below.",
    )
    skip_tls_verify = models.BooleanField(
        default=False,
        help_text="Do NOT verify the provider's certificate. Anyone on the path can then read "
        "and change calls; the admin shows it in red and every call record says so.",
    )
    extra_headers = models.JSONField(
        default=dict,
        blank=True,
        help_text='Request headers sent on every call, e.g. {"X-Tenant": "finance"}. Secret '
        "values go in the secret headers below.",
    )
    secrets_ciphertext = models.TextField(blank=True, editable=False)
    secrets_set_at = models.JSONField(
        default=dict, blank=True, editable=False, help_text="When each secret field was last set."
    )
    enabled = models.BooleanField(default=True)
    is_simulator = models.BooleanField(
        default=False, help_text="A local provider simulator, for demos and tests: not a provider."
    )
    timeout_seconds = models.FloatField(default=60.0)
    max_retries = models.PositiveSmallIntegerField(default=2)
    payload_policy = models.CharField(
        max_length=16, choices=PayloadPolicy.choices, default=PayloadPolicy.FULL
    )
    # Bumped on every change, so cached provider clients are rebuilt.
    version = models.PositiveIntegerField(default=1, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    updated_at = models.DateTimeField(auto_now=True)
    updated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        if self.base_url:
            try:
                validate_base_url(self.base_url)
            except ValidationError as exc:
                raise ValidationError({"base_url": exc.messages})
        if self.region:
            try:
                validate_region(self.region)
            except ValidationError as exc:
                raise ValidationError({"region": exc.messages})
        for name, value in (self.options or {}).items() if isinstance(self.options, dict) else ():
            if is_url_option(name, value):
                try:
                    validate_base_url(value)
                except ValidationError as exc:
                    raise ValidationError({"options": [f"{name}: {m}" for m in exc.messages]})
        from .providers.transport import network_errors

        for name, message in network_errors(self).items():
            raise ValidationError({name: message})
        if self.kind in {self.Kind.OPENAI_COMPATIBLE, self.Kind.AZURE_OPENAI} and not self.base_url:
            raise ValidationError({"base_url": "This kind of connection needs a base URL."})
        if self.kind == self.Kind.HUGGINGFACE_LOCAL:
            from .providers.huggingface.options import parse_options

            try:
                parse_options(self.options)
            except ValueError as exc:
                raise ValidationError({"options": str(exc)})

    @property
    def secret_field_names(self) -> tuple[str, ...]:
        return self.SECRET_FIELDS.get(self.kind, ())

    def get_secrets(self) -> dict[str, str]:
        """Decrypted secrets. Keep the result in memory only; never log or render it."""
        return crypto.decrypt_json(self.secrets_ciphertext)

    def set_secrets(self, values: dict[str, str | None]) -> list[str]:
        """Merge new secret values (None or "" leaves a field as it is); return changed names."""
        current = self.get_secrets()
        changed = []
        now = timezone.now().isoformat()
        for field, value in values.items():
            if field not in self.secret_field_names:
                raise ValueError(f"{field!r} is not a secret field of a {self.kind} connection")
            if field == "secret_headers" and value:
                from .providers.transport import secret_headers_error

                problem = secret_headers_error(value)
                if problem:
                    raise ValidationError({field: problem})
            if value:
                current[field] = value
                self.secrets_set_at = {**self.secrets_set_at, field: now}
                changed.append(field)
        if changed:
            self.secrets_ciphertext = crypto.encrypt_json(current)
        return changed

    def clear_secret(self, field: str) -> None:
        current = self.get_secrets()
        current.pop(field, None)
        self.secrets_ciphertext = crypto.encrypt_json(current) if current else ""
        self.secrets_set_at = {k: v for k, v in self.secrets_set_at.items() if k != field}


class LLMQuerySet(models.QuerySet):
    def approved(self) -> LLMQuerySet:
        return self.filter(approved=True, connection__enabled=True)

    def usable_by(self, user) -> LLMQuerySet:
        """Approved LLMs on enabled connections that one of the user's groups was granted."""
        if user is None or not user.is_authenticated or not user.is_active:
            return self.none()
        granted = LLMGroupObjectPermission.objects.filter(
            permission__codename="use_llm", group__user=user
        ).values("content_object_id")
        return self.approved().filter(pk__in=granted)


class LLM(models.Model):
    """One model offered through a connection, with its price, limits and speed."""

    class Kind(models.TextChoices):
        CHAT = "chat", "Chat"
        EMBEDDING = "embedding", "Embedding"
        CLASSIFICATION = "classification", "Classification"
        SUMMARIZATION = "summarization", "Summarization"

    connection = models.ForeignKey(Connection, on_delete=models.CASCADE, related_name="llms")
    name = models.CharField(
        max_length=200, help_text="The provider's model name (Azure: the deployment name)."
    )
    mesh_id = models.CharField(max_length=255, unique=True, editable=False)
    kind = models.CharField(max_length=20, choices=Kind.choices, default=Kind.CHAT)
    description = models.TextField(blank=True)
    approved = models.BooleanField(default=False)
    approved_at = models.DateTimeField(null=True, blank=True, editable=False)
    approved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        editable=False,
    )
    input_price = models.DecimalField(**PRICE, help_text="USD per million input tokens.")
    output_price = models.DecimalField(**PRICE, help_text="USD per million output tokens.")
    cached_input_price = models.DecimalField(
        **PRICE, help_text="USD per million cached input tokens."
    )
    context_window = models.PositiveIntegerField(null=True, blank=True)
    max_output_tokens = models.PositiveIntegerField(null=True, blank=True)
    catalog_tokens_per_second = models.FloatField(
        null=True, blank=True, help_text="Output speed from the catalog."
    )
    catalog_date = models.DateField(null=True, blank=True, help_text="When the catalog was taken.")
    # Measured from the audit trail (last 7 days), refreshed by a task.
    measured_p50_ms = models.PositiveIntegerField(null=True, blank=True, editable=False)
    measured_p95_ms = models.PositiveIntegerField(null=True, blank=True, editable=False)
    measured_ttft_ms = models.PositiveIntegerField(null=True, blank=True, editable=False)
    measured_tokens_per_second = models.FloatField(null=True, blank=True, editable=False)
    measured_at = models.DateTimeField(null=True, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = LLMQuerySet.as_manager()

    class Meta:
        verbose_name = "LLM"
        verbose_name_plural = "LLMs"
        ordering = ["mesh_id"]
        constraints = [
            models.UniqueConstraint(fields=["connection", "name"], name="llm_unique_per_connection")
        ]
        permissions = [("use_llm", "Can call this LLM")]

    def __str__(self) -> str:
        return self.mesh_id

    def save(self, *args, **kwargs) -> None:
        self.mesh_id = f"{self.connection.slug}/{self.name}"
        super().save(*args, **kwargs)


class LLMUserObjectPermission(UserObjectPermissionBase):
    content_object = models.ForeignKey(LLM, on_delete=models.CASCADE)


class LLMGroupObjectPermission(GroupObjectPermissionBase):
    content_object = models.ForeignKey(LLM, on_delete=models.CASCADE)


class Alias(models.Model):
    """A stable model name applications use, pointing to an ordered list of LLMs."""

    name = models.SlugField(max_length=100, unique=True)
    description = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "aliases"
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        if "/" in self.name:
            raise ValidationError({"name": "An alias cannot contain '/' (mesh ids do)."})


class AliasTarget(models.Model):
    alias = models.ForeignKey(Alias, on_delete=models.CASCADE, related_name="targets")
    llm = models.ForeignKey(LLM, on_delete=models.CASCADE, related_name="alias_targets")
    position = models.PositiveSmallIntegerField(default=0)

    class Meta:
        ordering = ["alias", "position", "id"]
        constraints = [models.UniqueConstraint(fields=["alias", "llm"], name="alias_target_unique")]

    def __str__(self) -> str:
        return f"{self.alias} #{self.position} -> {self.llm}"


class ChangeEvent(models.Model):
    """An admin change to what can be called: who did what, when. Read-only."""

    class Type(models.TextChoices):
        CONNECTION_CREATED = "connection_created", "Connection created"
        CONNECTION_UPDATED = "connection_updated", "Connection updated"
        CONNECTION_DELETED = "connection_deleted", "Connection deleted"
        SECRET_REPLACED = "secret_replaced", "Connection secret replaced"
        MODELS_DISCOVERED = "models_discovered", "Models discovered"
        LLM_CREATED = "llm_created", "LLM added"
        LLM_UPDATED = "llm_updated", "LLM updated"
        LLM_DELETED = "llm_deleted", "LLM deleted"
        LLM_APPROVED = "llm_approved", "LLM approved"
        LLM_WITHDRAWN = "llm_withdrawn", "LLM approval withdrawn"
        GRANT_ADDED = "grant_added", "Use granted to a group"
        GRANT_REMOVED = "grant_removed", "Use withdrawn from a group"
        ALIAS_CHANGED = "alias_changed", "Alias changed"
        KEY_ROTATED = "key_rotated", "Encryption key rotated"
        DEPARTMENT_CHANGED = "department_changed", "Department changed"
        MEMBER_ADDED = "member_added", "Member added to a group"
        MEMBER_REMOVED = "member_removed", "Member removed from a group"
        PERMISSION_GRANTED = "permission_granted", "Permission granted"
        PERMISSION_REVOKED = "permission_revoked", "Permission revoked"
        QUOTA_CREATED = "quota_created", "Quota created"
        QUOTA_UPDATED = "quota_updated", "Quota changed"
        QUOTA_DELETED = "quota_deleted", "Quota deleted"

    at = models.DateTimeField(default=timezone.now, db_index=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    event_type = models.CharField(max_length=40, choices=Type.choices)
    object_repr = models.CharField(max_length=255, blank=True)
    details = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-at", "-id"]

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M} {self.get_event_type_display()} {self.object_repr}"


class CacheVersion(models.Model):
    """The version of one scope of the processes' in-memory caches (`connections.versioning`).

    Bumped with the copy in the shared cache (Redis) by the same signals, so a gateway
    that cannot reach Redis still sees a revocation or a withdrawal from this row.
    """

    scope = models.CharField(max_length=40, primary_key=True)
    version = models.BigIntegerField(default=0)

    def __str__(self) -> str:
        return f"{self.scope} v{self.version}"
