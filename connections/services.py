"""State changes of what can be called: connections, their secrets and models, grants, aliases,
departments, encryption keys.

Every service is keyword-only and records a `ChangeEvent` with the acting user in
the same transaction as the change. Secrets are write-only: events name the
field that was replaced, never its value.

Two services call a provider (`models_discover`, `connection_test`). They do the
network call *outside* any transaction: on SQLite (IMMEDIATE transactions) an
open transaction holds the write lock, and a slow provider would stall the
gateway's audit writes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.contrib.auth.models import Group
from django.db import transaction
from django.utils import timezone
from guardian.shortcuts import assign_perm, remove_perm

from . import catalog, crypto
from .models import (
    LLM,
    Alias,
    AliasTarget,
    ChangeEvent,
    Connection,
    Department,
    LLMGroupObjectPermission,
)
from .providers import build_adapter
from .providers.base import ConnectionConfig, DiscoveredModel, ProviderError

USE_LLM = "connections.use_llm"

# Model families a provider lists that are not text models Meshgate can route
# (images, audio, moderation...): discovery leaves them out.
_NOT_ROUTABLE = re.compile(
    r"(dall-e|whisper|tts|audio|realtime|transcribe|moderation|image|sora|davinci|babbage|"
    r"computer-use|search-preview|stability\.|\.sd3|titan-image|nova-canvas|nova-reel|rerank)",
    re.IGNORECASE,
)

CONNECTION_FIELDS = (
    "name",
    "slug",
    "kind",
    "description",
    "base_url",
    "api_version",
    "region",
    "options",
    "enabled",
    "is_simulator",
    "timeout_seconds",
    "max_retries",
    "payload_policy",
)
LLM_FIELDS = (
    "kind",
    "description",
    "input_price",
    "output_price",
    "cached_input_price",
    "context_window",
    "max_output_tokens",
    "catalog_tokens_per_second",
    "catalog_date",
)


def _record(actor, event_type: str, obj: Any, **details: Any) -> ChangeEvent:
    return ChangeEvent.objects.create(
        actor=actor if getattr(actor, "pk", None) else None,
        event_type=event_type,
        object_repr=str(obj)[:255],
        details=details,
    )


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str | list | dict):
        return value
    return str(value)


def _check_fields(fields: dict[str, Any], allowed: Iterable[str]) -> None:
    unknown = set(fields) - set(allowed)
    if unknown:
        raise TypeError(f"unexpected fields: {', '.join(sorted(unknown))}")


# --- connections ----------------------------------------------------------------------------


@transaction.atomic
def connection_create(
    *, actor, secrets: dict[str, str | None] | None = None, **fields: Any
) -> Connection:
    """Create a connection (validated, base URL included) with its secrets encrypted."""
    _check_fields(fields, CONNECTION_FIELDS)
    connection = Connection(**fields, created_by=actor, updated_by=actor)
    replaced = connection.set_secrets(secrets or {})
    connection.full_clean()
    connection.save()
    _record(
        actor,
        ChangeEvent.Type.CONNECTION_CREATED,
        connection,
        connection_id=connection.pk,
        kind=connection.kind,
        base_url=connection.base_url,
        secrets_set=replaced,
    )
    return connection


@transaction.atomic
def connection_update(
    *,
    connection: Connection,
    actor,
    secrets: dict[str, str | None] | None = None,
    clear_secrets: Iterable[str] = (),
    **fields: Any,
) -> Connection:
    """Change a connection's settings (and optionally its secrets); bumps its version once."""
    _check_fields(fields, CONNECTION_FIELDS)
    changed = {}
    for name, value in fields.items():
        old = getattr(connection, name)
        if old != value:
            changed[name] = {"from": _jsonable(old), "to": _jsonable(value)}
            setattr(connection, name, value)
    if "kind" in changed:
        # Secrets of the old kind mean nothing to the new one: drop them rather than keep
        # credentials nobody can see or replace.
        for stale in set(_readable_secrets(connection)) - set(connection.secret_field_names):
            connection.clear_secret(stale)
    replaced = _apply_secrets(connection, secrets or {}, clear_secrets)
    if not changed and not replaced:
        return connection
    connection.full_clean()
    connection.version += 1
    connection.updated_by = actor
    connection.save()
    if changed:
        _record(
            actor,
            ChangeEvent.Type.CONNECTION_UPDATED,
            connection,
            connection_id=connection.pk,
            changed=changed,
            version=connection.version,
        )
    if replaced:
        _record_secrets(actor, connection, replaced)
    return connection


def _readable_secrets(connection: Connection) -> dict[str, str]:
    """The stored secrets, or none when no configured key can read them.

    Unreadable secrets (a key removed before rotation) are useless: dropping them lets
    an administrator recover by typing the secrets again instead of meeting an error.
    """
    try:
        return connection.get_secrets()
    except crypto.SecretDecryptionError:
        connection.secrets_ciphertext = ""
        connection.secrets_set_at = {}
        return {}


