"""Which models a caller may use, resolved from memory.

The whole catalog (approved LLMs on enabled connections, aliases, grants) is
loaded in one go into a per-process snapshot and kept until the shared catalog
version moves (`connections.versioning`, bumped by signals on every change to
connections, LLMs, aliases, grants, departments and group membership). Users'
groups are loaded on first sight and kept in the same versioned memo (the process's
`GatewayRuntime`, gateway/runtime.py). A call in
steady state therefore reads nothing from the database.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from dataclasses import dataclass, field
from decimal import Decimal

from connections.providers.base import ConnectionConfig

from . import runtime
from .errors import GatewayError, model_not_found
from .lookups import db_lookup

logger = logging.getLogger(__name__)

_MAX_USERS = 50_000

ENDPOINT_KINDS = {
    "chat.completions": "chat",
    "embeddings": "embedding",
    "classifications": "classification",
    "summaries": "summarization",
}


@dataclass(frozen=True)
class Target:
    """One LLM a call may be sent to, with what the call and its record need."""

    llm_id: int
    mesh_id: str
    name: str  # the provider's model name
    kind: str
    connection_id: int
    connection_slug: str
    payload_policy: str
    input_price: Decimal
    output_price: Decimal
    cached_input_price: Decimal
    context_window: int | None
    max_output_tokens: int | None
    description: str
    created: int
    measured: dict = field(default_factory=dict, compare=False)


@dataclass
class UserInfo:
    active: bool
    department_ids: frozenset[int]
    usable: frozenset[int]  # LLM ids


@dataclass
class Snapshot:
    llms: dict[str, Target]
    aliases: dict[str, list[Target]]
    alias_descriptions: dict[str, str]
    grants: dict[int, frozenset[int]]  # group id -> LLM ids
    connections: dict[int, ConnectionConfig]
    users: dict[int, UserInfo] = field(default_factory=dict)


def _load_snapshot() -> Snapshot:
    from connections.models import LLM, AliasTarget, Connection, LLMGroupObjectPermission

    connections: dict[int, ConnectionConfig] = {}
    for conn in Connection.objects.filter(enabled=True):
        try:
            connections[conn.pk] = ConnectionConfig.from_connection(conn)
        except Exception as exc:
            # One unreadable connection (say, secrets under a retired key) must not take the
            # whole catalog down: its models answer 503 until an administrator fixes it.
            logger.error("connection %s cannot be used: %s", conn.slug, type(exc).__name__)
    for kind in {config.kind for config in connections.values()}:
        preload_adapter(kind)
    policies = dict(Connection.objects.filter(enabled=True).values_list("pk", "payload_policy"))
    llms: dict[str, Target] = {}
    by_id: dict[int, Target] = {}
    for llm in LLM.objects.approved().select_related("connection"):
        target = Target(
            llm_id=llm.pk,
            mesh_id=llm.mesh_id,
            name=llm.name,
            kind=llm.kind,
            connection_id=llm.connection_id,
            connection_slug=llm.connection.slug,
            payload_policy=policies.get(llm.connection_id, "full"),
            input_price=llm.input_price,
            output_price=llm.output_price,
            cached_input_price=llm.cached_input_price,
            context_window=llm.context_window,
            max_output_tokens=llm.max_output_tokens,
            description=llm.description,
            created=int(llm.created_at.timestamp()),
            measured={
                "p50_ms": llm.measured_p50_ms,
                "p95_ms": llm.measured_p95_ms,
                "ttft_ms": llm.measured_ttft_ms,
                "tokens_per_second": llm.measured_tokens_per_second,
            },
        )
        llms[llm.mesh_id] = target
        by_id[llm.pk] = target
    aliases: dict[str, list[Target]] = {}
    descriptions: dict[str, str] = {}
    for link in AliasTarget.objects.select_related("alias").order_by("alias", "position", "id"):
        descriptions[link.alias.name] = link.alias.description
        targets = aliases.setdefault(link.alias.name, [])
        if link.llm_id in by_id:  # unapproved or disabled targets are not targets
            targets.append(by_id[link.llm_id])
    grants: dict[int, set[int]] = {}
    for group_id, llm_id in LLMGroupObjectPermission.objects.filter(
        permission__codename="use_llm"
    ).values_list("group_id", "content_object_id"):
        grants.setdefault(group_id, set()).add(llm_id)
    return Snapshot(
        llms=llms,
        aliases=aliases,
        alias_descriptions=descriptions,
        grants={group: frozenset(ids) for group, ids in grants.items()},
        connections=connections,
    )


def preload_adapter(kind: str) -> None:
    """Import an adapter's module here, in a worker thread: the openai SDK alone takes seconds
    to import on a busy machine, and an import on the event loop would stall every call."""
    from connections.providers import adapter_class

    try:
        adapter_class(kind).preload()
    except Exception:
        logger.warning("no adapter could be loaded for connections of kind %r", kind)


def _load_user(user_id: int, snapshot: Snapshot) -> UserInfo:
    from django.contrib.auth.models import User

    from connections.models import Department

    user = User.objects.filter(pk=user_id).values("is_active").first()
    if user is None or not user["is_active"]:
        return UserInfo(active=False, department_ids=frozenset(), usable=frozenset())
    group_ids = list(User.groups.through.objects.filter(user_id=user_id).values_list("group_id"))
    group_ids = [row[0] for row in group_ids]
    departments = Department.objects.filter(group_id__in=group_ids).values_list("pk", flat=True)
    usable: set[int] = set()
    for group_id in group_ids:
        usable |= snapshot.grants.get(group_id, frozenset())
    return UserInfo(active=True, department_ids=frozenset(departments), usable=frozenset(usable))


def _lock_for_loop(locks: weakref.WeakKeyDictionary) -> asyncio.Lock:
    loop = asyncio.get_running_loop()
    lock = locks.get(loop)
    if lock is None:
        lock = locks[loop] = asyncio.Lock()
    return lock


async def snapshot() -> Snapshot:
    state = runtime.current
    data = state.catalog.fresh()
    current = data.get("snapshot")
    if current is not None:
        return current
    async with _lock_for_loop(state.catalog_locks):
        data = state.catalog.fresh()
        current = data.get("snapshot")
        if current is None:
            current = await db_lookup(_load_snapshot)
            data["snapshot"] = current
    return current


async def user_info(user_id: int) -> UserInfo:
    snap = await snapshot()
    info = snap.users.get(user_id)
    if info is None:
        info = await db_lookup(_load_user, user_id, snap)
        if len(snap.users) >= _MAX_USERS:
            snap.users.clear()
        snap.users[user_id] = info
    return info


def resolve(
    snap: Snapshot, user: UserInfo, model: object, endpoint: str
) -> tuple[str, list[Target]]:
    """(alias name or "", the targets the caller may use, in order) or a GatewayError.

    Unknown, unapproved, disabled and not-granted models all get the same 404, so a
    caller cannot probe what exists.
    """
    wanted_kind = ENDPOINT_KINDS[endpoint]
    if not isinstance(model, str) or not model:
        raise GatewayError(
            400, "'model' must be a non-empty string.", code="invalid_model", param="model"
        )
    if not user.active:
        raise model_not_found(model)
    target = snap.llms.get(model)
    if target is not None:
        if target.llm_id not in user.usable:
            raise model_not_found(model)
        if target.kind != wanted_kind:
            raise _kind_mismatch(model, target.kind, endpoint)
        return "", [target]
    alias_targets = snap.aliases.get(model)
    if alias_targets is None:
        raise model_not_found(model)
    usable = [t for t in alias_targets if t.llm_id in user.usable]
    if not usable:
        raise model_not_found(model)
    matching = [t for t in usable if t.kind == wanted_kind]
    if not matching:
        raise _kind_mismatch(model, usable[0].kind, endpoint)
    return model, matching


def _a(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


def _kind_mismatch(model: str, kind: str, endpoint: str) -> GatewayError:
    return GatewayError(
        400,
        f"The model '{model}' is {_a(kind)} {kind} model and cannot serve "
        f"/v1/{endpoint.replace('.', '/')}.",
        code="model_not_supported",
        param="model",
    )


def usable_models(snap: Snapshot, user: UserInfo) -> list[dict]:
    """What /v1/models lists: the caller's LLMs and the aliases with a usable target."""
    if not user.active:
        return []
    items = [_describe(t) for t in snap.llms.values() if t.llm_id in user.usable]
    for name, targets in snap.aliases.items():
        usable = [t for t in targets if t.llm_id in user.usable]
        if usable:
            first = usable[0]
            items.append(
                {
                    "id": name,
                    "object": "model",
                    "created": first.created,
                    "owned_by": "meshgate",
                    "meshgate": {
                        "alias": True,
                        "description": snap.alias_descriptions.get(name, ""),
                        "kind": first.kind,
                        "targets": [t.mesh_id for t in usable],
                    },
                }
            )
    items.sort(key=lambda item: item["id"])
    return items


def _describe(target: Target) -> dict:
    return {
        "id": target.mesh_id,
        "object": "model",
        "created": target.created,
        "owned_by": target.connection_slug,
        "meshgate": {
            "alias": False,
            "connection": target.connection_slug,
            "kind": target.kind,
            "description": target.description,
            "input_price_per_million": str(target.input_price),
            "output_price_per_million": str(target.output_price),
            "cached_input_price_per_million": str(target.cached_input_price),
            "context_window": target.context_window,
            "max_output_tokens": target.max_output_tokens,
            "measured": target.measured,
        },
    }
