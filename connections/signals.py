"""Bump the catalog version whenever what can be called, or by whom, changes."""

from __future__ import annotations

from django.contrib.auth.models import User
from django.db import transaction
from django.db.models.signals import m2m_changed, post_delete, post_save

from . import versioning
from .models import (
    LLM,
    Alias,
    AliasTarget,
    Connection,
    Department,
    LLMGroupObjectPermission,
)


def _bump_catalog(**_kwargs) -> None:
    transaction.on_commit(lambda: versioning.bump(versioning.CATALOG))


for _model in (Connection, LLM, Alias, AliasTarget, Department, LLMGroupObjectPermission):
    post_save.connect(_bump_catalog, sender=_model, dispatch_uid=f"catalog-save-{_model.__name__}")
    post_delete.connect(
        _bump_catalog, sender=_model, dispatch_uid=f"catalog-delete-{_model.__name__}"
    )
m2m_changed.connect(_bump_catalog, sender=User.groups.through, dispatch_uid="catalog-groups")
post_save.connect(_bump_catalog, sender=User, dispatch_uid="catalog-user")
