"""/api/keys/: people manage their own keys; the key is in the create response only."""

from __future__ import annotations

from django.contrib.auth.models import Permission
from rest_framework.test import APIClient

from gateway.keys import apikey_create
from gateway.models import ApiKey, hash_key

URL = "/api/keys/"


def session(user, csrf: bool = False) -> APIClient:
    client = APIClient(enforce_csrf_checks=csrf)
    client.force_login(user)
    return client


def test_a_user_creates_a_key_and_sees_it_once(cast):
    client = session(cast.alice)
    response = client.post(URL, {"department": "Marketing", "purpose": "notebook"}, format="json")
    assert response.status_code == 201, response.content
    assert response["Cache-Control"] == "no-store"
    body = response.json()
    raw = body["key"]
    stored = ApiKey.objects.get(pk=body["id"])
    assert stored.owner == cast.alice
    assert stored.key_hash == hash_key(raw)
    assert raw.startswith(body["prefix"] + "-")
    for page in (client.get(URL), client.get(f"{URL}{stored.pk}/")):
        assert page.status_code == 200
        assert raw not in page.content.decode()
        assert "key" not in (page.json()["results"][0] if "results" in page.json() else page.json())
    # The new key works on the API.
    by_key = APIClient()
    by_key.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert by_key.get(URL).status_code == 200


def test_an_expiry_in_days_is_turned_into_a_date(cast):
    response = session(cast.alice).post(
        URL, {"department": "Marketing", "purpose": "p", "expires_in_days": 7}, format="json"
    )
    assert response.status_code == 201
    assert response.json()["expires_at"] is not None


def test_a_user_cannot_charge_a_department_they_are_not_in(cast):
    response = session(cast.alice).post(
        URL, {"department": "Finance", "purpose": "p"}, format="json"
    )
    assert response.status_code == 400
    assert "department" in response.json()
    assert not ApiKey.objects.exists()


def test_a_user_cannot_create_a_key_for_someone_else(cast):
    response = session(cast.alice).post(
        URL, {"owner": "bob", "department": "Finance", "purpose": "p"}, format="json"
    )
    assert response.status_code == 403
    assert not ApiKey.objects.exists()


def test_privilege_fields_are_refused_and_change_nothing(cast):
    response = session(cast.alice).post(
        URL,
        {
            "department": "Marketing",
            "purpose": "p",
            "is_staff": True,
            "groups": ["Finance"],
            "key_hash": "0" * 64,
            "revoked_at": None,
        },
        format="json",
    )
    assert response.status_code == 400
    assert set(response.json()) == {"is_staff", "groups", "key_hash", "revoked_at"}
    cast.alice.refresh_from_db()
    assert not cast.alice.is_staff
    assert list(cast.alice.groups.values_list("name", flat=True)) == ["Marketing"]
    assert not ApiKey.objects.exists()


def test_a_user_sees_and_revokes_only_their_own_keys(cast):
    mine, _ = apikey_create(owner=cast.alice, department=cast.marketing, purpose="mine")
    bobs, _ = apikey_create(owner=cast.bob, department=cast.finance, purpose="bob's")
    client = session(cast.alice)
    assert [row["id"] for row in client.get(URL).json()["results"]] == [mine.pk]
    assert client.get(f"{URL}{bobs.pk}/").status_code == 404
    assert client.post(f"{URL}{bobs.pk}/revoke/").status_code == 404
    assert ApiKey.objects.get(pk=bobs.pk).is_active
    response = client.post(f"{URL}{mine.pk}/revoke/")
    assert response.status_code == 200
    assert response.json()["revoked_by"] == "alice"
    assert not ApiKey.objects.get(pk=mine.pk).is_active


def test_an_admin_sees_and_revokes_everyones_keys(cast):
    alices, _ = apikey_create(owner=cast.alice, department=cast.marketing, purpose="a")
    bobs, _ = apikey_create(owner=cast.bob, department=cast.finance, purpose="b")
    client = session(cast.admin)
    assert {row["id"] for row in client.get(URL).json()["results"]} == {alices.pk, bobs.pk}
    assert client.post(f"{URL}{bobs.pk}/revoke/").status_code == 200
    revoked = ApiKey.objects.get(pk=bobs.pk)
    assert revoked.revoked_by == cast.admin


def test_an_auditor_can_see_but_not_revoke_others_keys(cast):
    bobs, _ = apikey_create(owner=cast.bob, department=cast.finance, purpose="b")
    cast.alice.user_permissions.add(Permission.objects.get(codename="view_apikey"))
    client = session(cast.alice)
    assert client.get(f"{URL}{bobs.pk}/").status_code == 200
    assert client.post(f"{URL}{bobs.pk}/revoke/").status_code == 403
    assert ApiKey.objects.get(pk=bobs.pk).is_active


def test_an_admin_creates_a_key_for_someone_in_their_department(cast):
    response = session(cast.admin).post(
        URL, {"owner": "bob", "department": "Finance", "purpose": "batch"}, format="json"
    )
    assert response.status_code == 201
    assert ApiKey.objects.get().owner == cast.bob


def test_a_key_cannot_mint_another_key(cast):
    """Otherwise a leaked key could mint its successor and outlive its revocation."""
    _, raw = apikey_create(owner=cast.alice, department=cast.marketing, purpose="script")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    response = client.post(URL, {"department": "Marketing", "purpose": "p"}, format="json")
    assert response.status_code == 403
    assert ApiKey.objects.count() == 1


def test_keys_are_never_edited_or_deleted(cast):
    key, _ = apikey_create(owner=cast.alice, department=cast.marketing, purpose="p")
    client = session(cast.admin)
    assert client.patch(f"{URL}{key.pk}/", {"purpose": "x"}, format="json").status_code == 405
    assert client.put(f"{URL}{key.pk}/", {"purpose": "x"}, format="json").status_code == 405
    assert client.delete(f"{URL}{key.pk}/").status_code == 405
    assert ApiKey.objects.get(pk=key.pk).purpose == "p"


def test_creating_by_session_needs_the_csrf_token(cast):
    client = session(cast.alice, csrf=True)
    response = client.post(URL, {"department": "Marketing", "purpose": "p"}, format="json")
    assert response.status_code == 403
    assert not ApiKey.objects.exists()


def test_anonymous_callers_are_refused(cast):
    assert APIClient().get(URL).status_code == 401
    assert APIClient().post(URL, {"department": "Marketing", "purpose": "p"}).status_code == 401
