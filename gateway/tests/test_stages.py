"""Each stage of the hot path on its own, over a real Call, against the database and the
provider simulator; then the registration: one more stage is one more entry."""

from __future__ import annotations

from decimal import Decimal

import pytest
from asgiref.sync import async_to_sync

from audit.models import CallRecord
from audit.outcome import Outcome
from audit.writer import writer
from conftest import principal_for
from gateway import pipeline, stages
from gateway.call import Call, Principal
from gateway.errors import GatewayError
from gateway.keys import apikey_create

pytestmark = pytest.mark.django_db(transaction=True)

HELLO = {"model": "sim/gpt-4o", "messages": [{"role": "user", "content": "Hi"}]}


def alice_of(cast) -> Principal:
    return principal_for(cast.alice, cast.marketing)


def new_call(cast, body=None, request_id="req_stage", **fields) -> Call:
    fields.setdefault("principal", alice_of(cast))
    return Call(request_id, "chat.completions", body=dict(body or HELLO), **fields)


def run(*steps, call: Call) -> None:
    async def go() -> None:
        for step in steps:
            await step(call)

    async_to_sync(go)()


def refusal(step, call: Call) -> GatewayError:
    with pytest.raises(GatewayError) as raised:
        run(step, call=call)
    return raised.value


def test_the_stages_run_in_the_registered_order():
    assert (
        stages.authenticate,
        stages.translate,
        stages.validate,
        stages.resolve,
        stages.open_record,
        stages.admit,
        stages.audit_first,
        stages.call_upstream,
    ) == stages.STAGES
    assert (stages.metrics.observe, stages.calllog.log_call) == stages.OBSERVERS
    assert (stages.account, stages.complete, *stages.OBSERVERS) == stages.ENDINGS


def test_authenticate_turns_a_key_into_its_principal_and_keeps_a_playground_one(sim_cast):
    _, key = apikey_create(owner=sim_cast.alice, department=sim_cast.marketing, purpose="tests")
    call = Call("req_a", "chat.completions", authorization=f"Bearer {key}".encode())
    run(stages.authenticate, call=call)
    assert call.principal is not None and call.principal.user_id == sim_cast.alice.pk
    playground = new_call(sim_cast)
    before = playground.principal
    run(stages.authenticate, call=playground)
    assert playground.principal is before
    stranger = Call("req_b", "chat.completions", authorization=b"Bearer mg-nope")
    assert refusal(stages.authenticate, stranger).status == 401


def test_validate_refuses_an_unknown_endpoint_and_a_redirecting_field(sim_cast):
    assert refusal(stages.validate, Call("r", "images", body=dict(HELLO))).status == 404
    redirected = new_call(sim_cast, {**HELLO, "base_url": "http://elsewhere"})
    error = refusal(stages.validate, redirected)
    assert (error.status, error.code, error.outcome) == (
        400,
        "forbidden_field",
        Outcome.INVALID_REQUEST,
    )
    run(stages.validate, call=new_call(sim_cast))


def test_resolve_finds_the_targets_policy_and_secrets_or_refuses(sim_cast):
    call = new_call(sim_cast, {**HELLO, "model": "chat-default"})
    run(stages.resolve, call=call)
    assert call.alias_name == "chat-default"
    assert [t.mesh_id for t in call.targets] == ["sim/gpt-4o", "sim/gpt-4o-mini"]
    assert call.policy == "full" and "sim-secret-key-not-real" in call.secrets
    unapproved = new_call(sim_cast, {**HELLO, "model": "sim/unapproved-model"})
    assert refusal(stages.resolve, unapproved).outcome == Outcome.NOT_FOUND
    bob = Principal(sim_cast.bob.pk, "bob", sim_cast.finance.pk, None, "", "tests")
    assert refusal(stages.resolve, new_call(sim_cast, principal=bob)).status == 404


def test_open_record_and_audit_first_write_the_record_before_anything_goes_upstream(
    sim_cast, simulator
):
    call = new_call(sim_cast, request_id="req_opened")
    run(stages.resolve, stages.open_record, stages.audit_first, call=call)
    assert call.record_id is not None
    record = CallRecord.objects.get(pk=call.record_id)
    assert record.outcome == Outcome.INTERRUPTED and record.llm_id == sim_cast.gpt4o.pk
    assert simulator.requests() == []


def test_call_upstream_answers_and_account_prices_it_then_complete_records_it(sim_cast):
    call = new_call(sim_cast, request_id="req_upstream")
    run(
        stages.resolve,
        stages.open_record,
        stages.audit_first,
        stages.call_upstream,
        call=call,
    )
    assert call.reply is not None and call.reply.status == 200
    assert call.outcome == Outcome.OK and call.usage is not None and call.usage.prompt_tokens > 0
    stages.account(call)
    usage = call.usage
    expected = (usage.prompt_tokens * Decimal("2.50") + usage.completion_tokens * Decimal("10")) / (
        Decimal(1_000_000)
    )
    assert call.cost == expected.quantize(call.cost)
    stages.complete(call)
    async_to_sync(writer.flush)()
    record = CallRecord.objects.get(request_id="req_upstream")
    assert record.outcome == "ok" and record.cost == call.cost
    assert record.prompt_tokens == usage.prompt_tokens


def test_the_endings_run_once_whatever_calls_them(sim_cast):
    call = new_call(sim_cast, request_id="req_once")
    run(stages.resolve, stages.open_record, stages.audit_first, call=call)
    call.end(Outcome.INTERNAL_ERROR, 500, "first")
    stages.finish(call)
    call.end(Outcome.OK, 200)
    stages.finish(call)  # a second exit path: nothing more is written
    async_to_sync(writer.flush)()
    record = CallRecord.objects.get(request_id="req_once")
    assert (record.outcome, record.error_message) == ("internal_error", "first")


def test_one_more_stage_is_one_more_entry(sim_cast, simulator, monkeypatch):
    """A guardrail registered before the record: its refusal is recorded in one write,
    and nothing goes upstream."""

    async def no_secrets_in_prompts(call: Call) -> None:
        if "password" in str((call.body or {}).get("messages")):
            raise GatewayError(400, "Prompts may not carry passwords.", code="guardrail")

    registered = list(stages.STAGES)
    registered.insert(registered.index(stages.open_record), no_secrets_in_prompts)
    monkeypatch.setattr(stages, "STAGES", tuple(registered))
    body = {**HELLO, "messages": [{"role": "user", "content": "my password is hunter2"}]}

    async def go():
        reply = await pipeline.serve(new_call(sim_cast, body, request_id="req_guard"))
        await writer.flush()
        return reply

    reply = async_to_sync(go)()
    assert reply.status == 400 and b"guardrail" in (reply.body or b"")
    assert simulator.requests() == []
    record = CallRecord.objects.get(request_id="req_guard")
    assert record.outcome == "invalid_request" and record.error_message.startswith("Prompts")
