"""Quotas and rate limits through a real Meshgate process, the openai SDK and the simulator.

The gateway runs as uvicorn with Redis (a database number of its own) and, when
the suite runs on PostgreSQL, a PostgreSQL database of its own; else SQLite.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from decimal import ROUND_CEILING, Decimal
from urllib.parse import urlsplit, urlunsplit

import httpx
import openai
import pytest

from conftest import redis_url_for_tests
from gateway.tests.test_e2e_audit import raw_stream_request, read_until, request_id_of
from gateway.tests.test_e2e_support import Gateway, make_gateway
from quotas.admission import estimate_prompt_tokens, worst_case_nanos
from quotas.periods import from_nanos

QUOTA_REDIS_URL = os.environ.get("MESHGATE_TEST_QUOTA_REDIS_URL", redis_url_for_tests(12))
BODY = {
    "model": "sim/gpt-4o",
    "messages": [{"role": "user", "content": "Tell me how budgets are checked."}],
    "max_tokens": 40,
}
GPT4O_PRICES = (Decimal("2.50"), Decimal("10.00"), Decimal("1.25"))


def _database_url(tmp_path) -> str:
    """A PostgreSQL database of this module's own when the suite runs on PostgreSQL."""
    suite = os.environ.get("DATABASE_URL", "")
    if not suite.startswith(("postgres://", "postgresql://")):
        return f"sqlite:///{tmp_path / 'meshgate.sqlite3'}"
    import psycopg

    parts = urlsplit(suite)
    name = f"test_quota_e2e_{uuid.uuid4().hex[:8]}"
    admin = urlunsplit(parts._replace(path="/postgres"))
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return urlunsplit(parts._replace(path=f"/{name}"))


def _drop_database(url: str) -> None:
    if not url.startswith(("postgres://", "postgresql://")):
        return
    import psycopg

    parts = urlsplit(url)
    admin = urlunsplit(parts._replace(path="/postgres"))
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{parts.path.lstrip("/")}" WITH (FORCE)')


def _clear_redis() -> None:
    import redis

    client = redis.Redis.from_url(QUOTA_REDIS_URL)
    for pattern in ("meshgate:quota:*", "meshgate:rl:*"):
        keys = list(client.scan_iter(pattern, count=1000))
        if keys:
            client.delete(*keys)
    client.close()


@pytest.fixture(scope="module")
def gateway(simulator, tmp_path_factory):
    _clear_redis()
    tmp_path = tmp_path_factory.mktemp("quota-gw")
    database_url = _database_url(tmp_path)
    gw = make_gateway(
        simulator,
        tmp_path,
        DATABASE_URL=database_url,
        REDIS_URL=QUOTA_REDIS_URL,
        MESHGATE_CACHE_PREFIX="quota-e2e-" + uuid.uuid4().hex[:8],
        MESHGATE_CACHE_CHECK_SECONDS="0.2",
    )
    gw.start()
    yield gw
    gw.stop()
    _clear_redis()
    _drop_database(database_url)


PRELUDE = """
import json
from decimal import Decimal
from audit.models import CallRecord
from connections.models import Department
from gateway.models import ApiKey
from quotas.models import Quota, RateLimit
from quotas.services import quota_create, quota_status, ratelimit_create
from django.contrib.auth.models import User
Quota.objects.all().delete()
RateLimit.objects.all().delete()
"""


def setup_limits(gw: Gateway, code: str) -> None:
    gw.run(PRELUDE + code)
    time.sleep(0.5)  # the gateway re-reads quotas within MESHGATE_CACHE_CHECK_SECONDS


def status(gw: Gateway, name: str) -> dict:
    out = gw.run(
        "from quotas.services import quota_status\nfrom quotas.models import Quota\n"
        f"s = quota_status(Quota.objects.get(name={name!r}))\n"
        "print(s['spent'], s['reserved'])\n"
    )
    spent, reserved = out.split()
    return {"spent": Decimal(spent), "reserved": Decimal(reserved)}


def records(gw: Gateway, request_ids: list[str]) -> list[dict]:
    out = gw.run(
        "import json\nfrom audit.models import CallRecord\n"
        f"rows = CallRecord.objects.filter(request_id__in={request_ids!r})"
        ".values('request_id', 'outcome', 'status_code', 'cost')\n"
        "print(json.dumps([{**r, 'cost': str(r['cost'])} for r in rows]))\n"
    )
    return json.loads(out.strip().splitlines()[-1])


