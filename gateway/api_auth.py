"""Meshgate keys for the management API (`/api/`): `Authorization: Bearer mg-...`.

The key is looked up by its SHA-256 hash only, so the header value never
reaches SQL, a log line or an error message. Missing-but-Bearer, malformed,
unknown, revoked and expired keys, and keys of deactivated users, all get the
same 401 body: a caller learns nothing about which keys exist.
"""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions

from .models import KEY_PREFIX, ApiKey, hash_key

# Longer than any key we issue, short enough that hashing it costs nothing.
MAX_KEY_LENGTH = 200
# `last_used_at` is a hint for people, not an audit trail: one write a minute per key is enough.
LAST_USED_RESOLUTION = timedelta(minutes=1)
INVALID_KEY_MESSAGE = "Invalid or missing API key."


class ApiKeyAuthentication(authentication.BaseAuthentication):
    keyword = "Bearer"

    def authenticate(self, request):
        header = authentication.get_authorization_header(request)
        if not header:
            return None  # let the other authenticators (session) or the permission decide
        scheme, _, credentials = header.partition(b" ")
        if scheme.lower() != self.keyword.lower().encode():
            return None  # Basic and friends are not ours; DRF answers 401/403 later
        api_key = self._active_key(credentials.strip())
        if api_key is None:
            raise exceptions.AuthenticationFailed(INVALID_KEY_MESSAGE)
        self._touch(api_key)
        return api_key.owner, api_key

    def authenticate_header(self, request) -> str:
        # Makes DRF answer 401 (not 403) to unauthenticated calls, with a usable challenge.
        return f'{self.keyword} realm="api"'

    @staticmethod
    def _active_key(credentials: bytes) -> ApiKey | None:
        if not credentials or len(credentials) > MAX_KEY_LENGTH:
            return None
        try:
            raw = credentials.decode("ascii")
        except UnicodeDecodeError:
            return None
        if not raw.startswith(KEY_PREFIX):
            return None
        api_key = (
            ApiKey.objects.active()
            .select_related("owner", "department")
            .filter(key_hash=hash_key(raw))
            .first()
        )
        if api_key is None or not api_key.owner.is_active:
            return None
        return api_key

    @staticmethod
    def _touch(api_key: ApiKey) -> None:
        now = timezone.now()
        if api_key.last_used_at is None or now - api_key.last_used_at >= LAST_USED_RESOLUTION:
            # A queryset update: no save signal, so the gateway's key caches are not flushed.
            ApiKey.objects.filter(pk=api_key.pk).update(last_used_at=now)
            api_key.last_used_at = now


class ApiKeyAuthenticationScheme(OpenApiAuthenticationExtension):
    """Documents the key in the OpenAPI schema, so Swagger UI offers an "Authorize" box."""

    target_class = ApiKeyAuthentication
    name = "MeshgateKey"

    def get_security_definition(self, auto_schema) -> dict:
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "A Meshgate API key (mg-...). It acts with its owner's permissions.",
        }
