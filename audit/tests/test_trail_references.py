"""The trail outlives what it names: deleting a user, key, LLM or department changes no record."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.db import IntegrityError, transaction
from django.urls import reverse

from audit.models import CallRecord
from audit.tests.make_records import create, record
from gateway.keys import apikey_create


def test_deleting_what_a_record_names_keeps_its_ids_and_the_record_page_still_opens(cast, client):
    key, _ = apikey_create(owner=cast.bob, department=cast.finance, purpose="trail")
    (kept,) = create(
        record(
            request_id="req-trail-1",
            user=cast.bob,
            department=cast.finance,
            api_key=key,
            llm=cast.gpt4o_mini,
            connection=cast.connection,
        )
    )
    ids = (cast.bob.pk, cast.finance.pk, key.pk, cast.gpt4o_mini.pk)
    key.delete()
    cast.gpt4o_mini.delete()
    User.objects.filter(pk=cast.bob.pk).delete()

    again = CallRecord.objects.get(pk=kept.pk)
    assert (again.user_id, again.department_id, again.api_key_id, again.llm_id) == ids
    assert again.cost == kept.cost and again.outcome == "ok"

    client.force_login(cast.admin)
    page = client.get(reverse("admin:audit_callrecord_change", args=[kept.pk]))
    assert page.status_code == 200
    assert b"req-trail-1" in page.content
    listing = client.get(reverse("admin:audit_callrecord_changelist"))
    assert listing.status_code == 200 and b"req-trail-1" in listing.content


def test_request_ids_stay_unique(cast):
    # Unique with the start time (a partitioned table's keys must hold its partition key):
    # a record written again, as a resumed insert does, is refused. Ids themselves are
    # 128 random bits, so two calls never share one.
    (first,) = create(record(request_id="req-unique-1"))
    with pytest.raises(IntegrityError), transaction.atomic():
        create(record(request_id="req-unique-1", started_at=first.started_at))
