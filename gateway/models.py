"""API keys: shown once, stored as a SHA-256 hash, identified by a public prefix."""

from __future__ import annotations

import hashlib
import secrets

from django.conf import settings
from django.db import models
from django.utils import timezone

KEY_PREFIX = "mg-"


def hash_key(raw_key: str) -> str:
    return hashlib.sha256(raw_key.encode()).hexdigest()


def new_raw_key() -> tuple[str, str]:
    """(public id, full key). The full key is `mg-<public id>-<secret>`."""
    public_id = secrets.token_hex(4)
    return public_id, f"{KEY_PREFIX}{public_id}-{secrets.token_urlsafe(32)}"


class ApiKeyQuerySet(models.QuerySet):
    def active(self) -> ApiKeyQuerySet:
        now = timezone.now()
        return self.filter(revoked_at__isnull=True).filter(
            models.Q(expires_at__isnull=True) | models.Q(expires_at__gt=now)
        )


class ApiKey(models.Model):
    public_id = models.CharField(max_length=16, unique=True, editable=False)
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_keys"
    )
    department = models.ForeignKey(
        "connections.Department", on_delete=models.PROTECT, related_name="api_keys"
    )
    purpose = models.CharField(max_length=200)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)
    revoked_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        editable=False,
    )
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)

    objects = ApiKeyQuerySet.as_manager()

    class Meta:
        verbose_name = "API key"
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.owner}, {self.purpose})"

    @property
    def prefix(self) -> str:
        return f"{KEY_PREFIX}{self.public_id}"

    @property
    def is_active(self) -> bool:
        if self.revoked_at is not None:
            return False
        return self.expires_at is None or self.expires_at > timezone.now()


class StoredResponse(models.Model):
    """A Responses API answer kept for `GET /v1/responses/{id}` and `previous_response_id`
    (`gateway.responses_store`), visible to its key's owner only, kept as long as call
    bodies are (MESHGATE_AUDIT_RETENTION_DAYS). Who it belongs to is a plain id, as a
    record's is: written off the request path, no constraint to check."""

    id = models.CharField(primary_key=True, max_length=64)
    user_id = models.BigIntegerField()
    api_key_id = models.BigIntegerField(null=True)
    created_at = models.DateTimeField(db_index=True)
    model = models.CharField(max_length=255)
    response = models.TextField()  # the `response` object, JSON
    messages = models.TextField()  # the conversation up to its answer, as chat messages, JSON

    def __str__(self) -> str:
        return self.id
