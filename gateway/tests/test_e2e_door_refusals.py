"""Quotas and failures through the doors, each in its own shape: a blocking quota is the SDK's
rate-limit error on every door, and an upstream that breaks mid-stream ends each door's stream
with its own error event and an upstream_error record."""

from __future__ import annotations

import json
import time

import anthropic
import httpx
import openai
import pytest

from gateway.tests.test_e2e_support import make_gateway

QUOTA = """
from decimal import Decimal
from connections.models import Connection
from gateway.models import ApiKey
from quotas.services import quota_create
quota_create(name="Pennies", amount=Decimal("0.000001"), mode="block",
             connection=Connection.objects.get(slug="sim"),
             api_key=ApiKey.objects.get(purpose="revoke me"))
"""


@pytest.fixture(scope="module")
def gateway(simulator, tmp_path_factory):
    gw = make_gateway(simulator, tmp_path_factory.mktemp("gw-door-refusals"))
    gw.run(QUOTA)
    gw.start()
    yield gw
    gw.stop()


def test_a_blocking_quota_is_each_sdks_rate_limit_error_and_recorded_under_the_door(gateway):
    key = gateway.keys["alice2"]
    sdk = openai.OpenAI(api_key=key, base_url=gateway.url, max_retries=0)
    claude = anthropic.Anthropic(api_key=key, base_url=gateway.url[:-3], max_retries=0)
    said = [{"role": "user", "content": "Hello"}]
    calls = {
        "responses": lambda: sdk.responses.create(model="sim/gpt-4o", input="Hello"),
        "completions": lambda: sdk.completions.create(model="sim/gpt-4o", prompt="Hello"),
        "messages": lambda: claude.messages.create(
            model="sim/gpt-4o", max_tokens=50, messages=said
        ),
    }
    for door, call in calls.items():
        error = anthropic.RateLimitError if door == "messages" else openai.RateLimitError
        with pytest.raises(error) as refused:
            call()
        request_id = refused.value.response.headers["x-request-id"]
        record = gateway.record(request_id, outcome_not="interrupted")
        assert (record["endpoint"], record["outcome"], record["status_code"]) == (
            door,
            "budget_exceeded",
            429,
        )
    assert refused.value.body["type"] == "error"
    assert refused.value.body["error"]["type"] == "rate_limit_error"
    # Another key of the same owner, not under the quota, is served.
    assert (
        sdk.with_options(api_key=gateway.keys["alice"])
        .completions.create(model="sim/gpt-4o", prompt="Hello")
        .choices
    )


@pytest.mark.parametrize(
    ("path", "body", "error_line"),
    [
        (
            "/messages",
            {"max_tokens": 50, "messages": [{"role": "user", "content": "Hi"}]},
            "event: error",
        ),
        ("/responses", {"input": "Hi"}, "event: error"),
        ("/completions", {"prompt": "Hi"}, 'data: {"error"'),
    ],
)
def test_an_upstream_that_breaks_mid_stream_ends_with_the_doors_error_event(
    gateway, path, body, error_line
):
    headers = {"Authorization": f"Bearer {gateway.keys['alice']}"}
    request = {**body, "model": "sim/drip-100-drop-3", "stream": True}
    started = time.monotonic()
    with (
        httpx.Client(base_url=gateway.url, headers=headers, timeout=30) as client,
        client.stream("POST", path, json=request) as response,
    ):
        lines = [line for line in response.iter_lines() if line]
        request_id = response.headers["x-request-id"]
    assert time.monotonic() - started < 30
    assert any(line.startswith(error_line) for line in lines), lines[-3:]
    last = json.loads(lines[-1][6:])
    assert "error" in last or last.get("type") == "error"
    record = gateway.record(request_id, outcome_not="interrupted")
    assert record["outcome"] == "upstream_error" and record["endpoint"] == path[1:]
