"""PostgreSQL outages, on a real Meshgate process that reaches its database through a relay.

While the database is away a call gets 503 `audit_unavailable` and nothing goes
upstream; within seconds of its return calls succeed again, without a restart; and the
calls refused meanwhile are in the trail afterwards. The shared PostgreSQL server is
never touched: the relay is cut, frozen and resumed, or the gateway's backends are
terminated.
"""

from __future__ import annotations

import time
from urllib.parse import urlsplit

import openai
import psycopg
import pytest
from django.db import connection

from gateway.tests.relay import Relay
from gateway.tests.test_e2e_support import make_gateway, postgres_database

pytestmark = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="PostgreSQL outages need PostgreSQL"
)

AUDIT_WAIT = 2
MESSAGES = [{"role": "user", "content": "Hello"}]


@pytest.fixture(scope="module")
def seeded(simulator, tmp_path_factory):
    """A seeded gateway (not started) on a PostgreSQL database of its own."""
    with postgres_database("e2e_outage") as url:
        gw = make_gateway(
            simulator,
            tmp_path_factory.mktemp("gw-outage"),
            DATABASE_URL=url,
            MESHGATE_AUDIT_WAIT_SECONDS=str(AUDIT_WAIT),
        )
        yield gw
        gw.stop()


@pytest.fixture
def relayed(seeded):
    """A fresh gateway process whose every database connection goes through a relay."""
    direct = urlsplit(seeded.env["DATABASE_URL"])
    relay = Relay(direct.hostname or "127.0.0.1", direct.port or 5432)
    netloc = direct.netloc.rsplit("@", 1)
    host = f"127.0.0.1:{relay.port}"
    via = direct._replace(netloc=f"{netloc[0]}@{host}" if len(netloc) == 2 else host)
    process, port = seeded.start(extra_env={"DATABASE_URL": via.geturl()})
    yield seeded, relay, port
    relay.close()
    process.terminate()
    process.wait(timeout=10)


def call(port: int, key: str) -> tuple[int, str | None, str]:
    """(status, error code, request id) of one chat call through the openai SDK."""
    client = openai.OpenAI(
        api_key=key, base_url=f"http://127.0.0.1:{port}/v1", max_retries=0, timeout=30
    )
    try:
        response = client.chat.completions.with_raw_response.create(
            model="sim/gpt-4o", messages=MESSAGES
        )
    except openai.APIStatusError as exc:
        return exc.status_code, exc.body.get("code"), exc.response.headers["x-request-id"]
    return response.status_code, None, response.headers["x-request-id"]


def new_key(gw, purpose: str) -> str:
    """A key the gateway has never seen: its first call needs a database lookup."""
    return gw.run(
        "from django.contrib.auth.models import User\n"
        "from connections.models import Department\n"
        "from gateway.keys import apikey_create\n"
        "alice = User.objects.get(username='alice')\n"
        "marketing = Department.objects.get(cost_center='MKT-100')\n"
        f"_, raw = apikey_create(owner=alice, department=marketing, purpose={purpose!r})\n"
        "print(raw)\n"
    ).strip()


def until_ok(port: int, key: str, seconds: float = 10.0) -> float:
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        if call(port, key)[0] == 200:
            return time.monotonic() - started
        time.sleep(0.2)
    raise AssertionError(f"calls still fail {seconds} s after the database came back")


def test_a_database_outage_gets_503_then_calls_recover_and_the_refusals_are_recorded(
    relayed, simulator
):
    gw, relay, port = relayed
    assert call(port, gw.keys["alice"])[0] == 200  # key and catalog cached, connections open
    unseen = new_key(gw, "outage-unseen")
    time.sleep(1.5)  # the gateway drops its key memo (the version moved)
    simulator.reset()

    relay.kill()
    during = [call(port, gw.keys["alice"]), call(port, unseen), call(port, gw.keys["alice"])]
    assert [(status, code) for status, code, _ in during] == [(503, "audit_unavailable")] * 3
    assert simulator.requests() == []  # nothing went upstream

    relay.resume()
    until_ok(port, unseen)
    assert call(port, gw.keys["alice"])[0] == 200
    for _status, _code, request_id in during:
        record = gw.record(request_id, wait=10)
        assert record["status_code"] == 503 and record["outcome"] == "internal_error"


def test_a_frozen_database_answers_503_in_time_and_calls_recover_when_it_thaws(relayed, simulator):
    gw, relay, port = relayed
    assert call(port, gw.keys["alice"])[0] == 200
    unseen = new_key(gw, "frozen-unseen")
    time.sleep(1.5)
    simulator.reset()

    relay.freeze()
    started = time.monotonic()
    during = [call(port, gw.keys["alice"]), call(port, unseen)]
    waited = time.monotonic() - started
    assert [(status, code) for status, code, _ in during] == [(503, "audit_unavailable")] * 2
    assert waited < 4 * AUDIT_WAIT + 4
    assert simulator.requests() == []
    relay.resume()
    until_ok(port, unseen)
    for _status, _code, request_id in during:
        record = gw.record(request_id, wait=10, outcome_not="interrupted")
        assert record["status_code"] == 503


def test_terminated_backends_cost_no_call(relayed):
    """A PostgreSQL restart (here its backends terminated): the next lookup reconnects."""
    gw, _relay, port = relayed
    assert call(port, gw.keys["alice"])[0] == 200
    unseen = new_key(gw, "restart-unseen")
    time.sleep(1.5)
    with psycopg.connect(gw.env["DATABASE_URL"], autocommit=True) as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    assert call(port, unseen)[0] == 200
    assert call(port, gw.keys["alice"])[0] == 200
