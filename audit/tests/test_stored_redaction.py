"""What a `redacted` connection keeps of a call: request and answer, placeholders exactly placed.

The simulator is scripted to answer with personal data, so the stored response body is checked
as closely as the request body. Each check compares the whole stored string, so a pattern that
redacts half an address (`jane.[EMAIL]`) or leaves a body untouched fails.
"""

from __future__ import annotations

import pytest
from asgiref.sync import async_to_sync

from audit.models import CallRecord
from audit.redaction import redact_text
from audit.writer import writer
from conftest import principal_for
from connections.models import Connection
from gateway import pipeline
from quotas import runtime

pytestmark = pytest.mark.django_db(transaction=True)

# (personal text, exactly what the record keeps)
CASES = [
    ("Mail jane.doe@example.com today", "Mail [EMAIL] today"),
    ("Mail jane.doe+invoices@mail.example.co.uk today", "Mail [EMAIL] today"),
    ("Sub-address bob+tag@sub.domain.example.org.", "Sub-address [EMAIL]."),
    ("Dotted first.middle.last@x.io, or J_Smith-2@EXAMPLE.COM", "Dotted [EMAIL], or [EMAIL]"),
    ("Call +33 1 42 68 53 00 or 020 7946 0958.", "Call [PHONE] or [PHONE]."),
    ("Call (212) 555-0147 now", "Call ([PHONE] now"),
    (
        "Card 4111 1111 1111 1111 and 5500-0000-0000-0004; order 1234 5678 9012 3456.",
        "Card [CARD] and [CARD]; order 1234 5678 9012 3456.",
    ),
    ("IBAN DE89 3704 0044 0532 0130 00 or GB82WEST12345698765432.", "IBAN [IBAN] or [IBAN]."),
    (
        "Dates 2024-05-01 and 01/05/2024 stay; 12 units.",
        "Dates 2024-05-01 and 01/05/2024 stay; 12 units.",
    ),
]
PERSONAL = " | ".join(text for text, _ in CASES)
REDACTED = " | ".join(kept for _, kept in CASES)


IDS = ["dotted", "plus-tag", "subdomain", "many-dots", "phones", "phone-parens", "cards", "ibans"]


@pytest.mark.parametrize(("text", "kept"), CASES, ids=[*IDS, "dates-kept"])
def test_each_kind_of_personal_data_is_replaced_whole(text, kept):
    assert redact_text(text) == kept


@pytest.fixture
def redacted_cast(sim_cast, simulator):
    runtime.start()  # no quota another test left cached in this process
    cast = sim_cast
    Connection.objects.filter(pk=cast.connection.pk).update(payload_policy="redacted")
    yield cast
    simulator.reset()


def call(cast, body: dict, request_id: str) -> CallRecord:
    alice = principal_for(cast.alice, cast.marketing)

    async def go():
        reply = await pipeline.handle(
            "chat.completions", alice, body, request_id=request_id, client_ip=None, user_agent=""
        )
        if reply.stream is not None:
            async for _ in reply.stream:
                pass
        return reply

    reply = async_to_sync(go)()
    assert reply.status == 200
    async_to_sync(writer.flush)()
    return CallRecord.objects.get(request_id=request_id)


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_a_redacted_connection_keeps_both_bodies_with_exact_placeholders(
    redacted_cast, simulator, stream
):
    simulator.script("gpt-4o", [{"content": "Sure. " + PERSONAL}])
    body = {
        "model": "sim/gpt-4o",
        "messages": [
            {"role": "system", "content": "Contact: ops.team+alerts@corp.example.net"},
            {"role": "user", "content": PERSONAL},
        ],
        "stream": stream,
        "user": "jane.doe@example.com",
    }
    if stream:
        body["stream_options"] = {"include_usage": True}
    record = call(redacted_cast, body, f"req-redact-{stream}")
    # The upstream got the real text; only the record is redacted.
    sent = [r for r in simulator.requests() if r["path"] == "/v1/chat/completions"]
    assert sent[-1]["body"]["messages"][1]["content"] == PERSONAL

    assert record.request_body["messages"] == [
        {"role": "system", "content": "Contact: [EMAIL]"},
        {"role": "user", "content": REDACTED},
    ]
    assert record.request_body["user"] == "[EMAIL]"
    answer = record.response_body if stream else record.response_body["choices"][0]["message"]
    assert answer["content"] == "Sure. " + REDACTED
    assert answer["role"] == "assistant"
