"""/api/llms/: prices and description, approval and grants, each behind its permission."""

from __future__ import annotations

from decimal import Decimal

from django.contrib.auth.models import Group, Permission
from rest_framework.test import APIClient

from connections.models import LLM, ChangeEvent
from connections.services import llm_groups

URL = "/api/llms/"


def allow(user, *codenames: str) -> None:
    user.user_permissions.add(*Permission.objects.filter(codename__in=codenames))


def session(user) -> APIClient:
    client = APIClient()
    client.force_login(user)
    return client


def test_reading_models_needs_the_view_permission(cast):
    assert session(cast.alice).get(URL).status_code == 403
    allow(cast.alice, "view_llm")
    response = session(cast.alice).get(URL)
    assert response.status_code == 200
    assert [row["mesh_id"] for row in response.json()["results"]] == sorted(
        LLM.objects.values_list("mesh_id", flat=True)
    )


def test_listing_filters_by_connection_and_approval(cast):
    client = session(cast.admin)
    unapproved = client.get(URL, {"approved": "false"}).json()["results"]
    assert [row["mesh_id"] for row in unapproved] == ["sim/unapproved-model"]
    assert client.get(URL, {"connection": "nope"}).json()["results"] == []


def test_an_admin_changes_prices_and_the_change_is_recorded(cast):
    response = session(cast.admin).patch(
        f"{URL}{cast.gpt4o.pk}/",
        {"input_price": "3.000000", "description": "Flagship"},
        format="json",
    )
    assert response.status_code == 200, response.content
    cast.gpt4o.refresh_from_db()
    assert cast.gpt4o.input_price == Decimal("3")
    assert cast.gpt4o.description == "Flagship"
    event = ChangeEvent.objects.get(event_type=ChangeEvent.Type.LLM_UPDATED)
    assert event.actor == cast.admin
    assert "input_price" in event.details["changed"]


def test_approval_cannot_be_written_as_a_field_even_by_an_admin(cast):
    response = session(cast.admin).patch(
        f"{URL}{cast.unapproved.pk}/", {"approved": True}, format="json"
    )
    assert response.status_code == 400
    assert "approved" in response.json()
    cast.unapproved.refresh_from_db()
    assert cast.unapproved.approved is False


def test_models_are_neither_created_nor_deleted_here(cast):
    client = session(cast.admin)
    assert client.post(URL, {"name": "x"}, format="json").status_code == 405
    assert client.delete(f"{URL}{cast.gpt4o.pk}/").status_code == 405
    assert LLM.objects.filter(pk=cast.gpt4o.pk).exists()


def test_approving_needs_the_change_permission_and_is_recorded(cast):
    allow(cast.bob, "view_llm")
    client = session(cast.bob)
    assert client.post(f"{URL}{cast.unapproved.pk}/approve/").status_code == 403
    cast.unapproved.refresh_from_db()
    assert not cast.unapproved.approved
    allow(cast.bob, "change_llm")
    response = session(cast.bob).post(f"{URL}{cast.unapproved.pk}/approve/")
    assert response.status_code == 200
    assert response.json()["approved"] is True
    assert response.json()["approved_by"] == "bob"
    assert ChangeEvent.objects.get(event_type=ChangeEvent.Type.LLM_APPROVED).actor == cast.bob
    response = session(cast.bob).post(f"{URL}{cast.unapproved.pk}/withdraw/")
    assert response.json()["approved"] is False
    assert ChangeEvent.objects.filter(event_type=ChangeEvent.Type.LLM_WITHDRAWN).count() == 1


def test_grants_are_listed_added_by_name_and_removed_by_id(cast):
    client = session(cast.admin)
    listing = client.get(f"{URL}{cast.gpt4o.pk}/grants/")
    assert listing.status_code == 200
    assert [row["name"] for row in listing.json()] == ["Marketing"]
    added = client.post(f"{URL}{cast.gpt4o.pk}/grants/", {"group": "Finance"}, format="json")
    assert added.status_code == 200
    assert [row["name"] for row in added.json()] == ["Finance", "Marketing"]
    assert cast.bob.has_perm("connections.use_llm", cast.gpt4o)
    removed = client.delete(f"{URL}{cast.gpt4o.pk}/grants/{cast.marketing.group.pk}/")
    assert removed.status_code == 200
    assert [row["name"] for row in removed.json()] == ["Finance"]
    types = set(ChangeEvent.objects.values_list("event_type", flat=True))
    assert {ChangeEvent.Type.GRANT_ADDED, ChangeEvent.Type.GRANT_REMOVED} <= types


def test_granting_an_unknown_group_is_a_404(cast):
    response = session(cast.admin).post(
        f"{URL}{cast.gpt4o.pk}/grants/", {"group": "Nobody"}, format="json"
    )
    assert response.status_code == 404


def test_a_model_editor_cannot_grant_their_own_group_a_model(cast):
    """Editing models is not changing groups: bob cannot give Finance gpt-4o."""
    allow(cast.bob, "view_llm", "change_llm")
    client = session(cast.bob)
    assert client.get(f"{URL}{cast.gpt4o.pk}/grants/").status_code == 200
    response = client.post(f"{URL}{cast.gpt4o.pk}/grants/", {"group": "Finance"}, format="json")
    assert response.status_code == 403
    removal = client.delete(f"{URL}{cast.gpt4o_mini.pk}/grants/{cast.marketing.group.pk}/")
    assert removal.status_code == 403
    assert cast.finance.group not in llm_groups(cast.gpt4o)
    assert cast.marketing.group in llm_groups(cast.gpt4o_mini)
    allow(cast.bob, "change_group")
    response = session(cast.bob).post(
        f"{URL}{cast.gpt4o.pk}/grants/", {"group": cast.finance.group.pk}, format="json"
    )
    assert response.status_code == 200
    assert Group.objects.get(name="Finance") in llm_groups(cast.gpt4o)
