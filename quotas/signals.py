"""Bump the quotas version when a quota or a rate limit changes: every worker re-reads them."""

from __future__ import annotations

from django.db import transaction
from django.db.models.signals import post_delete, post_save

from connections import versioning
from quotas.models import Quota, RateLimit

from .config import QUOTAS


def _bump_quotas(**_kwargs) -> None:
    transaction.on_commit(lambda: versioning.bump(QUOTAS))


for _model in (Quota, RateLimit):
    post_save.connect(_bump_quotas, sender=_model, dispatch_uid=f"quotas-save-{_model.__name__}")
    post_delete.connect(
        _bump_quotas, sender=_model, dispatch_uid=f"quotas-delete-{_model.__name__}"
    )
