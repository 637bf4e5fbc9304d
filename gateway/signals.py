"""Bump the keys version whenever an API key changes, so every worker re-reads it."""

from __future__ import annotations

from django.db import transaction
from django.db.models.signals import post_delete, post_save

from connections import versioning

from .models import ApiKey


def _bump_keys(**_kwargs) -> None:
    transaction.on_commit(lambda: versioning.bump(versioning.KEYS))


post_save.connect(_bump_keys, sender=ApiKey, dispatch_uid="keys-save")
post_delete.connect(_bump_keys, sender=ApiKey, dispatch_uid="keys-delete")