def _apply_secrets(
    connection: Connection, secrets: dict[str, str | None], clear: Iterable[str]
) -> dict[str, list[str]]:
    values = {k: v for k, v in secrets.items() if v}
    for name in [*values, *clear]:
        if name not in connection.secret_field_names:
            raise ValueError(f"{name!r} is not a secret field of a {connection.kind} connection")
    if not values and not clear:
        return {}
    stored = _readable_secrets(connection)
    cleared = []
    for name in clear:
        if name in connection.secrets_set_at or name in stored:
            connection.clear_secret(name)
            cleared.append(name)
    replaced = connection.set_secrets({k: v for k, v in values.items() if k not in cleared})
    return {"replaced": replaced, "cleared": cleared} if replaced or cleared else {}


def _record_secrets(actor, connection: Connection, fields: dict[str, list[str]]) -> None:
    _record(
        actor,
        ChangeEvent.Type.SECRET_REPLACED,
        connection,
        connection_id=connection.pk,
        version=connection.version,
        **fields,
    )


@transaction.atomic
def connection_set_secrets(
    *,
    connection: Connection,
    actor,
    secrets: dict[str, str | None],
    clear: Iterable[str] = (),
) -> list[str]:
    """Replace (or clear) secret fields. Empty values leave a field as it is.

    Returns the names of the fields replaced or cleared; the event names them, never a value.
    """
    fields = _apply_secrets(connection, secrets, clear)
    if not fields:
        return []
    connection.version += 1
    connection.updated_by = actor
    connection.save()
    _record_secrets(actor, connection, fields)
    return [*fields["replaced"], *fields["cleared"]]


@transaction.atomic
def connection_delete(*, connection: Connection, actor) -> None:
    """Delete a connection and its models (their audit records keep their names)."""
    _record(
        actor,
        ChangeEvent.Type.CONNECTION_DELETED,
        connection,
        connection_id=connection.pk,
        slug=connection.slug,
        kind=connection.kind,
        models=list(connection.llms.values_list("name", flat=True)),
    )
    connection.delete()


# --- talking to the provider ----------------------------------------------------------------


def scrub(text: str, secrets: Iterable[str]) -> str:
    """Remove every secret value (and the head and tail providers echo back) from a text."""
    for secret in sorted((s for s in secrets if s), key=len, reverse=True):
        text = text.replace(secret, "[redacted]")
        if len(secret) >= 16:
            # "Incorrect API key provided: sk-proj-ab**********wxyz" shows both ends.
            text = text.replace(secret[:8], "[redacted]").replace(secret[-4:], "[redacted]")
    return text


def _safe_message(exc: Exception, config: ConnectionConfig) -> str:
    if isinstance(exc, ProviderError):
        return scrub(exc.message, config.secret_values())[:500]
    # Not our contract's error (an adapter bug, an SDK exception): its text may echo
    # request headers, so it is scrubbed like everything else before anyone sees it.
    return scrub(f"{type(exc).__name__}: {exc}", config.secret_values())[:500]


@dataclass
class TestResult:
    ok: bool
    message: str


UNREADABLE = (
    "The stored secrets cannot be decrypted with the configured MESHGATE_ENCRYPTION_KEYS: "
    "restore the key they were written with, or type the secrets again."
)


def connection_test(*, connection: Connection) -> TestResult:
    """A cheap real call to the provider. The message never holds a secret."""
    try:
        config = ConnectionConfig.from_connection(connection)
    except crypto.SecretDecryptionError:
        return TestResult(ok=False, message=UNREADABLE)
    try:
        message = build_adapter(config).test()
    except Exception as exc:
        return TestResult(ok=False, message=_safe_message(exc, config))
    return TestResult(ok=True, message=scrub(str(message), config.secret_values())[:500])


@dataclass
class DiscoveryResult:
    ok: bool
    message: str = ""
    added: list[str] = field(default_factory=list)
    known: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def _catalog_name(connection: Connection, name: str) -> str:
    # Azure lists deployments, whose names are the admin's; the deployments option says
    # which model each one runs ([{"name": ..., "model": ...}]), and that names the prices.
    for item in (connection.options or {}).get("deployments") or []:
        if isinstance(item, dict) and item.get("name") == name and item.get("model"):
            return str(item["model"])
    return name


def _catalog_figures(connection: Connection, found: DiscoveredModel) -> dict[str, Any]:
    entry = catalog.lookup(connection.kind, _catalog_name(connection, found.name))
    figures: dict[str, Any] = {
        "kind": found.kind or LLM.Kind.CHAT,
        "context_window": found.context_window,
        "description": found.description,
    }
    if entry is not None:
        figures.update(
            kind=entry.kind,
            input_price=entry.input_price,
            output_price=entry.output_price,
            cached_input_price=entry.cached_input_price,
            context_window=entry.context_window or found.context_window,
            max_output_tokens=entry.max_output_tokens,
            catalog_tokens_per_second=entry.tokens_per_second,
            catalog_date=entry.as_of,
            description=found.description or entry.description,
        )
    return figures


