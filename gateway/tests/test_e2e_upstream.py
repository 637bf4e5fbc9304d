"""What the gateway does with a difficult upstream: long Retry-After, answers' headers."""

from __future__ import annotations

import json
import time

import httpx

from gateway.tests.test_e2e_support import gateway_fixture  # noqa: F401

MESSAGES = [{"role": "user", "content": "Hello"}]


def post(gw, body, key="alice", path="/chat/completions", **kwargs):
    return httpx.post(
        gw.url + path,
        json=body,
        headers={"Authorization": f"Bearer {gw.keys[key]}"},
        timeout=60,
        **kwargs,
    )


def test_a_retry_after_longer_than_the_budget_is_answered_at_once(gateway, simulator):
    simulator.reset()
    simulator.script("retry-model", [{"status": 429, "retry_after": 3600}])
    started = time.monotonic()
    response = post(gateway, {"model": "retrying/retry-model", "messages": MESSAGES})
    elapsed = time.monotonic() - started
    assert response.status_code == 429
    assert elapsed < 2.0  # not max_retries x a capped wait: the client is not held
    assert response.headers["retry-after"] == "3600"
    assert response.json()["error"]["code"] == "rate_limited"
    assert len(simulator.requests()) == 1  # no retry the provider asked us not to make
    record = gateway.record(response.headers["x-request-id"], outcome_not="interrupted")
    assert [a["status"] for a in json.loads(record["attempts"])] == [429]


def test_every_v1_answer_says_nosniff(gateway):
    headers = {"Authorization": f"Bearer {gateway.keys['alice']}"}
    answers = [
        post(gateway, {"model": "sim/gpt-4o", "messages": MESSAGES}),
        post(gateway, {"model": "sim/gpt-4o"}),  # 400
        httpx.get(gateway.url + "/models", headers=headers),
        httpx.get(gateway.url + "/models"),  # 401
        httpx.get(gateway.url + "/nowhere"),  # 404
    ]
    with httpx.stream(
        "POST",
        gateway.url + "/chat/completions",
        json={"model": "sim/gpt-4o", "messages": MESSAGES, "stream": True},
        headers=headers,
        timeout=30,
    ) as streamed:
        streamed.read()
        answers.append(streamed)
    assert [a.status_code for a in answers] == [200, 400, 200, 401, 404, 200]
    for answer in answers:
        assert answer.headers["x-content-type-options"] == "nosniff", answer.request.url
