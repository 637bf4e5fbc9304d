"""`/api/calls/`: the audit trail over REST, scoped by department, filtered and paginated."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone
from guardian.shortcuts import assign_perm
from rest_framework.test import APIClient

from audit.models import CallRecord
from audit.tests.make_records import create, record
from gateway.keys import apikey_create

LIST = "/api/calls/"


@pytest.fixture
def records(cast):
    now = timezone.now()
    return create(
        record(
            request_id="req-mkt-1",
            user=cast.alice,
            llm=cast.gpt4o,
            purpose="newsletter",
            request_body={"messages": [{"role": "user", "content": "draft it"}]},
        ),
        record(
            request_id="req-mkt-old",
            user=cast.alice,
            llm=cast.gpt4o_mini,
            purpose="newsletter",
            started_at=now - dt.timedelta(days=40),
        ),
        record(
            request_id="req-mkt-err",
            user=cast.alice,
            llm=cast.gpt4o_mini,
            purpose="triage",
            outcome=CallRecord.Outcome.RATE_LIMITED,
            status_code=429,
        ),
        record(request_id="req-fin-1", user=cast.bob, llm=cast.gpt4o_mini, purpose="forecast"),
        record(request_id="req-anon", outcome=CallRecord.Outcome.UNAUTHORIZED, status_code=401),
    )


def client_for(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def listed(response) -> list[str]:
    assert response.status_code == 200, response.content
    return [row["request_id"] for row in response.json()["results"]]


def test_a_superuser_lists_every_record_newest_first(cast, records):
    assert listed(client_for(cast.admin).get(LIST)) == [
        "req-mkt-1",
        "req-mkt-err",
        "req-fin-1",
        "req-anon",
        "req-mkt-old",
    ]


def test_a_department_auditor_lists_only_their_departments_records(cast, records):
    assign_perm("connections.view_department_audit", cast.alice, cast.marketing)
    assert set(listed(client_for(cast.alice).get(LIST))) == {
        "req-mkt-1",
        "req-mkt-old",
        "req-mkt-err",
    }


def test_a_user_without_the_role_lists_nothing(cast, records):
    assert listed(client_for(cast.bob).get(LIST)) == []
    assert listed(client_for(cast.charlie).get(LIST)) == []


def test_another_departments_record_by_id_is_a_404(cast, records):
    assign_perm("connections.view_department_audit", cast.alice, cast.marketing)
    alice = client_for(cast.alice)
    finance_record = records[3]
    assert alice.get(f"{LIST}{finance_record.pk}/").status_code == 404
    assert client_for(cast.bob).get(f"{LIST}{records[0].pk}/").status_code == 404
    own = alice.get(f"{LIST}{records[0].pk}/")
    assert own.status_code == 200
    body = own.json()
    assert body["request_id"] == "req-mkt-1"
    assert body["department"] == "Marketing"
    assert body["request_body"] == {"messages": [{"role": "user", "content": "draft it"}]}


def test_the_list_leaves_bodies_out_and_the_detail_has_them(cast, records):
    row = client_for(cast.admin).get(LIST).json()["results"][0]
    assert "request_body" not in row
    assert row["llm"] == "sim/gpt-4o"
    assert row["connection"] == "sim"
    assert row["cost_center"] == "MKT-100"


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"department": "FIN-200"}, {"req-fin-1"}),
        ({"user": "alice"}, {"req-mkt-1", "req-mkt-old", "req-mkt-err"}),
        ({"llm": "sim/gpt-4o"}, {"req-mkt-1"}),
        ({"outcome": "rate_limited"}, {"req-mkt-err"}),
        ({"purpose": "newsletter"}, {"req-mkt-1", "req-mkt-old"}),
        ({"model": "sim/gpt-4o-mini", "user": "bob"}, {"req-fin-1"}),
    ],
)
def test_the_list_filters(cast, records, params, expected):
    assert set(listed(client_for(cast.admin).get(LIST, params))) == expected


def test_it_filters_by_department_id_and_llm_id(cast, records):
    admin = client_for(cast.admin)
    assert set(listed(admin.get(LIST, {"department": cast.finance.pk}))) == {"req-fin-1"}
    assert set(listed(admin.get(LIST, {"llm": cast.gpt4o.pk}))) == {"req-mkt-1"}


def test_it_filters_by_a_date_range(cast, records):
    admin = client_for(cast.admin)
    old_day = (timezone.now() - dt.timedelta(days=40)).date()
    after_old = (old_day + dt.timedelta(days=1)).isoformat()
    assert listed(admin.get(LIST, {"started_before": after_old})) == ["req-mkt-old"]
    recent = listed(admin.get(LIST, {"started_after": after_old}))
    assert "req-mkt-old" not in recent and len(recent) == 4
    moment = (timezone.now() - dt.timedelta(days=41)).isoformat()
    assert "req-mkt-old" in listed(admin.get(LIST, {"started_after": moment}))


def test_a_filter_never_widens_the_callers_scope(cast, records):
    assign_perm("connections.view_department_audit", cast.alice, cast.marketing)
    assert listed(client_for(cast.alice).get(LIST, {"department": "FIN-200"})) == []


def test_bad_filter_values_are_a_400_that_names_the_parameter(cast, records):
    admin = client_for(cast.admin)
    response = admin.get(LIST, {"started_after": "yesterday-ish", "outcome": "great"})
    assert response.status_code == 400
    assert set(response.json()) == {"started_after", "outcome"}


def test_pages_follow_a_cursor_through_every_record_once(cast, records):
    admin = client_for(cast.admin)
    seen: list[str] = []
    url = f"{LIST}?page_size=2"
    while url:
        response = admin.get(url)
        seen += listed(response)
        url = response.json()["next"]
    assert len(seen) == len(records)
    assert set(seen) == {r.request_id for r in records}


def test_anonymous_callers_are_refused(records):
    assert APIClient().get(LIST).status_code in {401, 403}


def test_a_meshgate_key_authenticates_as_its_owner(cast, records):
    assign_perm("connections.view_department_audit", cast.alice, cast.marketing)
    _key, raw = apikey_create(owner=cast.alice, department=cast.marketing, purpose="audit reads")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert set(listed(client.get(LIST))) == {"req-mkt-1", "req-mkt-old", "req-mkt-err"}


def test_records_cannot_be_written_through_the_api(cast, records):
    admin = client_for(cast.admin)
    assert admin.post(LIST, {"request_id": "x"}).status_code == 405
    assert admin.delete(f"{LIST}{records[0].pk}/").status_code == 405
    assert admin.patch(f"{LIST}{records[0].pk}/", {"cost": "0"}).status_code == 405
