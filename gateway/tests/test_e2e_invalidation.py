"""A change made by another process reaches every gateway worker within seconds (shared cache)."""

from __future__ import annotations

import time

import httpx

from gateway.tests.test_e2e_support import gateway_fixture  # noqa: F401

MESSAGES = [{"role": "user", "content": "Hello"}]


def status(port: int, key: str, model: str = "sim/gpt-4o") -> int:
    return httpx.post(
        f"http://127.0.0.1:{port}/v1/chat/completions",
        json={"model": model, "messages": MESSAGES},
        headers={"Authorization": f"Bearer {key}"},
        timeout=20,
    ).status_code


def wait_for(predicate, seconds: float = 5.0) -> float:
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        if predicate():
            return time.monotonic() - started
        time.sleep(0.1)
    raise AssertionError("not within the delay")


def test_a_revoked_key_is_refused_by_every_worker_within_seconds(gateway):
    _, second_port = gateway.start()
    key = gateway.keys["alice2"]
    # Both workers have the key cached as valid.
    assert status(gateway.port, key) == 200 and status(second_port, key) == 200
    gateway.run(
        "from gateway.models import ApiKey\n"
        "from gateway.keys import apikey_revoke\n"
        "key = ApiKey.objects.get(purpose='revoke me')\n"
        "apikey_revoke(api_key=key, actor=None)\n"
    )
    wait_for(lambda: status(gateway.port, key) == 401)
    wait_for(lambda: status(second_port, key) == 401)


def test_a_withdrawn_grant_is_refused_by_every_worker_within_seconds(gateway):
    _, second_port = gateway.start()
    key = gateway.keys["alice"]
    assert status(gateway.port, key, "sim/slow-1000") == 200
    assert status(second_port, key, "sim/slow-1000") == 200
    gateway.run(
        "from guardian.shortcuts import remove_perm\n"
        "from connections.models import LLM, Department\n"
        "llm = LLM.objects.get(mesh_id='sim/slow-1000')\n"
        "group = Department.objects.get(cost_center='MKT-100').group\n"
        "remove_perm('connections.use_llm', group, llm)\n"
    )
    wait_for(lambda: status(gateway.port, key, "sim/slow-1000") == 404)
    wait_for(lambda: status(second_port, key, "sim/slow-1000") == 404)
    # What was not withdrawn still works.
    assert status(second_port, key) == 200


def test_a_revoked_key_is_refused_within_5_s_by_a_worker_that_cannot_reach_redis(gateway):
    from urllib.parse import urlsplit

    from gateway.tests.relay import Relay

    redis = urlsplit(gateway.env["REDIS_URL"])
    relay = Relay(redis.hostname or "127.0.0.1", redis.port or 6379)
    try:
        via = redis._replace(netloc=f"127.0.0.1:{relay.port}").geturl()
        process, port = gateway.start(extra_env={"REDIS_URL": via})
        key = gateway.run(
            "from django.contrib.auth.models import User\n"
            "from connections.models import Department\n"
            "from gateway.keys import apikey_create\n"
            "alice = User.objects.get(username='alice')\n"
            "marketing = Department.objects.get(cost_center='MKT-100')\n"
            "_, raw = apikey_create(owner=alice, department=marketing, purpose='no-redis')\n"
            "print(raw)\n"
        ).strip()
        assert status(port, key) == 200
        relay.kill()  # this worker's Redis is away; the admin's is not
        gateway.run(
            "from gateway.models import ApiKey\n"
            "from gateway.keys import apikey_revoke\n"
            "apikey_revoke(api_key=ApiKey.objects.get(purpose='no-redis'), actor=None)\n"
        )
        wait_for(lambda: status(port, key) == 401, seconds=5)
        process.terminate()
    finally:
        relay.close()
