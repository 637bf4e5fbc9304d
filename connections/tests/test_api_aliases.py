"""/api/aliases/: CRUD with ordered targets, recorded through the services."""

from __future__ import annotations

from django.contrib.auth.models import Permission
from rest_framework.test import APIClient

from connections.models import Alias, ChangeEvent

URL = "/api/aliases/"


def session(user) -> APIClient:
    client = APIClient()
    client.force_login(user)
    return client


def test_an_alias_is_created_with_its_targets_in_order(cast):
    response = session(cast.admin).post(
        URL,
        {"name": "cheap", "targets": ["sim/gpt-4o-mini", "sim/gpt-4o"]},
        format="json",
    )
    assert response.status_code == 201, response.content
    assert response.json()["targets"] == ["sim/gpt-4o-mini", "sim/gpt-4o"]
    alias = Alias.objects.get(name="cheap")
    assert [t.llm.mesh_id for t in alias.targets.order_by("position")] == [
        "sim/gpt-4o-mini",
        "sim/gpt-4o",
    ]
    assert ChangeEvent.objects.filter(event_type=ChangeEvent.Type.ALIAS_CHANGED).exists()


def test_reordering_targets_is_one_patch(cast):
    client = session(cast.admin)
    response = client.patch(
        f"{URL}chat-default/", {"targets": ["sim/gpt-4o-mini", "sim/gpt-4o"]}, format="json"
    )
    assert response.status_code == 200
    assert client.get(f"{URL}chat-default/").json()["targets"] == [
        "sim/gpt-4o-mini",
        "sim/gpt-4o",
    ]
    event = ChangeEvent.objects.get(event_type=ChangeEvent.Type.ALIAS_CHANGED)
    assert event.details["targets"]["to"] == ["sim/gpt-4o-mini", "sim/gpt-4o"]


def test_unknown_and_duplicate_targets_are_refused(cast):
    client = session(cast.admin)
    unknown = client.patch(f"{URL}chat-default/", {"targets": ["sim/nope"]}, format="json")
    assert unknown.status_code == 400
    assert "sim/nope" in unknown.json()["targets"][0]
    twice = client.patch(
        f"{URL}chat-default/", {"targets": ["sim/gpt-4o", "sim/gpt-4o"]}, format="json"
    )
    assert twice.status_code == 400
    assert client.get(f"{URL}chat-default/").json()["targets"] == ["sim/gpt-4o", "sim/gpt-4o-mini"]


def test_an_alias_name_cannot_look_like_a_mesh_id(cast):
    response = session(cast.admin).post(URL, {"name": "sim/x"}, format="json")
    assert response.status_code == 400
    assert not Alias.objects.filter(name="sim/x").exists()


def test_deleting_an_alias_is_recorded(cast):
    response = session(cast.admin).delete(f"{URL}chat-default/")
    assert response.status_code == 204
    assert not Alias.objects.exists()
    event = ChangeEvent.objects.get(event_type=ChangeEvent.Type.ALIAS_CHANGED)
    assert event.details["action"] == "deleted"


def test_aliases_follow_the_model_permissions(cast):
    client = session(cast.alice)
    assert client.get(URL).status_code == 403
    cast.alice.user_permissions.add(Permission.objects.get(codename="view_alias"))
    assert client.get(URL).json()["results"][0]["targets"] == ["sim/gpt-4o", "sim/gpt-4o-mini"]
    assert client.post(URL, {"name": "mine", "targets": []}, format="json").status_code == 403
    assert client.delete(f"{URL}chat-default/").status_code == 403
    assert Alias.objects.count() == 1


def test_an_html_form_post_with_its_csrf_token_is_accepted(cast):
    """The browsable API posts forms that carry csrfmiddlewaretoken: not a refused field."""
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(cast.admin)
    secret = "c" * 32
    client.cookies["csrftoken"] = secret
    response = client.post(
        URL,
        {"csrfmiddlewaretoken": secret, "name": "formed", "targets": ["sim/gpt-4o-mini"]},
        format="multipart",
    )
    assert response.status_code == 201, response.content
    assert response.json()["targets"] == ["sim/gpt-4o-mini"]
