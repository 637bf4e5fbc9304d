"""Connections and their write-only secrets, and the rotation of the encryption keys."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.conf import settings
from django.db import transaction

from .. import crypto
from ..models import (
    ChangeEvent,
    Connection,
)
from ..validators import is_url_option
from ._common import (
    CONNECTION_FIELDS,
    _check_fields,
    _jsonable,
    _record,
)


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
    repointed = _repointed(changed)
    if repointed and not any(v for v in (secrets or {}).values()):
        # A secret is for the place it was entered for: pointed elsewhere without being typed
        # again, it is dropped (never sent to the new place) and the connection disabled.
        stored = set(_readable_secrets(connection)) | set(connection.secrets_set_at or {})
        clear_secrets = [*clear_secrets, *(stored & set(connection.secret_field_names))]
        if clear_secrets and connection.enabled:
            changed["enabled"] = {"from": True, "to": False}
            connection.enabled = False
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


def _repointed(changed: dict[str, Any]) -> bool:
    """Whether a change moves where the connection's requests (and secrets) go."""
    if "base_url" in changed or "region" in changed:
        return True
    if "options" in changed:
        before = changed["options"]["from"] or {}
        after = changed["options"]["to"] or {}
        names = {*before, *after}
        return any(
            before.get(n) != after.get(n)
            for n in names
            if is_url_option(n, before.get(n)) or is_url_option(n, after.get(n))
        )
    return False


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
