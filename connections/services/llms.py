"""LLMs: adding by hand, figures, approval and the groups allowed to call them."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.contrib.auth.models import Group
from django.db import transaction
from django.utils import timezone
from guardian.shortcuts import assign_perm, remove_perm

from .. import catalog
from ..models import (
    LLM,
    ChangeEvent,
    Connection,
    LLMGroupObjectPermission,
)
from ._common import (
    LLM_FIELDS,
    USE_LLM,
    _catalog_name,
    _check_fields,
    _jsonable,
    _record,
)


@transaction.atomic
def llm_create(*, actor, connection: Connection, name: str, **fields: Any) -> LLM:
    """Add a model by hand (discovery is the usual way), not approved."""
    _check_fields(fields, LLM_FIELDS)
    entry = catalog.lookup(connection.kind, _catalog_name(connection, name))
    if entry is not None:
        defaults = {
            "kind": entry.kind,
            "input_price": entry.input_price,
            "output_price": entry.output_price,
            "cached_input_price": entry.cached_input_price,
            "context_window": entry.context_window,
            "max_output_tokens": entry.max_output_tokens,
            "catalog_tokens_per_second": entry.tokens_per_second,
            "catalog_date": entry.as_of,
            "description": entry.description,
        }
        # Figures the caller gave win; blanks from a form do not erase the catalog's.
        fields = {**defaults, **{k: v for k, v in fields.items() if v not in (None, "")}}
    llm = LLM(connection=connection, name=name, approved=False, **fields)
    llm.full_clean(exclude=["mesh_id"])
    llm.save()
    _record(
        actor,
        ChangeEvent.Type.LLM_CREATED,
        llm,
        llm_id=llm.pk,
        from_catalog=entry is not None,
    )
    return llm


@transaction.atomic
def llm_update(*, llm: LLM, actor, **fields: Any) -> LLM:
    """Edit an LLM's figures (prices, limits, speed, description)."""
    _check_fields(fields, LLM_FIELDS)
    changed = {}
    for name, value in fields.items():
        old = getattr(llm, name)
        if old != value:
            changed[name] = {"from": _jsonable(old), "to": _jsonable(value)}
            setattr(llm, name, value)
    if changed:
        llm.full_clean(exclude=["mesh_id"])
        llm.save()
        _record(actor, ChangeEvent.Type.LLM_UPDATED, llm, llm_id=llm.pk, changed=changed)
    return llm


@transaction.atomic
def llm_delete(*, llm: LLM, actor) -> None:
    _record(actor, ChangeEvent.Type.LLM_DELETED, llm, llm_id=llm.pk, approved=llm.approved)
    llm.delete()


@transaction.atomic
def llm_approve(*, llm: LLM, actor) -> bool:
    """Approve an LLM for use (idempotent). Returns whether it changed."""
    if llm.approved:
        return False
    llm.approved = True
    llm.approved_at = timezone.now()
    llm.approved_by = actor if getattr(actor, "pk", None) else None
    llm.save(update_fields=["approved", "approved_at", "approved_by"])
    _record(actor, ChangeEvent.Type.LLM_APPROVED, llm, llm_id=llm.pk)
    return True


@transaction.atomic
def llm_withdraw(*, llm: LLM, actor) -> bool:
    """Withdraw an LLM's approval (idempotent): nobody can call it until approved again."""
    if not llm.approved:
        return False
    llm.approved = False
    llm.approved_at = None
    llm.approved_by = None
    llm.save(update_fields=["approved", "approved_at", "approved_by"])
    _record(actor, ChangeEvent.Type.LLM_WITHDRAWN, llm, llm_id=llm.pk)
    return True


def llm_groups(llm: LLM) -> list[Group]:
    """The groups holding `use_llm` on this LLM."""
    holders = LLMGroupObjectPermission.objects.filter(
        content_object=llm, permission__codename="use_llm"
    ).values("group_id")
    return list(Group.objects.filter(pk__in=holders).order_by("name"))


@transaction.atomic
def llm_grant(*, llm: LLM, group: Group, actor) -> bool:
    """Let a group's members call an LLM (once approved). Returns whether it changed."""
    if group in llm_groups(llm):
        return False
    assign_perm(USE_LLM, group, llm)
    _record(
        actor, ChangeEvent.Type.GRANT_ADDED, llm, llm_id=llm.pk, group=group.name, group_id=group.pk
    )
    return True


@transaction.atomic
def llm_revoke(*, llm: LLM, group: Group, actor) -> bool:
    """Take `use_llm` on an LLM away from a group. Returns whether it changed."""
    if group not in llm_groups(llm):
        return False
    remove_perm(USE_LLM, group, llm)
    _record(
        actor,
        ChangeEvent.Type.GRANT_REMOVED,
        llm,
        llm_id=llm.pk,
        group=group.name,
        group_id=group.pk,
    )
    return True


@transaction.atomic
def llm_set_groups(*, llm: LLM, groups: Iterable[Group], actor) -> tuple[int, int]:
    """Make exactly these groups hold `use_llm`; returns (granted, revoked) counts."""
    wanted = {group.pk: group for group in groups}
    current = {group.pk: group for group in llm_groups(llm)}
    granted = sum(
        llm_grant(llm=llm, group=g, actor=actor) for k, g in wanted.items() if k not in current
    )
    revoked = sum(
        llm_revoke(llm=llm, group=g, actor=actor) for k, g in current.items() if k not in wanted
    )
    return granted, revoked
