"""API keys in the admin: the key shown once and nowhere else, revoke, no edit, no delete."""

from __future__ import annotations

from datetime import timedelta

from django.contrib.admin.models import LogEntry
from django.contrib.messages import get_messages
from django.test import Client
from django.utils import timezone

from gateway.keys import apikey_create
from gateway.models import ApiKey, hash_key

CHANGELIST = "/admin/gateway/apikey/"
ADD = "/admin/gateway/apikey/add/"


def admin_client(cast) -> Client:
    client = Client()
    client.force_login(cast.admin)
    return client


def test_the_changelist_shows_prefix_owner_department_and_dates(cast):
    key, _ = apikey_create(owner=cast.alice, department=cast.marketing, purpose="notebook")
    response = admin_client(cast).get(CHANGELIST)
    assert response.status_code == 200
    html = response.content.decode()
    for text in (key.prefix, "alice", "Marketing", "notebook"):
        assert text in html
    assert key.key_hash not in html


def test_search_finds_a_key_by_the_prefix_people_see(cast):
    key, _ = apikey_create(owner=cast.alice, department=cast.marketing, purpose="one")
    other, _ = apikey_create(owner=cast.bob, department=cast.finance, purpose="two")
    response = admin_client(cast).get(CHANGELIST, {"q": key.prefix})
    assert list(response.context["cl"].result_list) == [key]
    response = admin_client(cast).get(CHANGELIST, {"q": "bob"})
    assert list(response.context["cl"].result_list) == [other]


def test_the_status_filter_separates_active_and_revoked_keys(cast):
    active, _ = apikey_create(owner=cast.alice, department=cast.marketing, purpose="a")
    revoked, _ = apikey_create(owner=cast.alice, department=cast.marketing, purpose="r")
    admin_client(cast).post(CHANGELIST, {"action": "revoke_keys", "_selected_action": [revoked.pk]})
    client = admin_client(cast)
    assert list(client.get(CHANGELIST, {"status": "active"}).context["cl"].result_list) == [active]
    assert list(client.get(CHANGELIST, {"status": "revoked"}).context["cl"].result_list) == [
        revoked
    ]
    ApiKey.objects.filter(pk=active.pk).update(expires_at=timezone.now() - timedelta(days=1))
    expired = client.get(CHANGELIST, {"status": "expired"})
    assert list(expired.context["cl"].result_list) == [active]
    assert "expired" in expired.content.decode()


def test_adding_a_key_shows_it_once_and_keeps_it_out_of_history_and_messages(cast, caplog, capsys):
    caplog.set_level("DEBUG")
    client = admin_client(cast)
    assert client.get(ADD).status_code == 200
    response = client.post(
        ADD,
        {
            "owner": cast.alice.pk,
            "department": cast.marketing.pk,
            "purpose": "etl",
            "expires_in_days": 90,
        },
    )
    assert response.status_code == 200
    raw = response.context["raw_key"]
    assert raw in response.content.decode()
    assert "no-store" in response["Cache-Control"]
    key = ApiKey.objects.get()
    assert key.key_hash == hash_key(raw) and key.owner == cast.alice and key.expires_at
    entry = LogEntry.objects.get()
    assert raw not in entry.change_message and raw not in entry.object_repr
    assert raw[12:] not in entry.get_change_message()
    assert not list(get_messages(response.wsgi_request))
    captured = capsys.readouterr()
    for logged in (caplog.text, captured.out, captured.err):
        assert raw not in logged
    for page in (CHANGELIST, f"{CHANGELIST}{key.pk}/change/", f"{CHANGELIST}{key.pk}/history/"):
        later = client.get(page)
        assert later.status_code == 200, page
        assert raw not in later.content.decode()
        assert key.key_hash not in later.content.decode()


def test_the_department_must_be_one_of_the_owners_groups(cast):
    response = admin_client(cast).post(
        ADD, {"owner": cast.alice.pk, "department": cast.finance.pk, "purpose": "x"}
    )
    assert response.status_code == 200
    assert "department" in response.context["form"].errors
    assert not ApiKey.objects.exists()


def test_an_expiry_date_in_the_past_is_refused(cast):
    response = admin_client(cast).post(
        ADD,
        {
            "owner": cast.alice.pk,
            "department": cast.marketing.pk,
            "purpose": "x",
            "expires_on": "2001-01-01",
        },
    )
    assert "expires_on" in response.context["form"].errors
    assert not ApiKey.objects.exists()


def test_the_revoke_action_goes_through_the_service(cast):
    key, _ = apikey_create(owner=cast.alice, department=cast.marketing, purpose="x")
    response = admin_client(cast).post(
        CHANGELIST, {"action": "revoke_keys", "_selected_action": [key.pk]}, follow=True
    )
    assert "1 key(s) revoked." in response.content.decode()
    key.refresh_from_db()
    assert key.revoked_at is not None and key.revoked_by == cast.admin


def test_a_key_cannot_be_edited_or_deleted_in_the_admin(cast):
    key, raw = apikey_create(owner=cast.alice, department=cast.marketing, purpose="x")
    client = admin_client(cast)
    change = client.post(
        f"{CHANGELIST}{key.pk}/change/", {"purpose": "changed", "key_hash": "0" * 64}
    )
    assert change.status_code == 403
    assert client.post(f"{CHANGELIST}{key.pk}/delete/", {"post": "yes"}).status_code == 403
    key.refresh_from_db()
    assert key.purpose == "x" and key.key_hash == hash_key(raw)


def test_a_staff_user_without_permissions_sees_no_keys(cast):
    cast.alice.is_staff = True
    cast.alice.save()
    client = Client()
    client.force_login(cast.alice)
    assert client.get(CHANGELIST).status_code == 403
    assert client.get(ADD).status_code == 403
