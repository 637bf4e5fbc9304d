"""A department's access panel: members, models granted, and who may view its reports and
audit records, edited on its admin page; every change a ChangeEvent in the same transaction."""

from __future__ import annotations

import pytest
from django.db import transaction
from django.urls import reverse

from audit.querysets import audit_department_ids, report_department_ids
from connections import services
from connections.models import ChangeEvent

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(client, cast):
    client.force_login(cast.admin)
    return client


def events(event_type: str) -> list[ChangeEvent]:
    return list(ChangeEvent.objects.filter(event_type=event_type).order_by("id"))


def test_a_report_grant_on_one_department_shows_that_department_only(cast):
    assert services.department_access_grant(
        department=cast.marketing, access="reports", user=cast.charlie, actor=cast.admin
    )
    assert report_department_ids(cast.charlie) == [cast.marketing.pk]
    assert audit_department_ids(cast.charlie) == []
    [event] = events(ChangeEvent.Type.PERMISSION_GRANTED)
    assert event.actor == cast.admin and event.object_repr == "Marketing"
    assert event.details["permission"] == "view Marketing's reports"
    assert event.details["user"] == "charlie"


def test_granting_twice_changes_and_records_nothing_the_second_time(cast):
    for _ in range(2):
        services.department_access_grant(
            department=cast.finance, access="audit", group=cast.research.group, actor=cast.admin
        )
    assert len(events(ChangeEvent.Type.PERMISSION_GRANTED)) == 1


def test_a_revoke_takes_the_access_away_and_is_recorded(cast):
    services.department_access_grant(
        department=cast.marketing, access="audit", user=cast.bob, actor=cast.admin
    )
    assert services.department_access_revoke(
        department=cast.marketing, access="audit", user=cast.bob, actor=cast.admin
    )
    fresh = type(cast.bob).objects.get(pk=cast.bob.pk)
    assert audit_department_ids(fresh) == []
    [event] = events(ChangeEvent.Type.PERMISSION_REVOKED)
    assert event.details["permission"] == "view Marketing's audit records"


def test_a_grant_and_its_event_roll_back_together(cast):
    with pytest.raises(RuntimeError), transaction.atomic():
        services.department_access_grant(
            department=cast.marketing, access="reports", user=cast.charlie, actor=cast.admin
        )
        raise RuntimeError("the rest of the change failed")
    assert report_department_ids(cast.charlie) == []
    assert not events(ChangeEvent.Type.PERMISSION_GRANTED)


def panel_post(cast, **changes) -> dict:
    """The Marketing change form as the admin would submit it, with `changes` applied."""
    data = {
        "name": "Marketing",
        "cost_center": "MKT-100",
        "contacts": "",
        "members": [cast.alice.pk],
        "llms": [m.pk for m in (cast.gpt4o, cast.gpt4o_mini, cast.embedding, cast.unapproved)],
        "report_users": [],
        "report_groups": [],
        "audit_users": [],
        "audit_groups": [],
    }
    data.update(changes)
    return data


def test_the_admin_panel_grants_members_models_and_viewers(admin_client, cast):
    url = reverse("admin:connections_department_change", args=[cast.marketing.pk])
    response = admin_client.post(
        url,
        panel_post(
            cast,
            members=[cast.alice.pk, cast.charlie.pk],
            llms=[cast.gpt4o.pk],
            report_users=[cast.bob.pk],
            audit_groups=[cast.research.group.pk],
        ),
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    assert [u.username for u in services.department_members(cast.marketing)] == [
        "alice",
        "charlie",
    ]
    assert services.department_llms(cast.marketing) == [cast.gpt4o]
    users, groups = services.department_access_holders(department=cast.marketing, access="reports")
    assert users == [cast.bob] and groups == []
    users, groups = services.department_access_holders(department=cast.marketing, access="audit")
    assert users == [] and groups == [cast.research.group]
    kinds = [e.event_type for e in ChangeEvent.objects.order_by("id")]
    assert kinds.count(ChangeEvent.Type.MEMBER_ADDED) == 1
    assert kinds.count(ChangeEvent.Type.GRANT_REMOVED) == 3
    assert kinds.count(ChangeEvent.Type.PERMISSION_GRANTED) == 2
    assert all(e.actor == cast.admin for e in ChangeEvent.objects.all())


def test_the_admin_panel_speaks_plainly(admin_client, cast):
    url = reverse("admin:connections_department_change", args=[cast.marketing.pk])
    html = admin_client.get(url).content.decode()
    assert "May view Marketing&#x27;s reports: people" in html
    assert "May view Marketing&#x27;s audit records: groups" in html
    assert "ALL departments" in html
    assert "view_department" not in html


def test_a_global_permission_is_labelled_as_covering_all_departments(admin_client, cast):
    html = admin_client.get(reverse("admin:auth_user_change", args=[cast.alice.pk])).content
    text = html.decode()
    assert "View and download the reports of ALL departments" in text
    assert "View the audit records of ALL departments" in text
    assert "Can view and download the department&#x27;s reports" not in text
    html = admin_client.get(reverse("admin:auth_group_add")).content.decode()
    assert "View the call records of ALL departments" in html


def user_form(user, **changes) -> dict:
    data = {
        "username": user.username,
        "first_name": "",
        "last_name": "",
        "email": user.email,
        "is_active": "on",
        "groups": [g.pk for g in user.groups.all()],
        "user_permissions": [p.pk for p in user.user_permissions.all()],
        "last_login_0": "",
        "last_login_1": "",
        "date_joined_0": "2026-01-01",
        "date_joined_1": "00:00:00",
    }
    data.update(changes)
    return data


def test_global_permission_and_group_changes_on_a_users_page_are_recorded(admin_client, cast):
    from django.contrib.auth.models import Permission

    reports = Permission.objects.get(codename="view_department_reports")
    url = reverse("admin:auth_user_change", args=[cast.charlie.pk])
    response = admin_client.post(
        url,
        user_form(cast.charlie, groups=[cast.finance.group.pk], user_permissions=[reports.pk]),
    )
    assert response.status_code == 302, response.content.decode()[:3000]
    assert list(cast.charlie.groups.all()) == [cast.finance.group]
    [joined] = events(ChangeEvent.Type.MEMBER_ADDED)
    assert joined.object_repr == "Finance" and joined.details["user"] == "charlie"
    [granted] = events(ChangeEvent.Type.PERMISSION_GRANTED)
    assert granted.actor == cast.admin and granted.object_repr == "charlie"
    assert "reports of ALL departments" in granted.details["permission"]
    fresh = type(cast.charlie).objects.get(pk=cast.charlie.pk)
    assert report_department_ids(fresh) is None  # all of them, as the label says

    admin_client.post(url, user_form(fresh, groups=[], user_permissions=[]))
    assert len(events(ChangeEvent.Type.MEMBER_REMOVED)) == 1
    assert len(events(ChangeEvent.Type.PERMISSION_REVOKED)) == 1
    assert not cast.charlie.user_permissions.exists()


def test_a_groups_permission_changes_are_recorded(admin_client, cast):
    from django.contrib.auth.models import Permission

    audit = Permission.objects.get(codename="view_department_audit")
    url = reverse("admin:auth_group_change", args=[cast.research.group.pk])
    response = admin_client.post(url, {"name": "Research", "permissions": [audit.pk]})
    assert response.status_code == 302
    assert list(cast.research.group.permissions.all()) == [audit]
    [granted] = events(ChangeEvent.Type.PERMISSION_GRANTED)
    assert granted.details["group"] == "Research"
    assert "audit records of ALL departments" in granted.details["permission"]