def test_fifty_parallel_calls_with_room_for_two_reach_upstream_twice(gateway, simulator):
    worst = worst_case_nanos(GPT4O_PRICES, estimate_prompt_tokens(BODY), BODY["max_tokens"])
    # Room for two worst cases (amounts have six decimals: rounded up, still short of three).
    amount = from_nanos(2 * worst).quantize(Decimal("0.000001"), rounding=ROUND_CEILING)
    assert 2 * from_nanos(worst) <= amount < 3 * from_nanos(worst)
    setup_limits(
        gateway,
        f"quota_create(name='Marketing burst', amount=Decimal('{amount}'), "
        "department=Department.objects.get(cost_center='MKT-100'))",
    )
    simulator.reset()
    # The upstream answers after 2 s, so every admission decision of the burst is taken while
    # the first two calls still hold their worst-case reservations (a settled call gives back
    # the difference to its actual cost, and a later call could then fit).
    simulator.script("gpt-4o", [{"delay_ms": 2000}, {"delay_ms": 2000}])

    async def burst():
        client = openai.AsyncOpenAI(
            base_url=gateway.url, api_key=gateway.keys["alice"], max_retries=0
        )
        try:
            calls = [client.chat.completions.with_raw_response.create(**BODY) for _ in range(50)]
            return await asyncio.gather(*calls, return_exceptions=True)
        finally:
            await client.close()

    results = asyncio.run(burst())

    answered = [r for r in results if not isinstance(r, Exception)]
    refused = [r for r in results if isinstance(r, openai.RateLimitError)]
    assert len(answered) == 2, [r for r in results if isinstance(r, Exception)][:3]
    assert len(refused) == 48
    for error in refused:
        assert error.code == "quota_exceeded"
        assert "Marketing burst" in error.message
        assert error.response.headers["x-should-retry"] == "false"
    upstream = [r for r in simulator.requests() if r["path"] == "/v1/chat/completions"]
    assert len(upstream) == 2

    ids = [r.headers["x-request-id"] for r in answered]
    ids += [e.response.headers["x-request-id"] for e in refused]
    rows = records(gateway, ids)
    assert sorted(r["outcome"] for r in rows) == ["budget_exceeded"] * 48 + ["ok"] * 2
    actual = sum(Decimal(r["cost"]) for r in rows if r["outcome"] == "ok")
    assert actual > 0
    standing = status(gateway, "Marketing burst")
    assert standing["reserved"] == 0
    assert standing["spent"] == actual.quantize(Decimal("0.000000001"))


def test_a_client_that_hangs_up_mid_stream_gives_back_its_reservation(gateway):
    setup_limits(
        gateway,
        "quota_create(name='Alice', amount=Decimal('1'), user=User.objects.get(username='alice'))",
    )
    # The month's earlier calls by Alice count too (the counter is built from the audit trail).
    before = status(gateway, "Alice")["spent"]
    sock = raw_stream_request(gateway.port, gateway.keys["alice"], "sim/drip-300")
    head = read_until(sock, b"data: {")
    assert status(gateway, "Alice")["reserved"] > 0  # held while the stream runs
    sock.close()
    request_id = request_id_of(head)
    record = None
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        found = records(gateway, [request_id])
        record = found[0] if found else None
        if record and record["outcome"] != "interrupted":
            break
        time.sleep(0.1)
    assert record["outcome"] == "client_disconnected"
    assert Decimal(record["cost"]) > 0
    deadline = time.monotonic() + 5
    while status(gateway, "Alice")["reserved"] != 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    standing = status(gateway, "Alice")
    assert standing["reserved"] == 0
    partial = Decimal(record["cost"]).quantize(Decimal("0.000000001"))
    assert standing["spent"] == before + partial


def test_a_plain_call_whose_client_hangs_up_is_billed_on_its_estimated_prompt(gateway):
    """The upstream was called: like a cut stream, the call costs its estimated prompt
    tokens, the record says the tokens are estimated, and the reservation settles there."""
    setup_limits(
        gateway,
        "quota_create(name='Alice', amount=Decimal('1'), user=User.objects.get(username='alice'))",
    )
    before = status(gateway, "Alice")["spent"]
    messages = [{"role": "user", "content": f"A question asked and left {time.time_ns()} " * 8}]
    # The simulator answers after a second; the client leaves after 0.4 s.
    sock = raw_stream_request(
        gateway.port, gateway.keys["alice"], "sim/slow-1000", stream=False, messages=messages
    )
    time.sleep(0.4)
    sock.close()
    marker = messages[0]["content"][:60]
    out = None
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        out = gateway.run(
            "import json\nfrom audit.models import CallRecord\n"
            f"r = CallRecord.objects.filter(request_body__icontains={marker!r})"
            ".values('outcome', 'status_code', 'cost', 'prompt_tokens', 'completion_tokens',"
            " 'tokens_estimated', 'llm_id', 'attempts').first()\n"
            "print(json.dumps(r and {**r, 'cost': str(r['cost'])}))\n"
        )
        record = json.loads(out.strip().splitlines()[-1])
        if record and record["outcome"] != "interrupted":
            break
        time.sleep(0.1)
    assert record["outcome"] == "client_disconnected" and record["status_code"] == 499
    assert record["tokens_estimated"] is True
    body = {"model": "sim/slow-1000", "messages": messages}
    assert record["prompt_tokens"] == estimate_prompt_tokens(body)
    assert record["completion_tokens"] == 0
    # sim/slow-1000 costs $1.00 per million input tokens.
    assert Decimal(record["cost"]) == Decimal(record["prompt_tokens"]) / 1_000_000
    assert record["llm_id"] is not None
    assert record["attempts"][-1]["status"] == 499
    deadline = time.monotonic() + 5
    while status(gateway, "Alice")["reserved"] != 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    standing = status(gateway, "Alice")
    assert standing["reserved"] == 0
    assert standing["spent"] == before + Decimal(record["cost"])


