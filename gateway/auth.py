"""Bearer `mg-...` keys to principals, from memory.

The presented value is hashed (SHA-256) at once; only the hash is looked up,
cached and compared, so the key itself never reaches SQL, a log line or an
error. Principals are cached per process in a versioned memo (the process's
`GatewayRuntime`, gateway/runtime.py) (the keys
version is bumped whenever a key is saved or deleted, revocation included),
and so are misses, for a few seconds, so a client hammering with a bad key
costs one query per few seconds, not one per call. Missing, malformed,
unknown, revoked and expired keys get the same 401.

The secret is never compared as such, so there is no early-exit comparison to time: the whole
presented value is hashed and its digest is the lookup key (a dict here, a unique index in
SQL). What the timing of either could reveal is how much of a SHA-256 digest matched, which
says nothing about the secret: the digest of a guess cannot be steered, so an attacker cannot
walk it towards a stored one (`hmac.compare_digest` on the digests would add nothing). A real
public id with a wrong secret is just another unknown digest: one lookup, like every refusal.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from . import runtime
from .call import Principal
from .errors import unauthorized
from .lastused import apikey_touch
from .lookups import db_lookup
from .models import KEY_PREFIX

_MAX_ENTRIES = 100_000
_NEGATIVE_SECONDS = 5.0
_TOUCH_EVERY = 60.0
_MAX_KEY_LENGTH = 200


@dataclass(frozen=True)
class _Entry:
    principal: Principal | None
    expires_at: float | None  # epoch seconds
    until: float | None  # monotonic deadline of a negative entry


def _lookup(key_hash: str) -> _Entry:
    from .models import ApiKey

    row = (
        ApiKey.objects.filter(key_hash=key_hash, revoked_at__isnull=True)
        .values(
            "pk",
            "public_id",
            "owner_id",
            "owner__username",
            "owner__is_active",
            "department_id",
            "purpose",
            "expires_at",
        )
        .first()
    )
    if row is None or not row["owner__is_active"]:
        return _Entry(None, None, time.monotonic() + _NEGATIVE_SECONDS)
    principal = Principal(
        user_id=row["owner_id"],
        username=row["owner__username"],
        department_id=row["department_id"],
        api_key_id=row["pk"],
        api_key_prefix=f"{KEY_PREFIX}{row['public_id']}",
        purpose=row["purpose"],
    )
    expires = row["expires_at"].timestamp() if row["expires_at"] else None
    return _Entry(principal, expires, None)


def hash_presented(header: bytes | None) -> str | None:
    """The SHA-256 of a well-formed `Bearer mg-...` value, or None."""
    if not header or len(header) > _MAX_KEY_LENGTH + 7:
        return None
    scheme, _, value = header.partition(b" ")
    if scheme.lower() != b"bearer":
        return None
    value = value.strip()
    if not value.startswith(KEY_PREFIX.encode()) or b" " in value:
        return None
    return hashlib.sha256(value).hexdigest()


async def authenticate(header: bytes | None) -> Principal:
    """The caller's principal, or GatewayError 401 (the same for every failure)."""
    key_hash = hash_presented(header)
    if key_hash is None:
        raise unauthorized()
    entries = runtime.current.keys.fresh()
    entry = entries.get(key_hash)
    now = time.monotonic()
    if entry is None or (entry.until is not None and entry.until < now):
        entry = await db_lookup(_lookup, key_hash)
        if len(entries) >= _MAX_ENTRIES:
            entries.clear()
        entries[key_hash] = entry
    principal = entry.principal
    if principal is None:
        raise unauthorized()
    if entry.expires_at is not None and entry.expires_at <= time.time():
        raise unauthorized()
    _touch(principal.api_key_id, now)
    return principal


def _touch(api_key_id: int | None, now: float) -> None:
    """Tell the writer about a key's use at most once a minute per key (off the request path)."""
    if api_key_id is None:
        return
    touched = runtime.current.touched
    last = touched.get(api_key_id)
    if last is not None and now - last < _TOUCH_EVERY:
        return
    if len(touched) >= _MAX_ENTRIES:
        touched.clear()
    touched[api_key_id] = now
    apikey_touch(api_key_id, datetime.now(UTC))
