"""`gateway.pipeline` in process, as the playground calls it, against the provider simulator."""

from __future__ import annotations

import orjson
import pytest
from asgiref.sync import async_to_sync
from django.db import connection
from django.test.utils import CaptureQueriesContext

from audit.models import CallRecord
from audit.writer import writer
from conftest import principal_for as _principal_for
from gateway import doors, pipeline

pytestmark = pytest.mark.django_db(transaction=True)


def principal_for(user, department, purpose="playground") -> pipeline.Principal:
    return _principal_for(user, department, purpose)


def call(principal, body, request_id):
    reply = async_to_sync(pipeline.handle)(
        "chat.completions",
        principal,
        body,
        request_id=request_id,
        client_ip="10.0.0.1",
        user_agent="pytest",
    )
    # Completions are queued, not awaited by the call: wait for them before reading records.
    async_to_sync(writer.flush)()
    return reply


def test_a_steady_state_call_reads_nothing_from_the_database(sim_cast):
    alice = principal_for(sim_cast.alice, sim_cast.marketing)
    body = {"model": "chat-default", "messages": [{"role": "user", "content": "Hi"}]}
    with CaptureQueriesContext(connection) as first:
        assert call(alice, body, "req_first").status == 200
    assert len(first) > 0  # the catalog and the user's groups were loaded once
    with CaptureQueriesContext(connection) as second:
        reply = call(alice, body, "req_second")
    assert reply.status == 200
    assert len(second) == 0, [q["sql"] for q in second]
    record = CallRecord.objects.get(request_id="req_second")
    assert record.outcome == "ok" and record.purpose == "playground" and record.api_key is None
    assert record.client_ip == "10.0.0.1" and record.user_agent == "pytest"


def test_a_playground_stream_yields_frames_then_done_and_completes_its_record(sim_cast):
    alice = principal_for(sim_cast.alice, sim_cast.marketing)
    body = {
        "model": "sim/gpt-4o",
        "messages": [{"role": "user", "content": "Hi"}],
        "stream": True,
        "stream_options": {"include_usage": True},
    }

    async def run():
        reply = await pipeline.handle(
            "chat.completions", alice, body, request_id="req_s", client_ip=None, user_agent=""
        )
        # A chunk holds the frames one upstream read brought: split them.
        chunks = [chunk async for chunk in reply.stream]
        await writer.flush()
        frames = [e + b"\n\n" for chunk in chunks for e in chunk.split(b"\n\n") if e]
        return reply, frames

    reply, frames = async_to_sync(run)()
    assert reply.status == 200 and reply.body is None
    assert frames[-1] == doors.DONE
    usage = orjson.loads(frames[-2][6:])["usage"]
    record = CallRecord.objects.get(request_id="req_s")
    assert record.outcome == "ok" and record.streamed
    assert record.completion_tokens == usage["completion_tokens"]
    assert record.response_body["role"] == "assistant" and record.response_body["content"]


def test_closing_a_stream_early_records_a_client_disconnect(sim_cast, simulator):
    alice = principal_for(sim_cast.alice, sim_cast.marketing)
    simulator.script("gpt-4o", [{"chunk_interval_ms": 200}])
    body = {"model": "sim/gpt-4o", "messages": [{"role": "user", "content": "Hi"}], "stream": True}

    async def run():
        reply = await pipeline.handle(
            "chat.completions", alice, body, request_id="req_c", client_ip=None, user_agent=""
        )
        iterator = reply.stream.__aiter__()
        await iterator.__anext__()
        await iterator.__anext__()
        await reply.stream.aclose()
        await writer.flush()

    async_to_sync(run)()
    record = CallRecord.objects.get(request_id="req_c")
    assert record.outcome == "client_disconnected"
    assert record.completion_tokens > 0 and record.tokens_estimated


def test_a_principal_outside_its_department_is_refused(sim_cast):
    stranger = principal_for(sim_cast.alice, sim_cast.finance)
    body = {"model": "sim/gpt-4o", "messages": [{"role": "user", "content": "Hi"}]}
    reply = call(stranger, body, "req_x")
    assert reply.status == 403
    assert CallRecord.objects.get(request_id="req_x").outcome == "forbidden"


def test_list_models_is_what_the_principal_may_use(sim_cast):
    bob = principal_for(sim_cast.bob, sim_cast.finance)
    models = async_to_sync(pipeline.list_models)(bob)
    ids = [model["id"] for model in models]
    assert ids == ["chat-default", "sim/gpt-4o-mini", "sim/text-embedding-3-small"]
    alias = models[0]
    assert alias["meshgate"]["targets"] == ["sim/gpt-4o-mini"]
    mini = models[1]["meshgate"]
    assert mini["input_price_per_million"] == "0.150000" and mini["context_window"] == 128000


def test_a_charlie_with_no_grant_sees_nothing_and_gets_404(sim_cast):
    charlie = principal_for(sim_cast.charlie, None)
    assert async_to_sync(pipeline.list_models)(charlie) == []
    reply = call(
        charlie, {"model": "chat-default", "messages": [{"role": "user", "content": "x"}]}, "r"
    )
    assert reply.status == 404


def test_a_withdrawn_approval_is_seen_after_the_version_moves(sim_cast, settings):
    settings.MESHGATE_CACHE_CHECK_SECONDS = 0
    alice = principal_for(sim_cast.alice, sim_cast.marketing)
    body = {"model": "sim/gpt-4o", "messages": [{"role": "user", "content": "Hi"}]}
    assert call(alice, body, "req_a").status == 200
    sim_cast.gpt4o.approved = False
    sim_cast.gpt4o.save()
    assert call(alice, body, "req_b").status == 404


def test_a_connection_with_unreadable_secrets_fails_alone(sim_cast):
    from connections.models import Connection

    # Secrets encrypted under a key this process does not hold.
    Connection.objects.filter(pk=sim_cast.connection.pk).update(
        secrets_ciphertext="gAAAAAnot-a-token"
    )
    other = Connection(name="Other", slug="other", kind="openai_compatible", base_url="http://x/v1")
    other.save()
    alice = principal_for(sim_cast.alice, sim_cast.marketing)
    reply = call(
        alice, {"model": "sim/gpt-4o", "messages": [{"role": "user", "content": "x"}]}, "u1"
    )
    assert reply.status == 503
    assert CallRecord.objects.get(request_id="u1").outcome == "upstream_error"
    models = async_to_sync(pipeline.list_models)(alice)
    assert "sim/gpt-4o" in [model["id"] for model in models]
