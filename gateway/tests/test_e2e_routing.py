"""Redirect fields, fallback, retries and broken streams, through a real Meshgate process."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from gateway.tests.test_e2e_support import gateway_fixture, post  # noqa: F401
from gateway.validation import REDIRECT_FIELDS

MESSAGES = [{"role": "user", "content": "Hello"}]


REDIRECTS = [*sorted(REDIRECT_FIELDS), "aws_access_key_id", "azure_endpoint", "AWS_REGION"]


@pytest.mark.parametrize("field", REDIRECTS)
def test_a_redirect_field_is_refused_at_the_top_level_and_in_a_message(gateway, simulator, field):
    simulator.reset()
    top = post(gateway, {"model": "sim/gpt-4o", "messages": MESSAGES, field: "http://evil:1"})
    in_message = post(
        gateway,
        {"model": "sim/gpt-4o", "messages": [{"role": "user", "content": "x", field: "x"}]},
    )
    embedded = post(
        gateway,
        {"model": "sim/text-embedding-3-small", "input": "x", field: "x"},
        path="/embeddings",
    )
    for response in (top, in_message, embedded):
        assert response.status_code == 400, response.text
        assert response.json()["error"]["code"] == "forbidden_field"
    assert field in in_message.json()["error"]["param"]
    assert simulator.requests() == []
    record = gateway.record(top.headers["x-request-id"])
    assert record["outcome"] == "invalid_request" and record["attempts"] == "[]"


def test_an_alias_falls_back_in_order_and_records_every_attempt(gateway, simulator):
    simulator.reset()
    response = post(gateway, {"model": "fallback-chain", "messages": MESSAGES})
    assert response.status_code == 200
    assert [r["model"] for r in simulator.requests()] == ["broken-fail-503", "gpt-4o-mini"]
    record = gateway.record(response.headers["x-request-id"], outcome_not="interrupted")
    attempts = json.loads(record["attempts"])
    assert [(a["llm"], a["status"]) for a in attempts] == [
        ("sim/broken-fail-503", 502),
        ("sim/gpt-4o-mini", 200),
    ]
    assert record["alias_name"] == "fallback-chain"
    assert record["llm_id"] == attempts[1]["llm_id"]


def test_an_alias_skips_the_targets_the_caller_may_not_use(gateway, simulator):
    simulator.reset()
    response = post(gateway, {"model": "chat-default", "messages": MESSAGES}, key="bob")
    assert response.status_code == 200
    assert [r["model"] for r in simulator.requests()] == ["gpt-4o-mini"]


def test_retries_honour_retry_after_then_succeed(gateway, simulator):
    simulator.reset()
    simulator.script("retry-model", [{"status": 429, "retry_after": 1}, {"status": 503}])
    started = time.monotonic()
    response = post(gateway, {"model": "retrying/retry-model", "messages": MESSAGES})
    elapsed = time.monotonic() - started
    assert response.status_code == 200
    assert len(simulator.requests()) == 3
    assert elapsed >= 1.0  # the 429's Retry-After: 1 was waited out
    record = gateway.record(response.headers["x-request-id"], outcome_not="interrupted")
    assert [a["status"] for a in json.loads(record["attempts"])] == [429, 502, 200]


def test_a_non_retryable_upstream_error_stops_at_once(gateway, simulator):
    simulator.reset()
    response = post(gateway, {"model": "sim/bad-fail-400", "messages": MESSAGES})
    assert response.status_code == 400
    assert len(simulator.requests()) == 1
    record = gateway.record(response.headers["x-request-id"], outcome_not="interrupted")
    assert record["outcome"] == "invalid_request" and record["status_code"] == 400


def test_an_upstream_failure_is_mapped_and_recorded_without_internal_hosts(gateway, simulator):
    response = post(gateway, {"model": "sim/broken-fail-503", "messages": MESSAGES})
    assert response.status_code == 502
    assert "127.0.0.1" not in response.text and str(simulator.port) not in response.text
    record = gateway.record(response.headers["x-request-id"], outcome_not="interrupted")
    assert record["outcome"] == "upstream_error" and record["cost"] in (0, "0")


def test_a_stream_broken_midway_ends_with_an_error_event_and_no_done(gateway):
    with httpx.stream(
        "POST",
        gateway.url + "/chat/completions",
        json={"model": "sim/drip-100-drop-3", "messages": MESSAGES, "stream": True},
        headers={"Authorization": f"Bearer {gateway.keys['alice']}"},
        timeout=30,
    ) as response:
        assert response.status_code == 200
        events = [line for line in response.iter_lines() if line]
        request_id = response.headers["x-request-id"]
    assert "data: [DONE]" not in events
    assert len(events) == 4
    last = json.loads(events[-1].removeprefix("data: "))
    assert last["error"]["code"] == "upstream_stream_broken"
    record = gateway.record(request_id, outcome_not="interrupted")
    assert record["outcome"] == "upstream_error"
    assert record["completion_tokens"] > 0  # the part delivered is counted


def test_unsupported_shapes_are_refused_before_upstream(gateway, simulator):
    simulator.reset()
    for body in (
        {"model": "sim/gpt-4o", "messages": []},
        {"model": "sim/gpt-4o", "messages": [{"role": "wizard", "content": "x"}]},
        {"model": "sim/gpt-4o", "messages": MESSAGES, "n": 0},
        {"model": "sim/gpt-4o", "messages": MESSAGES, "max_tokens": "ten"},
        {"messages": MESSAGES},
    ):
        assert post(gateway, body).status_code == 400, body
    assert simulator.requests() == []


def test_unknown_fields_are_passed_on_to_openai_like_providers(gateway, simulator):
    simulator.reset()
    response = post(
        gateway, {"model": "sim/gpt-4o", "messages": MESSAGES, "logit_bias": {}, "custom_x": 1}
    )
    assert response.status_code == 200
    assert simulator.requests()[0]["body"]["custom_x"] == 1
