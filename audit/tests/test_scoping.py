"""Who may read which call records: CallRecord.objects.visible_to(user)."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group, Permission
from guardian.shortcuts import assign_perm

from audit.models import CallRecord
from audit.tests.make_records import create, record

AUDIT = "connections.view_department_audit"


@pytest.fixture
def records(cast):
    return create(
        record(user=cast.alice, llm=cast.gpt4o),
        record(user=cast.alice, llm=cast.gpt4o_mini),
        record(user=cast.bob, llm=cast.gpt4o_mini),
        # Refused before anyone was identified: no user, no department.
        record(outcome=CallRecord.Outcome.UNAUTHORIZED, status_code=401),
    )


def ids(queryset) -> set[str]:
    return set(queryset.values_list("request_id", flat=True))


def test_a_superuser_sees_every_record_even_those_without_a_department(cast, records):
    assert ids(CallRecord.objects.visible_to(cast.admin)) == {r.request_id for r in records}


def test_a_user_granted_one_department_sees_only_its_records(cast, records):
    assign_perm(AUDIT, cast.alice, cast.marketing)
    visible = CallRecord.objects.visible_to(cast.alice)
    assert ids(visible) == {records[0].request_id, records[1].request_id}
    assert set(visible.values_list("department", flat=True)) == {cast.marketing.pk}


def test_the_grant_may_be_held_through_a_group(cast, records):
    auditors = Group.objects.create(name="Finance auditors")
    assign_perm(AUDIT, auditors, cast.finance)
    cast.charlie.groups.add(auditors)
    assert ids(CallRecord.objects.visible_to(cast.charlie)) == {records[2].request_id}


def test_users_without_a_grant_see_nothing_not_even_their_own_calls(cast, records):
    assert not CallRecord.objects.visible_to(cast.bob).exists()
    assert not CallRecord.objects.visible_to(cast.charlie).exists()


def test_a_grant_on_one_department_does_not_open_another(cast, records):
    assign_perm(AUDIT, cast.bob, cast.research)
    assert not CallRecord.objects.visible_to(cast.bob).exists()


def test_a_model_wide_audit_permission_means_every_department(cast, records):
    permission = Permission.objects.get(
        content_type__app_label="connections", codename="view_department_audit"
    )
    cast.charlie.user_permissions.add(permission)
    cast.charlie = type(cast.charlie).objects.get(pk=cast.charlie.pk)  # fresh permission cache
    assert CallRecord.objects.visible_to(cast.charlie).count() == len(records)


def test_an_inactive_or_anonymous_user_sees_nothing(cast, records):
    from django.contrib.auth.models import AnonymousUser

    assign_perm(AUDIT, cast.alice, cast.marketing)
    cast.alice.is_active = False
    cast.alice.save()
    assert not CallRecord.objects.visible_to(cast.alice).exists()
    assert not CallRecord.objects.visible_to(AnonymousUser()).exists()
