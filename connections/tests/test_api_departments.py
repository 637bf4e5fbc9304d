"""/api/departments/: each department's members, models and viewers, read and changed."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client

from audit.querysets import report_department_ids
from connections import services
from connections.models import ChangeEvent

pytestmark = pytest.mark.django_db


def logged_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def with_perms(*codenames: str) -> User:
    user = User.objects.create_user("manager", is_staff=True)
    for codename in codenames:
        user.user_permissions.add(
            Permission.objects.get(content_type__app_label="connections", codename=codename)
        )
    return User.objects.get(pk=user.pk)


def test_a_department_reads_as_its_admin_panel(cast):
    services.department_access_grant(
        department=cast.marketing, access="reports", user=cast.bob, actor=cast.admin
    )
    body = logged_in(cast.admin).get(f"/api/departments/{cast.marketing.pk}/").json()
    assert body["name"] == "Marketing" and body["cost_center"] == "MKT-100"
    assert body["members"] == ["alice"]
    assert "sim/gpt-4o" in body["llms"]
    assert body["access"] == {
        "reports": {"users": ["bob"], "groups": []},
        "audit": {"users": [], "groups": []},
    }


def test_grant_and_revoke_by_name_and_each_is_recorded(cast):
    client = logged_in(with_perms("view_department", "change_department"))
    url = f"/api/departments/{cast.marketing.pk}/"
    granted = client.post(
        url + "grant/", {"access": "reports", "user": "charlie"}, content_type="application/json"
    )
    assert granted.status_code == 200, granted.content
    assert granted.json()["access"]["reports"]["users"] == ["charlie"]
    assert report_department_ids(cast.charlie) == [cast.marketing.pk]
    client.post(url + "grant/", {"access": "audit", "group": "Finance"}, "application/json")
    revoked = client.post(
        url + "revoke/", {"access": "reports", "user": "charlie"}, "application/json"
    )
    assert revoked.json()["access"] == {
        "reports": {"users": [], "groups": []},
        "audit": {"users": [], "groups": ["Finance"]},
    }
    kinds = list(ChangeEvent.objects.order_by("id").values_list("event_type", flat=True))
    assert kinds == ["permission_granted", "permission_granted", "permission_revoked"]


def test_a_patch_sets_members_models_and_viewers(cast):
    client = logged_in(cast.admin)
    response = client.patch(
        f"/api/departments/{cast.finance.pk}/",
        {
            "members": ["bob", "charlie"],
            "llms": ["sim/gpt-4o-mini"],
            "access": {"audit": {"users": ["alice"]}},
        },
        content_type="application/json",
    )
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["members"] == ["bob", "charlie"]
    assert body["llms"] == ["sim/gpt-4o-mini"]
    assert body["access"]["audit"] == {"users": ["alice"], "groups": []}
    kinds = sorted(ChangeEvent.objects.values_list("event_type", flat=True))
    assert kinds == ["grant_removed", "member_added", "permission_granted"]


def test_bad_grants_are_refused_with_reasons(cast):
    client = logged_in(cast.admin)
    url = f"/api/departments/{cast.marketing.pk}/grant/"
    both = client.post(
        url, {"access": "reports", "user": "bob", "group": "Finance"}, "application/json"
    )
    assert both.status_code == 400
    assert (
        client.post(url, {"access": "everything", "user": "bob"}, "application/json").status_code
        == 400
    )
    assert (
        client.post(url, {"access": "reports", "user": "nobody"}, "application/json").status_code
        == 404
    )
    assert not ChangeEvent.objects.exists()


def test_reading_is_not_changing(cast):
    client = logged_in(with_perms("view_department"))
    assert client.get("/api/departments/").status_code == 200
    url = f"/api/departments/{cast.marketing.pk}/"
    assert client.post(url + "grant/", {"access": "reports", "user": "bob"}).status_code == 403
    assert client.patch(url, {"members": []}, "application/json").status_code == 403
    assert services.department_members(cast.marketing) == [cast.alice]
    assert not ChangeEvent.objects.exists()
