"""State changes of API keys: create, revoke (the hot path is `pipeline.py` and `stages.py`)."""

from __future__ import annotations

from datetime import datetime

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from .models import ApiKey, hash_key, new_raw_key


@transaction.atomic
def apikey_create(
    *,
    owner,
    department,
    purpose: str,
    expires_at: datetime | None = None,
    actor=None,
) -> tuple[ApiKey, str]:
    """Create a key and return it with its raw value, which is never stored or shown again.

    The department must be one of the owner's groups: a key charges a department
    its owner belongs to.
    """
    purpose = (purpose or "").strip()
    if not purpose:
        raise ValidationError({"purpose": "A key needs a purpose."})
    if not owner.groups.filter(pk=department.group_id).exists():
        raise ValidationError({"department": f"{owner} is not a member of {department}."})
    if expires_at is not None and expires_at <= timezone.now():
        raise ValidationError({"expires_at": "The expiry must be in the future."})
    public_id, raw_key = new_raw_key()
    api_key = ApiKey.objects.create(
        public_id=public_id,
        key_hash=hash_key(raw_key),
        owner=owner,
        department=department,
        purpose=purpose,
        expires_at=expires_at,
    )
    return api_key, raw_key


@transaction.atomic
def apikey_revoke(*, api_key: ApiKey, actor) -> ApiKey:
    """Revoke a key (idempotent). Every worker refuses it within the cache check delay."""
    if api_key.revoked_at is None:
        api_key.revoked_at = timezone.now()
        api_key.revoked_by = actor
        api_key.save(update_fields=["revoked_at", "revoked_by"])
    return api_key
