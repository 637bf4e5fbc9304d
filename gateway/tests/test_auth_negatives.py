"""`gateway.auth` in process: a real public id is not enough, and every refusal costs the same.

A key is `mg-<public id>-<secret>`. The public id is not a secret (it is shown in the admin and
kept on every record), so each test here presents a real one with something wrong after it.
"""

from __future__ import annotations

import secrets
from datetime import timedelta

import pytest
from asgiref.sync import async_to_sync
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from audit.writer import writer
from gateway import auth
from gateway.errors import GatewayError
from gateway.keys import apikey_create, apikey_revoke
from gateway.models import KEY_PREFIX, ApiKey, hash_key

pytestmark = pytest.mark.django_db(transaction=True)


def split_key(raw: str) -> tuple[str, str]:
    """(`mg-<public id>`, secret). The public id is hex; the secret is URL-safe base64, which may
    itself hold a `-`, so the key is split at its second `-`, never at its last."""
    prefix, public_id, secret = raw.split("-", 2)
    return f"{prefix}-{public_id}", secret


def other_secret(raw: str) -> str:
    """The same key with its secret's first character changed: same public id, same length."""
    head, secret = split_key(raw)
    return f"{head}-{'B' if secret[0] != 'B' else 'C'}{secret[1:]}"


def key_with_a_dash_in_its_secret(cast) -> str:
    """A key of alice's whose secret holds a `-` just before its last character, as
    `token_urlsafe` gives about one time in 64: a split at the last `-` would make "truncated"
    and "secret missing" the same value, the second costing no lookup (it is remembered)."""
    public_id = secrets.token_hex(4)
    raw = f"{KEY_PREFIX}{public_id}-{'A' * 41}-Q"
    ApiKey.objects.create(
        public_id=public_id,
        key_hash=hash_key(raw),
        owner=cast.alice,
        department=cast.marketing,
        purpose="good",
    )
    return raw


@pytest.fixture(params=["issued", "dash in secret"])
def keys(cast, request):
    if request.param == "issued":
        _, alice = apikey_create(owner=cast.alice, department=cast.marketing, purpose="good")
    else:
        alice = key_with_a_dash_in_its_secret(cast)
    _, alice_other = apikey_create(owner=cast.alice, department=cast.marketing, purpose="other")
    revoked, revoked_raw = apikey_create(owner=cast.alice, department=cast.marketing, purpose="r")
    apikey_revoke(api_key=revoked, actor=cast.admin)
    expired, expired_raw = apikey_create(owner=cast.alice, department=cast.marketing, purpose="e")
    ApiKey.objects.filter(pk=expired.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    _, bob_raw = apikey_create(owner=cast.bob, department=cast.finance, purpose="b")
    cast.bob.is_active = False
    cast.bob.save()
    public_id = split_key(alice)[0]
    bad = {
        "forged secret": other_secret(alice),
        "another key's secret": f"{public_id}-{split_key(alice_other)[1]}",
        "truncated": alice[:-1],
        "secret missing": f"{public_id}-",
        "public id alone": public_id,
        "padded": alice + "A",
        "doubled": alice + alice[3:],
        "revoked": revoked_raw,
        "expired": expired_raw,
        "owner deactivated": bob_raw,
    }
    # Each a different value: two equal ones would share one remembered refusal.
    assert len(set(bad.values())) == len(bad), bad
    return {"good": alice, "bad": bad}


def accepted(header: str):
    principal = async_to_sync(auth.authenticate)(header.encode())
    # Its use is noted by the audit writer's thread: let it land before the next query
    # (SQLite's shared in-memory test database refuses a second writer at once).
    async_to_sync(writer.flush)()
    return principal


def refusal(raw: str) -> tuple:
    with pytest.raises(GatewayError) as raised:
        async_to_sync(auth.authenticate)(f"Bearer {raw}".encode())
    error = raised.value
    return (error.status, error.message, error.code, error.error_type, error.param)


def test_a_real_public_id_with_a_wrong_secret_is_refused_even_once_its_key_is_cached(keys):
    good = accepted(f"Bearer {keys['good']}")
    assert good.username == "alice"
    for label, raw in keys["bad"].items():
        assert refusal(raw)[0] == 401, label
    # The refusals did not spoil the real key's cached entry either.
    assert accepted(f"Bearer {keys['good']}") == good


def test_every_refusal_is_the_same_401_and_costs_the_same_lookups(keys):
    refusals, costs, repeats = {}, {}, {}
    for label, raw in keys["bad"].items():
        with CaptureQueriesContext(connection) as first:
            refusals[label] = refusal(raw)
        with CaptureQueriesContext(connection) as again:
            assert refusal(raw) == refusals[label]
        costs[label], repeats[label] = len(first), len(again)
    assert set(refusals.values()) == {
        (
            401,
            "Invalid or missing API key. Send 'Authorization: Bearer mg-...'.",
            "invalid_api_key",
            "authentication_error",
            None,
        )
    }
    # One indexed lookup by hash the first time, none while it is remembered: a forged secret,
    # a revoked key and a deactivated owner cannot be told apart by what they cost either.
    assert set(costs.values()) == {1}, costs
    assert set(repeats.values()) == {0}, repeats
    # The presented key never reached SQL, not even its public id.
    with CaptureQueriesContext(connection) as queries:
        refusal(other_secret(other_secret(keys["good"])))
    public_id = keys["good"].split("-")[1]
    assert queries.captured_queries and all(
        public_id not in query["sql"] for query in queries.captured_queries
    )


def test_the_real_key_in_a_wrong_envelope_is_refused_before_any_lookup(keys):
    good = keys["good"]
    envelopes = [
        f"Token {good}",
        f"Basic {good}",
        f"Bearer sk-{good[3:]}",
        f"Bearer {good} {good}",
        f"Bearer {good}{'x' * 300}",
        "Bearer",
        "",
    ]
    for header in envelopes:
        with CaptureQueriesContext(connection) as queries, pytest.raises(GatewayError) as raised:
            async_to_sync(auth.authenticate)(header.encode())
        assert raised.value.status == 401, header
        assert len(queries) == 0, header
    # The scheme's case does not matter, as in HTTP.
    assert accepted(f"bearer {good}").username == "alice"


def test_a_keys_use_is_noted_at_most_once_a_minute(keys):
    raw = keys["good"]
    rows = ApiKey.objects.filter(key_hash=hash_key(raw))
    accepted(f"Bearer {raw}")
    assert rows.get().last_used_at is not None
    rows.update(last_used_at=None)  # a queryset update: no signal, the cached key stays
    accepted(f"Bearer {raw}")
    assert rows.get().last_used_at is None
