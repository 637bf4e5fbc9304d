"""The audit façade: the record's shape is its alone, written from the gateway's Call."""

from __future__ import annotations

from decimal import Decimal

import pytest
from asgiref.sync import async_to_sync

from audit import record
from audit.fields import COMPLETION_FIELDS
from audit.models import CallRecord
from audit.outcome import Outcome
from audit.writer import writer
from connections.providers.base import Usage
from gateway.call import Call, Principal, now
from gateway.errors import GatewayError

pytestmark = pytest.mark.django_db(transaction=True)


def test_the_record_has_one_outcome_enum_and_every_refusal_names_one_of_it():
    assert CallRecord.Outcome is Outcome
    for status in (400, 401, 403, 404, 405, 408, 413, 429, 500, 502, 503, 504, 418, 599):
        assert isinstance(GatewayError(status, "x", code="x").outcome, Outcome)
    assert GatewayError(429, "x", code="x", outcome="budget_exceeded").outcome is (
        Outcome.BUDGET_EXCEEDED
    )


def test_a_completion_writes_exactly_the_completion_fields():
    call = Call("req_shape", "chat.completions", body={"model": "m"})
    call.end(Outcome.OK, 200)
    assert tuple(record.closing_fields(call, now())) == COMPLETION_FIELDS


def test_the_cost_is_priced_from_the_answering_target_and_zero_without_one(cast):
    from gateway import directory

    snap = async_to_sync(directory.snapshot)()
    call = Call("req_cost", "chat.completions")
    assert record.cost(call) == 0
    call.target = snap.llms["sim/gpt-4o"]
    call.usage = Usage(prompt_tokens=1_000_000, completion_tokens=1_000_000, cached_tokens=0)
    assert record.cost(call) == Decimal("12.50")


def test_a_refusal_is_one_complete_record_and_its_request_body_follows_the_policy(cast):
    principal = Principal(cast.alice.pk, "alice", cast.marketing.pk, None, "", "tests")
    call = Call(
        "req_refused",
        "chat.completions",
        body={"model": "x", "messages": [{"role": "user", "content": "secret"}]},
        principal=principal,
        policy="metadata",
        client_ip="10.1.2.3",
    )
    call.fail(GatewayError(404, "No such model.", code="model_not_found"))

    async def go():
        await record.refuse(call, now())
        await writer.flush()

    async_to_sync(go)()
    row = CallRecord.objects.get(request_id="req_refused")
    assert (row.outcome, row.status_code, row.error_message) == ("not_found", 404, "No such model.")
    assert row.user_id == cast.alice.pk and row.client_ip == "10.1.2.3"
    assert "secret" not in str(row.request_body)