def models_discover(
    *, connection: Connection, actor, only_catalog: bool = False
) -> DiscoveryResult:
    """Ask the provider what it offers and add the new models, not approved.

    New models get the catalog's prices, context window, speed and date. Models
    already known keep their (admin-edited) figures; only blanks are filled in.
    With `only_catalog`, models the catalog does not know are left out.
    """
    try:
        config = ConnectionConfig.from_connection(connection)
    except crypto.SecretDecryptionError:
        return DiscoveryResult(ok=False, message=UNREADABLE)
    try:
        found = build_adapter(config).list_models()
    except Exception as exc:
        return DiscoveryResult(ok=False, message=_safe_message(exc, config))
    return _discovery_save(
        connection=connection, actor=actor, found=found, only_catalog=only_catalog
    )


@transaction.atomic
def _discovery_save(
    *, connection: Connection, actor, found: list[DiscoveredModel], only_catalog: bool
) -> DiscoveryResult:
    result = DiscoveryResult(ok=True)
    existing = {llm.name: llm for llm in connection.llms.all()}
    for model in found:
        if _NOT_ROUTABLE.search(model.name):
            result.skipped.append(model.name)
            continue
        figures = _catalog_figures(connection, model)
        if model.name in existing:
            llm = existing[model.name]
            blanks = {k: v for k, v in figures.items() if getattr(llm, k) in (None, "") and v}
            if blanks:
                for name, value in blanks.items():
                    setattr(llm, name, value)
                llm.save(update_fields=list(blanks))
            result.known.append(model.name)
            continue
        if only_catalog and "catalog_date" not in figures:
            result.skipped.append(model.name)
            continue
        clean = {k: v for k, v in figures.items() if v is not None}
        LLM.objects.create(connection=connection, name=model.name, approved=False, **clean)
        existing[model.name] = None  # a provider listing a name twice adds it once
        result.added.append(model.name)
    result.message = (
        f"{len(result.added)} new model(s) added (not approved), "
        f"{len(result.known)} already known, {len(result.skipped)} skipped."
    )
    _record(
        actor,
        ChangeEvent.Type.MODELS_DISCOVERED,
        connection,
        connection_id=connection.pk,
        added=result.added,
        known=len(result.known),
        skipped=result.skipped,
    )
    return result


# --- LLMs: approval, figures, grants --------------------------------------------------------


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


# --- aliases --------------------------------------------------------------------------------


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


# --- departments ----------------------------------------------------------------------------


@transaction.atomic
def department_create(*, actor, name: str, cost_center: str, contacts: str = "") -> Department:
    """A department is a Django group with a cost-center code; reuses a group of that name."""
    group, _ = Group.objects.get_or_create(name=name)
    department = Department(group=group, cost_center=cost_center, contacts=contacts)
    department.full_clean()
    department.save()
    _record(
        actor,
        ChangeEvent.Type.DEPARTMENT_CHANGED,
        department,
        department_id=department.pk,
        action="created",
        cost_center=cost_center,
    )
    return department


@transaction.atomic
def department_update(
    *,
    department: Department,
    actor,
    name: str | None = None,
    cost_center: str | None = None,
    contacts: str | None = None,
) -> Department:
    changed: dict[str, Any] = {}
    if name is not None and name != department.group.name:
        changed["name"] = {"from": department.group.name, "to": name}
        department.group.name = name
        department.group.full_clean()
        department.group.save()
    for field_name, value in (("cost_center", cost_center), ("contacts", contacts)):
        if value is not None and value != getattr(department, field_name):
            changed[field_name] = {"from": getattr(department, field_name), "to": value}
            setattr(department, field_name, value)
    if changed:
        department.full_clean()
        department.save()
        _record(
            actor,
            ChangeEvent.Type.DEPARTMENT_CHANGED,
            department,
            department_id=department.pk,
            action="updated",
            changed=changed,
        )
    return department


@transaction.atomic
def department_delete(*, department: Department, actor) -> None:
    """Delete the department and its group (refused while API keys charge it)."""
    _record(
        actor,
        ChangeEvent.Type.DEPARTMENT_CHANGED,
        department,
        department_id=department.pk,
        action="deleted",
        cost_center=department.cost_center,
    )
    group = department.group
    department.delete()
    group.delete()


# --- encryption keys ------------------------------------------------------------------------


@transaction.atomic
def encryption_key_rotate(*, actor) -> int:
    """Re-encrypt every stored secret under the primary key of MESHGATE_ENCRYPTION_KEYS.

    Run it with the new key first and the old ones after; once it is done the old
    keys can be dropped. Returns how many connections were re-encrypted. Secret
    values do not change, so connection versions do not move.
    """
    count = 0
    for connection in Connection.objects.select_for_update().exclude(secrets_ciphertext=""):
        connection.secrets_ciphertext = crypto.rotate_token(connection.secrets_ciphertext)
        connection.save(update_fields=["secrets_ciphertext"])
        count += 1
    _record(
        actor,
        ChangeEvent.Type.KEY_ROTATED,
        "encryption keys",
        connections=count,
        keys_configured=len(settings.MESHGATE_ENCRYPTION_KEYS),
    )
    return count
