"""A call to a connection whose address is refused when connecting: audited, nothing sent."""

from __future__ import annotations

import pytest
from asgiref.sync import async_to_sync

from audit.models import CallRecord
from audit.writer import writer
from conftest import build_cast
from gateway import auth, clients, directory, pipeline

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def sim_cast(simulator):
    directory.clear()
    auth.clear()
    simulator.reset()
    cast = build_cast(base_url=simulator.openai_base)  # saved with private upstreams allowed
    yield cast
    async_to_sync(clients.close_all)()
    directory.clear()
    auth.clear()


def test_a_connection_saved_under_a_looser_setting_is_refused_audited_and_not_called(
    sim_cast, simulator, settings
):
    settings.MESHGATE_ALLOW_PRIVATE_UPSTREAMS = False  # the worker runs stricter now
    alice = pipeline.Principal(
        user_id=sim_cast.alice.pk,
        username="alice",
        department_id=sim_cast.marketing.pk,
        api_key_id=None,
        api_key_prefix="",
        purpose="tests",
    )
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
