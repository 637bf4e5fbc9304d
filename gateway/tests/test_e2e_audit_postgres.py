"""Audit first, on PostgreSQL: a real Meshgate process whose records leave from its event loop.

The same guarantees as test_e2e_audit (SQLite), on the production database, where
the writes go through the loop writer (audit.loopwriter) and, when its connection
breaks, through the writer thread.
"""

from __future__ import annotations

import os
import signal
import time

import httpx
import openai
import psycopg
import pytest
from django.db import connection

from gateway.tests.test_e2e_audit import (
    MESSAGES,
    headers,
    raw_stream_request,
    read_until,
    request_id_of,
)
from gateway.tests.test_e2e_support import make_gateway, postgres_database

pytestmark = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="the PostgreSQL loop writer needs PostgreSQL"
)


AUDIT_WAIT = 2  # seconds a call waits for its record


@pytest.fixture(scope="module")
def gateway(simulator, tmp_path_factory):
    """A gateway on a PostgreSQL database of its own, beside the test database."""
    with postgres_database("e2e_audit") as url:
        gw = make_gateway(
            simulator,
            tmp_path_factory.mktemp("gw-pg"),
            DATABASE_URL=url,
            MESHGATE_AUDIT_WAIT_SECONDS=str(AUDIT_WAIT),
        )
        gw.start()
        yield gw
        gw.stop()


def sql(gw, statement: str) -> list[tuple]:
    with psycopg.connect(gw.env["DATABASE_URL"], autocommit=True) as conn:
        cursor = conn.execute(statement)
        return cursor.fetchall() if cursor.description else []


def test_plain_and_streamed_calls_are_recorded_and_completed(gateway):
    client = openai.OpenAI(api_key=gateway.keys["alice"], base_url=gateway.url, max_retries=0)
    plain = client.chat.completions.with_raw_response.create(model="sim/gpt-4o", messages=MESSAGES)
    with client.chat.completions.with_streaming_response.create(
        model="sim/gpt-4o", messages=MESSAGES, stream=True
    ) as streamed:
        text = "".join(
            chunk.choices[0].delta.content or "" for chunk in streamed.parse() if chunk.choices
        )
    assert text
    for response, is_streamed in ((plain, False), (streamed, True)):
        record = gateway.record(response.headers["x-request-id"], outcome_not="interrupted")
        assert record["outcome"] == "ok" and record["status_code"] == 200
        assert record["streamed"] is is_streamed
        assert record["completion_tokens"] > 0 and record["cost"] > 0
        assert record["request_body"]["messages"] == MESSAGES


def test_when_the_record_cannot_be_written_the_call_is_refused_with_503(gateway, simulator):
    ok = httpx.post(
        gateway.url + "/chat/completions",
        json={"model": "sim/gpt-4o", "messages": MESSAGES},
        headers=headers(gateway),
    )
    assert ok.status_code == 200
    sql(gateway, "ALTER TABLE audit_callrecord ADD CONSTRAINT no_writes CHECK (false) NOT VALID")
    simulator.reset()
    try:
        refused = [
            httpx.post(
                gateway.url + "/chat/completions",
                json={"model": "sim/gpt-4o", "messages": MESSAGES, "stream": stream},
                headers=headers(gateway),
            )
            for stream in (False, True)
        ]
    finally:
        sql(gateway, "ALTER TABLE audit_callrecord DROP CONSTRAINT no_writes")
    assert [r.status_code for r in refused] == [503, 503]
    assert refused[0].json()["error"]["code"] == "audit_unavailable"
    assert simulator.requests() == []  # nothing went upstream
    again = httpx.post(
        gateway.url + "/chat/completions",
        json={"model": "sim/gpt-4o", "messages": MESSAGES},
        headers=headers(gateway),
    )
    assert again.status_code == 200


def test_a_stalled_audit_table_refuses_calls_in_time_and_records_them_later(gateway, simulator):
    """The database stops answering (here a lock an admin's ALTER TABLE or VACUUM FULL would
    hold): calls get 503 after MESHGATE_AUDIT_WAIT_SECONDS instead of hanging, nothing goes
    upstream, and once the database answers their records say how they ended."""
    simulator.reset()
    with psycopg.connect(gateway.env["DATABASE_URL"]) as locker:
        locker.execute("LOCK TABLE audit_callrecord IN EXCLUSIVE MODE")  # reads still pass
        started = time.monotonic()
        refused = [
            httpx.post(
                gateway.url + "/chat/completions",
                json={"model": "sim/gpt-4o", "messages": MESSAGES, "stream": stream},
                headers=headers(gateway),
                timeout=30,
            )
            for stream in (False, True)
        ]
        waited = time.monotonic() - started
        # A refusal waits as long for its record, then answers as it would have.
        unknown = httpx.post(
            gateway.url + "/chat/completions",
            json={"model": "sim/no-such-model", "messages": MESSAGES},
            headers=headers(gateway),
            timeout=30,
        )
        ids = [response.headers["x-request-id"] for response in refused]
        quoted = ", ".join(f"'{request_id}'" for request_id in ids)
        assert gateway.records(f"request_id IN ({quoted})") == []
        locker.rollback()  # the lock goes
    assert [r.status_code for r in refused] == [503, 503] and unknown.status_code == 404
    for response in refused:
        error = response.json()["error"]
        assert error["code"] == "audit_unavailable" and "in time" in error["message"]
    assert 2 * AUDIT_WAIT <= waited < 2 * AUDIT_WAIT + 4
    assert simulator.requests() == []
    for request_id in ids:
        record = gateway.record(request_id, outcome_not="interrupted")
        assert record["outcome"] == "internal_error" and record["status_code"] == 503
    assert gateway.record(unknown.headers["x-request-id"])["outcome"] == "not_found"
    again = httpx.post(
        gateway.url + "/chat/completions",
        json={"model": "sim/gpt-4o", "messages": MESSAGES},
        headers=headers(gateway),
    )
    assert again.status_code == 200


def test_calls_go_on_when_the_gateways_database_connections_are_cut(gateway):
    """The loop writer's connection dies: its work goes to the writer thread, and it
    reconnects; no call fails and every record is written."""
    ids = []
    for round_ in range(3):
        cut = sql(
            gateway,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()",
        )
        assert cut or round_ > 0
        for stream in (False, True, False):
            response = httpx.post(
                gateway.url + "/chat/completions",
                json={"model": "sim/gpt-4o", "messages": MESSAGES, "stream": stream},
                headers=headers(gateway),
                timeout=30,
            )
            assert response.status_code == 200, response.text
            ids.append(response.headers["x-request-id"])
        time.sleep(2.5)  # the loop writer reconnects after 2 s
    for request_id in ids:
        assert gateway.record(request_id, outcome_not="interrupted")["outcome"] == "ok"


def test_a_gateway_killed_mid_call_leaves_an_interrupted_record(gateway):
    process, port = gateway.start()
    sock = raw_stream_request(port, gateway.keys["alice"], "sim/drip-300")
    head = read_until(sock, b"data: {")
    request_id = request_id_of(head)
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=10)
    sock.close()
    record = gateway.record(request_id)
    assert record["outcome"] == "interrupted" and record["ended_at"] is None
    assert record["model_requested"] == "sim/drip-300"