def test_a_rate_limited_key_gets_429_with_retry_after(gateway):
    setup_limits(
        gateway, "ratelimit_create(name='Key RPM', scope='api_key', requests_per_minute=2)"
    )
    key = gateway.keys["bob"]
    body = {"model": "sim/gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}]}
    answers = [
        httpx.post(
            gateway.url + "/chat/completions",
            json=body,
            headers={"Authorization": f"Bearer {key}"},
            timeout=10,
        )
        for _ in range(3)
    ]
    assert [a.status_code for a in answers] == [200, 200, 429]
    error = answers[2].json()["error"]
    assert error["code"] == "rate_limited" and "Key RPM" in error["message"]
    assert 1 <= int(answers[2].headers["retry-after"]) <= 60
    [row] = records(gateway, [answers[2].headers["x-request-id"]])
    assert row["outcome"] == "rate_limited"


def test_a_worker_that_cannot_reach_redis_refuses_instead_of_overspending(gateway, simulator):
    """Two workers, one quota; Redis is away for the first only. It must not admit through a
    ledger of its own that the second cannot see: it answers 503 quota_unavailable while the
    second spends the quota through Redis, so the quota is never overspent by more than one
    call's worst case. Once its Redis is back it admits again."""
    from gateway.tests.relay import Relay

    worst = worst_case_nanos(GPT4O_PRICES, estimate_prompt_tokens(BODY), BODY["max_tokens"])
    amount = from_nanos(2 * worst).quantize(Decimal("0.000001"), rounding=ROUND_CEILING)
    redis = urlsplit(QUOTA_REDIS_URL)
    relay = Relay(redis.hostname or "127.0.0.1", redis.port or 6379)
    try:
        via = redis._replace(netloc=f"127.0.0.1:{relay.port}").geturl()
        first, first_port = gateway.start(extra_env={"REDIS_URL": via})
        # Marketing has spent in this module's earlier tests, and a new quota counts the
        # period's spend so far: room for two more worst cases on top of it.
        setup_limits(
            gateway,
            "from quotas.services import quota_update\n"
            "q = quota_create(name='Shared budget', amount=Decimal('1000'), "
            "department=Department.objects.get(cost_center='MKT-100'))\n"
            "from decimal import ROUND_CEILING\n"
            f"room = quota_status(q)['spent'] + Decimal('{amount}')\n"
            "quota_update(quota=q, amount=room.quantize(Decimal('0.000001'), ROUND_CEILING))",
        )
        relay.kill()
        headers = {"Authorization": f"Bearer {gateway.keys['alice']}"}
        seen: dict[str, list[tuple[int, str, str]]] = {"first": [], "second": []}
        for _ in range(12):
            for name, port in (("first", first_port), ("second", gateway.port)):
                answer = httpx.post(
                    f"http://127.0.0.1:{port}/v1/chat/completions",
                    json=BODY,
                    headers=headers,
                    timeout=30,
                )
                code = answer.json().get("error", {}).get("code", "") if answer.is_error else ""
                seen[name].append((answer.status_code, code, answer.headers["x-request-id"]))

        assert {(status, code) for status, code, _ in seen["first"]} == {(503, "quota_unavailable")}
        second = [(status, code) for status, code, _ in seen["second"]]
        assert (200, "") in second and (429, "quota_exceeded") in second
        rows = records(gateway, [rid for runs in seen.values() for *_, rid in runs])
        assert len(rows) == 24  # refused calls are in the trail too
        spent = sum(Decimal(r["cost"]) for r in rows if r["outcome"] == "ok")
        assert spent <= amount + from_nanos(worst)

        relay.resume()
        time.sleep(1.5)  # the worker tries Redis again a second after it went away
        again = httpx.post(
            f"http://127.0.0.1:{first_port}/v1/chat/completions",
            json=BODY,
            headers=headers,
            timeout=30,
        )
        assert again.status_code == 429 and again.json()["error"]["code"] == "quota_exceeded"
        first.terminate()
    finally:
        relay.close()
