"""A call to a connection whose address is refused when connecting: audited, nothing sent."""

from __future__ import annotations

import pytest
from asgiref.sync import async_to_sync

from audit.models import CallRecord
from audit.writer import writer
from conftest import principal_for
from gateway import pipeline

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_connection_saved_under_a_looser_setting_is_refused_audited_and_not_called(
    sim_cast, simulator, settings
):
    # The cast was saved with private upstreams allowed; the worker runs stricter now.
    settings.MESHGATE_ALLOW_PRIVATE_UPSTREAMS = False
    alice = principal_for(sim_cast.alice, sim_cast.marketing)
    body = {"model": "chat-default", "messages": [{"role": "user", "content": "Hi"}]}

    async def run():
        reply = await pipeline.handle(
            "chat.completions", alice, body, request_id="req_ref", client_ip=None, user_agent=""
        )
        await writer.flush()
        return reply

    reply = async_to_sync(run)()
    assert reply.status == 502
    assert b"upstream_address_refused" in reply.body and b"127.0.0.1" not in reply.body
    assert simulator.requests() == []
    record = CallRecord.objects.get(request_id="req_ref")
    assert record.outcome == "upstream_error" and record.status_code == 502
    assert "address was refused" in record.error_message
    assert "MESHGATE_ALLOW_PRIVATE_UPSTREAMS" in record.error_message
    # Each target of the alias tried once (another target might have been allowed).
    assert [a["error"] for a in record.attempts] == ["upstream_address_refused"] * 2
