"""The batched audit writer, against the real test database from its own thread."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from audit.models import CallRecord
from audit.writer import COMPLETION_FIELDS, AuditUnavailable, AuditWriter

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def writer():
    instance = AuditWriter()
    yield instance
    instance.stop()


def opening(**extra) -> dict:
    return {
        "request_id": "req_" + uuid.uuid4().hex,
        "started_at": datetime.now(UTC),
        "endpoint": "chat.completions",
        "model_requested": "sim/gpt-4o",
        "request_body": {"messages": [{"role": "user", "content": "hi"}]},
        **extra,
    }


def closing(**extra) -> dict:
    fields = dict.fromkeys(COMPLETION_FIELDS)
    fields.update(
        outcome="ok",
        status_code=200,
        error_message="",
        ended_at=datetime.now(UTC),
        latency_ms=12,
        attempts=[{"llm": "sim/gpt-4o", "status": 200}],
        prompt_tokens=10,
        completion_tokens=5,
        cached_tokens=2,
        tokens_estimated=False,
        cost=Decimal("0.0000123456"),
        input_price=Decimal("2.5"),
        output_price=Decimal("10"),
        cached_input_price=Decimal("1.25"),
        response_body={"content": "hello"},
    )
    fields.update(extra)
    return fields


def test_concurrent_calls_share_batches_and_every_record_is_written(writer):
    async def call(index: int) -> int:
        pk = await writer.insert(opening(purpose=f"call {index}"))
        writer.complete(pk, closing(latency_ms=index))
        return pk

    async def run():
        pks = await asyncio.gather(*(call(i) for i in range(100)))
        await writer.flush()
        return pks

    pks = asyncio.run(run())
    assert len(set(pks)) == 100
    assert CallRecord.objects.filter(outcome="ok").count() == 100
    # 100 inserts, 100 completions and a flush took far fewer than 201 transactions.
    assert writer.batches < 50
    record = CallRecord.objects.get(purpose="call 7")
    assert record.latency_ms == 7
    assert record.cost == Decimal("0.0000123456")
    assert record.attempts == [{"llm": "sim/gpt-4o", "status": 200}]
    assert record.response_body == {"content": "hello"}


def test_an_opened_record_stays_interrupted_until_completed(writer):
    pk = asyncio.run(writer.insert(opening()))
    record = CallRecord.objects.get(pk=pk)
    assert record.outcome == CallRecord.Outcome.INTERRUPTED and record.ended_at is None


def test_one_failing_insert_does_not_sink_the_others_in_its_batch(writer):
    duplicate = opening()

    async def run():
        first = await writer.insert(duplicate)
        results = await asyncio.gather(
            writer.insert(dict(duplicate)),
            *(writer.insert(opening()) for _ in range(5)),
            return_exceptions=True,
        )
        return first, results

    _first, results = asyncio.run(run())
    assert isinstance(results[0], AuditUnavailable)
    assert all(isinstance(pk, int) for pk in results[1:])
    assert CallRecord.objects.count() == 7 - 1


def test_a_keys_last_use_is_a_queryset_update(writer, cast):
    from gateway.keys import apikey_create
    from gateway.lastused import apikey_touch
    from gateway.models import ApiKey

    api_key, _ = apikey_create(owner=cast.alice, department=cast.marketing, purpose="touch")
    when = datetime.now(UTC) - timedelta(seconds=5)
    apikey_touch(api_key.pk, when, writer=writer)
    asyncio.run(writer.insert(opening()))  # the touch is written with (or before) this batch
    assert ApiKey.objects.get(pk=api_key.pk).last_used_at == when


def test_stop_writes_what_is_queued(writer):
    async def run():
        loop = asyncio.get_running_loop()
        futures = [loop.create_task(writer.insert(opening())) for _ in range(10)]
        await asyncio.sleep(0)
        await loop.run_in_executor(None, writer.stop)
        return await asyncio.gather(*futures)

    pks = asyncio.run(run())
    assert CallRecord.objects.filter(pk__in=pks).count() == 10


def test_nul_characters_are_recorded(writer):
    """A prompt holding NUL is recorded; PostgreSQL (text, jsonb) cannot hold the character
    itself, so there it becomes U+FFFD."""
    from django.db import connection

    prompt = {"messages": [{"role": "user", "content": "a\x00b"}]}

    async def run():
        pk = await writer.insert(opening(user_agent="agent\x00", request_body=prompt))
        writer.complete(pk, closing(error_message="e\x00"))
        await writer.flush()
        return pk

    record = CallRecord.objects.get(pk=asyncio.run(run()))
    nul = "\ufffd" if connection.vendor == "postgresql" else "\x00"
    assert record.user_agent == f"agent{nul}"
    assert record.request_body == {"messages": [{"role": "user", "content": f"a{nul}b"}]}
    assert record.error_message == f"e{nul}"


def test_the_spool_writes_what_it_kept_and_counts_what_it_could_not_keep(writer, settings):
    settings.MESHGATE_AUDIT_SPOOL_MAX = 0  # full: counted, not kept
    writer.spool({**opening(), **closing()})
    assert writer.spool_dropped == 1
    settings.MESHGATE_AUDIT_SPOOL_MAX = 10
    kept = [{**opening(), **closing(outcome="internal_error", status_code=503)} for _ in range(2)]
    for fields in kept:
        writer.spool(fields)
    deadline = datetime.now(UTC) + timedelta(seconds=5)
    ids = [fields["request_id"] for fields in kept]
    while CallRecord.objects.filter(request_id__in=ids).count() < 2:
        assert datetime.now(UTC) < deadline, "the spool was not written"
        asyncio.run(asyncio.sleep(0.05))
    statuses = CallRecord.objects.filter(request_id__in=ids).values_list("status_code", flat=True)
    assert set(statuses) == {503}
    assert CallRecord.objects.count() == 2
