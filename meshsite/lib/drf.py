"""Plumbing every app's management API (`/api/`) shares: permissions and strict serializers.

It knows Django REST framework and nothing of Meshgate's models, so each app's `api.py` and
`serializers.py` use it without importing another app.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from rest_framework import permissions, serializers
from rest_framework.request import Request

VIEW = "%(app_label)s.view_%(model_name)s"

# Sent by HTML forms (the browsable API's included), not data for the model.
FORM_PLUMBING = frozenset({"csrfmiddlewaretoken"})


class ModelPermissions(permissions.DjangoModelPermissions):
    """Django model permissions for every method, reads included (`view_<model>`)."""

    perms_map = {
        **permissions.DjangoModelPermissions.perms_map,
        "GET": [VIEW],
        "HEAD": [VIEW],
        "OPTIONS": [VIEW],
    }


def require(*perms: str) -> type[permissions.BasePermission]:
    """A permission class demanding every one of `perms` (for actions beyond CRUD)."""

    class Required(permissions.BasePermission):
        def has_permission(self, request: Request, view: object) -> bool:
            user = request.user
            return bool(user and user.is_authenticated and user.has_perms(perms))

    Required.__name__ = f"Require({', '.join(perms)})"
    return Required


@contextmanager
def service_errors() -> Iterator[None]:
    """Turn a service's Django ValidationError into DRF's, so it answers 400 with its fields."""
    try:
        yield
    except DjangoValidationError as exc:
        raise serializers.ValidationError(serializers.as_serializer_error(exc))


class StrictFieldsMixin:
    """Refuse input fields that are read-only or unknown rather than silently dropping them."""

    def to_internal_value(self, data: Any) -> Any:
        if hasattr(data, "keys"):
            fields = self.fields  # type: ignore[attr-defined]
            writable = {name for name, field in fields.items() if not field.read_only}
            refused = sorted(set(data.keys()) - writable - FORM_PLUMBING)
            if refused:
                raise serializers.ValidationError(
                    {name: ["This field cannot be set here."] for name in refused}
                )
        return super().to_internal_value(data)  # type: ignore[misc]
