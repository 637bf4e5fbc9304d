"""Meshgate keys on the management API: one 401 for every failure, nothing leaked."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.test import APIClient

from gateway.keys import apikey_create, apikey_revoke
from gateway.models import ApiKey

LLMS = "/api/llms/"


def allow(user, *codenames: str) -> None:
    user.user_permissions.add(*Permission.objects.filter(codename__in=codenames))


def bearer(raw: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    return client


@pytest.fixture
def alice_key(cast):
    allow(cast.alice, "view_llm")
    return apikey_create(owner=cast.alice, department=cast.marketing, purpose="automation")


def test_a_valid_key_authenticates_as_its_owner_with_the_owners_permissions(cast, alice_key):
    response = bearer(alice_key[1]).get(LLMS)
    assert response.status_code == 200
    assert {row["mesh_id"] for row in response.json()["results"]} >= {"sim/gpt-4o"}
    # Same key, an endpoint alice holds no permission for.
    assert bearer(alice_key[1]).get("/api/connections/").status_code == 403


def test_no_credentials_get_a_401_with_a_bearer_challenge(cast):
    response = APIClient().get(LLMS)
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")


def _bad_keys(cast, alice_key) -> dict[str, str]:
    revoked, revoked_raw = apikey_create(owner=cast.alice, department=cast.marketing, purpose="r")
    apikey_revoke(api_key=revoked, actor=cast.admin)
    expired, expired_raw = apikey_create(owner=cast.alice, department=cast.marketing, purpose="e")
    ApiKey.objects.filter(pk=expired.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    _, bob_raw = apikey_create(owner=cast.bob, department=cast.finance, purpose="b")
    cast.bob.is_active = False
    cast.bob.save()
    raw = alice_key[1]
    return {
        "empty": "",
        "malformed": "not-a-key",
        "wrong prefix": "sk-" + raw[3:],
        "unknown": raw[:-4] + ("AAAA" if not raw.endswith("AAAA") else "BBBB"),
        "truncated": raw[:-1],
        "revoked": revoked_raw,
        "expired": expired_raw,
        "owner deactivated": bob_raw,
        "overlong": raw + "x" * 500,
        "sql-ish": "mg-' OR 1=1 --",
    }


def test_every_bad_key_gets_the_same_401_body(cast, alice_key):
    bodies = {}
    for label, raw in _bad_keys(cast, alice_key).items():
        response = bearer(raw).get(LLMS)
        assert response.status_code == 401, label
        bodies[label] = response.content
    assert len(set(bodies.values())) == 1, bodies
    # Non-ASCII bytes in the header are refused the same way.
    response = APIClient().get(LLMS, HTTP_AUTHORIZATION="Bearer mg-\u00e9t\u00e9")
    assert response.status_code == 401
    assert response.content == next(iter(bodies.values()))


def test_the_key_never_reaches_sql_as_text(cast, alice_key):
    raw = alice_key[1]
    with CaptureQueriesContext(connection) as queries:
        assert bearer(raw).get(LLMS).status_code == 200
        assert bearer(raw + "x").get(LLMS).status_code == 401
    assert queries.captured_queries
    for query in queries.captured_queries:
        assert raw not in query["sql"]
        assert raw[len("mg-") + 9 :] not in query["sql"]  # not even the secret part


def test_last_used_is_written_at_most_once_a_minute(cast, alice_key):
    api_key, raw = alice_key
    assert bearer(raw).get(LLMS).status_code == 200
    first = ApiKey.objects.get(pk=api_key.pk).last_used_at
    assert first is not None
    assert bearer(raw).get(LLMS).status_code == 200
    assert ApiKey.objects.get(pk=api_key.pk).last_used_at == first
    ApiKey.objects.filter(pk=api_key.pk).update(last_used_at=first - timedelta(minutes=2))
    assert bearer(raw).get(LLMS).status_code == 200
    assert ApiKey.objects.get(pk=api_key.pk).last_used_at > first - timedelta(minutes=2)


def test_a_session_write_needs_the_csrf_token_but_a_key_does_not(cast, alice_key):
    allow(cast.alice, "change_llm")
    session = APIClient(enforce_csrf_checks=True)
    session.force_login(cast.alice)
    url = f"{LLMS}{cast.gpt4o.pk}/"
    refused = session.patch(url, {"description": "by session"}, format="json")
    assert refused.status_code == 403
    assert "CSRF" in refused.json()["detail"]
    by_key = bearer(alice_key[1])
    by_key.handler.enforce_csrf_checks = True
    assert by_key.patch(url, {"description": "by key"}, format="json").status_code == 200
    cast.gpt4o.refresh_from_db()
    assert cast.gpt4o.description == "by key"


def test_the_key_never_reaches_a_log_line_or_a_response(cast, alice_key, caplog, capsys):
    raw = alice_key[1]
    caplog.set_level("DEBUG")
    ok = bearer(raw).get(LLMS)
    refused = bearer(raw + "x").get(LLMS)
    forbidden = bearer(raw).get("/api/connections/")
    assert (ok.status_code, refused.status_code, forbidden.status_code) == (200, 401, 403)
    captured = capsys.readouterr()
    for text in (caplog.text, captured.out, captured.err, refused.content.decode()):
        assert raw not in text
        assert raw[12:] not in text
