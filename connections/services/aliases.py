"""Aliases: stable names pointing to an ordered list of LLMs."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.db import transaction

from ..models import (
    LLM,
    Alias,
    AliasTarget,
    ChangeEvent,
)
from ._common import (
    _check_fields,
    _record,
)


@transaction.atomic
def alias_create(*, actor, name: str, description: str = "", targets: Iterable[LLM] = ()) -> Alias:
    alias = Alias(name=name, description=description)
    alias.full_clean()
    alias.save()
    _record(actor, ChangeEvent.Type.ALIAS_CHANGED, alias, alias_id=alias.pk, action="created")
    if targets:
        alias_set_targets(alias=alias, llms=targets, actor=actor)
    return alias


@transaction.atomic
def alias_update(*, alias: Alias, actor, **fields: Any) -> Alias:
    _check_fields(fields, ("name", "description"))
    changed = {
        k: {"from": getattr(alias, k), "to": v} for k, v in fields.items() if getattr(alias, k) != v
    }
    if changed:
        for name, value in fields.items():
            setattr(alias, name, value)
        alias.full_clean()
        alias.save()
        _record(
            actor,
            ChangeEvent.Type.ALIAS_CHANGED,
            alias,
            alias_id=alias.pk,
            action="updated",
            changed=changed,
        )
    return alias


@transaction.atomic
def alias_set_targets(*, alias: Alias, llms: Iterable[LLM], actor) -> list[str]:
    """Point an alias at these LLMs, in this order (first tried first)."""
    ordered: list[LLM] = []
    for llm in llms:
        if llm.pk not in {o.pk for o in ordered}:
            ordered.append(llm)
    before = list(alias.targets.order_by("position", "id").values_list("llm__mesh_id", flat=True))
    after = [llm.mesh_id for llm in ordered]
    if before == after:
        return after
    alias.targets.all().delete()
    AliasTarget.objects.bulk_create(
        AliasTarget(alias=alias, llm=llm, position=position) for position, llm in enumerate(ordered)
    )
    # bulk_create sends no post_save: touch the alias so the catalog version moves.
    alias.save(update_fields=["updated_at"])
    _record(
        actor,
        ChangeEvent.Type.ALIAS_CHANGED,
        alias,
        alias_id=alias.pk,
        action="targets",
        targets={"from": before, "to": after},
    )
    return after


@transaction.atomic
def alias_delete(*, alias: Alias, actor) -> None:
    _record(actor, ChangeEvent.Type.ALIAS_CHANGED, alias, alias_id=alias.pk, action="deleted")
    alias.delete()
