"""The "My API keys" page: own keys only, the new key shown once, CSRF-protected."""

from __future__ import annotations

from django.test import Client

from gateway.keys import apikey_create
from gateway.models import ApiKey, hash_key

URL = "/keys/"


def logged_in(user, csrf: bool = False) -> Client:
    client = Client(enforce_csrf_checks=csrf)
    client.force_login(user)
    return client


def test_anonymous_visitors_are_sent_to_the_login_page(cast):
    response = Client().get(URL)
    assert response.status_code == 302
    assert response["Location"] == f"/accounts/login/?next={URL}"


def test_a_user_creates_a_key_and_it_is_shown_once(cast, caplog, capsys):
    caplog.set_level("DEBUG")
    client = logged_in(cast.alice)
    response = client.post(
        URL, {"department": cast.marketing.pk, "purpose": "newsletter", "expires_in_days": 30}
    )
    assert response.status_code == 200
    api_key = ApiKey.objects.get()
    raw = response.context["raw_key"]
    assert api_key.key_hash == hash_key(raw)
    assert raw in response.content.decode()
    assert "no-store" in response["Cache-Control"]
    assert api_key.owner == cast.alice and api_key.department == cast.marketing
    assert api_key.expires_at is not None
    again = client.get(URL)
    assert raw not in again.content.decode()
    captured = capsys.readouterr()
    for logged in (caplog.text, captured.out, captured.err):
        assert raw not in logged
    assert api_key.prefix in again.content.decode()


def test_only_the_users_own_departments_are_offered_and_accepted(cast):
    client = logged_in(cast.alice)
    choices = client.get(URL).context["form"].fields["department"].queryset
    assert list(choices) == [cast.marketing]
    response = client.post(URL, {"department": cast.finance.pk, "purpose": "sneaky"})
    assert response.status_code == 200
    assert "department" in response.context["form"].errors
    assert not ApiKey.objects.exists()


def test_someone_in_no_department_is_told_why_they_cannot_create_a_key(cast):
    response = logged_in(cast.charlie).get(URL)
    assert response.status_code == 200
    assert "You are in no department" in response.content.decode()
    refused = logged_in(cast.charlie).post(URL, {"department": cast.marketing.pk, "purpose": "x"})
    assert "department" in refused.context["form"].errors
    assert not ApiKey.objects.exists()


def test_the_page_lists_only_the_users_own_keys(cast):
    apikey_create(owner=cast.alice, department=cast.marketing, purpose="alice-notebook")
    bobs, _ = apikey_create(owner=cast.bob, department=cast.finance, purpose="bob-batch")
    html = logged_in(cast.alice).get(URL).content.decode()
    assert "alice-notebook" in html
    assert "bob-batch" not in html and bobs.prefix not in html


def test_a_user_revokes_their_own_key(cast):
    mine, _ = apikey_create(owner=cast.alice, department=cast.marketing, purpose="p")
    response = logged_in(cast.alice).post(f"{URL}{mine.pk}/revoke/")
    assert response.status_code == 302
    mine.refresh_from_db()
    assert mine.revoked_at is not None and mine.revoked_by == cast.alice


def test_another_users_key_is_a_404_and_stays_active(cast):
    bobs, _ = apikey_create(owner=cast.bob, department=cast.finance, purpose="p")
    assert logged_in(cast.alice).post(f"{URL}{bobs.pk}/revoke/").status_code == 404
    assert logged_in(cast.alice).post(f"{URL}999999/revoke/").status_code == 404
    assert ApiKey.objects.get(pk=bobs.pk).is_active


def test_revoking_is_post_only_and_csrf_protected(cast):
    mine, _ = apikey_create(owner=cast.alice, department=cast.marketing, purpose="p")
    assert logged_in(cast.alice).get(f"{URL}{mine.pk}/revoke/").status_code == 405
    strict = logged_in(cast.alice, csrf=True)
    assert strict.post(f"{URL}{mine.pk}/revoke/").status_code == 403
    assert strict.post(URL, {"department": cast.marketing.pk, "purpose": "p"}).status_code == 403
    assert ApiKey.objects.get(pk=mine.pk).is_active
    assert ApiKey.objects.count() == 1


def test_expiry_in_days_and_as_a_date_cannot_both_be_given(cast):
    response = logged_in(cast.alice).post(
        URL,
        {
            "department": cast.marketing.pk,
            "purpose": "p",
            "expires_in_days": 3,
            "expires_on": "2999-01-01",
        },
    )
    assert response.context["form"].non_field_errors()
    assert not ApiKey.objects.exists()
