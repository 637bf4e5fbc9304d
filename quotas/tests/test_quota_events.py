"""Quota changes are in the change log, with the acting user, in the change's transaction."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.db import transaction
from django.test import Client
from django.urls import reverse

from connections.models import ChangeEvent
from quotas.models import Quota
from quotas.services import quota_create, quota_delete, quota_update

pytestmark = pytest.mark.django_db


def quota_events() -> list[ChangeEvent]:
    return list(ChangeEvent.objects.filter(event_type__startswith="quota_").order_by("id"))


def test_create_change_and_delete_are_each_recorded(cast):
    quota = quota_create(
        name="Marketing monthly", amount=Decimal("5"), department=cast.marketing, actor=cast.admin
    )
    quota_update(quota=quota, amount=Decimal("7.50"), mode="alert", actor=cast.admin)
    quota_update(quota=quota, amount=Decimal("7.5"), actor=cast.admin)  # the same amount
    quota_delete(quota=quota, actor=cast.admin)

    created, changed, deleted = quota_events()
    assert [e.event_type for e in (created, changed, deleted)] == [
        "quota_created",
        "quota_updated",
        "quota_deleted",
    ]
    assert all(
        e.actor == cast.admin and e.object_repr == "Marketing monthly"
        for e in (created, changed, deleted)
    )
    assert created.details["amount"] == "5" and created.details["department"] == "Marketing"
    assert changed.details["changed"] == {
        "amount": {"from": "5", "to": "7.5"},
        "mode": {"from": "block", "to": "alert"},
    }
    assert deleted.details["quota_id"] == created.details["quota_id"]
    assert not Quota.objects.exists()


def test_a_refused_quota_leaves_no_event(cast):
    quota_create(name="Monthly", amount=Decimal("5"))
    with pytest.raises(Exception):
        quota_create(name="Monthly", amount=Decimal("6"))
    with pytest.raises(RuntimeError), transaction.atomic():
        quota_create(name="Weekly", amount=Decimal("1"), period="week")
        raise RuntimeError("rolled back")
    assert [e.details["name"] for e in quota_events()] == ["Monthly"]


def test_the_admin_records_its_quota_changes_and_deletions(cast):
    client = Client()
    client.force_login(cast.admin)
    quota = quota_create(name="Finance", amount=Decimal("10"), department=cast.finance)
    response = client.post(reverse("admin:quotas_quota_delete", args=[quota.pk]), {"post": "yes"})
    assert response.status_code == 302
    [_created, deleted] = quota_events()
    assert deleted.event_type == "quota_deleted" and deleted.actor == cast.admin
